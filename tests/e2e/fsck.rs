//! `dfs fsck` (docs/CONTRACT.md §3): finds every name missing from the node, extra on it, or whose content
//! no longer matches its hash, offline (`--data --storage`) and through the running broker;
//! `--repair` makes the index agree with the node, sets corrupt files aside, and the watcher's
//! periodic rescan sends the lost ones again until listing == source == node folders.

use crate::harness::*;
use crate::recovery::corrupt_in_place;
use std::fs;
use std::process::Output;
use std::time::Duration;

const SYNC: Duration = Duration::from_secs(120);

/// Starts the watcher like the harness does, with a periodic rescan every `secs` seconds.
fn start_watcher_rescanning(c: &mut Cluster, secs: u32) {
    c.start_watcher_with(&["--rescan-secs", &secs.to_string()]);
}

fn fsck(c: &Cluster, args: &[&str]) -> Output {
    let mut all = vec!["fsck"];
    all.extend_from_slice(args);
    run_bounded(c.dir.path(), &all, Duration::from_secs(180))
}

/// The finding lines of a text report: (kind, name), sorted.
fn findings(out: &Output) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("fsck:"))
        .map(|l| {
            let (kind, rest) = l.split_once(' ').unwrap();
            let name = rest.trim_start().split_once(':').unwrap().0;
            (kind.to_string(), name.to_string())
        })
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    v.sort();
    v
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn fsck_reports_and_repair_heals_with_the_watcher() {
    let mut c = Cluster::start_without_watcher();
    start_watcher_rescanning(&mut c, 2);
    fs::create_dir_all(c.source.join("sub")).unwrap();
    fs::write(c.source.join("a.txt"), "alpha").unwrap();
    fs::write(c.source.join("sub/b.txt"), "bravo").unwrap();
    fs::write(c.source.join("c.mp3"), random_bytes(3, 20_000)).unwrap();
    fs::write(c.source.join("d.pdf"), random_bytes(4, 9_000)).unwrap();
    write_big_file(&c.source.join("big.bin"), 5, (3 << 20) + 7);
    c.wait_synced(SYNC);
    let storage = format!("127.0.0.1:{}", c.base_port);
    let data = c.data.display().to_string();

    // A clean store checks clean, both ways.
    let out = fsck(&c, &["--broker", &c.broker_addr()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 files on the node checked"));

    drop(c.watch.take());
    drop(c.broker.take());
    let out = fsck(&c, &["--data", &data, "--storage", &storage]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // Damage behind everyone's back.
    fs::remove_file(c.root.join("txt/sub/b.txt")).unwrap();
    corrupt_in_place(&c.root.join("mp3/c.mp3"), 1_000, 16);
    corrupt_in_place(&c.root.join("others/big.bin"), 2 << 20, 16);
    let cp = std::process::Command::new("cp")
        .arg("--preserve=xattr")
        .arg(c.root.join("txt/a.txt"))
        .arg(c.root.join("txt/copy.txt"))
        .status()
        .unwrap();
    assert!(cp.success());
    {
        let index = broker::Index::open_existing(&c.data.join("index.db")).unwrap();
        index.remove("d.pdf").unwrap();
        index.flush().unwrap();
    }
    let damage = pairs(&[
        ("missing", "sub/b.txt"),
        ("corrupt", "c.mp3"),
        ("corrupt", "big.bin"),
        ("extra", "copy.txt"),
        ("extra", "d.pdf"),
    ]);

    // Offline, read-only: every finding, exit 1, nothing changed.
    let out = fsck(&c, &["--data", &data, "--storage", &storage]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(findings(&out), damage, "{}", show(&out));
    let out = fsck(&c, &["--data", &data, "--storage", &storage, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["corrupt"], 2, "{text}");
    assert_eq!(text.lines().count(), 6, "{text}");

    // Through the running broker: the same findings; the fetch port refuses to repair.
    c.start_broker();
    let out = fsck(&c, &["--broker", &c.broker_addr()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(findings(&out), damage, "{}", show(&out));
    let out = fsck(&c, &["--broker", &c.broker_addr(), "--repair"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never writes"));
    assert!(
        c.root.join("mp3/c.mp3").exists(),
        "a read-only fsck moved a file"
    );

    // The watcher comes back: it re-sends d.pdf (not listed), but believes the rest stored.
    start_watcher_rescanning(&mut c, 2);
    wait_until("d.pdf is indexed again", SYNC, || {
        c.listing().contains_key("d.pdf")
    });

    // Repair through the ingest port.
    let ingest = format!("127.0.0.1:{}", c.ingest_port);
    let out = fsck(&c, &["--broker", &ingest, "--repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let repaired = findings(&out);
    let want = pairs(&[
        ("missing", "sub/b.txt"),
        ("corrupt", "c.mp3"),
        ("corrupt", "big.bin"),
        ("extra", "copy.txt"),
    ]);
    assert_eq!(repaired, want, "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(stdout.matches("repaired:").count(), 4, "{stdout}");
    // The corrupt files are set aside, bytes kept, no longer in their class folder.
    for (class, name) in [("mp3", "c.mp3"), ("others", "big.bin")] {
        let aside = c.root.join(".dfs/quarantine").join(class).join(name);
        assert!(aside.is_file(), "{} missing", aside.display());
        assert_ne!(file_hash(&aside), file_hash(&c.source.join(name)));
    }

    // The periodic rescan refreshes the listing: the lost files come back, the adopted copy
    // (not in the source) is deleted.
    c.wait_synced(Duration::from_secs(180));
    let out = fsck(&c, &["--broker", &c.broker_addr()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let log = c.watch.as_ref().unwrap().log_text();
    assert!(log.contains("no longer holds"), "{log}");

    // An unreachable node exits 3.
    drop(c.broker.take());
    drop(c.storage.take());
    let out = fsck(
        &c,
        &["--data", &data, "--storage", &storage, "--timeout", "2"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
}

/// `dfs fsck` checks the versions the history keeps too (docs/CONTRACT.md §8): a kept content
/// damaged or gone is reported, through the broker and offline, and fails the check.
#[test]
fn fsck_checks_the_versions_the_history_keeps() {
    let mut c = Cluster::start();
    let file = c.source.join("a.txt");
    let versions: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(40 + i, 5_000)).collect();
    for (i, bytes) in versions.iter().enumerate() {
        fs::write(&file, bytes).unwrap();
        wait_until(&format!("v{}", i + 1), SYNC, || {
            c.listing().get("a.txt").map(|l| l.version) == Some(i as u64 + 1)
        });
    }
    let out = fsck(&c, &["--broker", &c.broker_addr()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // v1's kept content corrupted, v2's gone.
    let object = |bytes: &[u8]| {
        let hex = blake3::hash(bytes).to_hex().to_string();
        c.root.join(".dfs/objects").join(&hex[..2]).join(hex)
    };
    corrupt_in_place(&object(&versions[0]), 100, 16);
    fs::remove_file(object(&versions[1])).unwrap();
    let damage = pairs(&[("kept_corrupt", "a.txt"), ("kept_missing", "a.txt")]);
    let out = fsck(&c, &["--broker", &c.broker_addr()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(findings(&out), damage, "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("version 1") && text.contains("version 2"),
        "{text}"
    );
    assert!(
        text.contains("kept versions: 1 without content, 1 corrupt"),
        "{text}"
    );

    drop(c.watch.take());
    drop(c.broker.take());
    let storage = format!("127.0.0.1:{}", c.base_port);
    let data = c.data.display().to_string();
    let out = fsck(&c, &["--data", &data, "--storage", &storage]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(findings(&out), damage, "{}", show(&out));
}
