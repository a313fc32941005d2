//! Starts real `dfs` processes on loopback with free ports in a temporary folder, and the polled
//! waits, snapshots and comparisons the tests are written in.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `dfs` binary under test.
pub fn dfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dfs")
}

/// Polls `cond` every 20 ms until it holds; fails the test naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    wait_every(what, timeout, Duration::from_millis(20), cond)
}

/// [`wait_until`], polling every `every` (for a condition that is costly to look at: a
/// browser, a listing).
pub fn wait_every(what: &str, timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(every);
    }
}

/// An instant between two versions, as RFC 3339. Not a wait for anything: the kernel stamps
/// ctimes with a coarse clock (a few ms), so the instant is taken clear of the version before
/// it and the one after.
pub fn instant_between() -> String {
    std::thread::sleep(Duration::from_millis(30));
    let t = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(30));
    t
}

/// The version of `name` the broker lists, if it lists it.
pub fn listed_version(c: &Cluster, name: &str) -> Option<u64> {
    c.listing().get(name).map(|l| l.version)
}

/// Writes `files` (name → bytes) into `dir`, folders made as needed.
pub fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
    }
}

/// A running `dfs` process; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `dfs ARGS...`, its stdout and stderr going to `dir/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, cwd: &Path, args: &[String]) -> Proc {
        Proc::spawn_with_env(name, dir, cwd, args, &[])
    }

    /// [`Proc::spawn`] with the environment variables `env` set too.
    pub fn spawn_with_env(
        name: &str,
        dir: &Path,
        cwd: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Proc {
        let mut cmd = Command::new(dfs_bin());
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            // DFS_E2E_LOG (for example `debug`) makes the logs of a failing test more telling.
            .env(
                "RUST_LOG",
                std::env::var("DFS_E2E_LOG").unwrap_or_else(|_| "info".into()),
            );
        Proc::start(name, &dir.join(format!("{name}.log")), cmd)
    }

    /// Starts `cmd` (a `dfs` process, however launched) with no stdin and its stdout and stderr
    /// appended to `log`.
    pub fn start(name: &str, log: &Path, mut cmd: Command) -> Proc {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the JSON ready file the process writes once its sockets are bound.
    pub fn wait_ready(&mut self, ready: &Path) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = fs::read_to_string(ready) {
                if let Ok(v) = serde_json::from_str(&text) {
                    return v;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!("{} not ready after 30 s:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        vm_hwm_kib(self.child.id()).expect("VmHWM in /proc/PID/status")
    }

    /// Sends `sig` and waits up to `timeout` for the exit; returns the exit code (None: killed
    /// by a signal or still running, then SIGKILLed).
    pub fn stop_with(&mut self, sig: i32, timeout: Duration) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        unsafe {
            libc::kill(self.pid(), sig);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
    }
}

/// The arguments of `dfs up` on free ports (0) writing its ports to `ready`.
pub fn up_args(ready: &Path) -> Vec<String> {
    [
        "up",
        "--base-port",
        "0",
        "--ingest-port",
        "0",
        "--fetch-port",
        "0",
        "--ready-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([ready.display().to_string()])
    .collect()
}

/// Peak resident memory (VmHWM) of process `pid` in KiB, while it runs.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Storage node, broker and (optionally) watcher as three processes, each in its own folder
/// under one temporary folder.
pub struct Cluster {
    pub source: PathBuf,
    pub root: PathBuf,
    pub data: PathBuf,
    pub target: PathBuf,
    pub base_port: u16,
    pub ingest_port: u16,
    pub fetch_port: u16,
    pub watch: Option<Proc>,
    pub broker: Option<Proc>,
    pub storage: Option<Proc>,
    /// Options given to every daemon this cluster starts (for example `--metrics 127.0.0.1:0`).
    pub daemon_args: Vec<String>,
    /// Options given to the storage node only (for example `--keep-history 2s`).
    pub storage_args: Vec<String>,
    /// Options given to the broker only (for example `--routes md=txt`).
    pub broker_args: Vec<String>,
    /// The ready file each role wrote when it last started.
    pub ready: BTreeMap<String, serde_json::Value>,
    /// Environment variables of every daemon this cluster starts (the S3 credentials).
    pub env: Vec<(String, String)>,
    /// The bucket the storage node keeps its files in, when it runs with `--backend`: what
    /// the node holds is then read there.
    pub bucket: Option<storage::bucket::Bucket>,
    /// More storage nodes the broker uses (`--storage HOST:BASE` each), beside the cluster's.
    pub more_storage: Vec<String>,
    /// Last, so that it is removed after the processes stopped and their logs were printed.
    pub dir: tempfile::TempDir,
}

fn port(v: &serde_json::Value, key: &str) -> u16 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("ready file {v} has no {key}")) as u16
}

impl Cluster {
    /// All three roles, the watcher on an empty source folder.
    pub fn start() -> Cluster {
        let mut c = Cluster::start_without_watcher();
        c.start_watcher();
        c
    }

    /// All three roles, each started with `daemon_args` too.
    pub fn start_with(daemon_args: &[&str]) -> Cluster {
        let mut c = Cluster::new(daemon_args);
        c.start_storage(0);
        c.start_broker();
        c.start_watcher();
        c
    }

    /// All three roles, the storage node started with `storage_args` too.
    pub fn start_with_storage_args(storage_args: &[&str]) -> Cluster {
        let mut c = Cluster::new(&[]);
        c.storage_args = storage_args.iter().map(|a| a.to_string()).collect();
        c.start_storage(0);
        c.start_broker();
        c.start_watcher();
        c
    }

    /// Storage node and broker only.
    pub fn start_without_watcher() -> Cluster {
        let mut c = Cluster::new(&[]);
        c.start_storage(0);
        c.start_broker();
        c
    }

    /// The folders of a cluster in a new temporary folder, and no process yet.
    pub fn new(daemon_args: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("dfs-e2e-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        let (source, root, data, target) = (
            p.join("source"),
            p.join("node"),
            p.join("server"),
            p.join("target"),
        );
        fs::create_dir_all(&source).unwrap();
        Cluster {
            source,
            root,
            data,
            target,
            base_port: 0,
            ingest_port: 0,
            fetch_port: 0,
            watch: None,
            broker: None,
            storage: None,
            daemon_args: daemon_args.iter().map(|a| a.to_string()).collect(),
            storage_args: Vec::new(),
            broker_args: Vec::new(),
            ready: BTreeMap::new(),
            env: Vec::new(),
            bucket: None,
            more_storage: Vec::new(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Starts `dfs ROLE ARGS... --ready-file DIR/ROLE.ready` and waits for its ready file.
    fn spawn_ready(&mut self, role: &str, args: Vec<String>) -> (Proc, serde_json::Value) {
        let ready = self.dir.path().join(format!("{role}.ready"));
        let _ = fs::remove_file(&ready);
        let mut all = vec![role.to_string()];
        all.extend(args);
        all.extend(self.daemon_args.iter().cloned());
        all.extend(["--ready-file".to_string(), ready.display().to_string()]);
        let mut p = Proc::spawn_with_env(role, self.dir.path(), self.dir.path(), &all, &self.env);
        let v = p.wait_ready(&ready);
        self.ready.insert(role.to_string(), v.clone());
        (p, v)
    }

    /// Starts the storage node on the five ports from `base`; 0 picks a free run outside the
    /// ephemeral range, so that a restart finds it free (tests/e2e/ports.rs).
    pub fn start_storage(&mut self, base: u16) {
        let base = crate::ports::or_free_run(base, 5);
        let mut args = vec![
            "--root".into(),
            self.root.display().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--base-port".into(),
            base.to_string(),
        ];
        args.extend(self.storage_args.iter().cloned());
        let (p, v) = self.spawn_ready("storage", args);
        self.base_port = port(&v, "base_port");
        self.storage = Some(p);
    }

    /// Starts the broker against the running node: on free ports outside the ephemeral range the
    /// first time, then on the same ones.
    pub fn start_broker(&mut self) {
        if self.ingest_port == 0 {
            self.ingest_port = crate::ports::free_port();
            self.fetch_port = crate::ports::free_port();
        }
        let mut args = vec![
            "--data".into(),
            self.data.display().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--ingest-port".into(),
            self.ingest_port.to_string(),
            "--fetch-port".into(),
            self.fetch_port.to_string(),
            "--storage".into(),
            format!("127.0.0.1:{}", self.base_port),
        ];
        for more in &self.more_storage {
            args.extend(["--storage".to_string(), more.clone()]);
        }
        args.extend(self.broker_args.iter().cloned());
        let (p, v) = self.spawn_ready("broker", args);
        self.ingest_port = port(&v, "ingest_port");
        self.fetch_port = port(&v, "fetch_port");
        self.broker = Some(p);
    }

    /// Starts the watcher on the source folder and waits until its watch is in place.
    pub fn start_watcher(&mut self) {
        self.start_watcher_with(&[]);
    }

    pub fn broker_addr(&self) -> String {
        format!("127.0.0.1:{}", self.fetch_port)
    }

    /// Runs `dfs fetch --broker <this broker> ARGS...` (cwd: the temporary folder), bounded to 60 s.
    pub fn fetch(&self, args: &[&str]) -> Output {
        let mut all = vec!["fetch", "--broker"];
        let addr = self.broker_addr();
        all.push(&addr);
        // A loaded CI machine can stall an fsync for seconds; tests that are about timeouts
        // pass their own.
        if !args.contains(&"--timeout") {
            all.extend(["--timeout", "30"]);
        }
        all.extend_from_slice(args);
        run_bounded(self.dir.path(), &all, Duration::from_secs(60))
    }

    /// The broker's listing (`dfs fetch --json`): name → (hash hex, size, class, version).
    pub fn listing(&self) -> BTreeMap<String, Listed> {
        let out = self.fetch(&["--json"]);
        assert!(
            out.status.success(),
            "dfs fetch --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_listing(&out.stdout)
    }

    /// What the node holds under its class folders: `class/name` → hash hex. On an S3
    /// backend, the objects of the bucket with the hash their metadata records.
    pub fn node_files(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(b) = &self.bucket {
            for class in ["mp3", "txt", "pdf", "others"] {
                let keys: Vec<String> = b
                    .list(&format!("{class}/"))
                    .unwrap()
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                for (k, head) in keys.iter().zip(b.head_many(&keys).unwrap()) {
                    let hash = head
                        .and_then(|h| h.meta.into_iter().find(|(n, _)| n == "dfs-blake3"))
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    out.insert(k.clone(), hash);
                }
            }
            return out;
        }
        for class in ["mp3", "txt", "pdf", "others"] {
            for (name, hash) in tree_hashes(&self.root.join(class)) {
                out.insert(format!("{class}/{name}"), hash);
            }
        }
        out
    }

    /// Waits until the listing holds exactly the files of the source folder, with their hashes,
    /// and the node holds exactly those files under the right classes.
    pub fn wait_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let src = tree_hashes(&self.source);
            let listed = self.listed_hashes();
            let want_node: BTreeMap<String, String> = src
                .iter()
                .map(|(n, h)| (format!("{}/{n}", class_of(n)), h.clone()))
                .collect();
            if listed == src && self.node_files() == want_node {
                return;
            }
            let last = format!(
                "source: {:?}\nlisted: {:?}\nnode: {:?}",
                src.keys().collect::<Vec<_>>(),
                listed.keys().collect::<Vec<_>>(),
                self.node_files().keys().collect::<Vec<_>>()
            );
            if Instant::now() > deadline {
                panic!("not in sync after {timeout:?}:\n{last}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The listing as name → hash, as `tree_hashes` gives the source.
    pub fn listed_hashes(&self) -> BTreeMap<String, String> {
        self.listing()
            .into_iter()
            .map(|(n, l)| (n, l.blake3))
            .collect()
    }

    /// Contents of `DATA/myIndex/index.txt`.
    pub fn index_txt(&self) -> String {
        fs::read_to_string(self.data.join("myIndex/index.txt")).unwrap_or_default()
    }
}

/// One row of `dfs fetch --json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub blake3: String,
    pub size: u64,
    pub class: String,
    pub version: u64,
    pub modified: String,
}

pub fn parse_listing(stdout: &[u8]) -> BTreeMap<String, Listed> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"));
            (
                v["name"].as_str().unwrap().to_string(),
                Listed {
                    blake3: v["blake3"].as_str().unwrap().to_string(),
                    size: v["size"].as_u64().unwrap(),
                    class: v["class"].as_str().unwrap().to_string(),
                    version: v["version"].as_u64().unwrap(),
                    modified: v["modified"].as_str().unwrap().to_string(),
                },
            )
        })
        .collect()
}

/// Runs `dfs ARGS...` in `cwd` and waits at most `timeout` (then kills it and fails the test).
pub fn run_bounded(cwd: &Path, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(dfs_bin());
    cmd.args(args).current_dir(cwd);
    run_command_bounded(cmd, timeout)
}

/// The class folder the default routing table picks for `name`.
pub fn class_of(name: &str) -> &'static str {
    let last = name.rsplit('/').next().unwrap();
    let last = last.strip_prefix('.').unwrap_or(last);
    match last.rsplit_once('.').map(|(_, e)| e.to_lowercase()) {
        Some(e) if e == "mp3" => "mp3",
        Some(e) if e == "txt" => "txt",
        Some(e) if e == "pdf" => "pdf",
        _ => "others",
    }
}

/// Every regular file below `dir`: name (relative, `/`-separated) → BLAKE3 hex. Hidden
/// temporary folders of dfs are not expected in class folders, so nothing is skipped.
pub fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let name = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                // Streamed: the test process stays small even with files of hundreds of MiB
                // (a child it spawns starts with the parent's peak RSS on its books).
                if let Ok(f) = fs::File::open(&p) {
                    let mut h = blake3::Hasher::new();
                    if h.update_reader(f).is_ok() {
                        out.insert(name, h.finalize().to_hex().to_string());
                    }
                }
            }
        }
    }
    out
}

