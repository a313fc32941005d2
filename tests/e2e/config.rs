//! Daemons configured by TOML files (`--config FILE`, `DFS_CONFIG`) instead of flags.

use crate::harness::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Writes `text` to `dir/name` and returns the path as a string.
fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn three_daemons_run_from_their_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (source, root, data) = (d.join("source"), d.join("node"), d.join("server"));
    fs::create_dir_all(&source).unwrap();
    // Present at start: the first scan sees the ignored file and the synced one together.
    fs::write(source.join("skipped.tmp"), "not synced").unwrap();
    fs::write(source.join("kept.txt"), "synced from a config").unwrap();

    let storage_ready = d.join("storage.ready");
    let storage_toml = write_config(
        d,
        "storage.toml",
        &format!(
            "root = {:?}\nbind = \"127.0.0.1\"\nbase-port = 0\nsync-threads = 2\nready-file = {:?}\n",
            root.display().to_string(),
            storage_ready.display().to_string()
        ),
    );
    let mut storage = Proc::spawn(
        "storage",
        d,
        d,
        &["storage".into(), "--config".into(), storage_toml],
    );
    let base = storage.wait_ready(&storage_ready)["base_port"]
        .as_u64()
        .unwrap();

    let broker_ready = d.join("broker.ready");
    let broker_toml = write_config(
        d,
        "broker.toml",
        &format!(
            "data = {:?}\nbind = \"127.0.0.1\"\ningest-port = 0\nfetch-port = 0\n\
             storage = \"127.0.0.1:{base}\"\nready-file = {:?}\n",
            data.display().to_string(),
            broker_ready.display().to_string()
        ),
    );
    let mut broker = Proc::spawn(
        "broker",
        d,
        d,
        &["broker".into(), "--config".into(), broker_toml],
    );
    let ports = broker.wait_ready(&broker_ready);
    let (ingest, fetch) = (
        ports["ingest_port"].as_u64().unwrap(),
        ports["fetch_port"].as_u64().unwrap(),
    );

    let watch_ready = d.join("watch.ready");
    let watch_toml = write_config(
        d,
        "watch.toml",
        &format!(
            "source = {:?}\nbroker = \"127.0.0.1:{ingest}\"\nignore = [\"*.tmp\", \"build/\"]\n\
             debounce-ms = 100\nready-file = {:?}\n",
            source.display().to_string(),
            watch_ready.display().to_string()
        ),
    );
    let mut watch = Proc::spawn(
        "watch",
        d,
        d,
        &["watch".into(), "--config".into(), watch_toml],
    );
    watch.wait_ready(&watch_ready);

    let addr = format!("127.0.0.1:{fetch}");
    let listing = || {
        parse_listing(
            &run_bounded(
                d,
                &["fetch", "--json", "--broker", &addr],
                Duration::from_secs(30),
            )
            .stdout,
        )
    };
    wait_until("kept.txt is listed", Duration::from_secs(30), || {
        listing().contains_key("kept.txt")
    });
    assert_eq!(
        fs::read(root.join("txt/kept.txt")).unwrap(),
        b"synced from a config"
    );
    assert_eq!(
        listing().keys().collect::<Vec<_>>(),
        ["kept.txt"],
        "the ignore list of watch.toml applies"
    );
    // The journal gets one info line per file synced.
    let synced = |w: &Proc| {
        w.log_text()
            .lines()
            .filter(|l| l.contains("INFO") && l.contains("synced kept.txt ("))
            .count()
    };
    wait_until(
        "the watcher logs kept.txt as synced",
        Duration::from_secs(30),
        || synced(&watch) > 0,
    );
    for p in [&mut watch, &mut broker, &mut storage] {
        assert_eq!(
            p.stop_with(libc::SIGTERM, Duration::from_secs(20)),
            Some(0),
            "{}",
            p.name
        );
    }
}

#[test]
fn the_command_line_wins_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ready = d.join("storage.ready");
    // The file's root cannot be made (its parent is a file): the node starts only if the
    // command line's root wins.
    fs::write(d.join("a-file"), "").unwrap();
    let toml = write_config(
        d,
        "storage.toml",
        &format!(
            "root = {:?}\nbind = \"127.0.0.1\"\nbase-port = 1\n",
            d.join("a-file/node").display().to_string()
        ),
    );
    let root = d.join("node");
    let args: Vec<String> = [
        "storage",
        "--config",
        &toml,
        "--root",
        &root.display().to_string(),
        "--base-port",
        "0",
        "--ready-file",
        &ready.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn("storage", d, d, &args);
    let v = p.wait_ready(&ready);
    assert!(
        root.join("txt").is_dir(),
        "the node's root is the command line's"
    );
    assert_ne!(
        v["base_port"].as_u64().unwrap(),
        1,
        "the port is the command line's"
    );
}

#[test]
fn a_bad_config_file_is_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = write_config(
        d,
        "broker.toml",
        "data = \"/tmp/x\"\ningest-port = \"twelve\"\n",
    );
    let out = run_bounded(d, &["broker", "--config", &toml], Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("dfs: config file {toml}, line 2: ingest-port = \"twelve\": invalid digit found in string")
    );

    let toml = write_config(d, "watch.toml", "sorce = \"/srv/share\"\n");
    let out = run_bounded(d, &["watch", "--config", &toml], Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown key \"sorce\" for dfs watch (did you mean \"source\"?)"),
        "{err}"
    );
}
