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
    // The reader fetches the first folder again and again, each time into a new folder, until
    // a fetch that began after the kill is done; every one must be whole.
    let addr = c.broker_addr();
    let (target, cwd) = (c.target.clone(), c.dir.path().to_path_buf());
    let want = tree_hashes(&s.join("first"));
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = killed.clone();
    let reader = std::thread::spawn(move || -> Result<usize, String> {
        for round in 0.. {
            let after_kill = seen.load(std::sync::atomic::Ordering::SeqCst);
            let dir = target.join(format!("round-{round}"));
            let args = ["fetch", "--broker", &addr, "--timeout", "60", "--target"];
            let mut args: Vec<&str> = args.to_vec();
            let dir_s = dir.display().to_string();
            args.extend([dir_s.as_str(), "first/**"]);
            let out = run_bounded(&cwd, &args, Duration::from_secs(120));
            if !out.status.success() {
                return Err(format!("read round {round}: {}", show(&out)));
            }
            if tree_hashes(&dir.join("first")) != want {
                return Err(format!("read round {round} is not the first folder"));
            }
            if after_kill {
                return Ok(round + 1);
            }
        }
        unreachable!("the rounds go on until one began after the kill")
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
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    for i in 30..60 {
        fs::write(
            s.join(format!("second/{i}.pdf")),
            random_bytes(100 + i, 5_000),
        )
        .unwrap();
    }
    let rounds = reader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("reads during the loss: {e}"));
    eprintln!("{rounds} whole reads of the first folder, the last begun after the kill");
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

/// Starts a second storage node on the same bucket (through Garage node 1), with its own root
/// for transfers; returns it and its `--storage` address.
fn second_node(c: &Cluster, g: &Garage, prefix: &str, base: u16) -> (Proc, String) {
    let base = crate::ports::or_free_run(base, 5);
    let root = c.dir.path().join("node2");
    let ready = c.dir.path().join("storage2.ready");
    let _ = fs::remove_file(&ready);
    let mut args: Vec<String> = [
        "storage",
        "--root",
        root.to_str().unwrap(),
        "--bind",
        "127.0.0.1",
        "--base-port",
        &base.to_string(),
        "--ready-file",
        ready.to_str().unwrap(),
        "--backend",
        &format!("s3://{}/{prefix}", crate::garage::BUCKET),
        "--s3-endpoint",
        &g.endpoint(1),
        "--s3-region",
        "garage",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(c.daemon_args.iter().cloned());
    let mut p = Proc::spawn_with_env("storage2", c.dir.path(), c.dir.path(), &args, &c.env);
    let v = p.wait_ready(&ready);
    let base = v["base_port"].as_u64().unwrap();
    (p, format!("127.0.0.1:{base}"))
}

/// How many files a node's log says it stored.
fn stored_by(p: &Proc) -> usize {
    p.log_text()
        .lines()
        .filter(|l| l.contains(" stored "))
        .count()
}

#[test]
fn two_nodes_on_one_bucket_share_the_work_and_one_killed_mid_upload_leaves_the_other_to_finish() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Garage::start(dir.path()) else {
        return;
    };
    // The cluster's node, then a second one on the same bucket; the broker uses both.
    let mut c = crate::s3::cluster_for(&g, "two");
    c.start_storage(0);
    let (mut other, other_addr) = second_node(&c, &g, "two", 0);
    let other_base: u16 = other_addr.rsplit(':').next().unwrap().parse().unwrap();
    c.more_storage = vec![other_addr];
    c.start_broker();
    c.start_watcher();

    for i in 0..40 {
        fs::write(c.source.join(format!("{i}.txt")), format!("file {i}")).unwrap();
    }
    c.wait_synced(SYNC);
    let (first, second) = (stored_by(c.storage.as_ref().unwrap()), stored_by(&other));
    assert!(
        first > 0 && second > 0,
        "one node did all the work: {first} and {second}"
    );
    assert_eq!(first + second, 40);

    // `dfs status` names both nodes and the backend.
    let status = run_bounded(
        c.dir.path(),
        &["status", "--broker", &c.broker_addr()],
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains("storage nodes:") && text.contains("backend: s3://dfs/two"),
        "{text}"
    );

    // A large file; whichever node takes it is killed half-way through.
    let hash = write_big_file(&c.source.join("big.bin"), 3, 120 << 20);
    let roots = [c.root.join(".dfs/tmp"), c.dir.path().join("node2/.dfs/tmp")];
    let mut taker = None;
    wait_until("a node receives the large file", SYNC, || {
        let pids = [c.storage.as_ref().unwrap().pid(), other.pid()];
        taker = (0..2).find(|&i| open_bytes_in(pids[i], &roots[i]) > 8 << 20);
        taker.is_some()
    });
    let killed_first = taker == Some(0);
    if killed_first {
        c.kill9(Role::Storage);
    } else {
        other.kill9();
    }
    eprintln!("killed the node that took the large file");
    wait_until("the large file is stored by the other node", SYNC, || {
        c.listing().get("big.bin").map(|l| l.blake3.clone()) == Some(hash.clone())
    });
    if killed_first {
        assert!(other.alive());
    } else {
        assert!(c.storage.as_mut().unwrap().alive());
    }
    eprintln!("the large file is stored");
    let out = c.fetch(&["--target", &c.target.display().to_string(), "big.bin"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(file_hash(&c.target.join("big.bin")), hash);
    eprintln!("the large file is fetched");
    // The status says one node is down, and that the other serves.
    let status = run_bounded(
        c.dir.path(),
        &["status", "--broker", &c.broker_addr()],
        Duration::from_secs(60),
    );
    assert_ne!(status.status.code(), Some(0), "{}", show(&status));
    assert!(
        String::from_utf8_lossy(&status.stderr)
            .contains("is unreachable; 1 of the 2 storage nodes serve"),
        "{}",
        show(&status)
    );
    // More changes go on with one node.
    fs::write(c.source.join("later.txt"), "with one node").unwrap();
    c.wait_synced(SYNC);

    // The node that comes back is used again.
    let came_back = if killed_first {
        c.restart(Role::Storage);
        c.storage.as_ref().unwrap()
    } else {
        other = second_node(&c, &g, "two", other_base).0;
        &other
    };
    let before = stored_by(came_back);
    wait_until("the broker is connected to both nodes again", SYNC, || {
        let status = run_bounded(
            c.dir.path(),
            &["status", "--broker", &c.broker_addr()],
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&status.stdout).to_string();
        text.contains("storage nodes:") && !text.contains("DOWN")
    });
    for i in 0..20 {
        fs::write(c.source.join(format!("back-{i}.txt")), format!("back {i}")).unwrap();
    }
    c.wait_synced(SYNC);
    let came_back = if killed_first {
        c.storage.as_ref().unwrap()
    } else {
        &other
    };
    assert!(
        stored_by(came_back) > before,
        "the node that came back stored nothing"
    );
}
