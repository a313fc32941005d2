//! In-process tests against a fake broker: a ROUTER on a free port, served by a thread, that
//! answers `list`, `get` and `credit` from a table of files and records what the fetcher did.

mod listing;
mod retrieve;

use crate::{execute, Args};
use daemon::{Shutdown, POLL_MS};
use schema::codec;
use schema::limits::{CHUNK_SIZE, INLINE_MAX};
use schema::{Class, Entry, ErrorCode, Hash, Message};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How the fake broker answers a `get` of one name.
#[derive(Clone)]
pub(super) enum Content {
    /// Serves these bytes (inline or in chunks under credit).
    Bytes(Vec<u8>),
    /// Answers this error.
    Fail(ErrorCode),
    /// Never answers.
    Silent,
}

/// One file the fake broker knows.
#[derive(Clone)]
pub(super) struct FakeFile {
    pub entry: Entry,
    pub content: Content,
}

/// Modification time given to every fake file (ns since the epoch).
pub(super) const MODIFIED: i64 = 1_600_000_000_123_456_789;

impl FakeFile {
    /// A file with `bytes` and their true hash.
    pub fn bytes(name: &str, bytes: Vec<u8>) -> FakeFile {
        FakeFile {
            entry: Entry {
                name: name.into(),
                class: schema::Routes::default().class_of(name),
                size: bytes.len() as u64,
                blake3: Hash::of(&bytes),
                modified: MODIFIED,
                version: 1,
            },
            content: Content::Bytes(bytes),
        }
    }

    /// A file whose recorded hash does not match its bytes.
    pub fn corrupt(name: &str, bytes: Vec<u8>) -> FakeFile {
        let mut f = FakeFile::bytes(name, bytes);
        f.entry.blake3 = Hash::of(b"something else");
        f
    }

    /// A name answered with `code`, or never (`Content::Silent`).
    pub fn answering(name: &str, content: Content) -> FakeFile {
        let mut f = FakeFile::bytes(name, Vec::new());
        f.content = content;
        f
    }
}

/// What the fake broker saw.
#[derive(Default, Debug)]
pub(super) struct Stats {
    /// `list` requests received.
    pub lists: usize,
    /// Names asked for with `get`.
    pub gets: Vec<String>,
    /// Largest credit balance (granted and not yet used) of any transfer.
    pub max_outstanding: u32,
    /// `abort`s received.
    pub aborts: usize,
}

