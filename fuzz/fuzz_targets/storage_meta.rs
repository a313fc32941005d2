//! The storage node's metadata attribute (`user.dfs.meta`): decoding never panics, and what it
//! accepts re-encodes to the same metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::meta::StoredMeta;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = StoredMeta::decode(data, "name") {
        let bytes = meta.encode();
        assert!(bytes.len() <= storage::meta::INODE_ROOM);
        let again = StoredMeta::decode(&bytes, "name").expect("re-encoded metadata decodes");
        assert_eq!(again, meta);
    }
});
