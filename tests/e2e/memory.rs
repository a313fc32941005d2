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

    // The fetcher's own peak: VmHWM sampled until it exits. (The peak that wait4 reports would
    // include the test process's pages the child had before its exec.)
    let target = c.target.display().to_string();
    let addr = c.broker_addr();
    let mut child = std::process::Command::new(dfs_bin())
        .args(["fetch", "--broker", &addr, "--target", &target, "huge.bin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut fetch_peak = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(kib) = vm_hwm_kib(child.id()) {
            fetch_peak = fetch_peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fetch of huge.bin did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "fetch failed: {status}");
    assert!(fetch_peak > 0, "the fetcher's memory was sampled");
    assert_eq!(file_hash(&c.target.join("huge.bin")), hash);

    c.assert_peaks_below(LIMIT_KIB, vec![("fetch".to_string(), fetch_peak)]);
}
