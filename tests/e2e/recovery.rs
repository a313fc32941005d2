//! Recovery (docs/CONTRACT.md §4): a broker whose sled database is missing or corrupt keeps the damaged copy
//! aside, rebuilds its index from the node, says so in its log and serves a complete listing;
//! temporary files of interrupted uploads are cleaned when the node starts; a stored file whose
//! bytes changed behind the node's back is never delivered.

use crate::harness::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SYNC: Duration = Duration::from_secs(120);

/// A few files of every class, one of them chunked, some in sub-folders.
fn fill_source(c: &Cluster) {
    fs::create_dir_all(c.source.join("music/live")).unwrap();
    fs::create_dir_all(c.source.join("docs")).unwrap();
    fs::write(c.source.join("notes.txt"), "notes").unwrap();
    fs::write(c.source.join("music/a.mp3"), random_bytes(1, 70_000)).unwrap();
    fs::write(c.source.join("music/live/b.mp3"), random_bytes(2, 10)).unwrap();
    fs::write(c.source.join("docs/report.pdf"), random_bytes(3, 5_000)).unwrap();
    fs::write(c.source.join("docs/empty"), b"").unwrap();
    write_big_file(&c.source.join("docs/big.bin"), 4, 3 << 20);
}

/// Stops the broker cleanly (SIGTERM), checking it exits 0.
fn stop_broker(c: &mut Cluster) {
    let mut broker = c.broker.take().expect("a running broker");
    let code = broker.stop_with(libc::SIGTERM, Duration::from_secs(20));
    assert_eq!(code, Some(0), "broker exit:\n{}", broker.log_text());
}

/// Entries of `dir` whose name starts with `prefix`.
fn entries_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// Waits until the restarted broker's listing is the source again, and checks it against the
/// node and the export.
fn assert_rebuilt(c: &Cluster) {
    let src = tree_hashes(&c.source);
    wait_until("the rebuilt listing equals the source", SYNC, || {
        c.listed_hashes() == src
    });
    c.wait_synced(SYNC);
    let node: BTreeMap<String, String> = c
        .node_files()
        .into_iter()
        .map(|(k, h)| (k.split_once('/').unwrap().1.to_string(), h))
        .collect();
    assert_eq!(node, src, "node folders");
    wait_until("index.txt lists every file", SYNC, || {
        let text = c.index_txt();
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        names == src.keys().map(String::as_str).collect::<Vec<_>>()
    });
}

/// The broker started with DATA/index.db gone rebuilds the index from the node and logs it.
#[test]
fn missing_index_database_is_rebuilt_from_the_node() {
    let mut c = Cluster::start();
    fill_source(&c);
    c.wait_synced(SYNC);
    let before = c.listing();
    stop_broker(&mut c);
    fs::remove_dir_all(c.data.join("index.db")).unwrap();
    c.start_broker();
    assert_rebuilt(&c);
    // Versions, sizes and classes come back as they were.
    assert_eq!(c.listing(), before);
    let log = c.broker.as_ref().unwrap().log_text();
    assert!(log.contains("created a new index"), "{log}");
    assert!(
        log.contains("rebuilt the index from the storage node") && log.contains(": 6 files"),
        "{log}"
    );
    // The watcher keeps syncing through the rebuilt index.
    fs::write(c.source.join("after.txt"), "after").unwrap();
    c.wait_synced(SYNC);
}

/// The broker started with garbage in its database files keeps the damaged copy aside as
/// `index.db.damaged-*`, rebuilds from the node and logs both.
#[test]
fn corrupt_index_database_is_kept_aside_and_rebuilt() {
    let mut c = Cluster::start();
    fill_source(&c);
    c.wait_synced(SYNC);
    stop_broker(&mut c);
    let db = c.data.join("index.db");
    let mut damaged = 0;
    for (name, _) in tree_hashes(&db) {
        let path = db.join(&name);
        let len = fs::metadata(&path).unwrap().len().max(64) as usize;
        fs::write(&path, random_bytes(99, len)).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0, "no files in {}", db.display());
    let garbage = tree_hashes(&db);
    c.start_broker();
    assert_rebuilt(&c);
    let aside = entries_starting(&c.data, "index.db.damaged-");
    assert_eq!(aside.len(), 1, "one damaged copy kept: {aside:?}");
    assert_eq!(
        tree_hashes(&aside[0]),
        garbage,
        "the damaged copy is kept as it was"
    );
    let log = c.broker.as_ref().unwrap().log_text();
    assert!(
        log.contains("is unusable") && log.contains(&aside[0].display().to_string()),
        "{log}"
    );
    assert!(
        log.contains("rebuilt the index from the storage node"),
        "{log}"
    );
}

