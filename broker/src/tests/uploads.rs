//! Uploads, renames and deletes relayed between a fake watcher and a fake node.

use super::*;

#[test]
fn uploads_are_relayed_and_acked_after_the_index() {
    let h = Harness::start(vec![]);
    let content = b"hello";
    let hash = Hash::of(content);

    // Inline put: forwarded with version 1 and its data; acked only after the node's done.
    send(
        &h.watcher,
        None,
        put(7, "docs/a.txt", 5, Some(hash)),
        Some(content),
    );
    let (peer, msg, data) = h.at_node(1, "the inline put on the txt port");
    let Message::Put {
        id: bid,
        version: Some(1),
        ref name,
        ..
    } = msg
    else {
        panic!("unexpected {msg:?}");
    };
    assert_eq!(name, "docs/a.txt");
    assert_eq!(&data.unwrap()[..], content);
    assert!(quiet(&h.watcher, 200), "acked before the node's done");
    // A second change of the same name meanwhile is busy.
    send(
        &h.watcher,
        None,
        Message::Delete {
            id: 8,
            name: "docs/a.txt".into(),
        },
        None,
    );
    assert_eq!(error_code(&h.watcher_gets("busy")), ErrorCode::Busy);
    send(
        &h.node[1],
        Some(&peer),
        Message::Done {
            id: bid,
            version: 1,
            unchanged: false,
        },
        None,
    );
    let done = h.watcher_gets("the done");
    assert_eq!(
        done,
        Message::Done {
            id: 7,
            version: 1,
            unchanged: false
        }
    );
    let rec = h.index.get("docs/a.txt").unwrap().unwrap();
    assert_eq!(
        (rec.class, rec.size, rec.blake3, rec.version),
        (Class::Txt, 5, hash, 1)
    );

    // The same content again: unchanged at once, nothing reaches the node.
    send(
        &h.watcher,
        None,
        put(9, "docs/a.txt", 5, Some(hash)),
        Some(content),
    );
    let done = h.watcher_gets("the unchanged done");
    assert_eq!(
        done,
        Message::Done {
            id: 9,
            version: 1,
            unchanged: true
        }
    );
    assert!(quiet(&h.node[1], 100));

    // Chunked put: the node's credit reaches the watcher, the chunks reach the node.
    let size = (CHUNK_SIZE + 10) as u64;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let big_hash = Hash::of(&body);
    send(&h.watcher, None, put(11, "big.bin", size, None), None);
    let (peer, msg, data) = h.at_node(3, "the chunked put on the others port");
    let Message::Put {
        id: bid,
        version: Some(1),
        ..
    } = msg
    else {
        panic!("unexpected {msg:?}");
    };
    assert!(data.is_none());
    send(
        &h.node[3],
        Some(&peer),
        Message::Credit { id: bid, chunks: 8 },
        None,
    );
    assert_eq!(
        h.watcher_gets("credit"),
        Message::Credit { id: 11, chunks: 8 }
    );
    let first = Message::Chunk {
        id: 11,
        offset: 0,
        blake3: None,
        modified: None,
    };
    send(&h.watcher, None, first, Some(&body[..CHUNK_SIZE]));
    let last = Message::Chunk {
        id: 11,
        offset: CHUNK_SIZE as u64,
        blake3: Some(big_hash),
        modified: None,
    };
    send(&h.watcher, None, last, Some(&body[CHUNK_SIZE..]));
    let (_, msg, data) = h.at_node(3, "the first chunk");
    assert_eq!(
        msg,
        Message::Chunk {
            id: bid,
            offset: 0,
            blake3: None,
            modified: None
        }
    );
    assert_eq!(data.unwrap().len(), CHUNK_SIZE);
    let (_, msg, data) = h.at_node(3, "the last chunk");
    assert_eq!(
        msg,
        Message::Chunk {
            id: bid,
            offset: CHUNK_SIZE as u64,
            blake3: Some(big_hash),
            modified: None
        }
    );
    assert_eq!(&data.unwrap()[..], &body[CHUNK_SIZE..]);
    send(
        &h.node[3],
        Some(&peer),
        Message::Done {
            id: bid,
            version: 1,
            unchanged: false,
        },
        None,
    );
    assert_eq!(
        h.watcher_gets("done"),
        Message::Done {
            id: 11,
            version: 1,
            unchanged: false
        }
    );
    assert_eq!(h.index.get("big.bin").unwrap().unwrap().blake3, big_hash);

    // A chunk for no transfer.
    send(
        &h.watcher,
        None,
        Message::Chunk {
            id: 99,
            offset: 0,
            blake3: None,
            modified: None,
        },
        Some(b"x"),
    );
    assert_eq!(
        error_code(&h.watcher_gets("unknown")),
        ErrorCode::UnknownTransfer
    );

    // Rename: forwarded to the class of `from` with the class and version of `to`.
    let rename = Message::Rename {
        id: 12,
        from: "docs/a.txt".into(),
        to: "b.pdf".into(),
        blake3: hash,
        to_class: None,
        version: None,
    };
    send(&h.watcher, None, rename, None);
    let (peer, msg, _) = h.at_node(1, "the rename");
    let Message::Rename {
        id: bid,
        to_class: Some(Class::Pdf),
        version: Some(1),
        ..
    } = msg
    else {
        panic!("unexpected {msg:?}");
    };
    send(
        &h.node[1],
        Some(&peer),
        Message::Done {
            id: bid,
            version: 1,
            unchanged: false,
        },
        None,
    );
    assert_eq!(
        h.watcher_gets("done"),
        Message::Done {
            id: 12,
            version: 1,
            unchanged: false
        }
    );
    assert!(h.index.get("docs/a.txt").unwrap().is_none());
    assert_eq!(h.index.get("b.pdf").unwrap().unwrap().class, Class::Pdf);

    // Delete: an unknown name at once; an indexed one through the node.
    send(
        &h.watcher,
        None,
        Message::Delete {
            id: 13,
            name: "nope".into(),
        },
        None,
    );
    assert_eq!(
        h.watcher_gets("done"),
        Message::Done {
            id: 13,
            version: 0,
            unchanged: false
        }
    );
    send(
        &h.watcher,
        None,
        Message::Delete {
            id: 14,
            name: "b.pdf".into(),
        },
        None,
    );
    let (peer, msg, _) = h.at_node(2, "the delete on the pdf port");
    send(
        &h.node[2],
        Some(&peer),
        Message::Done {
            id: msg.id(),
            version: 1,
            unchanged: false,
        },
        None,
    );
    assert_eq!(h.watcher_gets("done").id(), 14);
    assert!(h.index.get("b.pdf").unwrap().is_none());

    // A node error reaches the watcher with its id.
    send(
        &h.watcher,
        None,
        put(15, "c.mp3", 1, Some(Hash::of(b"c"))),
        Some(b"c"),
    );
    let (peer, msg, _) = h.at_node(0, "the put on the mp3 port");
    let err = Message::error(msg.id(), ErrorCode::NoSpace, "disk full");
    send(&h.node[0], Some(&peer), err, None);
    let reply = h.watcher_gets("the error");
    assert_eq!((reply.id(), error_code(&reply)), (15, ErrorCode::NoSpace));

    let export = h.finish();
    let lines: Vec<_> = export.lines().collect();
    assert_eq!(lines[0], crate::HEADER);
    assert_eq!(lines.len(), 2, "{export}");
    assert!(
        lines[1].starts_with("big.bin\tothers\t262154\t"),
        "{export}"
    );
}

