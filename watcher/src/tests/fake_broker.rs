//! The whole watcher (`run`) against a fake broker: a ROUTER on port 0 driven by hand.

use crate::Args;
use clap::Parser;
use daemon::Shutdown;
use schema::codec;
use schema::limits::CHUNK_SIZE;
use schema::{Class, Entry, Hash, Message};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: Args,
}

/// A hand-driven broker: answers pings and claims by itself, hands everything else to the test.
struct FakeBroker {
    sock: zmq::Socket,
    peer: Option<Vec<u8>>,
    _ctx: zmq::Context,
}

type Got = (Message, Option<Vec<u8>>);

impl FakeBroker {
    fn bind() -> (FakeBroker, u16) {
        let ctx = zmq::Context::new();
        let (sock, port) = net::socket::router(&ctx, "127.0.0.1", 0).unwrap();
        (
            FakeBroker {
                sock,
                peer: None,
                _ctx: ctx,
            },
            port,
        )
    }

    /// The next message other than a ping or a claim, waiting at most `wait`.
    fn next(&mut self, wait: Duration) -> Option<Got> {
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if self
                .sock
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .unwrap()
                == 0
            {
                return None;
            }
            let inbound = codec::recv(&self.sock, true, zmq::DONTWAIT).unwrap();
            self.peer = inbound.peer;
            let msg = inbound.msg.expect("the watcher sends well-formed messages");
            if let Message::Ping { id } = msg {
                self.send(&Message::Pong { id }, None);
                continue;
            }
            if let Message::Claim { id, .. } = msg {
                let claimed = Message::Claimed {
                    id,
                    volumes: Vec::new(),
                };
                self.send(&claimed, None);
                continue;
            }
            return Some((msg, inbound.data.map(|d| d.to_vec())));
        }
    }

    fn expect(&mut self, what: &str) -> Got {
        self.next(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("expected {what} from the watcher within 5 s"))
    }

    fn quiet(&mut self, wait: Duration, why: &str) {
        if let Some(got) = self.next(wait) {
            panic!("expected nothing ({why}), got {got:?}");
        }
    }

    fn send(&self, msg: &Message, data: Option<Vec<u8>>) {
        let peer = self.peer.as_deref().expect("a peer spoke first");
        codec::send(&self.sock, Some(peer), msg, data.map(zmq::Message::from)).unwrap();
    }

    fn done(&self, id: u64, version: u64) {
        self.send(
            &Message::Done {
                id,
                version,
                unchanged: false,
            },
            None,
        );
    }

    /// Receives `n` chunks of upload `id`, checking their order; returns the hash on the last.
    fn chunks(&mut self, id: u64, n: usize, first_offset: u64) -> Option<Hash> {
        let mut last_hash = None;
        for i in 0..n {
            let (msg, data) = self.expect("a chunk");
            let Message::Chunk {
                id: cid,
                offset,
                blake3,
                ..
            } = msg
            else {
                panic!("expected a chunk, got {msg:?}");
            };
            assert_eq!(cid, id);
            assert_eq!(offset, first_offset + (i * CHUNK_SIZE) as u64);
            assert!(data.is_some_and(|d| !d.is_empty()));
            last_hash = blake3;
        }
        last_hash
    }
}

fn entry_for(path: &Path, name: &str) -> Entry {
    let content = std::fs::read(path).unwrap();
    let meta = std::fs::metadata(path).unwrap();
    Entry {
        name: name.into(),
        class: Class::Others,
        size: content.len() as u64,
        blake3: Hash::of(&content),
        modified: crate::local::Stamp::of(&meta).modified,
        version: 1,
    }
}

/// Shows the watcher's log in a failing test's output.
fn log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("watcher=debug")
        .with_test_writer()
        .try_init();
}

fn wait_for(path: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < end, "no ready file {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn put_of(got: &Got) -> (u64, String, u64, Option<Hash>) {
    match &got.0 {
        Message::Put {
            id,
            name,
            size,
            blake3,
            ..
        } => (*id, name.clone(), *size, *blake3),
        other => panic!("expected a put, got {other:?}"),
    }
}

