//! Large files move in chunks under credit: memory stays bounded whatever the file size.

use crate::harness::*;
use std::time::Duration;

const LIMIT_KIB: u64 = 100 * 1024;

/// A 300 MiB file goes through watcher, broker and node, and back through fetch, with every
/// process's peak RSS under 100 MiB.
#[test]
fn a_300_mib_file_moves_in_bounded_memory() {
    let c = Cluster::start();
    let hash = write_big_file(&c.source.join("huge.bin"), 42, 300 << 20);
    wait_until(
        "huge.bin listed with its hash",
        Duration::from_secs(180),
        || c.listing().get("huge.bin").map(|l| l.blake3.clone()) == Some(hash.clone()),
    );
    assert_eq!(file_hash(&c.root.join("others/huge.bin")), hash);

    // The fetcher, run under wait4 to read its own peak RSS.
    let target = c.target.display().to_string();
    let addr = c.broker_addr();
    // Reaped by wait4 below, which also reports the child's peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(dfs_bin())
        .args(["fetch", "--broker", &addr, "--target", &target, "huge.bin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "fetch failed: {status}"
    );
    assert_eq!(file_hash(&c.target.join("huge.bin")), hash);

    let mut peaks = vec![("fetch".to_string(), usage.ru_maxrss as u64)];
    for p in [&c.watch, &c.broker, &c.storage].into_iter().flatten() {
        peaks.push((p.name.clone(), p.peak_rss_kib()));
    }
    eprintln!("peak RSS (KiB): {peaks:?}");
    for (name, kib) in peaks {
        assert!(
            kib < LIMIT_KIB,
            "{name} peaked at {kib} KiB (limit {LIMIT_KIB} KiB)"
        );
    }
}