/// `len` pseudo-random bytes from `seed` (xorshift; fast, incompressible enough for transfers).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a large pseudo-random file in place, 1 MiB at a time, without holding it in memory
/// (as `cp` would into a watched folder); returns its BLAKE3 hex.
pub fn write_big_file(path: &Path, seed: u64, len: usize) -> String {
    use std::io::Write;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(path).unwrap();
    let mut h = blake3::Hasher::new();
    let mut left = len;
    let mut i = 0;
    while left > 0 {
        let n = left.min(1 << 20);
        let block = random_bytes(seed + i, n);
        h.update(&block);
        f.write_all(&block).unwrap();
        left -= n;
        i += 1;
    }
    h.finalize().to_hex().to_string()
}

/// BLAKE3 hex of a file, streamed.
pub fn file_hash(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(path).unwrap()).unwrap();
    h.finalize().to_hex().to_string()
}

// ----- Faults of the machine: root-only mounts and sysctls, each undone by a drop guard -----

/// Whether the tests run as root (mounts and sysctls need it).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a system command (mount, umount, mkfs, ip, ...) for at most a minute; `Err` with its
/// output if it cannot start or fails.
pub fn system(program: &str, args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = try_run_command_bounded(cmd, Duration::from_secs(60))
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A file system mounted for a test; unmounted when dropped (also while panicking), lazily if
/// something still holds it.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    /// Mounts with `mount ARGS... DIR`.
    pub fn new(dir: &Path, args: &[&str]) -> Result<Mount, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let d = dir.display().to_string();
        let mut all = args.to_vec();
        all.push(&d);
        system("mount", &all)?;
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let d = self.dir.display().to_string();
        if let Err(e) = system("umount", &[&d]) {
            eprintln!("{e}; unmounting lazily");
            if let Err(e) = system("umount", &["-l", &d]) {
                eprintln!("{e}");
            }
        }
    }
}

