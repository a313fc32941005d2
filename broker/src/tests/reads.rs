//! Listings and reads relayed to a fake fetcher, and bad input refused while serving goes on.

use super::*;

#[test]
fn reads_listings_and_bad_input() {
    let small = Entry {
        name: "s.mp3".into(),
        class: Class::Mp3,
        size: 3,
        blake3: Hash::of(b"abc"),
        modified: 5,
        version: 2,
    };
    let big = Entry {
        name: "z/big.bin".into(),
        class: Class::Others,
        size: (CHUNK_SIZE * 2) as u64,
        blake3: Hash::of(b"big"),
        modified: 6,
        version: 1,
    };
    let h = Harness::start(vec![small.clone(), big.clone()]);

    // Listing from the rebuilt index, on both ports.
    send(&h.fetcher, None, Message::list(1, None, 1), None);
    let (msg, _) = h.fetcher_gets("the first page");
    assert_eq!(
        msg,
        Message::Listing {
            id: 1,
            entries: vec![small.clone()],
            more: true
        }
    );
    let list = Message::list(2, Some("s.mp3".into()), 5000);
    send(&h.watcher, None, list, None);
    let page = h.watcher_gets("the second page");
    assert_eq!(
        page,
        Message::Listing {
            id: 2,
            entries: vec![big.clone()],
            more: false
        }
    );

    // Inline read: the meta and its data are relayed.
    send(
        &h.fetcher,
        None,
        Message::Get {
            id: 3,
            name: "s.mp3".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    let (peer, msg, _) = h.at_node(4, "the get on the serve port");
    // The node is told which fetcher the read is for, so it can share its slots between them.
    let Message::Get {
        id: bid,
        class: Some(Class::Mp3),
        sender: Some(_),
        ..
    } = msg
    else {
        panic!("unexpected {msg:?}");
    };
    send(
        &h.node[4],
        Some(&peer),
        Message::Meta {
            id: bid,
            entry: small.clone(),
        },
        Some(b"abc"),
    );
    let (msg, data) = h.fetcher_gets("the meta");
    assert_eq!(
        msg,
        Message::Meta {
            id: 3,
            entry: small.clone()
        }
    );
    assert_eq!(&data.unwrap()[..], b"abc");

    // Chunked read: the fetcher's credit reaches the node, the chunks come back.
    send(
        &h.fetcher,
        None,
        Message::Get {
            id: 4,
            name: "z/big.bin".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    let (peer, msg, _) = h.at_node(4, "the get");
    let bid = msg.id();
    send(
        &h.node[4],
        Some(&peer),
        Message::Meta {
            id: bid,
            entry: big.clone(),
        },
        None,
    );
    assert_eq!(
        h.fetcher_gets("meta").0,
        Message::Meta {
            id: 4,
            entry: big.clone()
        }
    );
    send(&h.fetcher, None, Message::Credit { id: 4, chunks: 8 }, None);
    let (_, msg, _) = h.at_node(4, "the credit");
    assert_eq!(msg, Message::Credit { id: bid, chunks: 8 });
    let chunk = vec![7u8; CHUNK_SIZE];
    for i in 0..2u64 {
        let offset = i * CHUNK_SIZE as u64;
        send(
            &h.node[4],
            Some(&peer),
            Message::Chunk {
                id: bid,
                offset,
                blake3: None,
                modified: None,
            },
            Some(&chunk),
        );
        let (msg, data) = h.fetcher_gets("a chunk");
        assert_eq!(
            msg,
            Message::Chunk {
                id: 4,
                offset,
                blake3: None,
                modified: None
            }
        );
        assert_eq!(data.unwrap().len(), CHUNK_SIZE);
    }
    // The read is over: more credit is for an unknown transfer.
    send(&h.fetcher, None, Message::Credit { id: 4, chunks: 1 }, None);
    assert_eq!(
        error_code(&h.fetcher_gets("unknown").0),
        ErrorCode::UnknownTransfer
    );

    // Names that are not stored, bad names, wrong ports, garbage.
    send(
        &h.fetcher,
        None,
        Message::Get {
            id: 5,
            name: "missing".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    assert_eq!(
        error_code(&h.fetcher_gets("not found").0),
        ErrorCode::NotFound
    );
    send(
        &h.fetcher,
        None,
        Message::Get {
            id: 6,
            name: "../etc".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    assert_eq!(
        error_code(&h.fetcher_gets("bad name").0),
        ErrorCode::BadName
    );
    send(
        &h.fetcher,
        None,
        put(7, "x", 1, Some(Hash::of(b"x"))),
        Some(b"x"),
    );
    assert_eq!(
        error_code(&h.fetcher_gets("unexpected").0),
        ErrorCode::Unexpected
    );
    send(
        &h.watcher,
        None,
        Message::Get {
            id: 8,
            name: "s.mp3".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    assert_eq!(
        error_code(&h.watcher_gets("unexpected")),
        ErrorCode::Unexpected
    );
    h.watcher.send(&b"\xffnot cbor"[..], 0).unwrap();
    let reply = h.watcher_gets("bad message");
    assert_eq!((reply.id(), error_code(&reply)), (0, ErrorCode::BadMessage));
    h.fetcher
        .send_multipart([&b"a"[..], b"b", b"c"], 0)
        .unwrap();
    assert_eq!(
        error_code(&h.fetcher_gets("too many frames").0),
        ErrorCode::BadMessage
    );
    send(
        &h.watcher,
        None,
        put(9, "y.txt", 3, Some(Hash::of(b"y"))),
        None,
    );
    assert_eq!(
        error_code(&h.watcher_gets("missing data")),
        ErrorCode::BadMessage
    );

    // Still serving.
    send(&h.watcher, None, Message::Ping { id: 10 }, None);
    assert_eq!(h.watcher_gets("pong"), Message::Pong { id: 10 });
    send(&h.fetcher, None, Message::Ping { id: 11 }, None);
    assert_eq!(h.fetcher_gets("pong").0, Message::Pong { id: 11 });

    let export = h.finish();
    assert_eq!(export.lines().count(), 3, "{export}");
}
