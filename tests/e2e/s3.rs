//! The S3 backend on a real Garage cluster (docs/CONTRACT.md §9): three Garage nodes on
//! loopback, replication factor 3, fsync on. Skipped, saying why, where no `garage` binary is
//! found.

use crate::garage::{Garage, BUCKET};
use crate::harness::*;
use schema::Hash;
use std::fs;
use std::io::Write as _;
use std::process::Output;
use std::time::Duration;
use storage::bucket::{Bucket, PART_SIZE};

const SYNC: Duration = Duration::from_secs(120);

/// A client of the bucket through Garage node `i`.
pub fn bucket(g: &Garage, i: usize, url: &str) -> Bucket {
    g.client(i, url)
}

fn meta(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[test]
fn a_bucket_on_garage_keeps_objects_with_their_metadata_and_survives_a_lost_node() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut g) = Garage::start(dir.path()) else {
        return;
    };
    let b = bucket(&g, 0, &format!("s3://{BUCKET}/pre"));
    // Names with the characters object_store would otherwise encode keep their bytes.
    let odd = "txt/a [1] #~%é.txt";
    b.put(odd, b"hello".to_vec(), &meta(&[("dfs-version", "3")]))
        .unwrap();
    let (bytes, got) = b.get(odd).unwrap().expect("the object just put");
    assert_eq!(bytes, b"hello");
    assert!(got.contains(&("dfs-version".into(), "3".into())), "{got:?}");
    let head = b.head(odd).unwrap().unwrap();
    let (size, got) = (head.size, head.meta);
    assert_eq!(size, 5);
    assert!(got.contains(&("dfs-version".into(), "3".into())), "{got:?}");
    assert_eq!(b.list("txt").unwrap(), vec![(odd.to_string(), 5)]);
    // Any S3 client sees the key as it is, below the prefix.
    let top = bucket(&g, 1, &format!("s3://{BUCKET}"));
    assert_eq!(top.list("").unwrap(), vec![(format!("pre/{odd}"), 5)]);

    // A file larger than a part goes up in parts, hashed on the way; a wrong hash stores nothing.
    let big = random_bytes(7, 2 * PART_SIZE + 12_345);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&big).unwrap();
    let wrong = Hash::of(b"not it");
    let e = b
        .put_file("others/big.bin", &file, big.len() as u64, &[], wrong)
        .unwrap_err();
    assert!(e.to_string().contains("not stored"), "{e}");
    assert!(b.head("others/big.bin").unwrap().is_none());
    b.put_file(
        "others/big.bin",
        &file,
        big.len() as u64,
        &meta(&[("dfs-blake3", "x")]),
        Hash::of(&big),
    )
    .unwrap();
    let mut back = Vec::new();
    let got = b
        .get_into(
            "others/big.bin",
            |_, _| Ok(()),
            |p| {
                back.extend_from_slice(p);
                Ok(())
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(got.0, big.len() as u64);
    assert!(
        back == big,
        "the object read back differs from the file put"
    );

    // Paging after a key, then a delete.
    for n in ["txt/b.txt", "txt/c.txt", "txt/d.txt"] {
        b.put(n, n.as_bytes().to_vec(), &[]).unwrap();
    }
    let page = b.list_after("txt", Some("txt/b.txt"), 2).unwrap();
    assert_eq!(
        page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["txt/c.txt", "txt/d.txt"]
    );
    b.delete("txt/c.txt").unwrap();
    b.delete("txt/never.txt").unwrap();
    assert!(b.get("txt/c.txt").unwrap().is_none());

    // One Garage node lost (kill -9): with three copies and quorums of two, reads and writes
    // through the others go on.
    g.kill_node(0);
    let b1 = bucket(&g, 1, &format!("s3://{BUCKET}/pre"));
    assert_eq!(b1.get(odd).unwrap().unwrap().0, b"hello");
    b1.put("txt/after.txt", b"after".to_vec(), &[]).unwrap();
    let b2 = bucket(&g, 2, &format!("s3://{BUCKET}/pre"));
    assert_eq!(b2.get("txt/after.txt").unwrap().unwrap().0, b"after");
}

/// The S3 endpoint's options of a storage node on `g`, keeping its files below `prefix` of
/// the bucket.
pub fn backend_args(g: &Garage, prefix: &str) -> Vec<String> {
    [
        "--backend",
        &format!("s3://{BUCKET}/{prefix}"),
        "--s3-endpoint",
        &g.endpoint(0),
        "--s3-region",
        "garage",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A cluster whose storage node keeps its files below `prefix` of the bucket (through Garage
/// node 0), with the key in its environment; nothing started yet.
pub fn cluster_for(g: &Garage, prefix: &str) -> Cluster {
    let mut c = Cluster::new(&[]);
    c.storage_args = backend_args(g, prefix);
    c.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), g.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), g.secret.clone()),
    ];
    c.bucket = Some(bucket(g, 0, &format!("s3://{BUCKET}/{prefix}")));
    c
}

