//! The whole pipeline: watch → broker → storage → fetch, as docs/CONTRACT.md §1–§4 describe it.

use crate::harness::*;
use std::fs;
use std::time::Duration;

const SYNC: Duration = Duration::from_secs(60);

/// Every class (an upper-case extension too), no extension, a dotfile, nested folders, an empty
/// file, non-ASCII names and a 50 MiB file arrive byte for byte on the node, in the listing, in
/// index.txt, and come back identical through fetch.
#[test]
fn every_kind_of_file_is_stored_listed_indexed_and_fetched() {
    let c = Cluster::start();
    let s = &c.source;
    let small: &[(&str, &[u8])] = &[
        ("song.mp3", b"ID3 not really a song"),
        ("LOUD.MP3", b"upper-case extension"),
        ("notes.txt", b"hello\n"),
        ("paper.pdf", b"%PDF-1.4 tiny"),
        ("README", b"no extension"),
        (".bashrc", b"export A=1\n"),
        ("music/albums/2024/track.mp3", b"nested three deep"),
        ("empty.txt", b""),
        ("ünïcødé/名前.txt", "non-ASCII ✓".as_bytes()),
        ("archive.tar.gz", b"others by last extension"),
    ];
    for (name, bytes) in small {
        let p = s.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
    }
    let big_hash = write_big_file(&s.join("video/big.bin"), 7, (50 << 20) + 4097);
    c.wait_synced(SYNC);

    // The node: exact bytes under the class folder, nothing else beside them.
    for (name, bytes) in small {
        let stored = c.root.join(class_of(name)).join(name);
        assert_eq!(&fs::read(&stored).unwrap(), bytes, "{}", stored.display());
    }
    assert_eq!(file_hash(&c.root.join("others/video/big.bin")), big_hash);
    assert!(c.root.join("mp3/LOUD.MP3").is_file());
    assert!(c.root.join("others/.bashrc").is_file());

    // The listing agrees with the source: classes, sizes, versions.
    let listing = c.listing();
    assert_eq!(listing.len(), small.len() + 1);
    for (name, bytes) in small {
        let l = &listing[*name];
        assert_eq!(l.size, bytes.len() as u64, "{name}");
        assert_eq!(l.class, class_of(name), "{name}");
        assert_eq!(l.version, 1, "{name}");
        assert_eq!(l.blake3, blake3::hash(bytes).to_hex().to_string());
        assert!(
            l.modified.ends_with('Z') && l.modified.contains('T'),
            "{}",
            l.modified
        );
    }

    // index.txt: a header, then one line per file sorted by name, name first, agreeing with the
    // listing (it is rewritten at most once a second, so wait for the current one).
    let expected: Vec<String> = listing
        .iter()
        .map(|(name, l)| {
            format!(
                "{name}\t{}\t{}\t{}\t{}",
                l.class, l.size, l.blake3, l.version
            )
        })
        .collect();
    let rows = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 6, "six tab-separated fields: {l:?}");
                // name, class, size, blake3, version (the modification time is checked below)
                format!("{}\t{}\t{}\t{}\t{}", f[0], f[1], f[2], f[3], f[5])
            })
            .collect()
    };
    wait_until(
        "index.txt agrees with the listing",
        Duration::from_secs(10),
        || rows(&c.index_txt()) == expected,
    );
    let text = c.index_txt();
    assert!(text
        .lines()
        .next()
        .unwrap()
        .starts_with("# name\tclass\tsize\tblake3\tmodified\tversion"));
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[4], listing[f[0]].modified, "modified time of {}", f[0]);
    }

    // Fetch everything back into the target folder.
    let mut args: Vec<&str> = small.iter().map(|(n, _)| *n).collect();
    args.push("video/big.bin");
    let target = c.target.display().to_string();
    let mut full = vec!["--target", target.as_str()];
    full.extend(args.iter());
    let out = c.fetch(&full);
    assert!(
        out.status.success(),
        "fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, bytes) in small {
        assert_eq!(
            &fs::read(c.target.join(name)).unwrap(),
            bytes,
            "fetched {name}"
        );
    }
    assert_eq!(file_hash(&c.target.join("video/big.bin")), big_hash);
    assert_eq!(
        tree_hashes(&c.target),
        tree_hashes(&c.source),
        "no temporary files left in the target"
    );
}