#[test]
fn a_growing_upload_is_indexed_with_the_size_and_mtime_of_its_last_chunk() {
    let h = Harness::start(vec![]);
    let body: Vec<u8> = (0..3 * CHUNK_SIZE + 5).map(|i| (i % 241) as u8).collect();
    let hash = Hash::of(&body);
    let mut start = put(21, "rec.bin", 100_000, None);
    if let Message::Put { growing, .. } = &mut start {
        *growing = true;
    }
    send(&h.watcher, None, start, None);
    let (peer, msg, _) = h.at_node(3, "the growing put");
    let Message::Put {
        id: bid,
        growing: true,
        size: 100_000,
        ..
    } = msg
    else {
        panic!("unexpected {msg:?}");
    };
    send(
        &h.node[3],
        Some(&peer),
        Message::Credit { id: bid, chunks: 8 },
        None,
    );
    h.watcher_gets("credit");
    for (i, piece) in body.chunks(CHUNK_SIZE).enumerate() {
        let last = (i + 1) * CHUNK_SIZE >= body.len();
        let chunk = Message::Chunk {
            id: 21,
            offset: (i * CHUNK_SIZE) as u64,
            blake3: last.then_some(hash),
            modified: last.then_some(77),
        };
        send(&h.watcher, None, chunk, Some(piece));
        let (_, msg, _) = h.at_node(3, "a chunk");
        assert!(
            matches!(msg, Message::Chunk { modified, .. } if modified == last.then_some(77)),
            "{msg:?}"
        );
    }
    let done = Message::Done {
        id: bid,
        version: 1,
        unchanged: false,
    };
    send(&h.node[3], Some(&peer), done, None);
    assert!(matches!(
        h.watcher_gets("done"),
        Message::Done { id: 21, .. }
    ));
    let rec = h.index.get("rec.bin").unwrap().unwrap();
    assert_eq!(
        (rec.size, rec.modified, rec.blake3),
        (body.len() as u64, 77, hash)
    );
}