/// Whether user extended attributes (the node's `user.dfs.meta`) work on the file system of
/// `dir`.
pub fn user_xattrs_work(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let probe = dir.join(".xattr-probe");
    if fs::write(&probe, b"").is_err() {
        return false;
    }
    let path = std::ffi::CString::new(probe.as_os_str().as_bytes()).unwrap();
    let value = b"1";
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.dfs.probe".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    let _ = fs::remove_file(&probe);
    rc == 0
}

/// Whether the file system of `dir` grants read leases (`fcntl(F_SETLEASE)`), by which the
/// watcher tells a file still open for writing.
pub fn leases_work(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let probe = dir.join(".lease-probe");
    if fs::write(&probe, b"").is_err() {
        return false;
    }
    let ok = fs::File::open(&probe).is_ok_and(|f| {
        let fd = f.as_raw_fd();
        let rc = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
        if rc == 0 {
            unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        }
        rc == 0
    });
    let _ = fs::remove_file(&probe);
    ok
}

/// A small file system of `mib` MiB mounted at `dir` on which user xattrs work: a tmpfs where
/// the kernel's tmpfs takes user xattrs, else ext4 on a loop device (its image kept in
/// `image_dir`). `Err` says why neither works here.
pub fn small_fs(dir: &Path, image_dir: &Path, mib: u64) -> Result<Mount, String> {
    let size = format!("size={mib}m");
    let tmpfs = Mount::new(dir, &["-t", "tmpfs", "-o", &size, "tmpfs"])?;
    if user_xattrs_work(dir) {
        return Ok(tmpfs);
    }
    drop(tmpfs);
    eprintln!("this kernel's tmpfs takes no user xattrs; using ext4 on a loop device");
    let image = image_dir.join("small-fs.img");
    let f = fs::File::create(&image).map_err(|e| format!("cannot create the image: {e}"))?;
    f.set_len(mib << 20)
        .map_err(|e| format!("cannot size the image: {e}"))?;
    let img = image.display().to_string();
    system("mkfs.ext4", &["-q", "-F", &img])?;
    let ext4 = Mount::new(dir, &["-o", "loop", &img])?;
    if user_xattrs_work(dir) {
        Ok(ext4)
    } else {
        Err("neither tmpfs nor ext4 take user xattrs here".into())
    }
}