/// Each modification is a new version; fetch returns the latest. An identical rewrite makes no
/// new version and leaves the stored file untouched.
#[test]
fn changes_make_versions_and_identical_rewrites_do_not() {
    let c = Cluster::start();
    let f = c.source.join("doc.txt");
    for (i, text) in ["one", "two, longer", "three"].iter().enumerate() {
        fs::write(&f, text).unwrap();
        wait_until(&format!("doc.txt at version {}", i + 1), SYNC, || {
            c.listing().get("doc.txt").map(|l| l.version) == Some(i as u64 + 1)
        });
    }
    let out = c.fetch(&["-o", "-", "doc.txt"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"three");

    // An identical rewrite: the watcher sees the write, but nothing new is stored.
    use std::os::unix::fs::MetadataExt;
    let stored = c.root.join("txt/doc.txt");
    let before = fs::metadata(&stored).unwrap();
    fs::write(&f, "three").unwrap();
    // A file written after it is synced after it: once it is listed, the rewrite was handled.
    fs::write(c.source.join("after.txt"), "sentinel").unwrap();
    wait_until("after.txt listed", SYNC, || {
        c.listing().contains_key("after.txt")
    });
    let after = fs::metadata(&stored).unwrap();
    assert_eq!(c.listing()["doc.txt"].version, 3);
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "stored file untouched"
    );

    // A large file changed in place keeps its history too.
    let big = c.source.join("big.bin");
    write_big_file(&big, 1, 3 << 20);
    wait_until("big.bin v1", SYNC, || {
        c.listing().get("big.bin").map(|l| l.version) == Some(1)
    });
    let h2 = write_big_file(&big, 2, 3 << 20);
    wait_until("big.bin v2", SYNC, || {
        c.listing()
            .get("big.bin")
            .map(|l| (l.version, l.blake3.clone()))
            == Some((2, h2.clone()))
    });
    assert_eq!(file_hash(&c.root.join("others/big.bin")), h2);
}

/// Deleting and renaming in the source (files, across classes, whole folders) propagates.
#[test]
fn deletes_and_renames_propagate() {
    let c = Cluster::start();
    let s = &c.source;
    fs::create_dir_all(s.join("dir/sub")).unwrap();
    fs::write(s.join("gone.txt"), "delete me").unwrap();
    fs::write(s.join("dir/a.mp3"), "a").unwrap();
    fs::write(s.join("dir/sub/b.txt"), "b").unwrap();
    fs::write(s.join("c.pdf"), "c").unwrap();
    fs::write(s.join("keep.txt"), "k").unwrap();
    c.wait_synced(SYNC);

    fs::remove_file(s.join("gone.txt")).unwrap();
    fs::rename(s.join("c.pdf"), s.join("c.txt")).unwrap();
    fs::rename(s.join("dir/a.mp3"), s.join("dir/a2.mp3")).unwrap();
    fs::rename(s.join("dir"), s.join("moved")).unwrap();
    c.wait_synced(SYNC);
    let l = c.listing();
    assert!(
        l.contains_key("moved/sub/b.txt")
            && l.contains_key("c.txt")
            && l.contains_key("moved/a2.mp3")
    );
    assert!(!c.root.join("txt/gone.txt").exists());
    assert!(!c.root.join("pdf/c.pdf").exists());
}

/// Files created, changed and deleted while the watcher was down are synced when it starts.
#[test]
fn changes_made_while_the_watcher_was_down_sync_at_start() {
    let mut c = Cluster::start();
    fs::write(c.source.join("old.txt"), "old").unwrap();
    fs::write(c.source.join("doomed.mp3"), "doomed").unwrap();
    c.wait_synced(SYNC);
    let mut w = c.watch.take().unwrap();
    assert_eq!(
        w.stop_with(libc::SIGTERM, Duration::from_secs(10)),
        Some(0),
        "watcher exits 0 on SIGTERM"
    );
    drop(w);

    fs::write(c.source.join("old.txt"), "old, changed offline").unwrap();
    fs::remove_file(c.source.join("doomed.mp3")).unwrap();
    fs::create_dir_all(c.source.join("new/deep")).unwrap();
    fs::write(c.source.join("new/deep/n.pdf"), "new offline").unwrap();
    fs::write(c.source.join("new/empty"), "").unwrap();

    c.start_watcher();
    c.wait_synced(SYNC);
    assert_eq!(c.listing()["old.txt"].version, 2);
}

