//! Volumes and owners (docs/CONTRACT.md §8): watchers of different folders on one broker each
//! keep their own volume; a watcher claiming another's volume is refused and changes nothing;
//! `--take-over` moves a volume; owners survive a broker restart and the loss of its index.

use crate::harness::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Starts `dfs watch --source SOURCE --broker ... EXTRA...` as `name` and waits until it
/// watches.
fn watcher(c: &Cluster, name: &str, source: &Path, extra: &[&str]) -> Proc {
    let ready = c.dir.path().join(format!("{name}.ready"));
    let mut args: Vec<String> = vec![
        "watch".into(),
        "--source".into(),
        source.display().to_string(),
        "--broker".into(),
        format!("127.0.0.1:{}", c.ingest_port),
        "--debounce-ms".into(),
        "100".into(),
        "--ready-file".into(),
        ready.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Proc::spawn(name, c.dir.path(), c.dir.path(), &args);
    p.wait_ready(&ready);
    p
}

/// A source folder `name` beside the cluster's, holding `files` (name, content).
fn folder(c: &Cluster, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = c.dir.path().join(name);
    for (f, content) in files {
        let path = dir.join(f);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn names(c: &Cluster) -> Vec<String> {
    c.listing().into_keys().collect()
}

/// Waits until the listing holds exactly `want`.
fn wait_listed(c: &Cluster, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_until(
        &format!("the listing is {want:?}"),
        Duration::from_secs(30),
        || names(c) == want,
    );
}

/// Waits for `p` to exit and returns its exit code.
fn exit_code(p: &mut Proc) -> Option<i32> {
    wait_until(
        &format!("{} exits", p.name),
        Duration::from_secs(30),
        || !p.is_running(),
    );
    p.child.try_wait().ok().flatten().and_then(|s| s.code())
}

#[test]
fn watchers_of_different_folders_keep_their_own_volumes() {
    let mut c = Cluster::start_without_watcher();
    fs::write(c.source.join("shared.txt"), "root's").unwrap();
    fs::write(c.source.join("a1.txt"), "root only").unwrap();
    c.start_watcher();
    wait_listed(&c, &["a1.txt", "shared.txt"]);

    // A second folder as the volume photos: its files are stored under photos/, and nothing of
    // the root volume is deleted or overwritten.
    let pics = folder(
        &c,
        "pics",
        &[("shared.txt", "photos'"), ("cat.jpg", "meow")],
    );
    let _photos = watcher(&c, "photos", &pics, &["--volume", "photos"]);
    wait_listed(
        &c,
        &[
            "a1.txt",
            "photos/cat.jpg",
            "photos/shared.txt",
            "shared.txt",
        ],
    );
    let target = c.dir.path().join("out");
    let out = c.fetch(&[
        "--target",
        target.to_str().unwrap(),
        "shared.txt",
        "photos/shared.txt",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(target.join("shared.txt")).unwrap(),
        "root's"
    );
    assert_eq!(
        fs::read_to_string(target.join("photos/shared.txt")).unwrap(),
        "photos'"
    );

    // Each keeps syncing its own changes only: a delete in one folder leaves the other alone.
    fs::remove_file(pics.join("shared.txt")).unwrap();
    fs::write(c.source.join("a2.txt"), "new in root").unwrap();
    wait_listed(&c, &["a1.txt", "a2.txt", "photos/cat.jpg", "shared.txt"]);

    // A third folder claiming photos is refused at start, names the owner, changes nothing.
    let intruder = folder(&c, "intruder", &[("evil.txt", "x")]);
    let mut third = watcher(&c, "third", &intruder, &["--volume", "photos"]);
    assert_eq!(exit_code(&mut third), Some(1), "{}", third.log_text());
    let log = third.log_text();
    assert!(
        log.contains("volume photos is owned by") && log.contains("pics"),
        "{log}"
    );
    // And a second watcher of the root volume from another folder is refused the same way.
    let mut other_root = watcher(&c, "other-root", &intruder, &[]);
    assert_eq!(
        exit_code(&mut other_root),
        Some(1),
        "{}",
        other_root.log_text()
    );
    assert!(other_root
        .log_text()
        .contains("the root volume is owned by"));
    assert_eq!(
        names(&c),
        ["a1.txt", "a2.txt", "photos/cat.jpg", "shared.txt"],
        "a refused watcher changes nothing"
    );

    // Owners survive a broker restart: the intruder is still refused; the owners go on.
    c.take(Role::Broker);
    c.start_broker();
    let mut again = watcher(&c, "third-again", &intruder, &["--volume", "photos"]);
    assert_eq!(exit_code(&mut again), Some(1), "{}", again.log_text());
    fs::write(pics.join("dog.jpg"), "woof").unwrap();
    fs::write(c.source.join("a3.txt"), "after the restart").unwrap();
    wait_listed(
        &c,
        &[
            "a1.txt",
            "a2.txt",
            "a3.txt",
            "photos/cat.jpg",
            "photos/dog.jpg",
            "shared.txt",
        ],
    );
}

#[test]
fn take_over_moves_a_volume_to_a_new_folder() {
    let c = Cluster::start_without_watcher();
    let old = folder(&c, "old-laptop", &[("notes.txt", "v1")]);
    let mut first = watcher(&c, "first", &old, &["--volume", "notes"]);
    wait_listed(&c, &["notes/notes.txt"]);
    let _ = first.stop_with(libc::SIGTERM, Duration::from_secs(10));

    let new = folder(&c, "new-laptop", &[("notes.txt", "v2"), ("todo.txt", "t")]);
    let mut refused = watcher(&c, "refused", &new, &["--volume", "notes"]);
    assert_eq!(exit_code(&mut refused), Some(1), "{}", refused.log_text());
    assert!(refused.log_text().contains("--take-over"));

    let _second = watcher(&c, "second", &new, &["--volume", "notes", "--take-over"]);
    wait_until(
        "the new folder's content is stored",
        Duration::from_secs(30),
        || {
            let l = c.listing();
            l.len() == 2
                && l.get("notes/notes.txt").map(|e| e.size) == Some(2)
                && l.contains_key("notes/todo.txt")
        },
    );
    let broker_log = c.broker.as_ref().unwrap().log_text();
    assert!(
        broker_log.contains("volume notes taken over by") && broker_log.contains("old-laptop"),
        "{broker_log}"
    );
    // The old laptop is now the stranger.
    let mut back = watcher(&c, "back", &old, &["--volume", "notes"]);
    assert_eq!(exit_code(&mut back), Some(1), "{}", back.log_text());
}

#[test]
fn owners_and_history_come_back_when_the_broker_loses_its_index() {
    let mut c = Cluster::start_without_watcher();
    let laptop = folder(&c, "laptop", &[("notes.txt", "v1")]);
    let mut first = watcher(&c, "first", &laptop, &["--volume", "notes"]);
    wait_listed(&c, &["notes/notes.txt"]);
    fs::write(laptop.join("notes.txt"), "v2").unwrap();
    wait_until("v2 is stored", Duration::from_secs(30), || {
        c.listing().get("notes/notes.txt").map(|l| l.version) == Some(2)
    });
    // The broker copies the owner to the node, where a rebuild finds it.
    let recorded = c.root.join(".dfs/owners.json");
    wait_until(
        "the node records the owner",
        Duration::from_secs(30),
        || {
            fs::read_to_string(&recorded)
                .is_ok_and(|t| t.contains("\"notes\"") && t.contains("laptop"))
        },
    );
    let _ = first.stop_with(libc::SIGTERM, Duration::from_secs(10));

    // The broker's index is lost: it rebuilds it, owners first, from the node.
    let _ = c
        .take(Role::Broker)
        .stop_with(libc::SIGTERM, Duration::from_secs(10));
    fs::remove_dir_all(&c.data).unwrap();
    c.restart(Role::Broker);
    wait_listed(&c, &["notes/notes.txt"]);
    let log = c.broker.as_ref().unwrap().log_text();
    assert!(log.contains("1 volume owners back from the node"), "{log}");

    // Another folder claiming the volume is refused, naming the owner, and changes nothing.
    let other = folder(&c, "other", &[("notes.txt", "a stranger's")]);
    let mut stranger = watcher(&c, "stranger", &other, &["--volume", "notes"]);
    assert_eq!(exit_code(&mut stranger), Some(1), "{}", stranger.log_text());
    assert!(
        stranger.log_text().contains("laptop"),
        "{}",
        stranger.log_text()
    );
    assert_eq!(c.listing()["notes/notes.txt"].version, 2);

    // The owner carries on, and the history of before the loss is still there.
    let _again = watcher(&c, "again", &laptop, &["--volume", "notes"]);
    fs::write(laptop.join("notes.txt"), "v3").unwrap();
    wait_until("v3 is stored", Duration::from_secs(30), || {
        c.listing().get("notes/notes.txt").map(|l| l.version) == Some(3)
    });
    for (version, text) in [("1", "v1"), ("2", "v2")] {
        let out = c.fetch(&["--version", version, "-o", "-", "notes/notes.txt"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, text.as_bytes());
    }
}
