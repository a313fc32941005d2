//! The storage node's metadata attribute (`user.dfs.meta`): decoding never panics, and what it
//! accepts re-encodes to the same metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::meta::StoredMeta;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = StoredMeta::decode(data) {
        let again = StoredMeta::decode(&meta.encode()).expect("re-encoded metadata decodes");
        assert_eq!(again, meta);
    }
});
