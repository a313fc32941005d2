//! The relay's decisions without sockets: messages go in as `Inbound`s, what it sends to the
//! node is recorded by a stand-in [`ToNode`], what it answers is read from its outbox.

use super::put;
use crate::index::Index;
use crate::links::{NodePort, ToNode, Unreachable};
use crate::owners::Owners;
use crate::peer::Front;
use crate::rebuild::Rebuild;
use crate::relay::Relay;
use schema::codec::Inbound;
use schema::{Class, Entry, ErrorCode, Hash, Message, Routes};

/// The node as the relay sees it: records what is sent, or refuses everything while `down`.
#[derive(Default)]
struct FakeNode {
    sent: Vec<(NodePort, Message)>,
    down: bool,
}

impl ToNode for FakeNode {
    fn send(
        &mut self,
        link: NodePort,
        msg: &Message,
        _data: Option<zmq::Message>,
    ) -> Result<(), Unreachable> {
        if self.down {
            return Err(Unreachable {
                endpoint: "tcp://node".into(),
                reason: "not connected".into(),
            });
        }
        self.sent.push((link, msg.clone()));
        Ok(())
    }

    fn endpoint(&self, _link: NodePort) -> &str {
        "tcp://node"
    }
}

struct Desk {
    _dir: tempfile::TempDir,
    relay: Relay,
    node: FakeNode,
}

impl Desk {
    fn new(rebuilding: bool) -> Desk {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("index.db")).unwrap();
        let owners = Owners::load(&index).unwrap();
        let relay = Relay::new(index, Routes::default(), Rebuild::new(rebuilding), owners);
        let mut desk = Desk {
            _dir: dir,
            relay,
            node: FakeNode::default(),
        };
        // The watcher `w` owns the root volume.
        desk.claim(b"w", "", "host:/src", false);
        desk.held();
        desk
    }

    fn claim(&mut self, peer: &[u8], volume: &str, owner: &str, take_over: bool) {
        let claim = Message::Claim {
            id: 99,
            volume: volume.into(),
            owner: owner.into(),
            take_over,
        };
        self.peer_says(Front::Ingest, peer, claim, None);
    }

    fn peer_says(&mut self, front: Front, peer: &[u8], msg: Message, data: Option<&[u8]>) {
        let inbound = Inbound {
            peer: Some(peer.to_vec()),
            msg: Ok(msg),
            data: data.map(zmq::Message::from),
            user_id: None,
        };
        self.relay.on_front(front, inbound, &mut self.node);
    }

    fn node_says(&mut self, link: NodePort, msg: Message) {
        let inbound = Inbound {
            peer: None,
            msg: Ok(msg),
            data: None,
            user_id: None,
        };
        self.relay.on_node(link, inbound, &mut self.node);
    }

    /// The replies decided now (not those held for the flush).
    fn answers(&mut self) -> Vec<Message> {
        let out = self.relay.outbox();
        out.take_now().into_iter().map(|r| r.msg).collect()
    }

    fn held(&mut self) -> Vec<Message> {
        let out = self.relay.outbox();
        out.take_after_flush().into_iter().map(|r| r.msg).collect()
    }
}

