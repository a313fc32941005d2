//! Three hosts (issues 6 item 8 and 7 item 5): the client (watcher and fetcher), the server
//! (broker) and the storage node each run in their own network namespace with their own address
//! on a private subnet, joined by a bridge that lives in a fourth namespace. Every link uses
//! CURVE. Nothing is created in the root namespace except the namespaces' files under
//! /var/run/netns, and a drop guard deletes the namespaces (and kills what runs in them), also
//! when the test panics.
//!
//! Needs root and iproute2 (`ip`); skipped with a reason otherwise.

use crate::harness::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The roles, each with its namespace suffix and last address byte.
const ROLES: [(&str, u8); 3] = [("client", 1), ("server", 2), ("storage", 3)];

/// Runs `ip ARGS...`, bounded; `Err` with its output if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    system("ip", args)
}

/// The namespaces of one test run; deleted when dropped, after killing anything left in them.
struct Net {
    /// Namespace names, the bridge's first.
    names: Vec<String>,
    /// The /24 subnet's first three bytes, like `10.231.17`.
    subnet: String,
}

impl Net {
    /// Creates the bridge namespace and one namespace per role with a veth pair into the bridge.
    /// `Err` if the first `ip netns add` fails (the test is skipped then); panics on later
    /// failures (the guard still removes what exists).
    fn create() -> Result<Net, String> {
        let pid = std::process::id();
        let prefix = format!("dfs-{pid}");
        let bridge = format!("{prefix}-br");
        ip(&["netns", "add", &bridge])?;
        let mut net = Net {
            names: vec![bridge.clone()],
            subnet: format!("10.231.{}", pid % 200),
        };
        let must = |args: &[&str]| ip(args).unwrap_or_else(|e| panic!("{e}"));
        must(&["-n", &bridge, "link", "set", "lo", "up"]);
        must(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", &bridge, "link", "set", "br0", "up"]);
        for (role, byte) in ROLES {
            let ns = format!("{prefix}-{role}");
            must(&["netns", "add", &ns]);
            net.names.push(ns.clone());
            // Both ends are made in the bridge's namespace; one end moves into the role's.
            let (port, eth) = (format!("v-{role}"), format!("eth-{role}"));
            must(&[
                "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", &eth,
            ]);
            must(&["-n", &bridge, "link", "set", &eth, "netns", &ns]);
            must(&["-n", &bridge, "link", "set", &port, "master", "br0"]);
            must(&["-n", &bridge, "link", "set", &port, "up"]);
            let addr = format!("{}.{byte}/24", net.subnet);
            must(&["-n", &ns, "addr", "add", &addr, "dev", &eth]);
            must(&["-n", &ns, "link", "set", &eth, "up"]);
            must(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        Ok(net)
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.names[0].trim_end_matches("-br"))
    }

    fn addr(&self, role: &str) -> String {
        let byte = ROLES.iter().find(|(r, _)| *r == role).unwrap().1;
        format!("{}.{byte}", self.subnet)
    }

    /// `ip netns exec NS dfs ARGS...` (ip execs dfs: the child is the dfs process itself).
    fn command(&self, role: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role), dfs_bin()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("DFS_E2E_LOG").unwrap_or_else(|_| "info".into()),
            );
        cmd
    }

    /// Runs `dfs ARGS...` in the namespace of `role`, bounded to 60 s.
    fn run(&self, role: &str, args: &[&str]) -> Output {
        run_command_bounded(self.command(role, args), Duration::from_secs(60))
    }

    /// Starts `dfs ARGS... --ready-file DIR/NAME.ready` in the namespace of `role`, logging to
    /// `DIR/NAME.log`, and waits for its ready file.
    fn spawn(
        &self,
        name: &str,
        role: &str,
        dir: &Path,
        args: &[&str],
    ) -> (Proc, serde_json::Value) {
        let ready = dir.join(format!("{name}.ready"));
        let ready_s = ready.display().to_string();
        let mut cmd = self.command(role, args);
        cmd.args(["--ready-file", &ready_s]).current_dir(dir);
        let mut p = Proc::start(name, &dir.join(format!("{name}.log")), cmd);
        let v = p.wait_ready(&ready);
        (p, v)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            // Anything still running in there (the Procs are stopped before this guard drops).
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", ns])
                .stdin(Stdio::null())
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("{e}");
            }
        }
    }
}

