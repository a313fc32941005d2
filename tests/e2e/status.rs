//! `dfs status`: the broker, its node and watchers' status files, human and JSON, and the exit
//! codes (0 healthy, 3 broker or node unreachable, 1 otherwise unhealthy).

use crate::harness::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Runs `dfs status --broker <this broker> ARGS...`, bounded.
fn status(c: &Cluster, args: &[&str]) -> Output {
    let addr = c.broker_addr();
    let mut all = vec!["status", "--broker", &addr, "--timeout", "20"];
    all.extend_from_slice(args);
    run_bounded(c.dir.path(), &all, Duration::from_secs(60))
}

/// `dfs status --json ...` parsed, with its exit code and stderr.
pub fn status_json(c: &Cluster, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = status(c, &all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dfs status --json printed no JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A cluster whose watcher keeps its status file at DIR/watch-status.json.
fn cluster_with_status_file() -> (Cluster, PathBuf) {
    let mut c = Cluster::start_without_watcher();
    let file = c.dir.path().join("watch-status.json");
    let arg = file.display().to_string();
    c.start_watcher_with(&["--status-file", &arg]);
    (c, file)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A healthy cluster: exit 0, and the counts and bytes of the index, the node and the watcher
/// are the files synced, in the JSON and in the table.
#[test]
fn a_healthy_cluster_reports_its_files_and_bytes() {
    let (c, file) = cluster_with_status_file();
    let files = [
        ("music/a.mp3", 70_000usize),
        ("notes.txt", 5),
        ("doc.pdf", 300_000),
    ];
    let total: u64 = files.iter().map(|(_, n)| *n as u64).sum();
    for (i, (name, len)) in files.iter().enumerate() {
        let path = c.source.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(i as u64 + 1, *len)).unwrap();
    }
    c.wait_synced(Duration::from_secs(60));
    let arg = file.display().to_string();
    // The index counts come from the export thread and the status file from its next write:
    // both follow the sync within about a second.
    let mut last = serde_json::Value::Null;
    wait_until(
        "dfs status reports the three files",
        Duration::from_secs(30),
        || {
            let (code, v, _) = status_json(&c, &["--status-file", &arg]);
            last = v.clone();
            code == Some(0)
                && v["broker"]["index_entries"] == 3
                && v["watchers"][0]["files_synced"] == 3
                && v["watchers"][0]["pending"] == 0
        },
    );
    let v = last;
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v:#}");
    assert_eq!(
        v["notes"].as_array().unwrap().len(),
        0,
        "index and node agree: {v:#}"
    );
    let b = &v["broker"];
    assert_eq!(b["reachable"], true);
    assert_eq!(b["index_bytes"], total);
    assert_eq!(b["address"], format!("tcp://127.0.0.1:{}", c.fetch_port));
    assert_eq!(b["rebuilding"], false);
    assert!(b["disk"]["total"].as_u64().unwrap() > 0);
    let s = &v["storage"];
    assert_eq!(s["reachable"], true);
    assert_eq!(s["address"], format!("tcp://127.0.0.1:{}", c.base_port + 4));
    assert_eq!(
        (s["files"].as_u64(), s["bytes"].as_u64()),
        (Some(3), Some(total))
    );
    let per_class: Vec<(String, u64, u64)> = s["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["class"].as_str().unwrap().to_string(),
                c["files"].as_u64().unwrap(),
                c["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per_class,
        [
            ("mp3".into(), 1, 70_000),
            ("txt".into(), 1, 5),
            ("pdf".into(), 1, 300_000),
            ("others".into(), 0, 0)
        ]
    );
    assert_eq!(
        s["root"],
        fs::canonicalize(&c.root).unwrap().display().to_string()
    );
    let w = &v["watchers"][0];
    assert_eq!(w["healthy"], true, "{w:#}");
    assert_eq!(w["bytes_sent"], total);
    assert_eq!(w["connected"], true);
    assert_eq!(w["in_flight"], 0);
    assert!(w["last_sync"].is_string());

    let out = status(&c, &["--status-file", &arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("index: 3 files, 361.3 KiB"), "{text}");
    assert!(
        text.contains("stored: 3 files, 361.3 KiB (mp3 1, txt 1, pdf 1, others 0)"),
        "{text}"
    );
    assert!(text.contains("3 files synced (361.3 KiB)"), "{text}");
    assert!(text.contains("everything is up and in sync"), "{text}");
}

/// A node that is down makes status exit 3 naming the node; a broker that is down, naming the
/// broker.
#[test]
fn a_node_or_broker_down_exits_3_naming_it() {
    let mut c = Cluster::start_without_watcher();
    let node = format!("127.0.0.1:{}", c.base_port + 4);
    // A new broker first fills its (empty) index from the node; status says so until done.
    wait_until(
        "the new cluster is healthy",
        Duration::from_secs(30),
        || status(&c, &[]).status.code() == Some(0),
    );
    drop(c.take(Role::Storage));
    let (code, v, err) = status_json(&c, &[]);
    assert_eq!(code, Some(3), "{v:#}\n{err}");
    assert_eq!(v["broker"]["reachable"], true);
    assert_eq!(v["storage"]["reachable"], false);
    assert!(err.contains(&node) && err.contains("unreachable"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line per problem: {err}");
    let out = status(&c, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DOWN"));

    // The node comes back: healthy again.
    c.restart(Role::Storage);
    wait_until("status is healthy again", Duration::from_secs(30), || {
        status(&c, &[]).status.code() == Some(0)
    });

    let broker = c.broker_addr();
    drop(c.take(Role::Broker));
    let out = run_bounded(
        c.dir.path(),
        &["status", "--broker", &broker, "--timeout", "1"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&broker) && err.contains("unreachable"),
        "{err}"
    );
}

/// The watcher's status file holds its state and is rewritten as things change; a file not
/// rewritten (the watcher killed) reads as stale, one from a stopped watcher as stopped, a
/// missing one as unreadable: each exits 1.
#[test]
fn watcher_status_file_content_and_staleness() {
    let (mut c, file) = cluster_with_status_file();
    wait_until("the status file appears", Duration::from_secs(30), || {
        fs::read_to_string(&file).is_ok_and(|t| t.contains("\"connected\": true"))
    });
    let v = read_json(&file);
    assert_eq!(v["pid"], c.watch.as_ref().unwrap().pid());
    assert_eq!(
        v["source"],
        fs::canonicalize(&c.source).unwrap().display().to_string()
    );
    assert_eq!(v["broker"], format!("tcp://127.0.0.1:{}", c.ingest_port));
    assert_eq!(v["running"], true);
    assert!(v["error"].is_null() && v["last_error"].is_null(), "{v:#}");
    assert_eq!(v["files_synced"], 0);
    assert_eq!(v["heartbeat_secs"], 10);
    assert!(v["updated_at"].is_string());

    fs::write(c.source.join("x.txt"), "twelve bytes").unwrap();
    wait_until(
        "the status file counts the upload",
        Duration::from_secs(30),
        || {
            let v = read_json(&file);
            v["files_synced"] == 1 && v["bytes_sent"] == 12 && v["pending"] == 0
        },
    );
    assert!(read_json(&file)["last_sync"].is_string());

    // The broker goes away: the watcher says so; once it is back the error is over but stays
    // on record as the last error.
    let arg = file.display().to_string();
    drop(c.take(Role::Broker));
    wait_until(
        "the status file reports the outage",
        Duration::from_secs(30),
        || {
            let v = read_json(&file);
            v["connected"] == false && v["error"].is_string() && v["last_error"].is_object()
        },
    );
    c.restart(Role::Broker);
    wait_until(
        "the status file reports the broker back",
        Duration::from_secs(30),
        || {
            let v = read_json(&file);
            v["connected"] == true && v["error"].is_null()
        },
    );
    let (code, v, err) = status_json(&c, &["--status-file", &arg]);
    assert_eq!(code, Some(0), "{v:#}\n{err}");
    assert!(v["watchers"][0]["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("unreachable"));

    // Killed without a last word: the file goes stale.
    c.take(Role::Watcher).kill9();
    wait_until(
        "status calls the file stale",
        Duration::from_secs(30),
        || {
            let (code, v, err) = status_json(&c, &["--status-file", &arg, "--stale-after", "1"]);
            code == Some(1) && v["watchers"][0]["stale"] == true && err.contains("not updated")
        },
    );

    // Stopped cleanly: the last write says so.
    c.start_watcher_with(&["--status-file", &arg]);
    wait_until(
        "the new watcher writes its file",
        Duration::from_secs(30),
        || read_json(&file)["pid"] == c.watch.as_ref().unwrap().pid(),
    );
    let code = c
        .take(Role::Watcher)
        .stop_with(libc::SIGTERM, Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert_eq!(read_json(&file)["running"], false);
    let (code, _, err) = status_json(&c, &["--status-file", &arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stopped"), "{err}");

    // A file that is not there.
    let missing = c.dir.path().join("none.json").display().to_string();
    let (code, v, err) = status_json(&c, &["--status-file", &missing]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["watchers"][0]["healthy"], false);
    assert!(err.contains("none.json"), "{err}");
}