/// Editor and tool temporary files and `--ignore` globs are never stored.
#[test]
fn ignored_names_are_not_stored() {
    let mut c = Cluster::start_without_watcher();
    c.start_watcher_with(&["--ignore", "*.log", "--ignore", "build"]);
    let s = &c.source;
    fs::create_dir_all(s.join("build/deep")).unwrap();
    for name in [
        ".notes.txt.swp",
        "draft.txt~",
        ".#lock.txt",
        "4913",
        ".~lock.report.odt#",
        ".song.mp3.Ab3xZ9",
        "sedX1b2c3",
        "debug.log",
        "build/out.bin",
        "build/deep/x.txt",
    ] {
        fs::write(s.join(name), "ignored").unwrap();
    }
    fs::write(s.join("kept.txt"), "kept").unwrap();
    wait_until("kept.txt listed", SYNC, || {
        c.listing().contains_key("kept.txt")
    });
    // Anything ignored would have gone out with kept.txt; give stragglers one more debounce.
    fs::write(s.join("last.txt"), "last").unwrap();
    wait_until("last.txt listed", SYNC, || {
        c.listing().contains_key("last.txt")
    });
    let names: Vec<String> = c.listing().into_keys().collect();
    assert_eq!(names, ["kept.txt", "last.txt"]);
}

/// `dfs index export` writes the text index from the broker's database once the broker stopped.
#[test]
fn index_export_writes_the_text_index() {
    let mut c = Cluster::start();
    fs::write(c.source.join("a.txt"), "a").unwrap();
    fs::write(c.source.join("b.mp3"), "b").unwrap();
    c.wait_synced(SYNC);
    let mut broker = c.broker.take().unwrap();
    assert_eq!(
        broker.stop_with(libc::SIGTERM, Duration::from_secs(10)),
        Some(0)
    );
    let out_file = c.dir.path().join("export.txt");
    let data = c.data.display().to_string();
    let out = run_bounded(
        c.dir.path(),
        &[
            "index",
            "export",
            "--data",
            &data,
            "--out",
            out_file.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&out_file).unwrap();
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "b.mp3"]);
    assert_eq!(
        text,
        c.index_txt(),
        "the same text as the broker's own export at shutdown"
    );

    // The export written at a clean stop is still current at the next start: kept, not
    // rewritten; the first change after that rewrites it.
    let export = c.data.join("myIndex/index.txt");
    let written = fs::metadata(&export).unwrap().modified().unwrap();
    c.start_broker();
    // Its counts come from the mark: `dfs status` knows the two files at once.
    let addr = c.broker_addr();
    let out = run_bounded(
        c.dir.path(),
        &["status", "--json", "--broker", &addr, "--timeout", "20"],
        Duration::from_secs(60),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["broker"]["index_entries"], 2, "{v:#}");
    assert_eq!(v["broker"]["index_bytes"], 2, "{v:#}");
    fs::write(c.source.join("c.pdf"), "c").unwrap();
    wait_until("c.pdf in index.txt", SYNC, || {
        c.index_txt().contains("c.pdf\t")
    });
    let log = c.broker.as_ref().unwrap().log_text();
    assert!(log.contains("is current"), "{log}");
    assert_ne!(fs::metadata(&export).unwrap().modified().unwrap(), written);
}

/// A file written with no event between its creation and its close (`cp` writes a whole file in
/// one copy_file_range; here, writes through a memory map over 0.6 s): the watcher must not
/// start sending it meanwhile (the upload would be torn and sent again). It goes once, whole,
/// after its close.
#[test]
fn a_file_growing_without_events_is_sent_once_after_its_close() {
    use std::os::fd::AsRawFd;
    let c = Cluster::start();
    let path = c.source.join("mapped.bin");
    let len = 8 << 20;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(len as u64).unwrap();
    // SAFETY: a shared writable mapping of a file this test owns, unmapped before it closes.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    // SAFETY: `map` is `len` bytes, mapped above.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) };
    let steps = 40;
    for (i, part) in bytes.chunks_mut(len / steps).enumerate() {
        part.fill(i as u8 + 1);
        // The writer's own pace: slower than the watcher's debounce, with no event at all.
        std::thread::sleep(Duration::from_millis(15));
    }
    // SAFETY: unmapping what was mapped above; `bytes` is not used after.
    assert_eq!(unsafe { libc::munmap(map, len) }, 0);
    drop(file);
    let want = file_hash(&path);
    wait_until("mapped.bin listed whole", SYNC, || {
        c.listing()
            .get("mapped.bin")
            .is_some_and(|l| l.blake3 == want)
    });
    assert_eq!(c.node_files()["others/mapped.bin"], want);
    let log = c.watch.as_ref().unwrap().log_text();
    assert!(!log.contains("changed while being sent"), "{log}");
    assert_eq!(log.matches("synced mapped.bin (").count(), 1, "{log}");
}
