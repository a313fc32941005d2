//! How fast the index lists: a measurement, not a timed test.

use crate::{Index, Record};
use schema::limits::{MAX_FRAME, MAX_LIST_PAGE};
use schema::{Class, Hash};
use std::time::Instant;

/// `cargo test -p dfs-broker --release -- --ignored --nocapture list_a_million`
#[test]
#[ignore = "slow in debug builds; a measurement, run by hand with --release"]
fn list_a_million_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (idx, _) = Index::open(&dir.path().join("db")).unwrap();
    let h = Hash::of(b"x");
    for i in 0..1_000_000u64 {
        let rec = Record::stored(Class::Others, i, h, 0, 1);
        idx.put(&format!("folder/file-{i:07}.bin"), &rec).unwrap();
    }
    idx.flush().unwrap();
    let t0 = Instant::now();
    let (mut after, mut n, mut pages) = (None::<String>, 0, 0);
    let mut enc = std::time::Duration::ZERO;
    loop {
        let (entries, more) = idx.page(after.as_deref(), MAX_LIST_PAGE).unwrap();
        let t1 = Instant::now();
        let page = schema::Message::Listing {
            id: 1,
            entries,
            more,
        };
        let frame = schema::codec::encode(&page);
        enc += t1.elapsed();
        assert!(frame.len() < MAX_FRAME as usize);
        let schema::Message::Listing { entries, .. } = page else {
            unreachable!()
        };
        n += entries.len();
        pages += 1;
        after = entries.last().map(|e| e.name.clone());
        if !more {
            break;
        }
    }
    eprintln!("of which encoding pages took {enc:?}");
    eprintln!("listed {n} entries in {pages} pages in {:?}", t0.elapsed());
    assert_eq!(n, 1_000_000);
}
