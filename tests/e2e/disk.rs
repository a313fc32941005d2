//! docs/CONTRACT.md §4 Faults: a storage node whose disk fills up. The upload fails with a clear error that
//! the watcher logs once and retries with backoff; nothing partial is visible, nothing is
//! acknowledged, every process stays up and reads keep working; once space returns the file
//! arrives whole without anyone's help.

use crate::harness::*;
use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(60);
/// How long the full disk is watched before space is given back.
const FULL_FOR: Duration = Duration::from_secs(6);

#[test]
fn a_full_disk_fails_uploads_cleanly_and_sync_resumes_when_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a small file system for the node needs root");
        return;
    }
    let mnt = tempfile::Builder::new()
        .prefix("dfs-e2e-disk-")
        .tempdir()
        .unwrap();
    let small = mnt.path().join("small");
    // Declared before the cluster, so that it is unmounted after every process has stopped.
    let _mounted = match small_fs(&small, mnt.path(), 32) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: no small file system with user xattrs: {e}");
            return;
        }
    };
    let mut c = Cluster::start_without_watcher();
    c.move_storage_root(&small.join("node"));
    c.start_watcher();

    // Files stored before the disk fills; they must stay readable throughout.
    let mut others = BTreeMap::new();
    for i in 0..3u64 {
        let name = format!("kept/file{i}.txt");
        let bytes = random_bytes(100 + i, 256 << 10);
        fs::create_dir_all(c.source.join("kept")).unwrap();
        fs::write(c.source.join(&name), &bytes).unwrap();
        others.insert(name, bytes);
    }
    c.wait_synced(SYNC);
    let node_before = c.node_files();

    // Fill the disk but 4 MiB, then upload 12 MiB.
    let filler = small.join("filler");
    let free = free_bytes(&small);
    assert!(
        free > 8 << 20,
        "only {free} bytes free on the small file system"
    );
    write_big_file(&filler, 1, (free - (4 << 20)) as usize);
    let big = "video/big.bin";
    let big_hash = write_big_file(&c.source.join(big), 11, 12 << 20);

    let watch_log = |c: &Cluster| c.watch.as_ref().unwrap().log_text();
    wait_until("the watcher logs the full disk", SYNC, || {
        watch_log(&c).lines().any(|l| l.contains("No space left"))
    });
    let line = watch_log(&c)
        .lines()
        .find(|l| l.contains("No space left"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(big) && line.contains(&c.root.display().to_string()),
        "the error names neither the file nor the node: {line}"
    );

    // While the disk stays full: nothing partial under a class folder, nothing listed, every
    // process up, the other files still fetched whole.
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < FULL_FOR || rounds < 3 {
        rounds += 1;
        assert_eq!(
            c.node_files(),
            node_before,
            "the node's class folders changed"
        );
        let listed = c.listing();
        assert!(
            !listed.contains_key(big),
            "{big} listed while the disk is full"
        );
        let name = format!("kept/file{}.txt", rounds % 3);
        let out = c.fetch(&["--target", &c.target.display().to_string(), &name]);
        assert!(
            out.status.success(),
            "fetch of {name} during the full disk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(c.target.join(&name)).unwrap(), others[&name]);
        for p in [&mut c.watch, &mut c.broker, &mut c.storage] {
            let p = p.as_mut().unwrap();
            assert!(p.alive(), "{} died on the full disk", p.name);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Logged once, retried with backoff (not in a tight loop).
    let warned = watch_log(&c)
        .lines()
        .filter(|l| l.contains("No space left"))
        .count();
    assert_eq!(warned, 1, "the watcher logged the full disk {warned} times");
    let attempts = c
        .storage
        .as_ref()
        .unwrap()
        .log_text()
        .lines()
        .filter(|l| l.contains("No space left"))
        .count();
    assert!(
        (1..=20).contains(&attempts),
        "{attempts} failed attempts in {:?}: no backoff",
        started.elapsed()
    );

    // Space returns: the file arrives whole by itself, and nothing is left in the node's
    // temporary folder.
    fs::remove_file(&filler).unwrap();
    c.wait_synced(Duration::from_secs(120));
    assert_eq!(file_hash(&c.root.join("others").join(big)), big_hash);
    let out = c.fetch(&["--target", &c.target.display().to_string(), big]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(file_hash(&c.target.join(big)), big_hash);
    let tmp: Vec<_> = fs::read_dir(c.root.join(".dfs/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    eprintln!("full disk: {rounds} checks over {FULL_FOR:?}, {attempts} failed upload attempts");
}
