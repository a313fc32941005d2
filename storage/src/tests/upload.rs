//! The write path: inline and chunked puts, credit, integrity, unchanged content.

use super::*;
use schema::limits::GLOBAL_WINDOW;
use std::collections::HashMap;

#[test]
fn inline_put_lands_with_its_bytes_and_metadata() {
    let node = TestNode::start();
    let mp3 = node.dealer(Some(Class::Mp3));
    let data = content(1000, 1);
    let reply = put_inline(&mp3, 7, "music/a.mp3", &data);
    assert_eq!(
        reply,
        Message::Done {
            id: 7,
            version: 1,
            unchanged: false
        }
    );
    assert_stored(&node, Class::Mp3, "music/a.mp3", &data, 1);
    // An empty file is a file too.
    let reply = put_inline(&mp3, 8, "empty.mp3", b"");
    assert!(matches!(reply, Message::Done { id: 8, .. }), "{reply:?}");
    assert_eq!(
        std::fs::read(node.path(Class::Mp3, "empty.mp3")).unwrap(),
        b""
    );
}

#[test]
fn unchanged_put_writes_nothing() {
    let node = TestNode::start();
    let txt = node.dealer(Some(Class::Txt));
    let data = content(5000, 2);
    let first = request(&txt, &put(1, "a.txt", &data, Some(3)), Some(&data)).0;
    assert_eq!(
        first,
        Message::Done {
            id: 1,
            version: 3,
            unchanged: false
        }
    );
    let path = node.path(Class::Txt, "a.txt");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let again = request(&txt, &put(2, "a.txt", &data, Some(4)), Some(&data)).0;
    assert_eq!(
        again,
        Message::Done {
            id: 2,
            version: 3,
            unchanged: true
        }
    );
    let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    assert_eq!(inode, after, "the file was rewritten");
    // A large put announcing the stored hash is answered at once.
    let big = content(CHUNK_SIZE + 10, 3);
    let hash = Hash::of(&big);
    assert!(matches!(
        put_chunked(&txt, 3, "big.txt", &big, hash),
        Message::Done { .. }
    ));
    let reply = request(&txt, &put(4, "big.txt", &big, Some(9)), None).0;
    assert_eq!(
        reply,
        Message::Done {
            id: 4,
            version: 2,
            unchanged: true
        }
    );
}

#[test]
fn integrity_mismatch_leaves_nothing() {
    let node = TestNode::start();
    let pdf = node.dealer(Some(Class::Pdf));
    let data = content(100, 4);
    let mut msg = put(1, "x.pdf", &data, None);
    if let Message::Put { blake3, .. } = &mut msg {
        *blake3 = Some(Hash::of(b"something else"));
    }
    let reply = request(&pdf, &msg, Some(&data)).0;
    assert_eq!(error_code(&reply), ErrorCode::Integrity);
    assert!(!node.path(Class::Pdf, "x.pdf").exists());

    let big = content(2 * CHUNK_SIZE + 1, 5);
    let reply = put_chunked(&pdf, 2, "y.pdf", &big, Hash::of(b"wrong"));
    assert_eq!(error_code(&reply), ErrorCode::Integrity);
    assert!(!node.path(Class::Pdf, "y.pdf").exists());
    assert_eq!(node.temp_files(), 0);
}

#[test]
fn chunked_put_lands_whole() {
    let node = TestNode::start();
    let others = node.dealer(Some(Class::Others));
    let data = content(3 * CHUNK_SIZE + 100, 6);
    let reply = put_chunked(&others, 11, "deep/er/file.bin", &data, Hash::of(&data));
    assert_eq!(
        reply,
        Message::Done {
            id: 11,
            version: 2,
            unchanged: false
        }
    );
    assert_stored(&node, Class::Others, "deep/er/file.bin", &data, 2);
    // An exact multiple of the chunk size ends with a full chunk.
    let data = content(2 * CHUNK_SIZE, 7);
    let reply = put_chunked(&others, 12, "exact", &data, Hash::of(&data));
    assert!(matches!(reply, Message::Done { id: 12, .. }), "{reply:?}");
    assert_stored(&node, Class::Others, "exact", &data, 2);
}

#[test]
fn credit_never_exceeds_the_windows_across_transfers() {
    let node = TestNode::start();
    let sock = node.dealer(Some(Class::Others));
    let n = 6u64;
    let chunks = 10usize;
    let data = content(chunks * CHUNK_SIZE, 8);
    let hash = Hash::of(&data);
    for id in 0..n {
        send(&sock, &put(id, &format!("f{id}"), &data, None), None);
    }
    let mut credit: HashMap<u64, u32> = HashMap::new();
    let mut sent: HashMap<u64, usize> = HashMap::new();
    let mut done = 0;
    let mut next = 0u64;
    // Counts a credit in; returns 1 for a `done`.
    let take = |inbound: codec::Inbound, credit: &mut HashMap<u64, u32>| match inbound.msg.unwrap()
    {
        Message::Credit { id, chunks } => {
            *credit.entry(id).or_default() += chunks;
            0
        }
        Message::Done { .. } => 1,
        other => panic!("unexpected {other:?}"),
    };
    while done < n {
        // Take every credit and reply that has arrived, then check the windows.
        while let Ok(inbound) = codec::recv(&sock, false, zmq::DONTWAIT) {
            done += take(inbound, &mut credit);
        }
        if done == n {
            break;
        }
        let total: u32 = credit.values().sum();
        assert!(
            total <= GLOBAL_WINDOW,
            "{total} chunks of credit outstanding"
        );
        assert!(credit.values().all(|c| *c <= TRANSFER_WINDOW), "{credit:?}");
        // Spend one unit of credit, round robin; with none, wait for the node.
        let holder = (0..n)
            .map(|k| (next + k) % n)
            .find(|id| credit.get(id).copied().unwrap_or(0) > 0);
        let Some(id) = holder else {
            let inbound = codec::recv(&sock, false, 0).unwrap_or_else(|e| {
                panic!("the node went quiet ({e}): sent {sent:?}, done {done}")
            });
            done += take(inbound, &mut credit);
            continue;
        };
        next = (id + 1) % n;
        let i = *sent.get(&id).unwrap_or(&0);
        let last = i + 1 == chunks;
        let chunk = Message::Chunk {
            id,
            offset: (i * CHUNK_SIZE) as u64,
            blake3: last.then_some(hash),
            modified: None,
        };
        send(
            &sock,
            &chunk,
            Some(&data[i * CHUNK_SIZE..(i + 1) * CHUNK_SIZE]),
        );
        *credit.get_mut(&id).unwrap() -= 1;
        sent.insert(id, i + 1);
    }
    for id in 0..n {
        assert_eq!(
            std::fs::read(node.path(Class::Others, &format!("f{id}"))).unwrap(),
            data
        );
    }
}

