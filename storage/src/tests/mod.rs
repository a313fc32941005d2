//! Tests of the node through its real sockets: a node bound on free ports of 127.0.0.1, and
//! DEALER sockets playing the broker. This file holds the harness; [`upload`] the write path,
//! [`serve`] reads, listings, renames, deletes and bad input.

mod serve;
mod upload;

use crate::durable::commit;
use crate::layout::Layout;
use crate::meta::StoredMeta;
use crate::{Args, Node};
use daemon::Shutdown;
use schema::codec;
use schema::limits::{CHUNK_SIZE, TRANSFER_WINDOW};
use schema::{Class, ErrorCode, Hash, Message};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A node serving a temporary root until dropped.
struct TestNode {
    ctx: zmq::Context,
    root: PathBuf,
    base: u16,
    stop: Shutdown,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    fn start() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let ctx = zmq::Context::new();
        let args = Args {
            root: dir.path().join("node"),
            bind: "127.0.0.1".into(),
            base_port: 0,
            ready_file: None,
            sync_threads: 4,
            metrics: None,
            secret_key: None,
            allow: None,
            insecure: false,
            keep_history: crate::layout::DEFAULT_KEEP_HISTORY,
            history_budget: None,
            routes: None,
            backend: None,
            s3_endpoint: None,
            s3_region: None,
        };
        let node = Node::bind(&ctx, &args).unwrap();
        let (base, root) = (node.base_port(), node.root().to_path_buf());
        let stop = Shutdown::new();
        let s = stop.clone();
        let thread = Some(std::thread::spawn(move || node.serve(s)));
        TestNode {
            ctx,
            root,
            base,
            stop,
            thread,
            _dir: dir,
        }
    }

    /// A DEALER connected to the class port of `class`, or to the serve port with `None`.
    fn dealer(&self, class: Option<Class>) -> zmq::Socket {
        let port = self.base + class.map_or(4, Class::port_offset);
        let ep = net::socket::endpoint("127.0.0.1", port);
        let sock = net::socket::dealer(&self.ctx, &ep).unwrap();
        sock.set_rcvtimeo(5000).unwrap();
        sock
    }

    fn path(&self, class: Class, name: &str) -> PathBuf {
        self.root.join(class.as_str()).join(name)
    }

    fn temp_files(&self) -> usize {
        std::fs::read_dir(self.root.join(".dfs/tmp"))
            .unwrap()
            .count()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

/// Sends `msg`, retrying while the connection is being set up (ZMQ_IMMEDIATE).
fn send(sock: &zmq::Socket, msg: &Message, data: Option<&[u8]>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match codec::send(sock, None, msg, data.map(zmq::Message::from)) {
            Ok(()) => return,
            Err(zmq::Error::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("cannot send {msg:?}: {e}"),
        }
    }
}

fn recv(sock: &zmq::Socket) -> (Message, Option<Vec<u8>>) {
    let inbound = codec::recv(sock, false, 0).expect("no reply within 5 s");
    (inbound.msg.unwrap(), inbound.data.map(|d| d.to_vec()))
}

fn request(sock: &zmq::Socket, msg: &Message, data: Option<&[u8]>) -> (Message, Option<Vec<u8>>) {
    send(sock, msg, data);
    recv(sock)
}

fn error_code(reply: &Message) -> ErrorCode {
    match reply {
        Message::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Deterministic test content of `len` bytes.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

fn put(id: u64, name: &str, data: &[u8], version: Option<u64>) -> Message {
    Message::Put {
        id,
        name: name.into(),
        size: data.len() as u64,
        modified: 1_700_000_000_123_456_789,
        blake3: Some(Hash::of(data)),
        version,
        growing: false,
        sender: None,
    }
}

fn put_inline(sock: &zmq::Socket, id: u64, name: &str, data: &[u8]) -> Message {
    request(sock, &put(id, name, data, None), Some(data)).0
}

/// Uploads `data` in chunks under credit, checking that credit never exceeds the window.
fn put_chunked(sock: &zmq::Socket, id: u64, name: &str, data: &[u8], hash: Hash) -> Message {
    send(sock, &put(id, name, data, Some(2)), None);
    send_chunks(sock, id, data, hash, None)
}

/// Sends `data` as the chunks of upload `id` as credit comes (the last with `hash` and
/// `modified`), checking that credit never exceeds the window; returns the final reply.
fn send_chunks(
    sock: &zmq::Socket,
    id: u64,
    data: &[u8],
    hash: Hash,
    modified: Option<i64>,
) -> Message {
    let mut offset = 0;
    let mut credit = 0u32;
    loop {
        let (reply, _) = recv(sock);
        match reply {
            Message::Credit { id: i, chunks } if i == id => {
                credit += chunks;
                assert!(credit <= TRANSFER_WINDOW, "credit {credit} over the window");
            }
            other => return other,
        }
        while credit > 0 && offset < data.len() {
            let end = (offset + CHUNK_SIZE).min(data.len());
            let last = end == data.len();
            let chunk = Message::Chunk {
                id,
                offset: offset as u64,
                blake3: last.then_some(hash),
                modified: modified.filter(|_| last),
            };
            send(sock, &chunk, Some(&data[offset..end]));
            credit -= 1;
            offset = end;
        }
    }
}

fn assert_stored(node: &TestNode, class: Class, name: &str, data: &[u8], version: u64) {
    let path = node.path(class, name);
    assert_eq!(std::fs::read(&path).unwrap(), data, "content of {name}");
    let meta = crate::meta::stored(&path, name).expect("metadata attribute");
    let want = StoredMeta::new(
        name,
        class,
        Hash::of(data),
        1_700_000_000_123_456_789,
        version,
    );
    assert_eq!(meta, want);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(schema::time::to_ns(mtime), 1_700_000_000_123_456_789);
    assert_eq!(node.temp_files(), 0, "temporary files left");
}

/// Stores `bytes` as `name` of `class` under `layout` the way the node does (temporary file,
/// metadata, commit); returns its path.
pub(crate) fn store(layout: &Layout, class: Class, name: &str, bytes: &[u8]) -> PathBuf {
    use std::io::Write;
    let temp = layout.new_temp().unwrap();
    temp.file().write_all(bytes).unwrap();
    let meta = StoredMeta::new(name, class, Hash::of(bytes), 0, 1);
    let dest = layout.file_path(class, name).unwrap();
    commit(
        temp,
        &meta,
        &layout.class_dir(class),
        &dest,
        &Default::default(),
    )
    .unwrap();
    dest
}
