//! `--metrics ADDR`: each daemon serves Prometheus text on `GET /metrics`, on a port it picks
//! (reported in its ready file); the counters equal the files and bytes that moved.

use crate::harness::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::time::Duration;

/// A cluster of three processes, each serving its metrics on a port it picks; returns it with
/// the three metrics addresses its ready files report (storage, broker, watcher).
pub fn cluster_with_metrics() -> (Cluster, [String; 3]) {
    let c = Cluster::start_with(&["--metrics", "127.0.0.1:0"]);
    let addr = |role: &str| {
        let v = &c.ready[role];
        v["metrics"]
            .as_str()
            .unwrap_or_else(|| panic!("{role}'s ready file {v} has no metrics address"))
            .to_string()
    };
    let addrs = [addr("storage"), addr("broker"), addr("watch")];
    (c, addrs)
}

/// `GET /metrics` from `addr`: the HTTP status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The samples of a scrape: `name{labels}` → value.
pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(-1.0)
}

/// After syncing files (inline and chunked) and fetching one, each daemon's counters equal the
/// files and bytes that moved through it.
#[test]
fn counters_equal_the_files_and_bytes_moved() {
    let (c, [storage_m, broker_m, watch_m]) = cluster_with_metrics();
    let sizes = [
        ("a.txt", 10usize),
        ("b/c.mp3", 60_000),
        ("big.pdf", 700_000),
    ];
    let total: u64 = sizes.iter().map(|(_, n)| *n as u64).sum();
    for (i, (name, len)) in sizes.iter().enumerate() {
        let path = c.source.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(10 + i as u64, *len)).unwrap();
    }
    c.wait_synced(Duration::from_secs(60));
    let target = c.target.display().to_string();
    let out = c.fetch(&["--target", &target, "big.pdf"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.fetch(&["--target", &target, "nope.txt"]).status.code(),
        Some(1)
    );

    let n = sizes.len() as f64;
    let total = total as f64;
    let mut last = BTreeMap::new();
    wait_until(
        "the watcher's counters match",
        Duration::from_secs(30),
        || {
            last = scrape(&watch_m);
            value(&last, "dfs_watch_files_sent_total") == n
                && value(&last, "dfs_watch_bytes_sent_total") == total
                && value(&last, "dfs_watch_upload_seconds_count") == n
                && value(&last, "dfs_watch_close_to_durable_seconds_count") == n
                && value(&last, "dfs_watch_in_flight") == 0.0
                && value(&last, "dfs_watch_connected") == 1.0
        },
    );
    assert_eq!(
        value(&last, "dfs_build_info{role=\"watch\",version=\"0.1.0\"}"),
        1.0,
        "{last:?}"
    );

    wait_until(
        "the broker's counters match",
        Duration::from_secs(30),
        || {
            last = scrape(&broker_m);
            value(&last, "dfs_broker_files_routed_total") == n
                && value(&last, "dfs_broker_bytes_routed_total") == total
                && value(&last, "dfs_broker_files_served_total") == 1.0
                && value(&last, "dfs_broker_bytes_served_total") == 700_000.0
                && value(&last, "dfs_broker_index_entries") == n
                && value(&last, "dfs_broker_index_bytes") == total
                && value(&last, "dfs_broker_requests_in_flight") == 0.0
        },
    );
    assert_eq!(
        value(&last, "dfs_broker_errors_total{kind=\"not_found\"}"),
        1.0,
        "{last:?}"
    );
    assert_eq!(
        value(&last, "dfs_broker_request_seconds_count{op=\"put\"}"),
        n,
        "{last:?}"
    );
    assert_eq!(
        value(&last, "dfs_broker_request_seconds_count{op=\"get\"}"),
        1.0,
        "{last:?}"
    );

    wait_until("the node's counters match", Duration::from_secs(30), || {
        last = scrape(&storage_m);
        value(&last, "dfs_storage_files_stored_total") == n
            && value(&last, "dfs_storage_bytes_stored_total") == total
            && value(&last, "dfs_storage_durable_seconds_count") == n
            && value(&last, "dfs_storage_files_served_total") == 1.0
            && value(&last, "dfs_storage_bytes_served_total") == 700_000.0
            && value(&last, "dfs_storage_uploads_in_flight") == 0.0
    });

    // Only GET /metrics is served.
    let (status, _) = http_get(&storage_m, "/");
    assert!(status.contains(" 404 "), "{status}");
}
