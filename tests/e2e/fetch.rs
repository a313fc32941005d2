//! `dfs fetch`: listing formats, exit codes and the names it refuses.

use crate::harness::*;
use std::fs;
use std::time::{Duration, Instant};

/// A missing name exits 1 with one line naming it; the other names still arrive.
#[test]
fn missing_names_exit_1_and_the_others_still_arrive() {
    let c = Cluster::start();
    fs::write(c.source.join("here.txt"), "here").unwrap();
    c.wait_synced(Duration::from_secs(60));
    let target = c.target.display().to_string();
    let out = c.fetch(&["--target", &target, "nope.txt", "here.txt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.txt"), "stderr names the file: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(fs::read(c.target.join("here.txt")).unwrap(), b"here");
}

/// Names that would escape the target are refused and nothing is written outside it.
#[test]
fn names_that_escape_the_target_are_refused() {
    let c = Cluster::start_without_watcher();
    let before = tree_hashes(c.dir.path());
    let target = c.target.display().to_string();
    for evil in [
        "../evil.txt",
        "/tmp/evil.txt",
        "a/../../evil.txt",
        "a\\..\\evil",
    ] {
        let out = c.fetch(&["--target", &target, evil]);
        assert_ne!(out.status.code(), Some(0), "{evil} accepted");
        assert!(
            matches!(out.status.code(), Some(1) | Some(2)),
            "{evil}: {:?}",
            out.status
        );
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
    let after: Vec<String> = tree_hashes(c.dir.path())
        .into_keys()
        .filter(|k| {
            !before.contains_key(k) && !k.ends_with(".log") && !k.starts_with("server/myIndex/")
        })
        .collect();
    assert!(after.is_empty(), "files appeared: {after:?}");
    assert!(!std::path::Path::new("/tmp/evil.txt").exists());
}

/// With nothing listening at the broker's address, fetch exits 3 within its timeout.
#[test]
fn unreachable_broker_exits_3_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    for args in [
        vec!["fetch", "--broker", &addr, "--timeout", "1"],
        vec!["fetch", "--broker", &addr, "--timeout", "1", "a.txt"],
    ] {
        let t = Instant::now();
        let out = run_bounded(dir.path(), &args, Duration::from_secs(20));
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&port.to_string()), "names the broker: {err}");
    }
}

/// The human listing is a table with the contract's columns, sorted by name; -o - writes content.
#[test]
fn human_listing_and_stdout_output() {
    let c = Cluster::start();
    fs::write(c.source.join("b.txt"), "bee").unwrap();
    fs::write(c.source.join("a.mp3"), "ay").unwrap();
    c.wait_synced(Duration::from_secs(60));
    let out = c.fetch(&[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "CLASS", "MODIFIED"]);
    // Sizes are for people: a number and a unit.
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..4], ["a.mp3", "2", "B", "mp3"]);
    assert_eq!(rows[1][..4], ["b.txt", "3", "B", "txt"]);
    let out = c.fetch(&["-o", "-", "b.txt"]);
    assert_eq!(out.stdout, b"bee");
    assert!(!c.target.exists(), "-o - writes nothing into the target");
}

