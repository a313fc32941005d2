//! Outages (docs/CONTRACT.md §4 Faults): the broker down, then the storage node down. The watcher logs each
//! outage once (not once per file), waits without spinning, and catches up by itself once the
//! peer is back on the same ports; `dfs fetch` meanwhile fails in bounded time with exit 3.

use crate::harness::*;
use std::fs;
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(120);
/// Files written during each outage.
const FILES: usize = 20;
/// How long the idle CPU use of the waiting processes is measured.
const MEASURE: Duration = Duration::from_secs(3);

/// Writes `FILES` files of every class, named after `tag`.
fn write_files(c: &Cluster, tag: &str) {
    for i in 0..FILES {
        let ext = ["txt", "mp3", "pdf", "bin"][i % 4];
        let p = c.source.join(format!("{tag}/f{i}.{ext}"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let len = if i % 5 == 0 { 3 << 20 } else { 1000 + i };
        fs::write(&p, random_bytes(i as u64 + 1, len)).unwrap();
    }
}

/// CPU share (of one core) `p` used over `MEASURE`.
fn cpu_share(p: &Proc) -> f64 {
    let before = p.cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(MEASURE);
    let used = p.cpu_time() - before;
    used.as_secs_f64() / t0.elapsed().as_secs_f64()
}

/// The warnings a process logged after byte `from` of its log.
fn warnings_since(p: &Proc, from: usize) -> Vec<String> {
    let log = p.log_text();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(str::to_string)
        .collect()
}

/// `dfs fetch` of a stored file exits 3 within a bounded time while a peer is down.
fn fetch_fails_with_3(c: &Cluster, name: &str) {
    let t0 = Instant::now();
    let out = c.fetch(&["--timeout", "2", "-o", "-", name]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "fetch during an outage: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "fetch bounded by its timeout"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err}");
}

#[test]
fn the_watcher_waits_quietly_through_outages_and_catches_up() {
    let mut c = Cluster::start();
    fs::write(c.source.join("before.txt"), "before").unwrap();
    c.wait_synced(SYNC);

    // The broker down (killed, as a crash would), with changes waiting.
    let log_at = c.watch.as_ref().unwrap().log_text().len();
    c.kill9(Role::Broker);
    write_files(&c, "broker-outage");
    fs::write(
        c.source.join("before.txt"),
        "changed while the broker was down",
    )
    .unwrap();
    fetch_fails_with_3(&c, "before.txt");
    let share = cpu_share(c.watch.as_ref().unwrap());
    println!(
        "watcher CPU while the broker is down: {:.1}%",
        share * 100.0
    );
    assert!(
        share < 0.10,
        "the watcher spins while the broker is down: {share:.3} of a core"
    );
    c.restart(Role::Broker);
    c.wait_all_agree(SYNC);
    let warns = warnings_since(c.watch.as_ref().unwrap(), log_at);
    println!("watcher warnings for the broker outage: {warns:#?}");
    assert!(
        (1..=2).contains(&warns.len()),
        "the broker outage is logged once, not once per file ({} lines): {warns:#?}",
        warns.len()
    );

    // The storage node down: the broker answers, but refuses every change as unavailable.
    let log_at = c.watch.as_ref().unwrap().log_text().len();
    let mut node = c.take(Role::Storage);
    assert_eq!(
        node.stop_with(libc::SIGTERM, Duration::from_secs(10)),
        Some(0),
        "node exits 0 on SIGTERM"
    );
    drop(node);
    write_files(&c, "node-outage");
    fs::remove_file(c.source.join("broker-outage/f1.mp3")).unwrap();
    fetch_fails_with_3(&c, "before.txt");
    // Let the first refusals come and go, then measure the waiting.
    wait_until("the watcher noticed the node outage", SYNC, || {
        !warnings_since(c.watch.as_ref().unwrap(), log_at).is_empty()
    });
    let share = cpu_share(c.watch.as_ref().unwrap());
    println!("watcher CPU while the node is down: {:.1}%", share * 100.0);
    assert!(
        share < 0.10,
        "the watcher spins while the node is down: {share:.3} of a core"
    );
    let share = cpu_share(c.broker.as_ref().unwrap());
    println!("broker CPU while the node is down: {:.1}%", share * 100.0);
    assert!(
        share < 0.10,
        "the broker spins while the node is down: {share:.3} of a core"
    );
    // An outage longer than the longest retry delay still ends in a prompt catch-up.
    c.restart(Role::Storage);
    let t0 = Instant::now();
    c.wait_all_agree(SYNC);
    println!("caught up {:?} after the node came back", t0.elapsed());
    let warns = warnings_since(c.watch.as_ref().unwrap(), log_at);
    println!("watcher warnings for the node outage: {warns:#?}");
    assert!(
        (1..=2).contains(&warns.len()),
        "the node outage is logged once, not once per file ({} lines): {warns:#?}",
        warns.len()
    );
}
