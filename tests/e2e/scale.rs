//! Index scale: a broker whose index holds 1,000,000 entries. A measurement, not a timed test:
//! run by hand with `cargo test --release --test e2e -- --ignored --nocapture index_scale`
//! (DFS_SCALE_ENTRIES changes the count). It prints how long the broker takes to start (until
//! its ready file) and how long `dfs fetch --json` takes to list everything, and checks that
//! the listing is complete and sorted.

use crate::harness::*;
use std::time::{Duration, Instant};

#[test]
#[ignore = "a measurement of a 1,000,000-entry index; run by hand with --release"]
fn index_scale() {
    let n: u64 = std::env::var("DFS_SCALE_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut c = Cluster::start_without_watcher();
    let mut broker = c.broker.take().unwrap();
    assert_eq!(
        broker.stop_with(libc::SIGTERM, Duration::from_secs(30)),
        Some(0)
    );
    drop(broker);

    // Fill the stopped broker's index directly, as a long life of uploads would have.
    let t = Instant::now();
    {
        let (index, _) = broker::Index::open(&c.data.join("index.db")).unwrap();
        let h = schema::Hash::of(b"scale");
        for i in 0..n {
            let name = format!("folder{:03}/file-{i:07}.bin", i % 1000);
            let rec =
                broker::Record::stored(schema::Class::Others, i, h, 1_700_000_000_000_000_000, 1);
            index.put(&name, &rec).unwrap();
        }
        index.mark_complete().unwrap();
        index.flush().unwrap();
    }
    // As a broker stopped cleanly after that life would have: the export written and current.
    broker::export_index(&broker::ExportArgs {
        data: c.data.clone(),
        out: None,
    })
    .unwrap();
    eprintln!("filled {n} entries in {:?}", t.elapsed());

    let t = Instant::now();
    c.start_broker();
    let start = t.elapsed();
    let t = Instant::now();
    let out = c.fetch(&["--json"]);
    let list = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, n, "every entry listed");
    let t = Instant::now();
    let out = c.fetch(&[]);
    let table = t.elapsed();
    assert!(out.status.success());
    eprintln!(
        "index of {n} entries: broker start {start:?}, fetch --json {list:?}, table {table:?}"
    );
}
