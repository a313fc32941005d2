//! `dfs mount`: the stored files as a read-only FUSE file system. Every stored name shows as a
//! file with its size and mtime, bytes verified before they are returned, history under
//! `.history/<TIME>/` and with `--at`, changes followed within seconds, broker outages and
//! corrupt content answered with EIO, writes with EROFS, SIGTERM unmounting cleanly and a stale
//! mount left by kill -9 cleaned up by the next mount.
//!
//! Real FUSE: every test is skipped (saying why) when not run as root or without /dev/fuse.
//! Everything that touches the mount runs bounded (external commands through
//! `run_command_bounded`, in-process reads on a thread with a deadline), so a hung mount fails
//! a test instead of hanging it; every mount is stopped, and unmounted if it was left behind,
//! when its guard drops.

use crate::harness::*;
use crate::recovery::corrupt_in_place;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(120);
/// How long one external command on the mount may take.
const CMD: Duration = Duration::from_secs(60);
/// How long a change in the source may take to show in a mount (`--refresh 2` plus the 1 s
/// attribute TTL, plus the watcher's sync, with slack for a loaded machine).
const FOLLOW: Duration = Duration::from_secs(15);
/// How long a stopping mount may take.
const STOP: Duration = Duration::from_secs(10);

/// Why the FUSE tests cannot run here, if they cannot.
fn no_fuse() -> Option<&'static str> {
    if !is_root() {
        Some("not root: FUSE mounts need root")
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else {
        None
    }
}

