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

/// The human listing is a table with the SPEC's columns, sorted by name; -o - writes content.
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
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..3], ["a.mp3", "2", "mp3"]);
    assert_eq!(rows[1][..3], ["b.txt", "3", "txt"]);
    let out = c.fetch(&["-o", "-", "b.txt"]);
    assert_eq!(out.stdout, b"bee");
    assert!(!c.target.exists(), "-o - writes nothing into the target");
}