/// Bytes free for files on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    st.f_bavail as u64 * st.f_frsize as u64
}

/// A sysctl set for a test (`/proc/sys/...`), put back to its old value when dropped, also
/// while panicking.
pub struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    /// Sets `key` (dotted, like `fs.inotify.max_queued_events`) to `value`.
    pub fn set(key: &str, value: &str) -> Result<Sysctl, String> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        let old = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        fs::write(&path, value).map_err(|e| format!("cannot set {key}={value}: {e}"))?;
        Ok(Sysctl {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(&self.path, &self.old) {
            eprintln!(
                "cannot restore {} to {}: {e}",
                self.path.display(),
                self.old
            );
        }
    }
}

impl Proc {
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Cluster {
    /// Starts the watcher like [`Cluster::start_watcher`], with `extra` options appended (a
    /// `--debounce-ms` among them replaces the usual 100 ms).
    pub fn start_watcher_with(&mut self, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "--source".into(),
            self.source.display().to_string(),
            "--broker".into(),
            format!("127.0.0.1:{}", self.ingest_port),
        ];
        if !extra.contains(&"--debounce-ms") {
            args.extend(["--debounce-ms".into(), "100".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let (p, _) = self.spawn_ready("watch", args);
        self.watch = Some(p);
    }

    /// Moves the storage node to a new root: stops it, then starts it on `root` with the same
    /// ports (the broker reconnects).
    pub fn move_storage_root(&mut self, root: &Path) {
        self.storage = None;
        self.root = root.to_path_buf();
        self.start_storage(self.base_port);
    }
}

/// Runs `cmd` (stdout and stderr captured) and waits at most `timeout` (then kills it and fails
/// the test).
pub fn run_command_bounded(cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    try_run_command_bounded(cmd, timeout).unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// [`run_command_bounded`], with a command that cannot start as an `Err`.
pub fn try_run_command_bounded(mut cmd: Command, timeout: Duration) -> std::io::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out,
        Err(_) => {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    }
}

impl Proc {
    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU time used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').expect("comm in /proc/PID/stat") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A role of the cluster, to kill or stop and start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Watcher,
    Broker,
    Storage,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Watcher, Role::Broker, Role::Storage];
}

impl Cluster {
    /// The running process of `role`.
    pub fn proc_of(&mut self, role: Role) -> &mut Proc {
        let p = match role {
            Role::Watcher => &mut self.watch,
            Role::Broker => &mut self.broker,
            Role::Storage => &mut self.storage,
        };
        p.as_mut()
            .unwrap_or_else(|| panic!("{role:?} is not running"))
    }

    /// Takes the process of `role` out of the cluster (to stop or kill it by hand).
    pub fn take(&mut self, role: Role) -> Proc {
        match role {
            Role::Watcher => self.watch.take(),
            Role::Broker => self.broker.take(),
            Role::Storage => self.storage.take(),
        }
        .unwrap_or_else(|| panic!("{role:?} is not running"))
    }

    /// Kills `role` with SIGKILL.
    pub fn kill9(&mut self, role: Role) {
        self.take(role).kill9();
    }

    /// Starts `role` again on the ports it had.
    pub fn restart(&mut self, role: Role) {
        match role {
            Role::Watcher => self.start_watcher(),
            Role::Broker => self.start_broker(),
            Role::Storage => {
                let base = self.base_port;
                self.start_storage(base)
            }
        }
    }

    /// Bytes of the uploads in progress on the node (its temporary files in `.dfs/tmp`).
    pub fn node_tmp_bytes(&self) -> u64 {
        let pid = self.storage.as_ref().map_or(0, |p| p.pid());
        open_bytes_in(pid, &self.root.join(".dfs/tmp"))
    }

    /// The rows of index.txt: name → blake3 hex (header skipped).
    pub fn index_hashes(&self) -> BTreeMap<String, String> {
        self.index_txt()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 6, "six tab-separated fields: {l:?}");
                (f[0].to_string(), f[3].to_string())
            })
            .collect()
    }

    /// Waits until the listing, the node's folders and index.txt all equal the source; on
    /// timeout, fails naming every name on which they differ.
    pub fn wait_all_agree(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let src = tree_hashes(&self.source);
            let listed = self.listed_hashes();
            let node: BTreeMap<String, String> = self
                .node_files()
                .into_iter()
                .map(|(n, h)| (n.split_once('/').unwrap().1.to_string(), h))
                .collect();
            let classes_ok = self
                .node_files()
                .keys()
                .all(|n| n.split_once('/').unwrap().0 == class_of(n.split_once('/').unwrap().1));
            let index = self.index_hashes();
            if listed == src && node == src && index == src && classes_ok {
                return;
            }
            if Instant::now() > deadline {
                let mut names: std::collections::BTreeSet<&String> = src.keys().collect();
                names.extend(listed.keys());
                names.extend(node.keys());
                names.extend(index.keys());
                let short = |m: &BTreeMap<String, String>, n: &String| {
                    m.get(n).map_or("-".to_string(), |h| h[..12].to_string())
                };
                let diffs: Vec<String> = names
                    .into_iter()
                    .filter(|n| {
                        let s = src.get(*n);
                        listed.get(*n) != s || node.get(*n) != s || index.get(*n) != s
                    })
                    .map(|n| {
                        format!(
                            "{n}: source {} listed {} node {} index.txt {}",
                            short(&src, n),
                            short(&listed, n),
                            short(&node, n),
                            short(&index, n)
                        )
                    })
                    .collect();
                panic!(
                    "not in agreement after {timeout:?} (classes right: {classes_ok}):\n{}",
                    diffs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The version records of `name` in `class` on the node, as (version, deleted, blake3 hex).
pub fn node_versions(root: &Path, class: &str, name: &str) -> Vec<(u64, bool, String)> {
    let path = root
        .join(".dfs/history")
        .join(class)
        .join(format!("{name}.versions"));
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["version"].as_u64().unwrap(),
                v["deleted"].as_bool().unwrap_or(false),
                v["blake3"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The watcher log's content bytes: the sum of N over its `synced NAME (N bytes` lines.
pub fn synced_bytes(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split_once("synced ").map(|(_, r)| r))
        .filter_map(|r| r.rsplit_once(" (").map(|(_, r)| r))
        .filter_map(|r| r.split_once(" bytes").map(|(n, _)| n))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// A small seeded xorshift generator for randomized tests (print the seed so a failing run can
/// be replayed with `DFS_SEED`).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// The seed of a randomized test: `DFS_SEED` when set (to replay a run), else the clock.
pub fn seed() -> u64 {
    std::env::var("DFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

impl Cluster {
    /// Asserts that every running daemon (and each of `others`, name and KiB) peaked below
    /// `limit_kib` of resident memory; prints the peaks.
    pub fn assert_peaks_below(&self, limit_kib: u64, others: Vec<(String, u64)>) {
        let mut peaks = others;
        for p in [&self.watch, &self.broker, &self.storage]
            .into_iter()
            .flatten()
        {
            peaks.push((p.name.clone(), p.peak_rss_kib()));
        }
        eprintln!("peak RSS (KiB): {peaks:?}");
        for (name, kib) in peaks {
            assert!(
                kib < limit_kib,
                "{name} peaked at {kib} KiB (limit {limit_kib} KiB)"
            );
        }
    }
}

/// Bytes of the files in the folder `dir` that process `pid` holds open, each file counted once.
/// The node's temporary files are unnamed where the file system allows (`O_TMPFILE`): they have
/// no entry in the folder and show in /proc only, as `DIR/#INODE (deleted)`.
pub fn open_bytes_in(pid: i32, dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let mut seen = std::collections::BTreeMap::new();
    for fd in fds.flatten() {
        let in_dir = fs::read_link(fd.path()).is_ok_and(|t| t.parent() == Some(dir));
        if let (true, Ok(m)) = (in_dir, fs::metadata(fd.path())) {
            if m.is_file() {
                seen.insert(m.ino(), m.len());
            }
        }
    }
    seen.values().sum()
}
