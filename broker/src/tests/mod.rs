//! In-process relay tests: a real broker on port 0 between a fake storage node (five ROUTERs
//! driven by hand) and a fake watcher and fetcher (DEALERs).

use crate::{Args, Broker, Index};
use daemon::Shutdown;
use net::socket::routers_consecutive;
use schema::codec::{self, Inbound};
use schema::limits::CHUNK_SIZE;
use schema::{Class, Entry, ErrorCode, Hash, Message};
use std::thread::JoinHandle;
use std::time::Duration;

mod decisions;
mod faults;
mod reads;
mod speed;
mod uploads;

const WAIT_MS: i64 = 5000;

struct Harness {
    _ctx: zmq::Context,
    dir: tempfile::TempDir,
    node: Vec<zmq::Socket>,
    watcher: zmq::Socket,
    fetcher: zmq::Socket,
    index: Index,
    stop: Shutdown,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

fn dealer(ctx: &zmq::Context, port: u16) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    s.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    s
}

/// Waits for one message on `sock`; panics with `what` if none comes.
fn recv(sock: &zmq::Socket, router: bool, what: &str) -> Inbound {
    let n = sock.poll(zmq::POLLIN, WAIT_MS).unwrap();
    assert!(n > 0, "timed out waiting for {what}");
    codec::recv(sock, router, 0).unwrap()
}

/// Claims the root volume on the watcher connection `sock`, as a real watcher does at start.
fn claim_root(sock: &zmq::Socket) {
    let claim = Message::Claim {
        id: 1_000_000,
        volume: String::new(),
        owner: "test:/source".into(),
        take_over: false,
    };
    send(sock, None, claim, None);
    let claimed = Harness::from_broker(sock, "the claim's answer").0;
    assert!(
        matches!(claimed, Message::Claimed { id: 1_000_000, .. }),
        "{claimed:?}"
    );
}

fn quiet(sock: &zmq::Socket, ms: i64) -> bool {
    sock.poll(zmq::POLLIN, ms).unwrap() == 0
}

fn send(sock: &zmq::Socket, peer: Option<&[u8]>, msg: Message, data: Option<&[u8]>) {
    codec::send(sock, peer, &msg, data.map(zmq::Message::from)).unwrap();
}

impl Harness {
    /// A broker with a fresh index: it first rebuilds from the fake node (given `entries`).
    fn start(entries: Vec<Entry>) -> Harness {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().unwrap();
        let (node, base) = routers_consecutive(&ctx, "127.0.0.1", 0, 5).unwrap();
        let args = Args {
            data: dir.path().join("server"),
            bind: "127.0.0.1".into(),
            ingest_port: 0,
            fetch_port: 0,
            storage: vec![format!("127.0.0.1:{base}")],
            routes: None,
            ready_file: None,
            metrics: None,
            secret_key: None,
            allow_watchers: None,
            allow_fetchers: None,
            storage_key: None,
            insecure: false,
        };
        let mut broker = Broker::bind(&ctx, &args).unwrap();
        let index = broker.relay_mut().index.clone();
        let watcher = dealer(&ctx, broker.ingest_port());
        let fetcher = dealer(&ctx, broker.fetch_port());
        let stop = Shutdown::new();
        let s = stop.clone();
        let thread = std::thread::spawn(move || broker.serve(s));
        let h = Harness {
            _ctx: ctx,
            dir,
            node,
            watcher,
            fetcher,
            index,
            stop,
            thread: Some(thread),
        };
        // The rebuild of the fresh index: the owners (none), then one page.
        let (peer, msg, _) = h.at_node(4, "the rebuild's owners request");
        let Message::Owners { id } = msg else {
            panic!("expected the rebuild's owners request, got {msg:?}");
        };
        send(
            &h.node[4],
            Some(&peer),
            Message::Owned {
                id,
                owners: Default::default(),
            },
            None,
        );
        let (peer, msg, _) = h.at_node(4, "the rebuild listing");
        let Message::List {
            id, after: None, ..
        } = msg
        else {
            panic!("expected the first rebuild page request, got {msg:?}");
        };
        send(
            &h.node[4],
            Some(&peer),
            Message::Listing {
                id,
                entries,
                more: false,
            },
            None,
        );
        // The export is first written when the rebuild is over.
        let export = h.dir.path().join("server/myIndex/index.txt");
        let t0 = std::time::Instant::now();
        while !export.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the rebuild did not finish"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The fake watcher owns the root volume, as a real one claims it at start.
        let claim = Message::Claim {
            id: 1_000_000,
            volume: String::new(),
            owner: "test:/source".into(),
            take_over: false,
        };
        send(&h.watcher, None, claim, None);
        let claimed = h.watcher_gets("the claim's answer");
        assert!(
            matches!(claimed, Message::Claimed { id: 1_000_000, .. }),
            "{claimed:?}"
        );
        h
    }

    /// The next message at the node's port `slot`; the owners the broker copies to the
    /// serve port meanwhile are acknowledged on the way, as a node does.
    fn at_node(&self, slot: usize, what: &str) -> (Vec<u8>, Message, Option<zmq::Message>) {
        loop {
            let inb = recv(&self.node[slot], true, what);
            let (peer, msg) = (inb.peer.unwrap(), inb.msg.unwrap());
            if let Message::SetOwner { id, .. } = msg {
                let done = Message::Done {
                    id,
                    version: 0,
                    unchanged: false,
                };
                send(&self.node[slot], Some(&peer), done, None);
                continue;
            }
            return (peer, msg, inb.data);
        }
    }

    fn from_broker(sock: &zmq::Socket, what: &str) -> (Message, Option<zmq::Message>) {
        let inb = recv(sock, false, what);
        (inb.msg.unwrap(), inb.data)
    }

    fn watcher_gets(&self, what: &str) -> Message {
        Harness::from_broker(&self.watcher, what).0
    }

    fn fetcher_gets(&self, what: &str) -> (Message, Option<zmq::Message>) {
        Harness::from_broker(&self.fetcher, what)
    }

    fn finish(mut self) -> String {
        self.stop.trigger();
        let t = self.thread.take().unwrap();
        t.join().unwrap().unwrap();
        std::fs::read_to_string(self.dir.path().join("server/myIndex/index.txt")).unwrap()
    }
}

fn put(id: u64, name: &str, size: u64, blake3: Option<Hash>) -> Message {
    Message::Put {
        id,
        name: name.into(),
        size,
        modified: 1_000,
        blake3,
        version: None,
        growing: false,
        sender: None,
    }
}

fn error_code(msg: &Message) -> ErrorCode {
    match msg {
        Message::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}