#[test]
fn syncs_against_a_fake_broker() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("same.txt"), b"same").unwrap();
    std::fs::write(src.join("changed.txt"), b"new content").unwrap();
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/new.txt"), b"brand new").unwrap();
    std::fs::write(src.join("sub/.new.txt.swp"), b"ignored").unwrap();
    let same = entry_for(&src.join("same.txt"), "same.txt");
    let mut changed = entry_for(&src.join("changed.txt"), "changed.txt");
    changed.size = 3;
    let mut gone = same.clone();
    gone.name = "gone.txt".into();

    let (mut broker, port) = FakeBroker::bind();
    let ready = dir.path().join("ready.json");
    let args = Wrap::try_parse_from([
        "t",
        "--source",
        src.to_str().unwrap(),
        "--broker",
        &format!("127.0.0.1:{port}"),
        "--ready-file",
        ready.to_str().unwrap(),
        "--debounce-ms",
        "100",
    ])
    .unwrap()
    .args;
    let stop = Shutdown::new();
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || crate::run(args, stop))
    };
    wait_for(&ready);
    let ready_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(ready_json["role"], "watch");

    // Start-up: the listing, then only what differs.
    let (list, _) = broker.expect("a list");
    let Message::List {
        id, after: None, ..
    } = list
    else {
        panic!("expected a first list, got {list:?}");
    };
    broker.send(
        &Message::Listing {
            id,
            entries: vec![changed, gone, same],
            more: false,
        },
        None,
    );
    let mut seen = BTreeMap::new();
    for _ in 0..3 {
        let got = broker.expect("a start-up change");
        let (id, name) = match &got.0 {
            Message::Put { id, name, .. } => (*id, name.clone()),
            Message::Delete { id, name } => (*id, name.clone()),
            other => panic!("unexpected {other:?}"),
        };
        seen.insert(name, got.clone());
        broker.done(id, 2);
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["changed.txt", "gone.txt", "sub/new.txt"]
    );
    assert!(matches!(seen["gone.txt"].0, Message::Delete { .. }));
    assert_eq!(seen["sub/new.txt"].1.as_deref(), Some(&b"brand new"[..]));
    broker.quiet(Duration::from_millis(400), "same.txt is unchanged");

    // A new 4 KiB file goes out inline.
    let small: Vec<u8> = (0..4096).map(|i| (i % 7) as u8).collect();
    std::fs::write(src.join("small.bin"), &small).unwrap();
    let got = broker.expect("the put of small.bin");
    let (id, name, size, blake3) = put_of(&got);
    assert_eq!((name.as_str(), size), ("small.bin", 4096));
    assert_eq!(blake3, Some(Hash::of(&small)));
    assert_eq!(got.1.as_deref(), Some(&small[..]));
    broker.done(id, 1);

    // A 1 MiB file goes out in chunks, only as credit comes.
    let big: Vec<u8> = (0..4 * CHUNK_SIZE).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let got = broker.expect("the put of big.bin");
    let (id, name, size, _) = put_of(&got);
    assert_eq!((name.as_str(), size), ("big.bin", big.len() as u64));
    assert!(got.1.is_none());
    broker.quiet(Duration::from_millis(300), "no chunk before credit");
    broker.send(&Message::Credit { id, chunks: 2 }, None);
    assert_eq!(broker.chunks(id, 2, 0), None);
    broker.quiet(Duration::from_millis(300), "no chunk beyond credit");
    broker.send(&Message::Credit { id, chunks: 2 }, None);
    assert_eq!(
        broker.chunks(id, 2, 2 * CHUNK_SIZE as u64),
        Some(Hash::of(&big))
    );
    broker.done(id, 1);

    // A file modified during its upload is aborted, then sent again.
    let path = src.join("torn.bin");
    std::fs::write(&path, &big).unwrap();
    let (id, name, _, _) = put_of(&broker.expect("the put of torn.bin"));
    assert_eq!(name, "torn.bin");
    broker.send(&Message::Credit { id, chunks: 1 }, None);
    broker.chunks(id, 1, 0);
    std::thread::sleep(Duration::from_millis(20));
    let mut changed_big = big.clone();
    changed_big[CHUNK_SIZE * 3 + 1] ^= 0xff;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(CHUNK_SIZE as u64 * 3 + 1)).unwrap();
        f.write_all(&changed_big[CHUNK_SIZE * 3 + 1..CHUNK_SIZE * 3 + 2])
            .unwrap();
    }
    broker.send(&Message::Credit { id, chunks: 8 }, None);
    assert_eq!(broker.chunks(id, 2, CHUNK_SIZE as u64), None);
    let (abort, _) = broker.expect("an abort");
    assert_eq!(abort, Message::Abort { id });
    let (id2, name, _, _) = put_of(&broker.expect("torn.bin sent again"));
    assert_eq!(name, "torn.bin");
    assert_ne!(id2, id);
    broker.send(&Message::Credit { id: id2, chunks: 8 }, None);
    assert_eq!(broker.chunks(id2, 4, 0), Some(Hash::of(&changed_big)));
    broker.done(id2, 1);
    broker.quiet(Duration::from_millis(300), "everything is in sync");

    stop.trigger();
    thread.join().unwrap().unwrap();
}

