//! The broker's index record (a sled value): decoding never panics, and what it accepts
//! re-encodes to the same record.
#![no_main]

use broker::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, value) = data.split_at(data.len().min(8));
    if let Ok(record) = Record::decode(name, value) {
        let again = Record::decode(name, &record.encode()).expect("re-encoded record decodes");
        assert_eq!(again, record);
    }
});