macro_rules! skip_without_fuse {
    () => {
        if let Some(why) = no_fuse() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `program ARGS...` (C locale: English error messages) for at most [`CMD`].
fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LC_ALL", "C");
    run_command_bounded(cmd, CMD)
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `cat PATH`.
fn cat(path: &Path) -> Output {
    run("cat", &[s(path)])
}

/// The bytes of `path` through `cat`, which must succeed.
fn cat_ok(path: &Path) -> Vec<u8> {
    let out = cat(path);
    assert!(
        out.status.success(),
        "cat {}: {}",
        path.display(),
        show(&out)
    );
    out.stdout
}

/// Whether `cat PATH` succeeds with exactly `want`.
fn reads(path: &Path, want: &[u8]) -> bool {
    let out = cat(path);
    out.status.success() && out.stdout == want
}

/// Whether `path` is absent: `stat` fails saying so.
fn absent(path: &Path) -> bool {
    let out = run("stat", &[s(path)]);
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No such file")
}

/// Asserts that `out` failed and its stderr says `msg`.
fn assert_failed_with(out: &Output, what: &str, msg: &str) {
    assert!(!out.status.success(), "{what} succeeded: {}", show(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(msg),
        "{what}: stderr does not say {msg:?}: {}",
        show(out)
    );
}

/// Runs `f` on its own thread and waits at most `timeout` for it (then fails the test; the
/// thread is left behind, and ends when the mount's process is stopped).
fn bounded<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {timeout:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// `\040` and the like in /proc/self/mountinfo, back to bytes.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let code = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = code {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `dir` is a mount point of this process's mount namespace.
fn mounted(dir: &Path) -> bool {
    let want = s(dir);
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == want)
}

/// The entries of the (unmounted) folder `dir`, read bounded.
fn entries(dir: &Path) -> Vec<String> {
    let d = dir.to_path_buf();
    bounded("reading the mount folder", CMD, move || {
        fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    })
}

/// Drops the kernel's page cache of `path` (through the mount), so that the next read asks
/// the mount's process.
fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let p = path.to_path_buf();
    bounded("dropping the page cache", CMD, move || {
        let f = fs::File::open(&p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise {}", p.display());
    });
}

/// A running `dfs mount`: stopped (SIGTERM, then SIGKILL) when dropped, and unmounted lazily if
/// it left its mount behind.
struct FuseMount {
    dir: PathBuf,
    proc: Option<Proc>,
    /// Whether dropping this guard unmounts what is left on `dir` (not once another mount
    /// took the folder over).
    owns_dir: bool,
}

impl FuseMount {
    /// Starts `dfs mount WORK/NAME --broker BROKER --ready-file WORK/NAME.ready --cache-dir
    /// WORK/NAME-cache EXTRA...` (the folder created) and waits until it is mounted.
    fn start(work: &Path, name: &str, broker: &str, extra: &[&str]) -> FuseMount {
        let dir = work.join(name);
        fs::create_dir_all(&dir).unwrap();
        FuseMount::start_at(work, name, &dir.canonicalize().unwrap(), broker, extra)
    }

    /// [`FuseMount::start`] on the existing folder `dir`, logging to `WORK/NAME.log`.
    fn start_at(work: &Path, name: &str, dir: &Path, broker: &str, extra: &[&str]) -> FuseMount {
        let ready = work.join(format!("{name}.ready"));
        let _ = fs::remove_file(&ready);
        let mut args: Vec<String> = ["mount", s(dir), "--broker", broker, "--ready-file"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.push(ready.display().to_string());
        if !extra.contains(&"--cache-dir") {
            args.push("--cache-dir".into());
            args.push(work.join(format!("{name}-cache")).display().to_string());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut m = FuseMount {
            dir: dir.to_path_buf(),
            proc: Some(Proc::spawn(name, work, work, &args)),
            owns_dir: true,
        };
        let p = m.proc.as_mut().unwrap();
        let v = p.wait_ready(&ready);
        let pid = p.pid();
        assert_eq!(v["role"], "mount", "ready file {v}");
        assert_eq!(v["mount"].as_str(), Some(s(dir)), "ready file {v}");
        assert_eq!(v["pid"].as_i64(), Some(pid as i64), "ready file {v}");
        assert!(
            mounted(dir),
            "{} is not a mount point once ready",
            dir.display()
        );
        m
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("the mount is running")
    }

    fn log(&self) -> String {
        self.proc().log_text()
    }

    /// Sends `sig` and returns the exit code (None: it did not exit within [`STOP`]).
    fn stop_with(&mut self, sig: i32) -> Option<i32> {
        let mut p = self.proc.take().expect("the mount is running");
        let code = p.stop_with(sig, STOP);
        if code != Some(0) {
            eprintln!("----- log of {} -----\n{}", p.name, p.log_text());
        }
        code
    }

    /// Kills the process with SIGKILL: its mount stays behind, stale.
    fn kill9(&mut self) {
        self.proc.take().expect("the mount is running").kill9();
    }

    /// Another mount took the folder over: dropping this guard leaves the folder alone.
    fn disown(&mut self) {
        self.owns_dir = false;
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        drop(self.proc.take());
        if self.owns_dir && mounted(&self.dir) {
            let d = s(&self.dir).to_string();
            let mut cmd = Command::new("umount");
            cmd.args(["-l", &d]);
            match try_run_command_bounded(cmd, Duration::from_secs(30)) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("umount -l {d}: {}", show(&out)),
                Err(e) => eprintln!("cannot run umount -l {d}: {e}"),
            }
        }
    }
}

/// Every regular file `find DIR -type f` shows, relative to `dir`.
fn found_files(dir: &Path) -> BTreeSet<String> {
    let out = run("find", &[s(dir), "-type", "f"]);
    assert!(out.status.success(), "find: {}", show(&out));
    let prefix = format!("{}/", s(dir));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l).to_string())
        .collect()
}

/// The whole tree, with every class, nested folders, non-ASCII names and an empty file: `ls -R`,
/// `find`, `cat`, `cp -r` + `diff -r` against the source, and sizes and mtimes from `stat`.
#[test]
fn the_mount_shows_the_whole_tree_with_bytes_sizes_and_mtimes() {
    skip_without_fuse!();
    let mut c = Cluster::start_without_watcher();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, (name, len)) in [
        ("top.txt", 1_000),
        ("music/song.mp3", 150_000),
        ("music/live/encore.mp3", 70_000),
        ("papers/report.pdf", 40_000),
        ("papers/2024/q1/deep.pdf", 5_000),
        ("data.bin", 300_000),
        ("noext", 123),
        ("empty.txt", 0),
        ("日本/歌.mp3", 20_000),
        ("a/b/c/d/e/leaf.cfg", 77),
        ("small/1.txt", 1),
        ("small/2.txt", 2),
        ("small/3.md", 3),
    ]
    .into_iter()
    .enumerate()
    {
        files.insert(name.to_string(), random_bytes(i as u64 + 1, len));
    }
    files.insert(
        "données/été.txt".into(),
        "Été à Paris\n".as_bytes().to_vec(),
    );
    write_files(&c.source, &files);
    // An mtime far from now, set before the watcher first looks.
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_614_861_296);
    fs::File::options()
        .write(true)
        .open(c.source.join("papers/report.pdf"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    c.start_watcher();
    c.wait_synced(SYNC);

    let m = FuseMount::start(c.dir.path(), "mnt", &c.broker_addr(), &[]);

    let ls = run("ls", &["-R", s(&m.dir)]);
    assert!(ls.status.success(), "ls -R: {}", show(&ls));
    let text = String::from_utf8_lossy(&ls.stdout);
    for name in files.keys() {
        let base = name.rsplit('/').next().unwrap();
        assert!(text.contains(base), "ls -R lacks {base}:\n{text}");
    }

    let found = found_files(&m.dir);
    let want: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(found, want, "find -type f");
    assert_eq!(found.len(), 14);

    for name in ["données/été.txt", "日本/歌.mp3", "data.bin", "empty.txt"] {
        assert_eq!(cat_ok(&m.path(name)), files[name], "cat {name}");
    }
    for folder in ["données", "日本", "a/b/c/d/e", "papers/2024"] {
        let out = run("stat", &["-c", "%F", s(&m.path(folder))]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "directory",
            "{folder}: {}",
            show(&out)
        );
    }

    // A copy of the whole mount equals the source.
    let out_dir = c.dir.path().join("copy");
    let cp = run("cp", &["-r", &format!("{}/.", s(&m.dir)), s(&out_dir)]);
    assert!(cp.status.success(), "cp -r: {}", show(&cp));
    let history = out_dir.join(".history");
    if history.exists() {
        // .history lists as empty: copied, it is an empty folder.
        assert!(history.is_dir(), "{}", history.display());
        assert_eq!(entries(&history), Vec::<String>::new(), ".history copied");
        fs::remove_dir(&history).unwrap();
    }
    let diff = run("diff", &["-r", s(&c.source), s(&out_dir)]);
    assert_eq!(diff.status.code(), Some(0), "diff -r: {}", show(&diff));
    assert_eq!(tree_hashes(&out_dir), tree_hashes(&c.source));

    // Sizes and mtimes as the source's.
    for name in [
        "papers/report.pdf",
        "data.bin",
        "empty.txt",
        "données/été.txt",
        "music/live/encore.mp3",
    ] {
        let src = fs::metadata(c.source.join(name)).unwrap();
        let out = run("stat", &["-c", "%s %Y %F", s(&m.path(name))]);
        assert!(out.status.success(), "stat {name}: {}", show(&out));
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let want = format!(
            "{} {} {}",
            src.len(),
            src.mtime(),
            if src.len() == 0 {
                "regular empty file"
            } else {
                "regular file"
            }
        );
        assert_eq!(got, want, "stat of {name}");
    }
    let out = run("stat", &["-c", "%Y", s(&m.path("papers/report.pdf"))]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1614861296");
}

/// A 300 MiB file read through the mount with `cp` arrives whole in bounded memory; read again
/// with the broker gone, it comes from the mount's cache.
#[test]
fn a_300_mib_file_reads_in_bounded_memory_and_again_from_the_cache() {
    skip_without_fuse!();
    const LIMIT_KIB: u64 = 120 * 1024;
    let mut c = Cluster::start();
    let hash = write_big_file(&c.source.join("huge.bin"), 77, 300 << 20);
    wait_until(
        "huge.bin listed with its hash",
        Duration::from_secs(240),
        || c.listing().get("huge.bin").map(|l| l.blake3.clone()) == Some(hash.clone()),
    );
    let m = FuseMount::start(c.dir.path(), "mnt", &c.broker_addr(), &[]);
    let out = c.dir.path().join("huge.copy");
    let t0 = Instant::now();
    let mut cmd = Command::new("cp");
    cmd.args([s(&m.path("huge.bin")), s(&out)]);
    let cp = run_command_bounded(cmd, Duration::from_secs(240));
    assert!(cp.status.success(), "cp: {}", show(&cp));
    eprintln!("300 MiB read through the mount in {:?}", t0.elapsed());
    assert_eq!(file_hash(&out), hash);
    fs::remove_file(&out).unwrap();
    let peak = m.proc().peak_rss_kib();
    eprintln!("peak RSS of the mount: {peak} KiB");
    assert!(
        peak < LIMIT_KIB,
        "the mount peaked at {peak} KiB (limit {LIMIT_KIB} KiB)"
    );

    // The broker gone, and the kernel's copy dropped: the bytes come from the mount's cache.
    c.kill9(Role::Broker);
    let path = m.path("huge.bin");
    drop_page_cache(&path);
    let again = bounded("the second read", Duration::from_secs(240), move || {
        let f = fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut h = blake3::Hasher::new();
        h.update_reader(f).map_err(|e| e.to_string())?;
        Ok::<_, String>(h.finalize().to_hex().to_string())
    });
    assert_eq!(
        again.as_deref(),
        Ok(hash.as_str()),
        "the cached re-read:\n{}",
        m.log()
    );
    let peak = m.proc().peak_rss_kib();
    assert!(peak < LIMIT_KIB, "the mount peaked at {peak} KiB");
}

/// `--at T` mounts the tree as it was at T; a normal mount shows the current tree and, under
/// `.history/T/`, the tree as it was at T: the replaced file with its old bytes, the deleted one.
#[test]
fn at_and_history_show_the_tree_as_it_was() {
    skip_without_fuse!();
    let c = Cluster::start();
    let (v1, v2) = (random_bytes(31, 5_000), random_bytes(32, 7_000));
    let b = random_bytes(33, 3_000);
    fs::write(c.source.join("a.txt"), &v1).unwrap();
    fs::write(c.source.join("b.txt"), &b).unwrap();
    c.wait_synced(SYNC);
    let t = instant_between();
    fs::write(c.source.join("a.txt"), &v2).unwrap();
    wait_until("a.txt v2 is stored", SYNC, || {
        c.listing().get("a.txt").map(|l| l.version) == Some(2)
    });
    fs::remove_file(c.source.join("b.txt")).unwrap();
    c.wait_synced(SYNC);

    {
        let m = FuseMount::start(c.dir.path(), "then", &c.broker_addr(), &["--at", &t]);
        assert_eq!(cat_ok(&m.path("a.txt")), v1, "--at {t}: a.txt");
        assert_eq!(cat_ok(&m.path("b.txt")), b, "--at {t}: b.txt");
        assert_eq!(
            found_files(&m.dir),
            BTreeSet::from(["a.txt".to_string(), "b.txt".to_string()])
        );
    }

    let m = FuseMount::start(c.dir.path(), "now", &c.broker_addr(), &[]);
    assert_eq!(cat_ok(&m.path("a.txt")), v2);
    assert!(absent(&m.path("b.txt")), "b.txt is deleted by now");
    let then = m.dir.join(".history").join(&t);
    assert_eq!(cat_ok(&then.join("a.txt")), v1, ".history/{t}/a.txt");
    assert_eq!(cat_ok(&then.join("b.txt")), b, ".history/{t}/b.txt");
    let ls = run("ls", &[s(&then)]);
    assert!(ls.status.success(), "ls .history/{t}: {}", show(&ls));
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "a.txt\nb.txt\n");
    // An age names a view too (0s: now); a name that is no time is no folder.
    let now = m.dir.join(".history/0s");
    assert_eq!(cat_ok(&now.join("a.txt")), v2, ".history/0s/a.txt");
    assert!(absent(&now.join("b.txt")), ".history/0s/b.txt");
    assert!(absent(&m.dir.join(".history/not-a-time")));
    // The current tree is untouched by the look into the past.
    assert_eq!(found_files(&m.dir), BTreeSet::from(["a.txt".to_string()]));
    assert_eq!(cat_ok(&m.path("a.txt")), v2);
}

/// A stored file whose bytes changed on the node is never served: reads fail with EIO before any
/// byte, the mount's log names it, and the other files still read.
#[test]
fn corrupt_content_fails_reads_with_eio_and_is_logged() {
    skip_without_fuse!();
    let c = Cluster::start();
    let bad = random_bytes(41, 200_000);
    let good = random_bytes(42, 50_000);
    fs::create_dir_all(c.source.join("bad")).unwrap();
    fs::write(c.source.join("bad/broken.txt"), &bad).unwrap();
    fs::write(c.source.join("fine.txt"), &good).unwrap();
    fs::write(c.source.join("big.bin"), random_bytes(43, 5 << 20)).unwrap();
    c.wait_synced(SYNC);
    corrupt_in_place(&c.root.join("txt/bad/broken.txt"), 1_000, 16);

    // Large files are read by the kernel from the verified cache file (passthrough), or
    // through the mount's process: both refuse the corrupt bytes.
    for (name, extra) in [("mnt", &[][..]), ("mnt-read", &["--no-passthrough"][..])] {
        corrupt_file_is_refused(&c, name, extra, &good);
    }
}

fn corrupt_file_is_refused(c: &Cluster, name: &str, extra: &[&str], good: &[u8]) {
    let m = FuseMount::start(c.dir.path(), name, &c.broker_addr(), extra);
    for attempt in 0..2 {
        let out = cat(&m.path("bad/broken.txt"));
        assert_failed_with(
            &out,
            &format!("cat of the corrupt file (attempt {attempt})"),
            "Input/output error",
        );
        assert!(
            out.stdout.is_empty(),
            "{} bytes of the corrupt file were returned",
            out.stdout.len()
        );
    }
    wait_until(
        "the mount logs the corrupt file",
        Duration::from_secs(10),
        || m.log().contains("bad/broken.txt"),
    );
    assert_eq!(cat_ok(&m.path("fine.txt")), good);
    let big = random_bytes(43, 5 << 20);
    let copy = c.dir.path().join(format!("{name}-big.copy"));
    let cp = run("cp", &[s(&m.path("big.bin")), s(&copy)]);
    assert!(
        cp.status.success(),
        "cp of a large file {extra:?}: {}",
        show(&cp)
    );
    assert!(
        fs::read(&copy).unwrap() == big,
        "the large file read {extra:?} differs"
    );
    // Listed as it was stored: the size is still that of the stored file.
    let out = run("stat", &["-c", "%s", s(&m.path("bad/broken.txt"))]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200000");
}

/// Every way of writing fails with EROFS and nothing reaches the store.
#[test]
fn the_mount_is_read_only() {
    skip_without_fuse!();
    let c = Cluster::start();
    let a = random_bytes(51, 4_000);
    let files = BTreeMap::from([
        ("a.txt".to_string(), a.clone()),
        ("sub/b.txt".to_string(), random_bytes(52, 100)),
    ]);
    write_files(&c.source, &files);
    c.wait_synced(SYNC);
    let listed = c.listing();
    let node = c.node_files();
    let source = tree_hashes(&c.source);
    let m = FuseMount::start(c.dir.path(), "mnt", &c.broker_addr(), &[]);
    let p = |n: &str| m.path(n).display().to_string();
    let attempts: Vec<(&str, Vec<String>)> = vec![
        ("touch a new file", vec!["touch".into(), p("new.txt")]),
        ("touch an existing file", vec!["touch".into(), p("a.txt")]),
        (
            "create by redirection",
            vec![
                "sh".into(),
                "-c".into(),
                format!("echo x > '{}'", p("new2.txt")),
            ],
        ),
        (
            "overwrite",
            vec![
                "sh".into(),
                "-c".into(),
                format!("echo x > '{}'", p("a.txt")),
            ],
        ),
        (
            "append",
            vec![
                "sh".into(),
                "-c".into(),
                format!("echo x >> '{}'", p("a.txt")),
            ],
        ),
        ("rm", vec!["rm".into(), p("a.txt")]),
        ("rm in a folder", vec!["rm".into(), p("sub/b.txt")]),
        ("rmdir", vec!["rmdir".into(), p("sub")]),
        ("mv", vec!["mv".into(), p("a.txt"), p("moved.txt")]),
        ("mkdir", vec!["mkdir".into(), p("newdir")]),
        ("chmod", vec!["chmod".into(), "600".into(), p("a.txt")]),
        (
            "truncate",
            vec!["truncate".into(), "-s".into(), "0".into(), p("a.txt")],
        ),
        (
            "symlink",
            vec!["ln".into(), "-s".into(), "a.txt".into(), p("link")],
        ),
    ];
    for (what, argv) in &attempts {
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let out = run(&argv[0], &args);
        assert_failed_with(&out, what, "Read-only file system");
    }
    assert_eq!(cat_ok(&m.path("a.txt")), a, "a.txt unchanged in the mount");
    assert_eq!(
        found_files(&m.dir),
        files.keys().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(c.listing(), listed, "the listing changed");
    assert_eq!(c.node_files(), node, "the node's files changed");
    assert_eq!(tree_hashes(&c.source), source, "the source changed");
}

/// New, replaced and deleted names show in a running mount within seconds; a file kept open
/// reads the version it opened to its end.
#[test]
fn the_mount_follows_changes_and_open_files_keep_their_version() {
    skip_without_fuse!();
    use std::io::Read;
    let c = Cluster::start();
    let (r1, r2) = (random_bytes(61, 3_000), random_bytes(62, 9_000));
    let old = random_bytes(63, 400 << 10);
    let files = BTreeMap::from([
        ("keep.txt".to_string(), random_bytes(60, 100)),
        ("replace.txt".to_string(), r1.clone()),
        ("gone/away.pdf".to_string(), random_bytes(64, 2_000)),
        ("open.bin".to_string(), old.clone()),
    ]);
    write_files(&c.source, &files);
    c.wait_synced(SYNC);
    let m = FuseMount::start(c.dir.path(), "mnt", &c.broker_addr(), &[]);
    assert_eq!(cat_ok(&m.path("replace.txt")), r1);
    assert_eq!(cat_ok(&m.path("gone/away.pdf")), files["gone/away.pdf"]);
    assert!(absent(&m.path("new/fresh.mp3")));

    let fresh = random_bytes(65, 12_345);
    fs::create_dir_all(c.source.join("new")).unwrap();
    fs::write(c.source.join("new/fresh.mp3"), &fresh).unwrap();
    fs::write(c.source.join("replace.txt"), &r2).unwrap();
    fs::remove_file(c.source.join("gone/away.pdf")).unwrap();
    let t0 = Instant::now();
    wait_every(
        "the mount shows the new, replaced and deleted files",
        FOLLOW,
        Duration::from_millis(200),
        || {
            reads(&m.path("new/fresh.mp3"), &fresh)
                && reads(&m.path("replace.txt"), &r2)
                && absent(&m.path("gone/away.pdf"))
        },
    );
    eprintln!("changes shown after {:?}", t0.elapsed());
    let want: BTreeSet<String> = ["keep.txt", "replace.txt", "new/fresh.mp3", "open.bin"]
        .map(String::from)
        .into();
    assert_eq!(found_files(&m.dir), want, "find after the changes");
    assert_eq!(cat_ok(&m.path("keep.txt")), files["keep.txt"]);

    // A handle opened on the old version keeps reading it after a replacement (here by a
    // shorter file, so a handle following the new size would come up short).
    let path = m.path("open.bin");
    let (f, head) = bounded("opening open.bin", CMD, move || {
        let mut f = fs::File::open(&path).unwrap();
        let mut head = [0u8; 10];
        f.read_exact(&mut head).unwrap();
        (f, head)
    });
    assert_eq!(head[..], old[..10]);
    let new = random_bytes(66, 200 << 10);
    fs::write(c.source.join("open.bin"), &new).unwrap();
    wait_every(
        "a fresh open of open.bin reads the new version",
        FOLLOW,
        Duration::from_millis(200),
        || {
            let size = run("stat", &["-c", "%s", s(&m.path("open.bin"))]);
            String::from_utf8_lossy(&size.stdout).trim() == new.len().to_string()
                && reads(&m.path("open.bin"), &new)
        },
    );
    let rest = bounded("reading the old handle", CMD, move || {
        let mut f = f;
        let mut rest = Vec::new();
        let r = f.read_to_end(&mut rest).map_err(|e| e.to_string());
        r.map(|_| rest)
    });
    let rest = rest.unwrap_or_else(|e| panic!("the open handle fails: {e}\n{}", m.log()));
    assert_eq!(
        rest.len(),
        old.len() - 10,
        "the open handle read {} bytes after the first 10 (old version {}, new {})",
        rest.len(),
        old.len(),
        new.len()
    );
    assert!(
        rest == old[10..],
        "the open handle read other bytes than the old version's"
    );
}

/// The broker down: a file not yet cached fails with EIO within about `--timeout`, the tree
/// still lists, a cached file still reads; with the broker back on its port, reads work again.
#[test]
fn a_broker_outage_fails_uncached_reads_in_bounded_time_and_reads_recover() {
    skip_without_fuse!();
    let mut c = Cluster::start();
    let files = BTreeMap::from([
        ("read-before.txt".to_string(), random_bytes(71, 20_000)),
        ("later/unread.mp3".to_string(), random_bytes(72, 150_000)),
    ]);
    write_files(&c.source, &files);
    c.wait_synced(SYNC);
    let mut m = FuseMount::start(c.dir.path(), "mnt", &c.broker_addr(), &["--timeout", "2"]);
    assert_eq!(cat_ok(&m.path("read-before.txt")), files["read-before.txt"]);

    c.kill9(Role::Broker);
    let t0 = Instant::now();
    let out = cat(&m.path("later/unread.mp3"));
    let took = t0.elapsed();
    assert_failed_with(
        &out,
        "reading an uncached file with the broker down",
        "Input/output error",
    );
    assert!(
        took < Duration::from_secs(15),
        "the failing read took {took:?}"
    );
    eprintln!("the read failed after {took:?}");

    let ls = run("ls", &["-R", s(&m.dir)]);
    assert!(
        ls.status.success(),
        "ls -R with the broker down: {}",
        show(&ls)
    );
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.contains("read-before.txt") && text.contains("unread.mp3"),
        "{text}"
    );
    drop_page_cache(&m.path("read-before.txt"));
    assert_eq!(
        cat_ok(&m.path("read-before.txt")),
        files["read-before.txt"],
        "a cached file with the broker down"
    );

    c.restart(Role::Broker);
    wait_every(
        "the uncached file reads once the broker is back",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || reads(&m.path("later/unread.mp3"), &files["later/unread.mp3"]),
    );
    assert!(
        m.proc.as_mut().unwrap().alive(),
        "the mount is still running"
    );
}

/// SIGTERM and SIGINT unmount and exit 0, leaving an empty folder; after kill -9 the mount is
/// stale (ENOTCONN), and the next `dfs mount` on it says so, cleans it up and works.
#[test]
fn signals_unmount_cleanly_and_a_stale_mount_is_cleaned_up() {
    skip_without_fuse!();
    let c = Cluster::start();
    let bytes = random_bytes(81, 30_000);
    fs::write(c.source.join("f.txt"), &bytes).unwrap();
    c.wait_synced(SYNC);
    let broker = c.broker_addr();
    let work = c.dir.path();
    let dir = work.join("mnt");
    fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();

    for (round, sig) in [libc::SIGTERM, libc::SIGINT].into_iter().enumerate() {
        let mut m = FuseMount::start_at(work, &format!("mount{round}"), &dir, &broker, &[]);
        assert_eq!(cat_ok(&m.path("f.txt")), bytes);
        assert_eq!(m.stop_with(sig), Some(0), "exit code after signal {sig}");
        assert!(!mounted(&dir), "still mounted after signal {sig}");
        assert!(dir.is_dir());
        assert_eq!(entries(&dir), Vec::<String>::new(), "left in the folder");
    }

    let mut m = FuseMount::start_at(work, "killed", &dir, &broker, &[]);
    assert_eq!(cat_ok(&m.path("f.txt")), bytes);
    m.kill9();
    let st = run("stat", &[s(&dir)]);
    assert_failed_with(
        &st,
        "stat of a stale mount",
        "Transport endpoint is not connected",
    );
    assert!(mounted(&dir), "the stale mount is still listed");

    let mut next = FuseMount::start_at(work, "after-stale", &dir, &broker, &[]);
    m.disown();
    let log = next.log();
    assert!(
        log.to_lowercase().contains("stale"),
        "the new mount does not say it found a stale mount:\n{log}"
    );
    assert_eq!(cat_ok(&next.path("f.txt")), bytes);
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(s(&dir)))
        .count();
    assert_eq!(
        mounts,
        1,
        "one mount on {} (the stale one removed)",
        dir.display()
    );
    drop(m);
    assert_eq!(next.stop_with(libc::SIGTERM), Some(0));
    assert!(!mounted(&dir), "still mounted after SIGTERM");
    assert_eq!(entries(&dir), Vec::<String>::new());
}

/// With CURVE on every link, a mount given a fetcher key the broker allows reads the files.
#[test]
fn a_mount_with_curve_keys_reads_the_files() {
    skip_without_fuse!();
    let dir = tempfile::Builder::new()
        .prefix("dfs-e2e-mount-curve-")
        .tempdir()
        .unwrap();
    let work = dir.path();
    let keys = work.join("keys");
    fs::create_dir(&keys).unwrap();
    for name in ["storage", "broker", "watcher", "fetcher"] {
        let out = run_bounded(
            work,
            &["keygen", "--out", s(&keys), "--name", name],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "keygen {name}: {}", show(&out));
    }
    let key = |f: &str| keys.join(f).display().to_string();
    let (fetchers, brokers) = (work.join("allowed-fetchers"), work.join("allowed-brokers"));
    fs::create_dir(&fetchers).unwrap();
    fs::create_dir(&brokers).unwrap();
    fs::copy(keys.join("fetcher.pub"), fetchers.join("fetcher.pub")).unwrap();
    fs::copy(keys.join("broker.pub"), brokers.join("broker.pub")).unwrap();
    let source = work.join("source");
    fs::create_dir(&source).unwrap();
    let start = |role: &str, args: &[&str]| -> (Proc, serde_json::Value) {
        let ready = work.join(format!("{role}.ready"));
        let mut all: Vec<String> = vec![role.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--ready-file".into(), ready.display().to_string()]);
        let mut p = Proc::spawn(role, work, work, &all);
        let v = p.wait_ready(&ready);
        (p, v)
    };
    let root = work.join("node");
    let (storage, v) = start(
        "storage",
        &[
            "--root",
            s(&root),
            "--bind",
            "127.0.0.1",
            "--base-port",
            "0",
            "--secret-key",
            &key("storage.key"),
            "--allow",
            s(&brokers),
        ],
    );
    let base = v["base_port"].as_u64().unwrap();
    let data = work.join("server");
    let (broker, v) = start(
        "broker",
        &[
            "--data",
            s(&data),
            "--bind",
            "127.0.0.1",
            "--ingest-port",
            "0",
            "--fetch-port",
            "0",
            "--storage",
            &format!("127.0.0.1:{base}"),
            "--secret-key",
            &key("broker.key"),
            "--storage-key",
            &key("storage.pub"),
            "--allow-watchers",
            &key("watcher.pub"),
            "--allow-fetchers",
            s(&fetchers),
        ],
    );
    let (ingest, fetch) = (
        v["ingest_port"].as_u64().unwrap(),
        v["fetch_port"].as_u64().unwrap(),
    );
    let (watch, _) = start(
        "watch",
        &[
            "--source",
            s(&source),
            "--broker",
            &format!("127.0.0.1:{ingest}"),
            "--debounce-ms",
            "100",
            "--secret-key",
            &key("watcher.key"),
            "--broker-key",
            &key("broker.pub"),
        ],
    );
    let files = BTreeMap::from([
        ("notes.txt".to_string(), random_bytes(91, 3_000)),
        ("music/song.mp3".to_string(), random_bytes(92, 3 << 20)),
    ]);
    write_files(&source, &files);
    let addr = format!("127.0.0.1:{fetch}");
    let (secret, public) = (key("fetcher.key"), key("broker.pub"));
    let want = tree_hashes(&source);
    wait_until("the source is listed", SYNC, || {
        let out = run_bounded(
            work,
            &[
                "fetch",
                "--broker",
                &addr,
                "--secret-key",
                &secret,
                "--broker-key",
                &public,
                "--timeout",
                "30",
                "--json",
            ],
            Duration::from_secs(60),
        );
        out.status.success()
            && parse_listing(&out.stdout)
                .into_iter()
                .map(|(n, l)| (n, l.blake3))
                .collect::<BTreeMap<_, _>>()
                == want
    });

    let m = FuseMount::start(
        work,
        "mnt",
        &addr,
        &["--secret-key", &secret, "--broker-key", &public],
    );
    for (name, bytes) in &files {
        assert!(
            cat_ok(&m.path(name)) == *bytes,
            "{name} through the CURVE mount"
        );
    }
    assert_eq!(
        found_files(&m.dir),
        files.keys().cloned().collect::<BTreeSet<_>>()
    );
    drop(m);
    drop((watch, broker, storage));
}
