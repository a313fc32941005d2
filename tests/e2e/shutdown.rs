//! Shutdown (docs/CONTRACT.md §4): SIGTERM and SIGINT stop every daemon, and `dfs up`, within a few seconds
//! with exit 0, even in the middle of a large transfer; the index is flushed and exported; after
//! a restart the interrupted transfer completes.

use crate::harness::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const SYNC: Duration = Duration::from_secs(180);
/// How long a stopping daemon may take.
const STOP: Duration = Duration::from_secs(10);
/// Size of the file being transferred when the signal comes.
const BIG: usize = 96 << 20;

/// Waits until the node's temporary folder holds part of an upload (the transfer is under way).
fn wait_mid_transfer(c: &Cluster) {
    wait_until("a large upload under way on the node", SYNC, || {
        let n = c.node_tmp_bytes();
        n > 0 && n < BIG as u64
    });
}

/// index.txt rows of a data folder: name → blake3 hex.
fn index_rows(data: &Path) -> Vec<(String, String)> {
    fs::read_to_string(data.join("myIndex/index.txt"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "six tab-separated fields: {l:?}");
            (f[0].to_string(), f[3].to_string())
        })
        .collect()
}

/// For each role in turn: a small file synced, a large file half sent, the signal; the role
/// exits 0 in time, index.txt holds every acknowledged file, and after a restart all is in sync.
fn stop_each_role_mid_transfer(sig: i32) {
    let mut c = Cluster::start();
    for (round, role) in Role::ALL.into_iter().enumerate() {
        let small = format!("round{round}/small.txt");
        let path = c.source.join(&small);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("acknowledged before the stop of {role:?}")).unwrap();
        wait_until(&format!("{small} listed"), SYNC, || {
            c.listing().contains_key(&small)
        });
        let acked = tree_hashes(&c.source);
        let big = format!("round{round}/big.bin");
        let big_hash = write_big_file(&c.source.join(&big), 100 + round as u64, BIG);
        wait_mid_transfer(&c);

        let mut p = c.take(role);
        assert_eq!(
            p.stop_with(sig, STOP),
            Some(0),
            "{role:?} exits 0 within {STOP:?} of signal {sig} mid-transfer:\n{}",
            p.log_text()
        );
        if role == Role::Broker {
            // Stopped: its export holds every acknowledged file, and the big one only whole.
            let rows = index_rows(&c.data);
            for (name, hash) in &acked {
                assert!(
                    rows.contains(&(name.clone(), hash.clone())),
                    "index.txt after the broker stopped lacks {name}: {rows:?}"
                );
            }
            for (name, hash) in &rows {
                assert!(
                    acked.get(name) == Some(hash) || (name == &big && hash == &big_hash),
                    "index.txt after the broker stopped holds {name} {hash}"
                );
            }
        }
        drop(p);
        assert!(
            !c.root.join("others").join(&big).exists()
                || file_hash(&c.root.join("others").join(&big)) == big_hash,
            "{big} on the node is whole or absent"
        );
        c.restart(role);
        c.wait_all_agree(SYNC);
        assert_eq!(c.listing()[&big].blake3, big_hash);
    }
    // Stopping the broker when idle exports the index it flushed.
    let mut p = c.take(Role::Broker);
    assert_eq!(p.stop_with(sig, STOP), Some(0));
    let rows: Vec<(String, String)> = tree_hashes(&c.source).into_iter().collect();
    assert_eq!(index_rows(&c.data), rows);
}

#[test]
fn sigterm_stops_each_daemon_mid_transfer_and_the_transfer_resumes() {
    stop_each_role_mid_transfer(libc::SIGTERM);
}

#[test]
fn sigint_stops_each_daemon_mid_transfer_and_the_transfer_resumes() {
    stop_each_role_mid_transfer(libc::SIGINT);
}

/// `dfs up` mid-transfer: SIGTERM, then SIGINT after a restart; exit 0 each time, index.txt
/// current, and the file completes after the next start.
#[test]
fn dfs_up_stops_cleanly_mid_transfer_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("up.ready");
    let args = up_args(&ready);
    let source = dir.path().join("source_folder");
    let tmp = dir.path().join("node/.dfs/tmp");
    // `dfs up` runs the node in its own process: its uploads are the files it holds open there.
    let tmp_bytes = |pid: i32| open_bytes_in(pid, &tmp);
    let mut hashes = Vec::new();
    for (round, sig) in [libc::SIGTERM, libc::SIGINT].into_iter().enumerate() {
        let _ = fs::remove_file(&ready);
        let mut p = Proc::spawn("up", dir.path(), dir.path(), &args);
        p.wait_ready(&ready);
        let small = source.join(format!("small{round}.txt"));
        fs::write(&small, "small").unwrap();
        wait_until("the small file stored", SYNC, || {
            dir.path()
                .join(format!("node/txt/small{round}.txt"))
                .is_file()
        });
        hashes.push(write_big_file(
            &source.join(format!("big{round}.bin")),
            200 + round as u64,
            BIG,
        ));
        let pid = p.pid();
        wait_until("a large upload under way", SYNC, || {
            let n = tmp_bytes(pid);
            n > 0 && n < BIG as u64
        });
        assert_eq!(
            p.stop_with(sig, STOP),
            Some(0),
            "dfs up exits 0 within {STOP:?} of signal {sig}:\n{}",
            p.log_text()
        );
        let rows = index_rows(&dir.path().join("server"));
        assert!(
            rows.iter().any(|(n, _)| n == &format!("small{round}.txt")),
            "index.txt holds the acknowledged small{round}.txt: {rows:?}"
        );
    }
    // The next start completes both interrupted transfers.
    let _ = fs::remove_file(&ready);
    let mut p = Proc::spawn("up", dir.path(), dir.path(), &args);
    p.wait_ready(&ready);
    for (round, hash) in hashes.iter().enumerate() {
        let stored = dir.path().join(format!("node/others/big{round}.bin"));
        wait_until(&format!("big{round}.bin stored whole"), SYNC, || {
            stored.is_file() && &file_hash(&stored) == hash
        });
    }
    wait_until("index.txt lists everything", SYNC, || {
        index_rows(&dir.path().join("server")).len() == 4
    });
    assert_eq!(p.stop_with(libc::SIGTERM, STOP), Some(0));
    let rows: Vec<(String, String)> = tree_hashes(&source).into_iter().collect();
    assert_eq!(index_rows(&dir.path().join("server")), rows);
}