/// Starts a watcher on `src` against `broker`, answers its first listing with `entries`.
fn start(
    dir: &Path,
    src: &Path,
    broker: &mut FakeBroker,
    port: u16,
    entries: Vec<Entry>,
) -> (Shutdown, std::thread::JoinHandle<anyhow::Result<()>>) {
    let ready = dir.join("ready.json");
    let args = Wrap::try_parse_from([
        "t",
        "--source",
        src.to_str().unwrap(),
        "--broker",
        &format!("127.0.0.1:{port}"),
        "--ready-file",
        ready.to_str().unwrap(),
        "--debounce-ms",
        "50",
    ])
    .unwrap()
    .args;
    let stop = Shutdown::new();
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || crate::run(args, stop))
    };
    wait_for(&ready);
    let (list, _) = broker.expect("a list");
    let Message::List { id, .. } = list else {
        panic!("expected a list, got {list:?}");
    };
    broker.send(
        &Message::Listing {
            id,
            entries,
            more: false,
        },
        None,
    );
    (stop, thread)
}

/// The next `n` messages, by a short description, with their ids.
fn collect(broker: &mut FakeBroker, n: usize) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let (msg, _) = broker.expect("a change");
        let key = match &msg {
            Message::Put { name, .. } => format!("put {name}"),
            Message::Delete { name, .. } => format!("delete {name}"),
            Message::Rename { from, to, .. } => format!("rename {from} {to}"),
            other => panic!("unexpected {other:?}"),
        };
        out.insert(key, msg.id());
    }
    out
}

#[test]
fn renames_deletes_retries_and_outages() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.txt"), b"aaa").unwrap();
    std::fs::write(src.join("d/x.txt"), b"xx").unwrap();
    std::fs::write(src.join("d/y.txt"), b"yy").unwrap();
    let entries = vec![
        entry_for(&src.join("a.txt"), "a.txt"),
        entry_for(&src.join("d/x.txt"), "d/x.txt"),
        entry_for(&src.join("d/y.txt"), "d/y.txt"),
    ];
    let (mut broker, port) = FakeBroker::bind();
    let (stop, thread) = start(dir.path(), &src, &mut broker, port, entries);
    broker.quiet(Duration::from_millis(300), "everything is stored already");

    // A file renamed unchanged is renamed in the store, without its bytes.
    std::fs::rename(src.join("a.txt"), src.join("b.txt")).unwrap();
    let got = collect(&mut broker, 1);
    broker.done(got["rename a.txt b.txt"], 2);

    // A folder renamed: every file in it.
    std::fs::rename(src.join("d"), src.join("e")).unwrap();
    let got = collect(&mut broker, 2);
    broker.done(got["rename d/x.txt e/x.txt"], 1);
    broker.done(got["rename d/y.txt e/y.txt"], 1);
    broker.quiet(Duration::from_millis(300), "the folder is renamed");

    // A rename the store cannot do falls back to an upload and a delete.
    std::fs::rename(src.join("b.txt"), src.join("c.txt")).unwrap();
    let got = collect(&mut broker, 1);
    broker.send(
        &Message::error(
            got["rename b.txt c.txt"],
            schema::ErrorCode::NotFound,
            "no b.txt",
        ),
        None,
    );
    let got = collect(&mut broker, 2);
    broker.done(got["put c.txt"], 1);
    broker.done(got["delete b.txt"], 0);

    // A delete answered `busy` is retried after a backoff.
    std::fs::remove_file(src.join("c.txt")).unwrap();
    let got = collect(&mut broker, 1);
    let sent = Instant::now();
    broker.send(
        &Message::error(got["delete c.txt"], schema::ErrorCode::Busy, "busy"),
        None,
    );
    let got = collect(&mut broker, 1);
    assert!(sent.elapsed() >= crate::store::PROBE_MIN);
    broker.done(got["delete c.txt"], 0);
    broker.quiet(Duration::from_millis(200), "in sync");

    // The broker goes away; a file written meanwhile is sent once it is back.
    drop(broker);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(src.join("new.txt"), b"while down").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let ctx = zmq::Context::new();
    let (sock, _) = net::socket::router(&ctx, "127.0.0.1", port).unwrap();
    let mut broker = FakeBroker {
        sock,
        peer: None,
        _ctx: ctx,
    };
    let got = collect(&mut broker, 1);
    broker.done(got["put new.txt"], 1);

    stop.trigger();
    thread.join().unwrap().unwrap();
}

#[test]
fn refuses_a_missing_source() {
    let dir = tempfile::tempdir().unwrap();
    let args = Wrap::try_parse_from(["t", "--source", dir.path().join("nope").to_str().unwrap()])
        .unwrap()
        .args;
    let err = crate::run(args, Shutdown::new()).unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
}
