//! Header frames: `codec::decode` never panics, and whatever it accepts re-encodes to a header
//! that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::codec::{decode, encode};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(msg) => assert_eq!(decode(&encode(&msg)).as_ref(), Ok(&msg)),
        Err(rejected) => {
            // The reply to a refusal always encodes and decodes.
            let reply = rejected.reply();
            assert_eq!(decode(&encode(&reply)).as_ref(), Ok(&reply));
        }
    }
});