/// A node killed in the middle of an upload leaves its temporary file; the next start removes
/// it (and says so), and the watcher's retry completes the file.
#[test]
fn temporary_files_of_interrupted_uploads_are_cleaned_at_start() {
    let mut c = Cluster::start();
    let tmp = c.root.join(".dfs/tmp");
    let hash = write_big_file(&c.source.join("huge.bin"), 7, 96 << 20);
    // The upload's temporary file is unnamed where the file system allows (O_TMPFILE: the
    // node holds it open in .dfs/tmp and it has no entry), named in .dfs/tmp otherwise.
    wait_until("an upload's temporary file exists", SYNC, || {
        c.node_tmp_bytes() > 0
    });
    let mut node = c.storage.take().unwrap();
    node.stop_with(libc::SIGKILL, Duration::from_secs(10));
    let mut left: Vec<PathBuf> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    // Leftovers of a crash of a node that named its temporary files: a file and a folder.
    fs::write(tmp.join("1234-00000001.part"), b"partial").unwrap();
    left.push(tmp.join("1234-00000001.part"));
    fs::create_dir_all(tmp.join("odd/inner")).unwrap();
    fs::write(tmp.join("odd/inner/x"), b"x").unwrap();
    left.push(tmp.join("odd"));
    assert!(!c.root.join("others/huge.bin").exists());
    c.start_storage(c.base_port);
    for path in &left {
        assert!(!path.exists(), "{} survived the restart", path.display());
    }
    let log = c.storage.as_ref().unwrap().log_text();
    assert!(
        log.contains("removed leftovers of interrupted uploads"),
        "{log}"
    );
    c.wait_synced(Duration::from_secs(240));
    assert_eq!(file_hash(&c.root.join("others/huge.bin")), hash);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "{tmp:?} not empty");
}

/// Overwrites `len` bytes at `offset` of `path` in place (same size, same metadata).
pub fn corrupt_in_place(path: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let size = f.metadata().unwrap().len();
    f.write_all_at(&random_bytes(offset + 17, len), offset)
        .unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.metadata().unwrap().len(), size);
}

/// A stored file whose bytes changed behind the node's back is never delivered: fetch exits 4
/// naming it and nothing lands under its name in the target; an intact file still arrives.
#[test]
fn changed_bytes_on_the_node_are_never_delivered() {
    let c = Cluster::start();
    fs::write(c.source.join("small.txt"), random_bytes(5, 3_000)).unwrap();
    write_big_file(&c.source.join("big.bin"), 6, (5 << 20) + 123);
    fs::write(c.source.join("fine.txt"), "fine").unwrap();
    c.wait_synced(SYNC);
    corrupt_in_place(&c.root.join("txt/small.txt"), 100, 8);
    // In the last chunk, so a reader that trusted the stream would have written all but that.
    corrupt_in_place(&c.root.join("others/big.bin"), 5 << 20, 8);
    let target = c.target.display().to_string();
    for name in ["small.txt", "big.bin"] {
        let out = c.fetch(&["--target", &target, name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{name}: {err}");
        assert!(err.contains(name) && err.contains("hash"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!c.target.join(name).exists(), "{name} was delivered");
        let out = c.fetch(&["-o", "-", name]);
        assert_eq!(out.status.code(), Some(4), "{name} to stdout");
    }
    let leftovers: Vec<String> = tree_hashes(&c.target).into_keys().collect();
    assert!(leftovers.is_empty(), "files in the target: {leftovers:?}");
    let out = c.fetch(&["--target", &target, "fine.txt"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fs::read(c.target.join("fine.txt")).unwrap(), b"fine");
}
