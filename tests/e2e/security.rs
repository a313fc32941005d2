//! CURVE on every link (docs/CONTRACT.md §6): key files, a cluster whose links all use CURVE, each port
//! admitting only its role's keys, refusals logged once per address, the fetch port read-only,
//! wrong server keys failing in bounded time, allow-lists reloaded on SIGHUP, and daemons that
//! refuse to listen beyond loopback without keys.
//!
//! Refused clients connect from their own loopback address (127.0.0.2, 127.0.0.3, ...) so that
//! each refusal's log line can be told apart.

use crate::harness::*;
use net::keys::{read_public_key, read_secret_key};
use net::security::ClientAuth;
use schema::{ErrorCode, Hash, Message};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

/// Every key the tests use, made by `dfs keygen` in `dir`.
const KEYS: [&str; 5] = ["storage", "broker", "watcher", "fetcher", "stranger"];

fn keygen(dir: &Path, name: &str) -> Output {
    fs::create_dir_all(dir).unwrap();
    let d = dir.display().to_string();
    run_bounded(
        dir,
        &["keygen", "--out", &d, "--name", name],
        Duration::from_secs(30),
    )
}

/// A storage node, a broker and a watcher with CURVE on every link, each in its own folder.
struct Secure {
    keys: PathBuf,
    source: PathBuf,
    root: PathBuf,
    data: PathBuf,
    /// The broker's --allow-fetchers folder (one NAME.pub per allowed fetcher).
    fetchers: PathBuf,
    /// The storage node's --allow folder.
    brokers: PathBuf,
    base_port: u16,
    ingest_port: u16,
    fetch_port: u16,
    watch: Option<Proc>,
    broker: Option<Proc>,
    storage: Option<Proc>,
    dir: tempfile::TempDir,
}

impl Secure {
    fn start() -> Secure {
        Secure::start_with(true)
    }