/// The fake broker; stops and joins its thread when dropped.
pub(super) struct FakeBroker {
    pub port: u16,
    pub stats: Arc<Mutex<Stats>>,
    stop: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl FakeBroker {
    /// Serves `files`, answering listings with pages of at most `page` entries.
    pub fn start(files: Vec<FakeFile>, page: usize) -> FakeBroker {
        let ctx = zmq::Context::new();
        let (sock, port) = net::socket::router(&ctx, "127.0.0.1", 0).unwrap();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let stop = Shutdown::new();
        let files: BTreeMap<String, FakeFile> = files
            .into_iter()
            .map(|f| (f.entry.name.clone(), f))
            .collect();
        let thread = {
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::spawn(move || serve(&sock, &files, page, &stats, &stop))
        };
        FakeBroker {
            port,
            stats,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Transfer {
    bytes: Vec<u8>,
    offset: usize,
    credit: u32,
}

fn serve(
    sock: &zmq::Socket,
    files: &BTreeMap<String, FakeFile>,
    page: usize,
    stats: &Mutex<Stats>,
    stop: &Shutdown,
) {
    let mut transfers: HashMap<(Vec<u8>, u64), Transfer> = HashMap::new();
    while !stop.is_triggered() {
        if sock.poll(zmq::POLLIN, POLL_MS).unwrap() == 0 {
            continue;
        }
        let inbound = codec::recv(sock, true, 0).unwrap();
        let peer = inbound.peer.unwrap();
        let reply = |m: &Message, data: Option<&[u8]>| {
            codec::send(sock, Some(&peer), m, data.map(zmq::Message::from)).unwrap()
        };
        match inbound.msg.unwrap() {
            Message::List {
                id, after, limit, ..
            } => {
                stats.lock().unwrap().lists += 1;
                let from = match &after {
                    Some(a) => Bound::Excluded(a.clone()),
                    None => Bound::Unbounded,
                };
                let mut rest = files
                    .range((from, Bound::Unbounded))
                    .map(|(_, f)| f.entry.clone());
                let entries: Vec<Entry> = rest.by_ref().take(page.min(limit as usize)).collect();
                let more = rest.next().is_some();
                reply(&Message::Listing { id, entries, more }, None);
            }
            Message::Get { id, name, .. } => {
                stats.lock().unwrap().gets.push(name.clone());
                let Some(file) = files.get(&name) else {
                    reply(
                        &Message::error(id, ErrorCode::NotFound, "no such file"),
                        None,
                    );
                    continue;
                };
                let entry = file.entry.clone();
                match &file.content {
                    Content::Silent => {}
                    Content::Fail(code) => reply(&Message::error(id, *code, "fake says no"), None),
                    Content::Bytes(b) if b.len() as u64 <= INLINE_MAX => {
                        reply(&Message::Meta { id, entry }, Some(b))
                    }
                    Content::Bytes(b) => {
                        reply(&Message::Meta { id, entry }, None);
                        let t = Transfer {
                            bytes: b.clone(),
                            offset: 0,
                            credit: 0,
                        };
                        transfers.insert((peer.clone(), id), t);
                    }
                }
            }
            Message::Credit { id, chunks } => {
                let key = (peer.clone(), id);
                let Some(t) = transfers.get_mut(&key) else {
                    continue;
                };
                t.credit += chunks;
                {
                    let mut s = stats.lock().unwrap();
                    s.max_outstanding = s.max_outstanding.max(t.credit);
                }
                while t.credit > 0 && t.offset < t.bytes.len() {
                    let end = (t.offset + CHUNK_SIZE).min(t.bytes.len());
                    let chunk = Message::Chunk {
                        id,
                        offset: t.offset as u64,
                        blake3: None,
                        modified: None,
                    };
                    reply(&chunk, Some(&t.bytes[t.offset..end]));
                    t.offset = end;
                    t.credit -= 1;
                }
                if t.offset == t.bytes.len() {
                    transfers.remove(&key);
                }
            }
            Message::Abort { id } => {
                stats.lock().unwrap().aborts += 1;
                transfers.remove(&(peer.clone(), id));
            }
            other => panic!("the fake broker got an unexpected {other:?}"),
        }
    }
}

/// Arguments for a fetch from the broker on `port` into `target`.
pub(super) fn args(port: u16, target: &Path, names: &[&str]) -> Args {
    Args {
        names: names.iter().map(|n| n.to_string()).collect(),
        target: target.to_path_buf(),
        class: None,
        broker: format!("127.0.0.1:{port}"),
        json: false,
        output: None,
        timeout: 2.0,
        secret_key: None,
        broker_key: None,
        version: None,
        at: None,
    }
}

/// What one run printed and returned.
pub(super) struct Outcome {
    pub code: u8,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs the fetcher with `args`, capturing its output.
pub(super) fn fetch(args: &Args) -> Outcome {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = execute(args, &mut stdout, &mut stderr, &Shutdown::new());
    Outcome {
        code,
        stdout,
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// `size` bytes of a recognisable pattern.
pub(super) fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 % 251) as u8).collect()
}

/// Every path below `dir`, relative, sorted (to show in failures and compare).
pub(super) fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fake_files_are_classed_by_extension() {
    assert_eq!(FakeFile::bytes("a.mp3", vec![]).entry.class, Class::Mp3);
}

#[test]
fn the_command_line_parses_as_documented() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from(["fetch", "a/b.txt", "-o", "-", "--timeout", "0.5"]).unwrap();
    assert_eq!(cli.args.names, ["a/b.txt"]);
    assert_eq!(cli.args.output.as_deref(), Some("-"));
    assert_eq!(cli.args.timeout, 0.5);
    let cli = Cli::try_parse_from(["fetch", "--json", "--broker", "h:1", "--target", "t"]).unwrap();
    assert!(cli.args.json && cli.args.names.is_empty());
    assert_eq!(cli.args.broker, "h:1");
    assert_eq!(cli.args.target, Path::new("t"));
}
