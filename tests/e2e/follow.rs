//! Large files followed while they are written: sent as they grow, stored as they are once
//! closed, never as a mix of before and after.

use crate::harness::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(60);

/// A cluster whose watcher waits 2 s for quiet, so that a writer descheduled for a moment on a
/// busy machine is not taken for one that went quiet.
fn cluster() -> Cluster {
    let mut c = Cluster::start_without_watcher();
    c.start_watcher_with(&["--debounce-ms", "2000"]);
    c
}

/// Appends pseudo-random MiBs to `f` until the node holds part of the upload while the file
/// is still open (the node's temporary files are its open, unnamed files), or fails after
/// 256 MiB or 60 s. Returns the hasher of everything written.
fn write_until_the_node_receives(c: &Cluster, f: &mut fs::File) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    let started = Instant::now();
    for i in 0..256u64 {
        let block = random_bytes(100 + i, 1 << 20);
        f.write_all(&block).unwrap();
        h.update(&block);
        if i >= 8 && c.node_tmp_bytes() > 0 {
            return h;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing arrived in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("256 MiB written and the node received nothing while the file was open");
}

/// Waits until index.txt gives `name` the hash `want` and the node holds no temporary file.
fn indexed_and_no_temp_left(c: &Cluster, name: &str, want: &str) {
    wait_until("index.txt has the file's hash", SYNC, || {
        c.index_hashes().get(name).map(String::as_str) == Some(want)
    });
    wait_until("no temporary file is left", SYNC, || {
        c.node_tmp_bytes() == 0
    });
}

#[test]
fn a_file_being_written_is_sent_before_it_is_closed_and_stored_as_closed() {
    let c = cluster();
    let path = c.source.join("video/rec.bin");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(&path).unwrap();
    let mut h = write_until_the_node_receives(&c, &mut f);
    // The end of the file, written after the node started receiving.
    let tail = random_bytes(7, 12345);
    f.write_all(&tail).unwrap();
    h.update(&tail);
    drop(f);
    c.wait_synced(SYNC);
    let want = h.finalize().to_hex().to_string();
    assert_eq!(file_hash(&c.root.join("others/video/rec.bin")), want);
    let listed = &c.listing()["video/rec.bin"];
    assert_eq!(listed.size, fs::metadata(&path).unwrap().len());
    // One upload, finished at the close: no partial version came first.
    assert_eq!(listed.version, 1);
    indexed_and_no_temp_left(&c, "video/rec.bin", &want);
}

#[test]
fn bytes_rewritten_behind_the_part_sent_are_stored_as_rewritten() {
    let c = cluster();
    let path = c.source.join("movie.mp4");
    let mut f = fs::File::create(&path).unwrap();
    write_until_the_node_receives(&c, &mut f);
    // A muxer patches its header at the start once the rest is written.
    f.write_all_at(b"HEADER-PATCHED", 4).unwrap();
    drop(f);
    c.wait_synced(SYNC);
    let want = file_hash(&path);
    assert_eq!(file_hash(&c.root.join("others/movie.mp4")), want);
    let log = c.watch.as_ref().unwrap().log_text();
    assert!(log.contains("bytes already sent were rewritten"), "{log}");
    indexed_and_no_temp_left(&c, "movie.mp4", &want);
}

#[test]
fn a_file_removed_while_being_written_leaves_nothing_behind() {
    let c = cluster();
    let path = c.source.join("gone.bin");
    let mut f = fs::File::create(&path).unwrap();
    write_until_the_node_receives(&c, &mut f);
    fs::remove_file(&path).unwrap();
    f.write_all(&random_bytes(3, 1 << 20)).unwrap();
    drop(f);
    wait_until("the node drops the upload", SYNC, || {
        c.node_tmp_bytes() == 0
    });
    // A marker file synced after the removal: by then the removal was handled too.
    fs::write(c.source.join("after.txt"), b"after").unwrap();
    c.wait_synced(SYNC);
    assert!(!c.listing().contains_key("gone.bin"));
    assert!(!c.root.join("others/gone.bin").exists());
}

#[test]
fn a_file_that_trickles_is_given_up_and_sent_once_closed() {
    let mut c = Cluster::start_without_watcher();
    c.start_watcher_with(&["--debounce-ms", "1000"]);
    let path = c.source.join("log.bin");
    let mut f = fs::File::create(&path).unwrap();
    write_until_the_node_receives(&c, &mut f);
    // Then a few bytes every 20 ms, far less than a chunk per debounce, for 3 s.
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0u64;
    while Instant::now() < until {
        f.write_all(&random_bytes(1000 + i, 100)).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("the watcher gives the file up", SYNC, || {
        c.watch
            .as_ref()
            .unwrap()
            .log_text()
            .contains("grows too slowly to follow")
    });
    wait_until("the node drops the followed upload", SYNC, || {
        c.node_tmp_bytes() == 0
    });
    drop(f);
    c.wait_synced(SYNC);
    let want = file_hash(&path);
    assert_eq!(file_hash(&c.root.join("others/log.bin")), want);
}

/// Files rewritten in place back to back (truncate, then write, as most programs do): the
/// watcher often finds one between its writer's open and its write, empty or part written. It
/// waits for the close, so every version the node kept (history included) is one a writer
/// finished.
#[test]
fn files_rewritten_back_to_back_are_stored_only_as_finished_versions() {
    let c = Cluster::start();
    if !leases_work(&c.source) {
        // Without leases the watcher has only the events to go by, and may catch a file
        // between its writer's truncate and its write (docs/CONTRACT.md, Changes).
        println!(
            "skipped: the file system of {} grants no read leases",
            c.source.display()
        );
        return;
    }
    let names = ["a.txt", "b.txt", "c/d.txt"];
    fs::create_dir_all(c.source.join("c")).unwrap();
    let mut written: std::collections::HashMap<&str, std::collections::HashSet<String>> =
        Default::default();
    let t0 = Instant::now();
    let mut i = 0u64;
    while t0.elapsed() < Duration::from_secs(3) {
        let name = names[(i % 3) as usize];
        // Never empty, so an empty stored version can only be one caught mid-write.
        let bytes = random_bytes(i, 1 + (i as usize * 7919) % 40_000);
        written
            .entry(name)
            .or_default()
            .insert(blake3::hash(&bytes).to_hex().to_string());
        fs::write(c.source.join(name), &bytes).unwrap();
        i += 1;
        if i.is_multiple_of(4) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    c.wait_all_agree(SYNC);
    let mut kept = 0;
    for name in names {
        let history = node_versions(&c.root, "txt", name);
        kept += history.len();
        for (version, _, hash) in history {
            assert!(
                written[name].contains(&hash),
                "{name} version {version} ({hash}) is not a version its writer finished \
                 ({i} writes)"
            );
        }
    }
    println!("{i} writes, {kept} replaced versions kept, every one finished by its writer");
}