fn port(v: &serde_json::Value, key: &str) -> u16 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("ready file {v} has no {key}")) as u16
}

/// How many lines of `log` contain every one of `parts`.
fn lines_with(log: &str, parts: &[&str]) -> usize {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// `ip ARGS...`'s standard output, bounded.
fn ip_output(args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    String::from_utf8_lossy(&run_command_bounded(cmd, Duration::from_secs(30)).stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn three_hosts_in_network_namespaces_sync_and_fetch_over_curve() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: `ip` (iproute2) is not installed");
        return;
    }
    let started = Instant::now();
    // Declared first, so dropped last: after every Proc below was stopped.
    let net = match Net::create() {
        Ok(net) => net,
        Err(e) => {
            eprintln!("skipped: cannot create a network namespace: {e}");
            return;
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("dfs-e2e-hosts-")
        .tempdir()
        .unwrap();
    let p = dir.path();
    let s = |p: &PathBuf| p.display().to_string();
    let keys = p.join("keys");
    fs::create_dir_all(&keys).unwrap();
    for name in ["storage", "broker", "watcher", "fetcher"] {
        let out = run_bounded(
            p,
            &["keygen", "--out", &s(&keys), "--name", name],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "keygen {name}: {out:?}");
    }
    let key = |f: &str| s(&keys.join(f));
    let (source, root, data, target) = (
        p.join("source"),
        p.join("node"),
        p.join("server"),
        p.join("target"),
    );
    fs::create_dir_all(&source).unwrap();
    let (server_ip, storage_ip) = (net.addr("server"), net.addr("storage"));

    // Without keys, a daemon refuses to listen on the namespace's (non-loopback) address.
    let out = net.run(
        "storage",
        &[
            "storage",
            "--root",
            &s(&root),
            "--bind",
            &storage_ip,
            "--base-port",
            "0",
        ],
    );
    assert!(!out.status.success(), "storage started without keys");
    assert!(
        stderr(&out).contains("keygen") || stderr(&out).contains("--insecure"),
        "{}",
        stderr(&out)
    );

    let (storage, v) = net.spawn(
        "storage",
        "storage",
        p,
        &[
            "storage",
            "--root",
            &s(&root),
            "--bind",
            &storage_ip,
            "--base-port",
            "0",
            "--secret-key",
            &key("storage.key"),
            "--allow",
            &key("broker.pub"),
        ],
    );
    let base_port = port(&v, "base_port");
    let (broker, v) = net.spawn(
        "broker",
        "server",
        p,
        &[
            "broker",
            "--data",
            &s(&data),
            "--bind",
            &server_ip,
            "--ingest-port",
            "0",
            "--fetch-port",
            "0",
            "--storage",
            &format!("{storage_ip}:{base_port}"),
            "--secret-key",
            &key("broker.key"),
            "--storage-key",
            &key("storage.pub"),
            "--allow-watchers",
            &key("watcher.pub"),
            "--allow-fetchers",
            &key("fetcher.pub"),
        ],
    );
    let (ingest, fetch_port) = (port(&v, "ingest_port"), port(&v, "fetch_port"));
    let (watch, _) = net.spawn(
        "watch",
        "client",
        p,
        &[
            "watch",
            "--source",
            &s(&source),
            "--broker",
            &format!("{server_ip}:{ingest}"),
            "--debounce-ms",
            "100",
            "--secret-key",
            &key("watcher.key"),
            "--broker-key",
            &key("broker.pub"),
        ],
    );

    // Small files and chunked ones (> 256 KiB), one of each class.
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for (name, seed, len) in [
        ("notes.txt", 1, 3000),
        ("docs/report.pdf", 2, 40_000),
        ("empty.txt", 3, 0),
    ] {
        let path = source.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(seed, len)).unwrap();
        want.insert(name.to_string(), file_hash(&path));
    }
    for (name, seed, len) in [("music/song.mp3", 4, 3 << 20), ("data.bin", 5, 700 << 10)] {
        want.insert(
            name.to_string(),
            write_big_file(&source.join(name), seed, len),
        );
    }

    let broker_addr = format!("{server_ip}:{fetch_port}");
    let (fetcher_key, broker_pub) = (key("fetcher.key"), key("broker.pub"));
    let fetch = |args: &[&str]| {
        let mut all = vec![
            "fetch",
            "--broker",
            &broker_addr,
            "--secret-key",
            &fetcher_key,
            "--broker-key",
            &broker_pub,
        ];
        all.extend(["--timeout", "30"]);
        all.extend_from_slice(args);
        net.run("client", &all)
    };
    let want_node: BTreeMap<String, String> = want
        .iter()
        .map(|(n, h)| (format!("{}/{n}", class_of(n)), h.clone()))
        .collect();
    let node_files = || {
        let mut out = BTreeMap::new();
        for class in ["mp3", "txt", "pdf", "others"] {
            for (name, hash) in tree_hashes(&root.join(class)) {
                out.insert(format!("{class}/{name}"), hash);
            }
        }
        out
    };
    // Polled until the listing and the node's class folders hold exactly these files.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = fetch(&["--json"]);
        let last = if out.status.success() {
            let listed: BTreeMap<String, String> = parse_listing(&out.stdout)
                .into_iter()
                .map(|(n, l)| (n, l.blake3))
                .collect();
            if listed == want && node_files() == want_node {
                break;
            }
            format!(
                "listed {:?}, node {:?}",
                listed.keys().collect::<Vec<_>>(),
                node_files().keys().collect::<Vec<_>>()
            )
        } else {
            stderr(&out)
        };
        if Instant::now() > deadline {
            panic!("not listed from the client namespace after 90 s: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node_files(), want_node);

    let names: Vec<&str> = want.keys().map(|n| n.as_str()).collect();
    let target_s = s(&target);
    let mut args = vec!["--target", target_s.as_str()];
    args.extend(names.iter().copied());
    let out = fetch(&args);
    assert!(out.status.success(), "fetch: {}", stderr(&out));
    assert_eq!(tree_hashes(&target), want);

    // A plaintext fetcher (no keys) is refused by the broker: exit 3, in bounded time.
    let t0 = Instant::now();
    let out = net.run(
        "client",
        &["fetch", "--broker", &broker_addr, "--timeout", "2"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("uses CURVE"), "{}", stderr(&out));
    assert!(t0.elapsed() < Duration::from_secs(30));

    // Every link was CURVE, and the peers came from their own namespace's address.
    let (slog, blog) = (storage.log_text(), broker.log_text());
    let client_ip = net.addr("client");
    assert!(
        lines_with(
            &slog,
            &["admitted broker key", &format!("from {server_ip}")]
        ) >= 1,
        "{slog}"
    );
    for role in ["watcher", "fetcher"] {
        let what = format!("admitted {role} key");
        assert!(
            lines_with(&blog, &[&what, &format!("from {client_ip}")]) >= 1,
            "{blog}"
        );
    }

    // Nothing of this test in the root namespace: no veth end, no address of the subnet.
    let root_addrs = ip_output(&["-o", "addr"]);
    assert!(
        !root_addrs.contains(&format!("{}.", net.subnet)),
        "{root_addrs}"
    );
    let root_links = ip_output(&["-o", "link"]);
    for (role, _) in ROLES {
        assert!(!root_links.contains(&format!("eth-{role}")), "{root_links}");
        assert!(!root_links.contains(&format!("v-{role}@")), "{root_links}");
    }
    drop(watch);
    drop(broker);
    drop(storage);
    let names = net.names.clone();
    drop(net);
    let left = ip_output(&["netns", "list"]);
    for ns in names {
        assert!(!left.contains(&ns), "namespace {ns} left behind: {left}");
    }
    eprintln!("three hosts: done in {:?}", started.elapsed());
}
