//! The protocol's rules as a peer written from `schema/PROTOCOL.md` meets them: each rule is
//! sent as raw bytes from a plain DEALER to every bound port, and the reply is checked against
//! what the document says.

use crate::bad_peers::{dealer, ports, reply};
use crate::harness::*;
use ciborium::Value;
use schema::limits::MAX_HEADER;
use schema::{ErrorCode, Message, PROTOCOL_VERSION};
use std::time::Duration;

/// The error answering `what`: its id, code and text.
fn error_of(s: &zmq::Socket, port: u16, what: &str) -> (u64, ErrorCode, String) {
    match reply(s, port, what) {
        Message::Error { id, code, message } => (id, code, message),
        other => panic!("port {port}: {what} answered {other:?}"),
    }
}

fn header(pairs: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Map(pairs), &mut out).unwrap();
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn int(n: u64) -> Value {
    Value::Integer(n.into())
}

#[test]
fn frame_and_header_rules_are_answered_with_the_request_id_on_every_port() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let v = int(PROTOCOL_VERSION);
    for port in ports(&c) {
        let s = dealer(&ctx, port);

        // Keys that are not text are ignored, like unknown text keys.
        let ping = header(vec![
            (text("v"), v.clone()),
            (int(1), text("an integer key")),
            (text("t"), text("ping")),
            (text("id"), int(11)),
            (text("unknown"), int(3)),
        ]);
        s.send(ping, 0).unwrap();
        assert_eq!(reply(&s, port, "integer key"), Message::Pong { id: 11 });

        // A header over 16 KiB is refused, with its id (a listing page is the only exception,
        // and only a reply).
        let pad = "x".repeat(MAX_HEADER);
        let big = header(vec![
            (text("v"), v.clone()),
            (text("t"), text("ping")),
            (text("id"), int(12)),
            (text("pad"), text(&pad)),
        ]);
        assert!(big.len() > MAX_HEADER);
        s.send(big, 0).unwrap();
        let (id, code, message) = error_of(&s, port, "a 16 KiB header");
        assert_eq!((id, code), (12, ErrorCode::BadMessage), "{message}");
        assert!(message.contains(&MAX_HEADER.to_string()), "{message}");

        // Three frames: the sender's count is named (not the ROUTER's identity), with the id.
        let ping = schema::codec::encode(&Message::Ping { id: 13 });
        s.send_multipart([&ping[..], b"data", b"more"], 0).unwrap();
        let (id, code, message) = error_of(&s, port, "three frames");
        assert_eq!((id, code), (13, ErrorCode::BadMessage), "{message}");
        assert!(
            message.contains("3 frames") && message.contains("at most 2"),
            "{message}"
        );

        // A missing `v` is `bad_message`, with the id.
        s.send(
            header(vec![(text("t"), text("ping")), (text("id"), int(14))]),
            0,
        )
        .unwrap();
        let (id, code, message) = error_of(&s, port, "no v");
        assert_eq!((id, code), (14, ErrorCode::BadMessage), "{message}");

        // A missing field is said in words, with the id, and no parser internals.
        s.send(
            header(vec![
                (text("v"), v.clone()),
                (text("t"), text("delete")),
                (text("id"), int(15)),
            ]),
            0,
        )
        .unwrap();
        let (id, code, message) = error_of(&s, port, "delete without a name");
        assert_eq!((id, code), (15, ErrorCode::BadMessage), "{message}");
        assert!(message.contains("missing field `name`"), "{message}");
        assert!(!message.contains("Semantic"), "{message}");

        // Still serving on the same connection.
        s.send(schema::codec::encode(&Message::Ping { id: 16 }), 0)
            .unwrap();
        assert_eq!(reply(&s, port, "ping"), Message::Pong { id: 16 });
    }
    wait_until("the broker still answers", Duration::from_secs(10), || {
        c.fetch(&["--json"]).status.success()
    });
}