/// Glob patterns select stored files (`*` within a folder, `**` across), `--class` keeps one
/// class in listings and retrievals, a pattern that matches nothing exits 1 naming it, and a
/// piped retrieval of a large file prints nothing on stderr (no progress bar).
#[test]
fn globs_class_and_human_sizes() {
    let c = Cluster::start();
    for (name, len) in [
        ("music/a.mp3", 10),
        ("music/b.mp3", 20),
        ("music/sub/c.mp3", 30),
        ("notes.txt", 5),
    ] {
        let path = c.source.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(len as u64, len)).unwrap();
    }
    let big = write_big_file(&c.source.join("big.bin"), 7, 5 << 20);
    c.wait_synced(Duration::from_secs(120));
    let fetched =
        |dir: &str| -> Vec<String> { tree_hashes(&c.dir.path().join(dir)).into_keys().collect() };
    let target = |dir: &str| c.dir.path().join(dir).display().to_string();

    let out = c.fetch(&["--target", &target("t1"), "music/*.mp3"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fetched("t1"), ["music/a.mp3", "music/b.mp3"]);

    let out = c.fetch(&["--target", &target("t2"), "**/*.mp3", "notes.txt"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fetched("t2"),
        ["music/a.mp3", "music/b.mp3", "music/sub/c.mp3", "notes.txt"]
    );

    let out = c.fetch(&["--target", &target("t3"), "--class", "txt", "*"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fetched("t3"), ["notes.txt"]);

    // A pattern that matches nothing: exit 1, one line naming it; the other pattern still works.
    let out = c.fetch(&["--target", &target("t4"), "nothing/*.mp3", "*.txt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("nothing/*.mp3") && err.contains("no stored file matches"),
        "{err}"
    );
    assert_eq!(fetched("t4"), ["notes.txt"]);

    // A named file of another class is refused under --class.
    let out = c.fetch(&["--target", &target("t5"), "--class", "mp3", "notes.txt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notes.txt") && err.contains("class txt"),
        "{err}"
    );
    assert!(fetched("t5").is_empty());

    // A large file, piped: the content arrives and stderr stays empty.
    let out = c.fetch(&["--target", &target("t6"), "big.bin"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(file_hash(&c.dir.path().join("t6/big.bin")), big);

    // Listings: --class keeps one class; sizes read 5.0 MiB.
    let out = c.fetch(&["--class", "mp3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["music/a.mp3", "music/b.mp3", "music/sub/c.mp3"]);
    let out = c.fetch(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("big.bin")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..4],
        ["5.0", "MiB", "others"]
    );
    // --json keeps exact bytes.
    assert_eq!(c.listing()["big.bin"].size, 5 << 20);
}

/// A restore of many files (docs/CONTRACT.md §3: several names at a time): every file lands with
/// its bytes, small and large, nested and empty; run again over the complete target it asks
/// the broker for no file at all; after damage it asks for exactly the damaged ones.
#[test]
fn a_restore_of_many_files_lands_them_all_and_a_rerun_asks_only_for_what_is_wrong() {
    use crate::metrics::{cluster_with_metrics, scrape, value};
    let (c, metrics) = cluster_with_metrics();
    for i in 0..300usize {
        let dir = ["", "a/", "a/b/", "c/"][i % 4];
        let ext = ["txt", "mp3", "pdf", "bin"][i % 4];
        let len = match i {
            0 => 0,
            1..=3 => 200_000 + i, // above INLINE_MAX: read one at a time after the others
            _ => 1 + (i * 131) % 60_000,
        };
        let path = c.source.join(format!("{dir}f{i}.{ext}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(i as u64, len)).unwrap();
    }
    c.wait_all_agree(Duration::from_secs(120));
    let served = || value(&scrape(&metrics[1]), "dfs_broker_files_served_total");
    let before = served();
    let target = c.dir.path().join("restored");
    let restore = || {
        let out = c.fetch(&["--target", target.to_str().unwrap(), "**"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    restore();
    assert_eq!(tree_hashes(&target), tree_hashes(&c.source));
    assert_eq!(served() - before, 300.0, "each file read once");

    let after_first = served();
    restore();
    assert_eq!(
        served(),
        after_first,
        "a run over the complete target reads nothing"
    );

    fs::remove_file(target.join("a/f1.mp3")).unwrap();
    fs::write(target.join("c/f7.bin"), b"other bytes").unwrap();
    fs::remove_file(target.join("f0.txt")).unwrap();
    restore();
    assert_eq!(tree_hashes(&target), tree_hashes(&c.source));
    assert_eq!(
        served() - after_first,
        3.0,
        "only the damaged files are read"
    );
}