/// Storage node (on the bucket, through Garage node 0), broker and watcher.
pub fn cluster_on(g: &Garage, prefix: &str) -> Cluster {
    let mut c = cluster_for(g, prefix);
    c.start_storage(0);
    c.start_broker();
    c.start_watcher();
    c
}

pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_pipeline_on_garage_stores_every_class_as_objects_and_fetches_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Garage::start(dir.path()) else {
        return;
    };
    let mut c = cluster_on(&g, "pipeline");
    let s = c.source.clone();
    fs::create_dir_all(s.join("deep/er/still")).unwrap();
    fs::create_dir_all(s.join("ünï")).unwrap();
    fs::write(s.join("a.mp3"), random_bytes(1, 30_000)).unwrap();
    fs::write(s.join("b.txt"), "bravo").unwrap();
    fs::write(s.join("c.pdf"), random_bytes(3, 9_000)).unwrap();
    fs::write(s.join("d.bin"), random_bytes(4, 100)).unwrap();
    fs::write(s.join("deep/er/still/e.txt"), "echo").unwrap();
    fs::write(s.join("ünï/çødé [1] #~%.pdf"), "non-ASCII and odd").unwrap();
    fs::write(s.join("empty.txt"), "").unwrap();
    // Larger than a part: a multipart upload.
    write_big_file(&s.join("big.bin"), 5, 2 * PART_SIZE + 4321);
    c.wait_synced(SYNC);
    // Any S3 client sees the tree of ROOT/<class>/ in the bucket.
    let b = c.bucket.as_ref().unwrap();
    let keys: Vec<String> = b.list("").unwrap().into_iter().map(|(k, _)| k).collect();
    for k in [
        "mp3/a.mp3",
        "txt/b.txt",
        "pdf/c.pdf",
        "others/d.bin",
        "txt/deep/er/still/e.txt",
        "pdf/ünï/çødé [1] #~%.pdf",
        "txt/empty.txt",
        "others/big.bin",
    ] {
        assert!(
            keys.iter().any(|x| x == k),
            "{k} not in the bucket: {keys:?}"
        );
    }
    assert_eq!(
        b.head("others/big.bin").unwrap().unwrap().size,
        2 * PART_SIZE as u64 + 4321
    );
    // Nothing stays in the root but its lock and an empty temporary folder.
    assert_eq!(c.node_tmp_bytes(), 0);
    assert!(!c.root.join("txt/b.txt").exists());

    // Everything fetched back, byte for byte.
    let out = c.fetch(&["--target", &c.target.display().to_string(), "**"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(tree_hashes(&c.target), tree_hashes(&s));

    // Replaced, deleted and renamed.
    fs::write(s.join("b.txt"), "bravo, again").unwrap();
    fs::remove_file(s.join("d.bin")).unwrap();
    fs::rename(s.join("c.pdf"), s.join("deep/c-moved.pdf")).unwrap();
    c.wait_synced(SYNC);
    assert!(b.head("others/d.bin").unwrap().is_none());
    assert!(b.head("pdf/c.pdf").unwrap().is_none());
    let (moved, _) = b.get("pdf/deep/c-moved.pdf").unwrap().unwrap();
    assert_eq!(moved, random_bytes(3, 9_000));
    let out = c.fetch(&[
        "--target",
        &c.dir.path().join("t2").display().to_string(),
        "**",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(tree_hashes(&c.dir.path().join("t2")), tree_hashes(&s));

    // The broker's index lost: rebuilt from the bucket alone.
    drop(c.watch.take());
    drop(c.broker.take());
    fs::remove_dir_all(&c.data).unwrap();
    let before = tree_hashes(&s);
    c.start_broker();
    wait_until("the index is rebuilt from the bucket", SYNC, || {
        c.listed_hashes() == before
    });
}

#[test]
fn a_corrupted_object_is_refused_on_read_and_found_by_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Garage::start(dir.path()) else {
        return;
    };
    let mut c = cluster_on(&g, "corrupt");
    fs::write(c.source.join("good.txt"), "good").unwrap();
    fs::write(c.source.join("bad.txt"), "the original").unwrap();
    // Larger than a chunk: read while it is still coming from the store.
    fs::write(c.source.join("bad-big.bin"), random_bytes(11, 3 << 20)).unwrap();
    c.wait_synced(SYNC);
    drop(c.watch.take());
    // Rewritten behind dfs's back by a plain S3 client, metadata kept.
    let b = c.bucket.as_ref().unwrap();
    let (_, meta) = b.get("txt/bad.txt").unwrap().unwrap();
    let meta: Vec<(&str, String)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    b.put("txt/bad.txt", b"tampered!!!!".to_vec(), &meta)
        .unwrap();
    let (_, big_meta) = b.get("others/bad-big.bin").unwrap().unwrap();
    let big_meta: Vec<(&str, String)> = big_meta
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut tampered = random_bytes(11, 3 << 20);
    tampered[2 << 20] ^= 1;
    b.put("others/bad-big.bin", tampered, &big_meta).unwrap();
    let out = c.fetch(&["--target", &c.target.display().to_string(), "bad-big.bin"]);
    assert!(
        !out.status.success(),
        "a corrupted large object was served: {}",
        show(&out)
    );
    assert!(!c.target.join("bad-big.bin").exists());

    let out = c.fetch(&["--target", &c.target.display().to_string(), "bad.txt"]);
    assert!(
        !out.status.success(),
        "a corrupted object was served: {}",
        show(&out)
    );
    assert!(!c.target.join("bad.txt").exists());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hashes to"), "{err}");
    let out = c.fetch(&["--target", &c.target.display().to_string(), "good.txt"]);
    assert!(out.status.success(), "{}", show(&out));

    let fsck = run_bounded(
        c.dir.path(),
        &["fsck", "--broker", &c.broker_addr()],
        std::time::Duration::from_secs(120),
    );
    assert_eq!(fsck.status.code(), Some(1), "{}", show(&fsck));
    let report = String::from_utf8_lossy(&fsck.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("corrupt") && l.contains("bad.txt")),
        "{report}"
    );
    // A repair goes through the ingest port (the fetch port never writes).
    let ingest = format!("127.0.0.1:{}", c.ingest_port);
    let repaired = run_bounded(
        c.dir.path(),
        &["fsck", "--broker", &ingest, "--repair"],
        std::time::Duration::from_secs(120),
    );
    assert!(repaired.status.code().is_some(), "{}", show(&repaired));
    // Set aside in the bucket, out of the class tree.
    assert!(
        b.head("txt/bad.txt").unwrap().is_none(),
        "{}",
        show(&repaired)
    );
    assert!(b.head(".dfs/quarantine/txt/bad.txt").unwrap().is_some());
}

/// The rows of `dfs history --json NAME`: (version, state).
fn history_of(c: &Cluster, name: &str) -> Vec<(u64, String)> {
    let out = run_bounded(
        c.dir.path(),
        &["history", "--broker", &c.broker_addr(), "--json", name],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["version"].as_u64().unwrap(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn versions_replaced_deleted_and_moved_stay_in_the_bucket_and_restore_as_of_any_instant() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Garage::start(dir.path()) else {
        return;
    };
    let c = cluster_on(&g, "history");
    let s = c.source.clone();
    let drafts = ["first draft", "second draft", "final text"];
    fs::write(s.join("keep.mp3"), random_bytes(8, 2_000)).unwrap();
    fs::write(s.join("gone.pdf"), "deleted later").unwrap();
    fs::write(s.join("moved.txt"), "moved later").unwrap();
    let mut instants = Vec::new();
    for (i, text) in drafts.iter().enumerate() {
        fs::write(s.join("notes.txt"), text).unwrap();
        wait_until(&format!("notes.txt v{}", i + 1), SYNC, || {
            c.listing().get("notes.txt").map(|l| l.version) == Some(i as u64 + 1)
        });
        c.wait_synced(SYNC);
        // Not a wait for anything: an instant clear of this version's start and the next's.
        std::thread::sleep(Duration::from_millis(20));
        instants.push(humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string());
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = tree_hashes(&s);
    fs::remove_file(s.join("gone.pdf")).unwrap();
    fs::rename(s.join("moved.txt"), s.join("sub-moved.txt")).unwrap();
    c.wait_synced(SYNC);

    // In the bucket, outside the class tree: the contents once each, a record a name.
    let b = c.bucket.as_ref().unwrap();
    for text in [
        "first draft",
        "second draft",
        "deleted later",
        "moved later",
    ] {
        let key = format!(".dfs/objects/{}", blake3::hash(text.as_bytes()).to_hex());
        assert_eq!(
            b.get(&key).unwrap().map(|(bytes, _)| bytes).as_deref(),
            Some(text.as_bytes()),
            "{key}"
        );
    }
    assert!(b.head(".dfs/history/txt/notes.txt").unwrap().is_some());
    // `dfs status` counts those four contents, and their bytes, in the bucket.
    let status = run_bounded(
        c.dir.path(),
        &["status", "--broker", &c.broker_addr(), "--json"],
        Duration::from_secs(60),
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let kept = [
        "first draft",
        "second draft",
        "deleted later",
        "moved later",
    ];
    assert_eq!(report["storage"]["history_objects"], 4, "{report}");
    let bytes: usize = kept.iter().map(|t| t.len()).sum();
    assert_eq!(report["storage"]["history_bytes"], bytes as u64, "{report}");
    assert!(b.head("pdf/gone.pdf").unwrap().is_none());

    assert_eq!(
        history_of(&c, "notes.txt"),
        [
            (1, "replaced".into()),
            (2, "replaced".into()),
            (3, "current".into())
        ]
    );
    assert_eq!(history_of(&c, "gone.pdf"), [(1, "deleted".into())]);
    for (v, text) in [(1, "first draft"), (2, "second draft"), (3, "final text")] {
        let out = c.fetch(&["--version", &v.to_string(), "-o", "-", "notes.txt"]);
        assert!(out.status.success(), "v{v}: {}", show(&out));
        assert_eq!(out.stdout, text.as_bytes());
    }
    for (at, text) in instants.iter().zip(drafts) {
        let out = c.fetch(&["--at", at, "-o", "-", "notes.txt"]);
        assert!(out.status.success(), "{at}: {}", show(&out));
        assert_eq!(out.stdout, text.as_bytes(), "--at {at}");
    }
    // The whole tree as it was before the delete and the move.
    let then = c.dir.path().join("then");
    let out = c.fetch(&[
        "--at",
        instants.last().unwrap(),
        "--target",
        then.to_str().unwrap(),
        "**",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(tree_hashes(&then), before);
    let deleted = run_bounded(
        c.dir.path(),
        &["history", "--broker", &c.broker_addr(), "--deleted"],
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&deleted.stdout);
    assert!(
        text.contains("gone.pdf") && text.contains("moved.txt"),
        "{}",
        show(&deleted)
    );

    // fsck checks the kept versions too, and finds one changed in the bucket.
    let fsck = |c: &Cluster| {
        run_bounded(
            c.dir.path(),
            &["fsck", "--broker", &c.broker_addr()],
            Duration::from_secs(120),
        )
    };
    let clean = fsck(&c);
    assert_eq!(clean.status.code(), Some(0), "{}", show(&clean));
    let key = format!(".dfs/objects/{}", blake3::hash(b"first draft").to_hex());
    b.put(&key, b"first draft, tampered".to_vec(), &[]).unwrap();
    let found = fsck(&c);
    assert_eq!(found.status.code(), Some(1), "{}", show(&found));
    let report = String::from_utf8_lossy(&found.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("kept_corrupt") && l.contains("notes.txt")),
        "{report}"
    );
    // And the tampered version is refused, never served.
    let out = c.fetch(&["--version", "1", "-o", "-", "notes.txt"]);
    assert!(!out.status.success(), "{}", show(&out));
}

#[test]
fn the_retention_removes_old_versions_and_their_contents_from_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let Some(g) = Garage::start(dir.path()) else {
        return;
    };
    let mut c = cluster_for(&g, "prune");
    c.storage_args
        .extend(["--keep-history".to_string(), "2s".to_string()]);
    c.start_storage(0);
    c.start_broker();
    c.start_watcher();
    for text in ["one", "two"] {
        fs::write(c.source.join("a.txt"), text).unwrap();
        c.wait_synced(SYNC);
    }
    let b = c.bucket.as_ref().unwrap();
    assert!(!b.list(".dfs/history/").unwrap().is_empty());
    wait_until("the retention empties the history", SYNC, || {
        b.list(".dfs/history/").unwrap().is_empty() && b.list(".dfs/objects/").unwrap().is_empty()
    });
    // The current version is never touched.
    assert_eq!(b.get("txt/a.txt").unwrap().unwrap().0, b"two");
}
