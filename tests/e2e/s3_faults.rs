//! The S3 backend when things go wrong (docs/CONTRACT.md §9): a Garage node lost mid-way, a
//! store that refuses writes, a large file in bounded memory. Real Garage, real dfs processes;
//! skipped, saying why, without a `garage` binary.

use crate::garage::Garage;
use crate::harness::*;
use crate::s3::{cluster_on, show};
use std::fs;
use std::time::Duration;

const SYNC: Duration = Duration::from_secs(180);

/// Every object in the class tree of the bucket hashes to the BLAKE3 its metadata records:
/// nothing partial or foreign is current.
fn assert_objects_whole(c: &Cluster) {
    let b = c.bucket.as_ref().unwrap();
    for class in ["mp3", "txt", "pdf", "others"] {
        for (key, _) in b.list(&format!("{class}/")).unwrap() {
            let (bytes, meta) = b.get(&key).unwrap().unwrap();
            let recorded = meta
                .iter()
                .find(|(k, _)| k == "dfs-blake3")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            assert_eq!(
                blake3::hash(&bytes).to_hex().to_string(),
                recorded,
                "{key} is not the content its metadata records"
            );
        }
    }
}

#[test]
fn a_garage_node_killed_during_uploads_and_reads_loses_no_acknowledged_file() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut g) = Garage::start(dir.path()) else {
        return;
    };
    let c = cluster_on(&g, "kill");
    let s = c.source.clone();
    fs::create_dir_all(s.join("first")).unwrap();
    for i in 0..60 {
        fs::write(
            s.join(format!("first/{i}.txt")),
            random_bytes(i, 3_000 + i as usize),
        )
        .unwrap();
    }
    c.wait_synced(SYNC);
    // Reads running while a Garage node (not the one the dfs node talks to) is killed, and
    // uploads started around it, a large one among them.
    let addr = c.broker_addr();
    let target = c.target.display().to_string();
    let cwd = c.dir.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        run_bounded(
            &cwd,
            &[
                "fetch",
                "--broker",
                &addr,
                "--timeout",
                "60",
                "--target",
                &target,
                "first/**",
            ],
            Duration::from_secs(120),
        )
    });
    fs::create_dir_all(s.join("second")).unwrap();
    write_big_file(&s.join("second/big.bin"), 9, 20 << 20);
    for i in 0..30 {
        fs::write(
            s.join(format!("second/{i}.pdf")),
            random_bytes(100 + i, 5_000),
        )
        .unwrap();
    }
    g.kill_node(2);
    for i in 30..60 {
        fs::write(
            s.join(format!("second/{i}.pdf")),
            random_bytes(100 + i, 5_000),
        )
        .unwrap();
    }
    let read = reader.join().unwrap();
    assert!(
        read.status.success(),
        "reads during the loss: {}",
        show(&read)
    );
    assert_eq!(
        tree_hashes(&c.target.join("first")),
        tree_hashes(&s.join("first"))
    );
    // With two of three copies left, every upload goes on and is acknowledged.
    c.wait_synced(SYNC);
    assert_objects_whole(&c);
    let again = c.dir.path().join("again");
    let out = c.fetch(&["--target", &again.display().to_string(), "**"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(tree_hashes(&again), tree_hashes(&s));

    // The node comes back and catches up; nothing changes for dfs.
    g.start_node(2);
    fs::write(s.join("after.txt"), "after the return").unwrap();
    c.wait_synced(SYNC);
    assert_objects_whole(&c);
}

#[test]
fn a_store_that_refuses_writes_is_a_clear_error_retried_and_nothing_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Garage::start(dir.path()) else {
        return;
    };
    let c = cluster_on(&g, "refuse");
    fs::write(c.source.join("before.txt"), "before").unwrap();
    c.wait_synced(SYNC);
    // The key loses its write permission on the bucket.
    g.cli(
        0,
        &[
            "bucket",
            "deny",
            "--write",
            crate::garage::BUCKET,
            "--key",
            "dfs-test",
        ],
    );
    fs::write(c.source.join("refused.txt"), "refused for now").unwrap();
    let node = c.storage.as_ref().unwrap();
    wait_until("the node logs the store's refusal", SYNC, || {
        node.log_text()
            .lines()
            .any(|l| l.contains("refused.txt") && l.contains("object store"))
    });
    let said = node.log_text();
    let line = said
        .lines()
        .find(|l| l.contains("refused.txt") && l.contains("object store"))
        .unwrap();
    eprintln!("the node said: {line}");
    assert!(
        !c.listing().contains_key("refused.txt"),
        "a file the store refused was acknowledged"
    );
    assert!(c
        .bucket
        .as_ref()
        .unwrap()
        .head("txt/refused.txt")
        .unwrap()
        .is_none());
    // Write allowed again: the watcher's retry stores it, with nothing done by hand.
    g.cli(
        0,
        &[
            "bucket",
            "allow",
            "--write",
            crate::garage::BUCKET,
            "--key",
            "dfs-test",
        ],
    );
    c.wait_synced(SYNC);
    assert_eq!(c.listing()["refused.txt"].size, 15);
}

#[test]
fn a_300_mib_file_goes_to_the_bucket_and_back_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Garage::start(dir.path()) else {
        return;
    };
    let c = cluster_on(&g, "big");
    let hash = write_big_file(&c.source.join("huge.bin"), 42, 300 << 20);
    wait_until("huge.bin listed with its hash", SYNC, || {
        c.listing().get("huge.bin").map(|l| l.blake3.clone()) == Some(hash.clone())
    });
    let out = c.fetch(&["--target", &c.target.display().to_string(), "huge.bin"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(file_hash(&c.target.join("huge.bin")), hash);
    // Nothing of the upload or the read stays in the node's temporary folder.
    assert_eq!(c.node_tmp_bytes(), 0);
    c.assert_peaks_below(100 * 1024, Vec::new());
}