#[test]
fn chunk_rule_breaches_are_refused_and_the_transfer_dropped() {
    let node = TestNode::start();
    let sock = node.dealer(Some(Class::Mp3));
    let data = content(3 * CHUNK_SIZE, 9);
    let chunk = |id, offset: usize| Message::Chunk {
        id,
        offset: offset as u64,
        blake3: None,
        modified: None,
    };
    let reply = request(&sock, &chunk(99, 0), Some(&data[..CHUNK_SIZE])).0;
    assert_eq!(error_code(&reply), ErrorCode::UnknownTransfer);

    // Out of order.
    send(&sock, &put(1, "a.mp3", &data, None), None);
    assert!(matches!(recv(&sock).0, Message::Credit { id: 1, .. }));
    let reply = request(&sock, &chunk(1, CHUNK_SIZE), Some(&data[..CHUNK_SIZE])).0;
    assert_eq!(error_code(&reply), ErrorCode::BadMessage);
    let reply = request(&sock, &chunk(1, 0), Some(&data[..CHUNK_SIZE])).0;
    assert_eq!(error_code(&reply), ErrorCode::UnknownTransfer);

    // Short chunk that is not the last.
    send(&sock, &put(2, "b.mp3", &data, None), None);
    assert!(matches!(recv(&sock).0, Message::Credit { id: 2, .. }));
    let reply = request(&sock, &chunk(2, 0), Some(&data[..100])).0;
    assert_eq!(error_code(&reply), ErrorCode::BadMessage);

    // Abort drops the transfer and its temporary file; no reply.
    send(&sock, &put(3, "c.mp3", &data, None), None);
    assert!(matches!(recv(&sock).0, Message::Credit { id: 3, .. }));
    send(&sock, &chunk(3, 0), Some(&data[..CHUNK_SIZE]));
    send(&sock, &Message::Abort { id: 3 }, None);
    let reply = request(&sock, &Message::Ping { id: 4 }, None).0;
    assert_eq!(reply, Message::Pong { id: 4 });
    assert_eq!(node.temp_files(), 0);
    assert!(!node.path(Class::Mp3, "c.mp3").exists());
}

/// Sends `data` as a growing upload announced at `first` bytes: full chunks, then the last one
/// with the hash and `modified` (if given). Returns the final reply.
fn put_growing(
    sock: &zmq::Socket,
    id: u64,
    data: &[u8],
    first: u64,
    modified: Option<i64>,
) -> Message {
    let put = Message::Put {
        id,
        name: "rec.bin".into(),
        size: first,
        modified: 5,
        blake3: None,
        version: Some(1),
        growing: true,
        sender: None,
    };
    send(sock, &put, None);
    send_chunks(sock, id, data, Hash::of(data), modified)
}

#[test]
fn a_growing_upload_ends_at_the_chunk_with_the_hash() {
    let node = TestNode::start();
    let others = node.dealer(Some(Class::Others));
    // Announced at 1 MiB, the file ends far past it, and mid-chunk.
    let data = content(40 * CHUNK_SIZE + 123, 9);
    let reply = put_growing(&others, 1, &data, 1 << 20, Some(1_700_000_000_123_456_789));
    assert!(
        matches!(
            reply,
            Message::Done {
                id: 1,
                version: 1,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_stored(&node, Class::Others, "rec.bin", &data, 1);

    // The last chunk must give the final modification time.
    let reply = put_growing(&others, 2, &data[..3 * CHUNK_SIZE + 1], 1 << 20, None);
    assert_eq!(error_code(&reply), ErrorCode::BadMessage, "{reply:?}");
    assert_eq!(node.temp_files(), 0, "temporary files left");
    assert_eq!(
        std::fs::read(node.path(Class::Others, "rec.bin")).unwrap(),
        data
    );

    // A growing put is of a file too large to travel inline.
    let small = Message::Put {
        id: 3,
        name: "small".into(),
        size: 10,
        modified: 5,
        blake3: None,
        version: Some(1),
        growing: true,
        sender: None,
    };
    let (reply, _) = request(&others, &small, None);
    assert_eq!(error_code(&reply), ErrorCode::BadMessage, "{reply:?}");
}
