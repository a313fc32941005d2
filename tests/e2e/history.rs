//! History on the node (docs/CONTRACT.md §8): every replaced or deleted version stays, with its
//! bytes, outside the class folders, until the retention removes it.

use crate::harness::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// The bytes kept for the content hash `hex`.
fn object(root: &Path, hex: &str) -> Option<Vec<u8>> {
    fs::read(root.join(".dfs/objects").join(&hex[..2]).join(hex)).ok()
}

#[test]
fn replaced_and_deleted_versions_stay_on_the_node_with_their_bytes() {
    let c = Cluster::start();
    let file = c.source.join("notes.txt");
    let contents = ["first draft", "second draft", "final text"];
    // An instant while each version was the current one.
    let mut instants = Vec::new();
    for (i, text) in contents.iter().enumerate() {
        fs::write(&file, text).unwrap();
        let want = i as u64 + 1;
        wait_until(
            &format!("version {want} is stored"),
            Duration::from_secs(30),
            || listed_version(&c, "notes.txt") == Some(want),
        );
        instants.push(instant_between());
    }
    fs::remove_file(&file).unwrap();
    wait_until("the delete is synced", Duration::from_secs(30), || {
        !c.listing().contains_key("notes.txt")
    });
    assert!(
        !c.root.join("txt/notes.txt").exists(),
        "the class folder keeps current files only"
    );

    let kept = node_versions(&c.root, "txt", "notes.txt");
    let summary: Vec<(u64, bool)> = kept.iter().map(|(v, d, _)| (*v, *d)).collect();
    assert_eq!(summary, [(1, false), (2, false), (3, true)], "{kept:?}");
    for ((_, _, hex), text) in kept.iter().zip(contents) {
        assert_eq!(hex, &blake3::hash(text.as_bytes()).to_hex().to_string());
        assert_eq!(
            object(&c.root, hex).as_deref(),
            Some(text.as_bytes()),
            "{text}"
        );
    }

    // `dfs status` says what the history holds: three contents, all its own now.
    let broker = c.broker_addr();
    let status = run_bounded(
        c.dir.path(),
        &["status", "--broker", &broker, "--json"],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let total: usize = contents.iter().map(|t| t.len()).sum();
    assert_eq!(report["storage"]["history_objects"], 3, "{report}");
    assert_eq!(report["storage"]["history_bytes"], total as u64, "{report}");

    // `dfs history` lists them; `dfs fetch --version N` brings any of them back, verified.
    let out = run_bounded(
        c.dir.path(),
        &["history", "--broker", &broker, "--json", "notes.txt"],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r["version"].as_u64().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(1, "replaced"), (2, "replaced"), (3, "deleted")]);
    let table = run_bounded(
        c.dir.path(),
        &["history", "--broker", &broker, "notes.txt"],
        Duration::from_secs(30),
    );
    assert_eq!(String::from_utf8_lossy(&table.stdout).lines().count(), 3);

    let target = c.dir.path().join("restored");
    for (version, text) in [(2, "second draft"), (1, "first draft"), (3, "final text")] {
        let v = version.to_string();
        let out = c.fetch(&[
            "--target",
            target.to_str().unwrap(),
            "--version",
            &v,
            "notes.txt",
        ]);
        assert!(
            out.status.success(),
            "v{v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read_to_string(target.join("notes.txt")).unwrap(), text);
        let out = c.fetch(&["--version", &v, "-o", "-", "notes.txt"]);
        assert_eq!(out.stdout, text.as_bytes());
    }
    // `--at` picks the version current then, the deleted name included.
    for (at, text) in instants.iter().zip(contents) {
        let out = c.fetch(&["--at", at, "-o", "-", "notes.txt"]);
        assert!(
            out.status.success(),
            "{at}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, text.as_bytes(), "--at {at}");
    }
    let now = c.fetch(&["--at", "0s", "-o", "-", "notes.txt"]);
    assert_eq!(now.status.code(), Some(1), "deleted by now");
    assert!(String::from_utf8_lossy(&now.stderr).contains("did not exist at 0s"));
    let missing = c.fetch(&[
        "--target",
        target.to_str().unwrap(),
        "--version",
        "9",
        "notes.txt",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("version 9"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn the_retention_removes_old_versions_and_never_a_current_file() {
    let c = Cluster::start_with_storage_args(&["--keep-history", "2s"]);
    let file = c.source.join("a.txt");
    fs::write(&file, "old").unwrap();
    wait_until("v1", Duration::from_secs(30), || {
        listed_version(&c, "a.txt") == Some(1)
    });
    fs::write(&file, "new").unwrap();
    wait_until("v2", Duration::from_secs(30), || {
        listed_version(&c, "a.txt") == Some(2)
    });
    assert_eq!(node_versions(&c.root, "txt", "a.txt").len(), 1);
    let old = blake3::hash(b"old").to_hex().to_string();
    assert_eq!(object(&c.root, &old).as_deref(), Some(&b"old"[..]));
    wait_until(
        "the retention removes the old version and its bytes",
        Duration::from_secs(30),
        || node_versions(&c.root, "txt", "a.txt").is_empty() && object(&c.root, &old).is_none(),
    );
    assert_eq!(fs::read(c.root.join("txt/a.txt")).unwrap(), b"new");
    let out = c.fetch(&["--target", c.target.to_str().unwrap(), "a.txt"]);
    assert!(out.status.success());
    assert_eq!(fs::read(c.target.join("a.txt")).unwrap(), b"new");
    let log = c.storage.as_ref().unwrap().log_text();
    assert!(log.contains("history: removed 1 versions"), "{log}");
}

#[test]
fn a_fetch_run_again_leaves_identical_files_alone_and_mends_the_rest() {
    use std::os::unix::fs::MetadataExt;
    let c = Cluster::start();
    let big = random_bytes(7, 3 << 20);
    fs::write(c.source.join("big.bin"), &big).unwrap();
    fs::write(c.source.join("small.txt"), "small").unwrap();
    c.wait_synced(Duration::from_secs(60));
    let target = c.target.to_str().unwrap().to_string();
    let fetch_all = || {
        let out = c.fetch(&["--target", &target, "big.bin", "small.txt"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fetch_all();
    let inode = |n: &str| fs::metadata(c.target.join(n)).unwrap().ino();
    let (big_ino, small_ino) = (inode("big.bin"), inode("small.txt"));
    // Run again over a complete target: nothing is rewritten.
    fetch_all();
    assert_eq!((inode("big.bin"), inode("small.txt")), (big_ino, small_ino));
    // Damage one file (same size, other bytes): only that one is fetched again.
    fs::write(c.target.join("small.txt"), "SMALL").unwrap();
    let damaged = inode("small.txt");
    fetch_all();
    assert_eq!(fs::read(c.target.join("small.txt")).unwrap(), b"small");
    assert_ne!(inode("small.txt"), damaged, "the damaged file was replaced");
    assert_eq!(inode("big.bin"), big_ino, "the intact one was left alone");
    assert_eq!(fs::read(c.target.join("big.bin")).unwrap(), big);
}

#[test]
fn past_its_budget_the_node_drops_the_oldest_versions_first_and_says_so() {
    let c = Cluster::start_with_storage_args(&["--history-budget", "10KiB"]);
    let file = c.source.join("a.txt");
    // Eight versions of 4 KiB: seven replaced, 28 KiB against a budget of 10 KiB.
    let contents: Vec<Vec<u8>> = (0..8).map(|i| random_bytes(i, 4096)).collect();
    for (i, bytes) in contents.iter().enumerate() {
        fs::write(&file, bytes).unwrap();
        wait_until(&format!("v{}", i + 1), Duration::from_secs(30), || {
            listed_version(&c, "a.txt") == Some(i as u64 + 1)
        });
    }
    let kept = |c: &Cluster| -> Vec<u64> {
        node_versions(&c.root, "txt", "a.txt")
            .into_iter()
            .map(|(v, _, _)| v)
            .collect()
    };
    wait_until(
        "the history is brought within its budget",
        Duration::from_secs(30),
        || kept(&c).len() <= 2,
    );
    // The newest replaced versions stay, each with its bytes; the current file is untouched.
    assert_eq!(kept(&c), [6, 7]);
    for (v, _, hex) in node_versions(&c.root, "txt", "a.txt") {
        assert_eq!(
            object(&c.root, &hex).as_deref(),
            Some(&contents[v as usize - 1][..])
        );
    }
    assert_eq!(fs::read(c.root.join("txt/a.txt")).unwrap(), contents[7]);
    let log = c.storage.as_ref().unwrap().log_text();
    assert!(
        log.contains("history: over its budget of 10.0 KiB: removed"),
        "{log}"
    );
}