#[test]
fn a_listing_limit_of_zero_or_past_the_maximum_still_pages_forward() {
    let c = Cluster::start();
    for i in 0..3 {
        std::fs::write(c.source.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    c.wait_synced(Duration::from_secs(60));
    let ctx = zmq::Context::new();
    let s = dealer(&ctx, c.fetch_port);
    let list = |id: u64, after: Option<&str>, limit: u64| {
        let mut pairs = vec![
            (text("v"), int(PROTOCOL_VERSION)),
            (text("t"), text("list")),
            (text("id"), int(id)),
            (text("limit"), int(limit)),
        ];
        if let Some(a) = after {
            pairs.push((text("after"), text(a)));
        }
        s.send(header(pairs), 0).unwrap();
        match reply(&s, c.fetch_port, "list") {
            Message::Listing {
                id: got,
                entries,
                more,
            } => {
                assert_eq!(got, id);
                (entries, more)
            }
            other => panic!("list answered {other:?}"),
        }
    };
    // `limit: 0` counts as 1: each page holds one entry and the cursor moves on.
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    for id in 1..10 {
        let (entries, more) = list(id, after.as_deref(), 0);
        assert_eq!(entries.len(), 1, "a page of limit 0: {entries:?}");
        seen.push(entries[0].name.clone());
        after = Some(entries[0].name.clone());
        if !more {
            break;
        }
    }
    assert_eq!(seen, ["f0.txt", "f1.txt", "f2.txt"]);
    // A limit past the maximum is taken as the maximum: everything in one page here.
    let (entries, more) = list(20, None, 1_000_000);
    assert_eq!((entries.len(), more), (3, false));
}

#[test]
fn concurrent_uploads_share_the_credit_and_each_gets_some_at_once() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    // Twelve uploads of three chunks each, from one peer straight to the txt port: every one is
    // given credit before any chunk is sent (each takes at most half of the budget still free,
    // so the last ones still find some).
    let port = c.base_port + 1;
    let s = dealer(&ctx, port);
    let size = 3 * schema::limits::CHUNK_SIZE as u64;
    for id in 1..=12u64 {
        let put = Message::Put {
            id,
            name: format!("fair/{id}.txt"),
            size,
            modified: 0,
            blake3: None,
            version: Some(1),
            growing: false,
        };
        s.send(schema::codec::encode(&put), 0).unwrap();
    }
    let mut credit = std::collections::BTreeMap::new();
    while credit.len() < 12 {
        let Ok(frames) = s.recv_multipart(0) else {
            panic!("only these uploads were given credit: {credit:?}");
        };
        match schema::codec::decode(&frames[0]).unwrap() {
            Message::Credit { id, chunks } => {
                assert!(chunks >= 1, "upload {id}: a grant of {chunks}");
                *credit.entry(id).or_insert(0u32) += chunks;
            }
            other => panic!("a put answered {other:?} before any chunk was sent"),
        }
    }
    let total: u32 = credit.values().sum();
    assert!(total <= schema::limits::GLOBAL_WINDOW, "{credit:?}");
    assert!(credit.values().all(|&n| n >= 1), "{credit:?}");
    for id in 1..=12u64 {
        s.send(schema::codec::encode(&Message::Abort { id }), 0)
            .unwrap();
    }
}

/// Uploads `data` in chunks as `name` straight to the node's port `port` (request `id`, the
/// version the broker would give `version`), sending each chunk under the credit granted;
/// returns the `done`.
fn chunked_put(
    s: &zmq::Socket,
    port: u16,
    id: u64,
    name: &str,
    data: &[u8],
    version: u64,
) -> Message {
    let put = Message::Put {
        id,
        name: name.into(),
        size: data.len() as u64,
        modified: 0,
        blake3: None,
        version: Some(version),
        growing: false,
    };
    s.send(schema::codec::encode(&put), 0).unwrap();
    let mut offset = 0usize;
    let mut credit = 0u32;
    loop {
        while credit > 0 && offset < data.len() {
            let end = (offset + schema::limits::CHUNK_SIZE).min(data.len());
            let chunk = Message::Chunk {
                id,
                offset: offset as u64,
                blake3: (end == data.len()).then(|| schema::Hash::of(data)),
                modified: None,
            };
            s.send(schema::codec::encode(&chunk), zmq::SNDMORE).unwrap();
            s.send(&data[offset..end], 0).unwrap();
            offset = end;
            credit -= 1;
        }
        match reply(s, port, "upload") {
            Message::Credit { chunks, .. } => credit += chunks,
            done @ Message::Done { .. } => return done,
            other => panic!("the upload answered {other:?}"),
        }
    }
}

#[test]
fn the_same_content_sent_again_in_chunks_is_unchanged() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let port = c.base_port + 1;
    let s = dealer(&ctx, port);
    let data = random_bytes(5, schema::limits::CHUNK_SIZE * 2 + 10);
    let first = chunked_put(&s, port, 1, "again.txt", &data, 1);
    assert_eq!(
        first,
        Message::Done {
            id: 1,
            version: 1,
            unchanged: false
        }
    );
    // Without `blake3` on the `put`, the node learns the hash at the last chunk: the same bytes
    // are still recognised, and the version stays.
    let again = chunked_put(&s, port, 2, "again.txt", &data, 2);
    assert_eq!(
        again,
        Message::Done {
            id: 2,
            version: 1,
            unchanged: true
        }
    );
    assert_eq!(std::fs::read(c.root.join("txt/again.txt")).unwrap(), data);
}