fn code(msg: &Message) -> Option<ErrorCode> {
    match msg {
        Message::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn a_put_is_forwarded_to_its_class_and_acked_after_the_flush() {
    let mut d = Desk::new(false);
    let hash = Hash::of(b"hi");
    d.peer_says(
        Front::Ingest,
        b"w",
        put(7, "a.txt", 2, Some(hash)),
        Some(b"hi"),
    );
    assert!(
        d.answers().is_empty(),
        "nothing is answered before the node"
    );
    let [(
        link,
        Message::Put {
            id: bid, version, ..
        },
    )] = d.node.sent.as_slice()
    else {
        panic!("expected one put to the node, got {:?}", d.node.sent);
    };
    assert_eq!(*link, NodePort::Class(Class::Txt));
    assert_eq!(*version, Some(1));
    let bid = *bid;
    assert_ne!(bid, 7, "the node sees a broker id, not the watcher's");

    // A second change of the same name waits for the first.
    d.peer_says(
        Front::Ingest,
        b"w",
        put(8, "a.txt", 2, Some(hash)),
        Some(b"hi"),
    );
    let busy = d.answers();
    assert_eq!(busy.len(), 1);
    assert_eq!(code(&busy[0]), Some(ErrorCode::Busy));
    assert_eq!(busy[0].id(), 8);

    let done = Message::Done {
        id: bid,
        version: 1,
        unchanged: false,
    };
    d.node_says(NodePort::Class(Class::Txt), done);
    assert!(d.answers().is_empty(), "the done waits for the index flush");
    let held = d.held();
    assert!(
        matches!(
            held.as_slice(),
            [Message::Done {
                id: 7,
                version: 1,
                ..
            }]
        ),
        "{held:?}"
    );
    let rec = d.relay.index.get("a.txt").unwrap().unwrap();
    assert_eq!((rec.blake3, rec.class, rec.version), (hash, Class::Txt, 1));
    assert!(d.relay.outbox().take_changed());

    // The same content again is answered from the index, without the node.
    d.node.sent.clear();
    d.peer_says(
        Front::Ingest,
        b"w",
        put(9, "a.txt", 2, Some(hash)),
        Some(b"hi"),
    );
    let again = d.answers();
    assert!(
        matches!(
            again.as_slice(),
            [Message::Done {
                id: 9,
                version: 1,
                unchanged: true
            }]
        ),
        "{again:?}"
    );
    assert!(d.node.sent.is_empty());
}

#[test]
fn an_unreachable_node_refuses_the_change_and_frees_the_name() {
    let mut d = Desk::new(false);
    d.node.down = true;
    let hash = Hash::of(b"x");
    d.peer_says(
        Front::Ingest,
        b"w",
        put(1, "b.pdf", 1, Some(hash)),
        Some(b"x"),
    );
    let refused = d.answers();
    assert_eq!(code(&refused[0]), Some(ErrorCode::Unavailable));
    assert!(d.relay.is_idle());
    d.node.down = false;
    d.peer_says(
        Front::Ingest,
        b"w",
        put(2, "b.pdf", 1, Some(hash)),
        Some(b"x"),
    );
    assert!(d.answers().is_empty());
    assert_eq!(d.node.sent[0].0, NodePort::Class(Class::Pdf));
}

#[test]
fn the_fetch_port_never_writes_and_renames_need_the_stored_content() {
    let mut d = Desk::new(false);
    d.peer_says(
        Front::Fetch,
        b"f",
        put(1, "c.txt", 1, Some(Hash::of(b"c"))),
        Some(b"c"),
    );
    d.peer_says(
        Front::Ingest,
        b"w",
        Message::Rename {
            id: 2,
            from: "missing.txt".into(),
            to: "d.txt".into(),
            blake3: Hash::of(b"c"),
            to_class: None,
            version: None,
        },
        None,
    );
    let codes: Vec<_> = d.answers().iter().map(code).collect();
    assert_eq!(
        codes,
        [Some(ErrorCode::Unexpected), Some(ErrorCode::NotFound)]
    );
    assert!(d.node.sent.is_empty(), "nothing reached the node");
}

#[test]
fn a_rebuild_pages_the_node_and_refuses_changes_until_done() {
    let mut d = Desk::new(true);
    // First the owners the node records.
    d.relay.tick(false, &mut d.node);
    let [(NodePort::Serve, Message::Owners { id: ask })] = d.node.sent.as_slice() else {
        panic!("expected the owners request, got {:?}", d.node.sent);
    };
    let ask = *ask;
    d.node.sent.clear();
    let claim = |id, owner: &str| Message::Claim {
        id,
        volume: "photos".into(),
        owner: owner.into(),
        take_over: false,
    };
    d.peer_says(Front::Ingest, b"w", claim(7, "host:/b"), None);
    assert_eq!(
        code(&d.answers()[0]),
        Some(ErrorCode::Busy),
        "no claim before the owners are back"
    );
    d.node_says(
        NodePort::Serve,
        Message::Owned {
            id: ask,
            owners: [("photos".to_string(), "host:/a".to_string())].into(),
        },
    );
    d.relay.tick(false, &mut d.node);
    let [(
        NodePort::Serve,
        Message::List {
            id: page,
            after: None,
            ..
        },
    )] = d.node.sent.as_slice()
    else {
        panic!("expected the first page request, got {:?}", d.node.sent);
    };
    let page = *page;
    d.peer_says(
        Front::Ingest,
        b"w",
        put(1, "e.mp3", 1, Some(Hash::of(b"e"))),
        Some(b"e"),
    );
    assert_eq!(code(&d.answers()[0]), Some(ErrorCode::Busy));

    let entry = Entry {
        name: "old.mp3".into(),
        class: Class::Mp3,
        size: 3,
        modified: 5,
        blake3: Hash::of(b"old"),
        version: 4,
    };
    d.node_says(
        NodePort::Serve,
        Message::Listing {
            id: page,
            entries: vec![entry],
            more: false,
        },
    );
    assert!(!d.relay.is_rebuilding());
    let rec = d.relay.index.get("old.mp3").unwrap().unwrap();
    assert_eq!((rec.size, rec.version), (3, 4));
    d.relay.tick(false, &mut d.node);
    assert!(
        d.relay.outbox().take_changed(),
        "a finished rebuild asks for an export"
    );
    // The owner came back with the files: another folder's claim of its volume is refused.
    d.peer_says(Front::Ingest, b"w", claim(8, "host:/b"), None);
    let answers = d.answers();
    assert_eq!(code(&answers[0]), Some(ErrorCode::Forbidden), "{answers:?}");
    assert_eq!(
        d.relay.index.owners().unwrap(),
        [("photos".into(), "host:/a".into())]
    );
}

#[test]
fn status_without_the_node_says_why() {
    let mut d = Desk::new(false);
    d.node.down = true;
    d.peer_says(
        Front::Fetch,
        b"f",
        Message::Status {
            id: 3,
            wait_ms: None,
        },
        None,
    );
    let answers = d.answers();
    let [Message::BrokerStatus {
        id: 3,
        node: None,
        node_error: Some(why),
        broker,
    }] = answers.as_slice()
    else {
        panic!("expected a broker_status without the node, got {answers:?}");
    };
    assert!(why.contains("tcp://node"), "{why}");
    assert_eq!(broker.storage, "tcp://node");
}

#[test]
fn changes_stay_in_the_claimed_volume_and_owners_are_kept() {
    let mut d = Desk::new(false);
    let hash = Hash::of(b"p");
    // No claim on this connection: refused, nothing sent.
    d.peer_says(
        Front::Ingest,
        b"x",
        put(1, "a.txt", 1, Some(hash)),
        Some(b"p"),
    );
    let refused = d.answers();
    assert_eq!(code(&refused[0]), Some(ErrorCode::Forbidden), "{refused:?}");

    // A second watcher claims the named volume photos: held until the flush, with the list.
    d.claim(b"p", "photos", "host:/pics", false);
    assert!(d.answers().is_empty());
    let held = d.held();
    assert!(
        matches!(held.as_slice(), [Message::Claimed { id: 99, volumes }] if volumes == &["photos"]),
        "{held:?}"
    );
    // It may change its own names only.
    d.peer_says(
        Front::Ingest,
        b"p",
        put(2, "a.txt", 1, Some(hash)),
        Some(b"p"),
    );
    d.peer_says(
        Front::Ingest,
        b"p",
        put(3, "photos/a.jpg", 1, Some(hash)),
        Some(b"p"),
    );
    let answers = d.answers();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(code(&answers[0]), Some(ErrorCode::Forbidden));
    assert_eq!(answers[0].id(), 2);
    assert!(matches!(&d.node.sent[..], [(_, Message::Put { name, .. })] if name == "photos/a.jpg"));
    // The root watcher may not reach into photos/.
    d.peer_says(
        Front::Ingest,
        b"w",
        Message::Delete {
            id: 4,
            name: "photos/a.jpg".into(),
        },
        None,
    );
    assert_eq!(code(&d.answers()[0]), Some(ErrorCode::Forbidden));

    // Another owner is refused, naming the owner; --take-over moves the volume.
    d.claim(b"q", "photos", "other:/pics", false);
    let refused = d.answers();
    let [Message::Error {
        code: ErrorCode::Forbidden,
        message,
        ..
    }] = refused.as_slice()
    else {
        panic!("expected forbidden, got {refused:?}");
    };
    assert!(
        message.contains("host:/pics") && message.contains("--take-over"),
        "{message}"
    );
    d.claim(b"q", "photos", "other:/pics", true);
    assert!(matches!(d.held().as_slice(), [Message::Claimed { .. }]));

    // The owners are in the index: a relay opened on it again knows them.
    let again = Owners::load(&d.relay.index).unwrap();
    assert!(again.is_named("photos"));
    assert_eq!(again.named(), ["photos"]);
}