    /// With `node_admits_broker` false, the node's allow folder starts empty.
    fn start_with(node_admits_broker: bool) -> Secure {
        let dir = tempfile::Builder::new()
            .prefix("dfs-e2e-curve-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        let keys = p.join("keys");
        for name in KEYS {
            let out = keygen(&keys, name);
            assert!(out.status.success(), "keygen {name}: {out:?}");
        }
        let fetchers = p.join("allowed-fetchers");
        fs::create_dir(&fetchers).unwrap();
        fs::copy(keys.join("fetcher.pub"), fetchers.join("fetcher.pub")).unwrap();
        let brokers = p.join("allowed-brokers");
        fs::create_dir(&brokers).unwrap();
        if node_admits_broker {
            fs::copy(keys.join("broker.pub"), brokers.join("broker.pub")).unwrap();
        }
        let mut s = Secure {
            brokers,
            keys,
            source: p.join("source"),
            root: p.join("node"),
            data: p.join("server"),
            fetchers,
            base_port: 0,
            ingest_port: 0,
            fetch_port: 0,
            watch: None,
            broker: None,
            storage: None,
            dir,
        };
        fs::create_dir_all(&s.source).unwrap();
        let (p, v) = s.spawn(
            "storage",
            &[
                "--root",
                &s.path(&s.root),
                "--bind",
                "127.0.0.1",
                "--base-port",
                "0",
                "--secret-key",
                &s.key("storage.key"),
                "--allow",
                &s.path(&s.brokers),
            ],
        );
        s.base_port = v["base_port"].as_u64().unwrap() as u16;
        s.storage = Some(p);
        let (p, v) = s.spawn(
            "broker",
            &[
                "--data",
                &s.path(&s.data),
                "--bind",
                "127.0.0.1",
                "--ingest-port",
                "0",
                "--fetch-port",
                "0",
                "--storage",
                &format!("127.0.0.1:{}", s.base_port),
                "--secret-key",
                &s.key("broker.key"),
                "--storage-key",
                &s.key("storage.pub"),
                "--allow-watchers",
                &s.key("watcher.pub"),
                "--allow-fetchers",
                &s.path(&s.fetchers),
            ],
        );
        s.ingest_port = v["ingest_port"].as_u64().unwrap() as u16;
        s.fetch_port = v["fetch_port"].as_u64().unwrap() as u16;
        s.broker = Some(p);
        let (p, _) = s.spawn(
            "watch",
            &[
                "--source",
                &s.path(&s.source),
                "--broker",
                &format!("127.0.0.1:{}", s.ingest_port),
                "--debounce-ms",
                "100",
                "--secret-key",
                &s.key("watcher.key"),
                "--broker-key",
                &s.key("broker.pub"),
            ],
        );
        s.watch = Some(p);
        s
    }

    fn path(&self, p: &Path) -> String {
        p.display().to_string()
    }

    fn key(&self, file: &str) -> String {
        self.keys.join(file).display().to_string()
    }

    fn spawn(&self, role: &str, args: &[&str]) -> (Proc, serde_json::Value) {
        self.spawn_as(role, role, args)
    }

    /// Starts `dfs ROLE ARGS...` logging to `NAME.log` and waits for its ready file.
    fn spawn_as(&self, name: &str, role: &str, args: &[&str]) -> (Proc, serde_json::Value) {
        let ready = self.dir.path().join(format!("{name}.ready"));
        let mut all: Vec<String> = vec![role.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--ready-file".into(), ready.display().to_string()]);
        let mut p = Proc::spawn(name, self.dir.path(), self.dir.path(), &all);
        let v = p.wait_ready(&ready);
        (p, v)
    }

    /// `dfs fetch` with the key pair `NAME.key` and the broker key `BROKER.pub`.
    fn fetch_as(&self, name: &str, broker: &str, args: &[&str]) -> Output {
        let addr = format!("127.0.0.1:{}", self.fetch_port);
        let (secret, public) = (
            self.key(&format!("{name}.key")),
            self.key(&format!("{broker}.pub")),
        );
        let mut all = vec![
            "fetch",
            "--broker",
            &addr,
            "--secret-key",
            &secret,
            "--broker-key",
            &public,
        ];
        if !args.contains(&"--timeout") {
            all.extend(["--timeout", "30"]);
        }
        all.extend_from_slice(args);
        run_bounded(self.dir.path(), &all, Duration::from_secs(60))
    }

    /// The listing through a fetcher allowed on the fetch port.
    fn listing(&self) -> BTreeMap<String, Listed> {
        let out = self.fetch_as("fetcher", "broker", &["--json"]);
        assert!(
            out.status.success(),
            "dfs fetch --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_listing(&out.stdout)
    }

    /// The node's files: `class/name` → BLAKE3 hex.
    fn node_files(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for class in ["mp3", "txt", "pdf", "others"] {
            for (name, hash) in tree_hashes(&self.root.join(class)) {
                out.insert(format!("{class}/{name}"), hash);
            }
        }
        out
    }

    /// Waits until the listing holds exactly the source's files with their hashes.
    fn wait_listed(&self) {
        let want = tree_hashes(&self.source);
        wait_until("the source is listed", Duration::from_secs(60), || {
            let listed: BTreeMap<String, String> = self
                .listing()
                .into_iter()
                .map(|(n, l)| (n, l.blake3))
                .collect();
            listed == want
        });
    }

    fn log(&self, role: &str) -> String {
        let p = match role {
            "storage" => &self.storage,
            "broker" => &self.broker,
            _ => &self.watch,
        };
        p.as_ref().unwrap().log_text()
    }

    /// A CURVE client with key `NAME.key` to `port`, trusting `SERVER.pub`, connecting from the
    /// loopback address `from`. Without ZMQ_IMMEDIATE: what is sent waits for the handshake and
    /// goes out if it succeeds.
    fn client(
        &self,
        ctx: &zmq::Context,
        from: &str,
        port: u16,
        key: Option<(&str, &str)>,
    ) -> zmq::Socket {
        let auth = match key {
            Some((name, server)) => ClientAuth::Curve {
                keys: Arc::new(
                    read_secret_key(Path::new(&self.key(&format!("{name}.key")))).unwrap(),
                ),
                server: read_public_key(Path::new(&self.key(&format!("{server}.pub")))).unwrap(),
            },
            None => ClientAuth::Plain,
        };
        let s = ctx.socket(zmq::DEALER).unwrap();
        s.set_linger(0).unwrap();
        s.set_reconnect_ivl(100).unwrap();
        auth.apply(&s).unwrap();
        s.connect(&format!("tcp://{from}:0;127.0.0.1:{port}"))
            .unwrap();
        s
    }
}

fn send(s: &zmq::Socket, msg: &Message, data: Option<&[u8]>) {
    schema::codec::send(s, None, msg, data.map(zmq::Message::from)).unwrap();
}

/// The next reply on `s` within `ms`, if any.
fn reply(s: &zmq::Socket, ms: i64) -> Option<Message> {
    if s.poll(zmq::POLLIN, ms).unwrap() == 0 {
        return None;
    }
    let inbound = schema::codec::recv(s, false, 0).unwrap();
    Some(inbound.msg.unwrap())
}

/// How many lines of `log` contain every one of `parts`.
fn lines_with(log: &str, parts: &[&str]) -> usize {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

fn inline_put(name: &str, body: &[u8]) -> Message {
    Message::Put {
        id: 7,
        name: name.into(),
        size: body.len() as u64,
        modified: 0,
        blake3: Some(Hash::of(body)),
        version: None,
        growing: false,
        sender: None,
    }
}

#[test]
fn keygen_writes_an_owner_only_secret_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = keygen(&keys, "node");
    assert!(out.status.success(), "{out:?}");
    let (secret, public) = (keys.join("node.key"), keys.join("node.pub"));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secret), 0o600);
    let pub_text = fs::read_to_string(&public).unwrap();
    assert_eq!(pub_text.len(), 41, "one Z85 line: {pub_text:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(pub_text.trim()));
    let secret_text = fs::read_to_string(&secret).unwrap();

    let again = keygen(&keys, "node");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(fs::read_to_string(&secret).unwrap(), secret_text);
    assert_eq!(fs::read_to_string(&public).unwrap(), pub_text);

    // --secret/--public, and refused when either exists.
    let (s2, p2) = (dir.path().join("s2"), dir.path().join("p2"));
    let (s2s, p2s) = (s2.display().to_string(), p2.display().to_string());
    let out = run_bounded(
        dir.path(),
        &["keygen", "--secret", &s2s, "--public", &p2s],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&s2), 0o600);
    let pubs = public.display().to_string();
    let out = run_bounded(
        dir.path(),
        &[
            "keygen",
            "--secret",
            &dir.path().join("s3").display().to_string(),
            "--public",
            &pubs,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !dir.path().join("s3").exists(),
        "no secret left without its public key"
    );

    // A secret key the group can read is refused by the daemon that loads it.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
    let root = dir.path().join("node").display().to_string();
    let secret_s = secret.display().to_string();
    let out = run_bounded(
        dir.path(),
        &[
            "storage",
            "--root",
            &root,
            "--bind",
            "127.0.0.1",
            "--base-port",
            "0",
            "--secret-key",
            &secret_s,
            "--allow",
            &pubs,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&secret_s) && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn a_curve_cluster_syncs_and_fetches() {
    let s = Secure::start();
    let small = random_bytes(1, 3000);
    fs::write(s.source.join("notes.txt"), &small).unwrap();
    fs::create_dir_all(s.source.join("music")).unwrap();
    let big_hash = write_big_file(&s.source.join("music/song.mp3"), 2, 3 << 20);
    s.wait_listed();
    let node = s.node_files();
    assert_eq!(node.get("mp3/music/song.mp3"), Some(&big_hash));
    assert_eq!(
        node.get("txt/notes.txt"),
        Some(&file_hash(&s.source.join("notes.txt")))
    );

    let target = s.dir.path().join("target");
    let t = target.display().to_string();
    let out = s.fetch_as(
        "fetcher",
        "broker",
        &["--target", &t, "notes.txt", "music/song.mp3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(target.join("notes.txt")).unwrap(), small);
    assert_eq!(file_hash(&target.join("music/song.mp3")), big_hash);

    // Every link was CURVE: each daemon admitted the key of its one peer role.
    assert!(
        s.log("storage").contains("admitted broker key"),
        "{}",
        s.log("storage")
    );
    assert!(s.log("broker").contains("admitted watcher key"));
    assert!(s.log("broker").contains("admitted fetcher key"));
}

#[test]
fn storage_admits_the_broker_key_only() {
    let s = Secure::start();
    let ctx = zmq::Context::new();
    let serve = s.base_port + 4;
    let watcher = s.client(&ctx, "127.0.0.2", serve, Some(("watcher", "storage")));
    send(&watcher, &Message::list(1, None, 10), None);
    let txt = s.client(
        &ctx,
        "127.0.0.3",
        s.base_port + 1,
        Some(("stranger", "storage")),
    );
    send(&txt, &inline_put("evil.txt", b"evil"), Some(b"evil"));
    wait_until("both refusals are logged", Duration::from_secs(20), || {
        let log = s.log("storage");
        lines_with(
            &log,
            &[
                "refused a connection from 127.0.0.2",
                "not an allowed broker key",
            ],
        ) == 1
            && lines_with(&log, &["refused a connection from 127.0.0.3"]) == 1
    });
    assert_eq!(
        reply(&watcher, 500),
        None,
        "a watcher key gets no listing from the node"
    );
    assert_eq!(reply(&txt, 500), None);
    // They kept retrying meanwhile; each address is still logged once.
    let log = s.log("storage");
    assert_eq!(
        lines_with(&log, &["refused a connection from 127.0.0.2"]),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(&log, &["refused a connection from 127.0.0.3"]),
        1,
        "{log}"
    );
    assert!(s.node_files().is_empty());

    // The broker's own link still works.
    fs::write(s.source.join("fine.txt"), b"fine").unwrap();
    s.wait_listed();
    assert_eq!(s.node_files().len(), 1);
}

#[test]
fn ingest_refuses_fetcher_unknown_plaintext_and_misled_clients() {
    let s = Secure::start();
    let ctx = zmq::Context::new();
    let port = s.ingest_port;
    let clients = [
        (
            "127.0.0.2",
            s.client(&ctx, "127.0.0.2", port, Some(("fetcher", "broker"))),
            "not an allowed watcher key",
        ),
        (
            "127.0.0.3",
            s.client(&ctx, "127.0.0.3", port, Some(("stranger", "broker"))),
            "not an allowed watcher key",
        ),
        (
            "127.0.0.4",
            s.client(&ctx, "127.0.0.4", port, None),
            "does not use CURVE",
        ),
        (
            "127.0.0.5",
            s.client(&ctx, "127.0.0.5", port, Some(("watcher", "stranger"))),
            "wrong server key",
        ),
    ];
    for (i, (_, c, _)) in clients.iter().enumerate() {
        let name = format!("evil{i}.txt");
        send(c, &inline_put(&name, b"evil"), Some(b"evil"));
        send(c, &Message::list(8, None, 10), None);
    }
    wait_until("every refusal is logged", Duration::from_secs(20), || {
        let log = s.log("broker");
        clients.iter().all(|(from, _, why)| {
            let line = format!("refused a connection from {from} on the ingest port");
            lines_with(&log, &[line.as_str(), why]) == 1
        })
    });
    for (from, c, _) in &clients {
        assert_eq!(reply(c, 300), None, "{from} got an answer");
    }
    let log = s.log("broker");
    for (from, _, _) in &clients {
        let line = format!("refused a connection from {from}");
        assert_eq!(lines_with(&log, &[line.as_str()]), 1, "{log}");
    }
    // Nothing was written or listed; the broker keeps serving the real watcher.
    fs::write(s.source.join("real.txt"), b"real").unwrap();
    s.wait_listed();
    let listed: Vec<String> = s.listing().into_keys().collect();
    assert_eq!(listed, ["real.txt"]);
    assert_eq!(
        s.node_files().into_keys().collect::<Vec<_>>(),
        ["txt/real.txt"]
    );
}

#[test]
fn the_fetch_port_lets_a_fetcher_read_but_never_write() {
    let s = Secure::start();
    fs::write(s.source.join("kept.txt"), b"kept").unwrap();
    s.wait_listed();
    let before = s.node_files();
    let ctx = zmq::Context::new();
    let c = s.client(&ctx, "127.0.0.1", s.fetch_port, Some(("fetcher", "broker")));
    send(&c, &Message::list(1, None, 10), None);
    match reply(&c, 10_000) {
        Some(Message::Listing { entries, .. }) => assert_eq!(entries.len(), 1),
        other => panic!("list answered {other:?}"),
    }
    send(
        &c,
        &Message::Get {
            id: 2,
            name: "kept.txt".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    assert!(matches!(reply(&c, 10_000), Some(Message::Meta { .. })));
    let hash = Hash::of(b"kept");
    let writes = [
        (inline_put("new.txt", b"new"), Some(&b"new"[..])),
        (inline_put("kept.txt", b"changed"), Some(&b"changed"[..])),
        (
            Message::Delete {
                id: 7,
                name: "kept.txt".into(),
            },
            None,
        ),
        (
            Message::Rename {
                id: 7,
                from: "kept.txt".into(),
                to: "moved.txt".into(),
                blake3: hash,
                to_class: None,
                version: None,
            },
            None,
        ),
        (
            Message::Fsck {
                id: 7,
                repair: true,
            },
            None,
        ),
    ];
    for (msg, data) in writes {
        send(&c, &msg, data);
        match reply(&c, 10_000) {
            Some(Message::Error {
                code: ErrorCode::Unexpected,
                ..
            }) => {}
            other => panic!("{} on the fetch port answered {other:?}", msg.kind()),
        }
    }
    assert_eq!(s.node_files(), before);
    let listed = s.listing();
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["kept.txt"]);
    assert_eq!(listed["kept.txt"].version, 1);
}

#[test]
fn clients_refused_by_the_broker_exit_3_in_bounded_time_saying_why() {
    let s = Secure::start();
    let cases: [(&str, &str, &str); 2] = [
        // A wrong server key: the broker cannot open the handshake.
        ("fetcher", "stranger", "server key"),
        // A key the fetch port does not allow.
        ("stranger", "broker", "not in its allow-list"),
    ];
    for (key, server, why) in cases {
        let out = s.fetch_as(key, server, &["--timeout", "2"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{key} with {server}.pub: {err}");
        assert!(err.contains(why) && err.contains("broker"), "{err}");
    }
    // Without keys at all.
    let addr = format!("127.0.0.1:{}", s.fetch_port);
    let out = run_bounded(
        s.dir.path(),
        &["fetch", "--broker", &addr, "--timeout", "2"],
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("uses CURVE"), "{err}");
}

#[test]
fn sighup_reloads_the_allow_list_without_a_restart() {
    let mut s = Secure::start();
    let out = s.fetch_as("stranger", "broker", &["--timeout", "1"]);
    assert_eq!(out.status.code(), Some(3));

    fs::copy(s.keys.join("stranger.pub"), s.fetchers.join("stranger.pub")).unwrap();
    fs::remove_file(s.fetchers.join("fetcher.pub")).unwrap();
    let broker = s.broker.as_mut().unwrap();
    let pid = broker.pid();
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    wait_until("the broker reloaded", Duration::from_secs(20), || {
        broker
            .log_text()
            .contains("SIGHUP: reloaded --allow-fetchers")
    });
    assert!(broker.alive(), "SIGHUP stopped the broker");
    let out = s.fetch_as("stranger", "broker", &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.fetch_as("fetcher", "broker", &["--timeout", "1"]);
    assert_eq!(out.status.code(), Some(3), "a removed key is refused");
    assert_eq!(s.broker.as_mut().unwrap().pid(), pid);
}

#[test]
fn daemons_refuse_to_listen_or_connect_beyond_loopback_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    let (node, server, source) = (d("node"), d("server"), d("source"));
    fs::create_dir_all(&source).unwrap();
    let runs: [Vec<&str>; 4] = [
        vec![
            "storage",
            "--root",
            &node,
            "--bind",
            "0.0.0.0",
            "--base-port",
            "0",
        ],
        vec![
            "broker",
            "--data",
            &server,
            "--bind",
            "0.0.0.0",
            "--ingest-port",
            "0",
            "--fetch-port",
            "0",
        ],
        vec![
            "broker",
            "--data",
            &server,
            "--bind",
            "127.0.0.1",
            "--ingest-port",
            "0",
            "--fetch-port",
            "0",
            "--storage",
            "storage.example:9000",
        ],
        vec![
            "watch",
            "--source",
            &source,
            "--broker",
            "broker.example:12345",
        ],
    ];
    for args in runs {
        let out = run_bounded(dir.path(), &args, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("without CURVE keys")
                && err.contains("dfs keygen")
                && err.contains("--insecure"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_watcher_whose_key_is_not_allowed_says_so_and_syncs_once_allowed() {
    let mut s = Secure::start();
    let source2 = s.dir.path().join("source2");
    fs::create_dir_all(&source2).unwrap();
    fs::write(source2.join("second.txt"), b"from the second watcher").unwrap();
    let (src2, broker_addr) = (
        source2.display().to_string(),
        format!("127.0.0.1:{}", s.ingest_port),
    );
    let (key, broker_pub) = (s.key("stranger.key"), s.key("broker.pub"));
    let (second, _) = s.spawn_as(
        "watch2",
        "watch",
        &[
            "--source",
            &src2,
            "--broker",
            &broker_addr,
            "--secret-key",
            &key,
            "--broker-key",
            &broker_pub,
            // The root volume belongs to the first watcher's key.
            "--volume",
            "second",
        ],
    );
    wait_until(
        "the refused watcher says why",
        Duration::from_secs(20),
        || second.log_text().contains("it refused this side's key"),
    );
    assert!(s.listing().is_empty());

    // The allow-list is a file: add the key as a second line, then SIGHUP.
    let list = s.keys.join("watcher.pub");
    let both = fs::read_to_string(&list).unwrap()
        + &fs::read_to_string(s.keys.join("stranger.pub")).unwrap();
    fs::write(&list, both).unwrap();
    let broker = s.broker.as_mut().unwrap();
    unsafe {
        libc::kill(broker.pid(), libc::SIGHUP);
    }
    wait_until(
        "the second watcher's file is listed",
        Duration::from_secs(60),
        || s.listing().contains_key("second/second.txt"),
    );
    let log = second.log_text();
    assert_eq!(
        lines_with(&log, &["it refused this side's key"]),
        1,
        "{log}"
    );
}

#[test]
fn the_broker_connects_again_once_the_node_admits_its_key() {
    let mut s = Secure::start_with(false);
    fs::write(s.source.join("waiting.txt"), b"waits for the node").unwrap();
    let broker = s.broker.as_ref().unwrap();
    wait_until(
        "the broker logs the refusal",
        Duration::from_secs(20),
        || broker.log_text().contains("it refused this side's key"),
    );
    assert!(s.node_files().is_empty());

    fs::copy(s.keys.join("broker.pub"), s.brokers.join("broker.pub")).unwrap();
    let storage = s.storage.as_mut().unwrap();
    unsafe {
        libc::kill(storage.pid(), libc::SIGHUP);
    }
    s.wait_listed();
    assert_eq!(
        s.node_files().into_keys().collect::<Vec<_>>(),
        ["txt/waiting.txt"]
    );
    let log = s.log("broker");
    assert_eq!(
        lines_with(&log, &["it refused this side's key"]),
        1,
        "{log}"
    );
}

#[test]
fn a_watcher_key_kept_to_a_volume_claims_only_that_volume() {
    let s = Secure::start();
    // The stranger's key may sync into the volume photos only.
    let list = s.keys.join("watcher.pub");
    let stranger = fs::read_to_string(s.keys.join("stranger.pub")).unwrap();
    let entry = format!("{} volumes=photos\n", stranger.trim());
    fs::write(&list, fs::read_to_string(&list).unwrap() + &entry).unwrap();
    let broker = s.broker.as_ref().unwrap();
    unsafe {
        libc::kill(broker.pid(), libc::SIGHUP);
    }
    wait_until(
        "the broker reads the list again",
        Duration::from_secs(20),
        || {
            broker
                .log_text()
                .contains("SIGHUP: reloaded --allow-watchers")
        },
    );
    let folder = s.dir.path().join("pictures");
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("cat.txt"), b"a cat").unwrap();
    let (folder_s, broker_addr) = (
        folder.display().to_string(),
        format!("127.0.0.1:{}", s.ingest_port),
    );
    let (key, broker_pub) = (s.key("stranger.key"), s.key("broker.pub"));
    let watch = |name: &str, volume: &str| {
        let args = [
            "--source",
            &folder_s,
            "--broker",
            &broker_addr,
            "--secret-key",
            &key,
            "--broker-key",
            &broker_pub,
            "--volume",
            volume,
        ];
        s.spawn_as(name, "watch", &args).0
    };
    // Another volume is refused at start, with the reason, and nothing is stored.
    let mut refused = watch("refused", "work");
    wait_until("the refused watcher exits", Duration::from_secs(30), || {
        !refused.is_running()
    });
    let code = refused.child.try_wait().unwrap().and_then(|s| s.code());
    let log = refused.log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("may claim only photos"), "{log}");
    assert!(s.listing().keys().all(|n| !n.starts_with("work/")));

    // Its own volume syncs.
    let _photos = watch("photos", "photos");
    wait_until("photos/cat.txt is listed", Duration::from_secs(60), || {
        s.listing().contains_key("photos/cat.txt")
    });
}
