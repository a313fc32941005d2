//! The protocol's rules as a peer written from `schema/PROTOCOL.md` meets them: each rule is
//! sent as raw bytes from a plain DEALER to every bound port, and the reply is checked against
//! what the document says.

use crate::bad_peers::{dealer, ports, reply};
use crate::harness::*;
use ciborium::Value;
use schema::limits::MAX_HEADER;
use schema::{ErrorCode, Message, PROTOCOL_VERSION};
use std::collections::BTreeMap;
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
            sender: None,
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
        sender: None,
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

/// A `put` of `size` bytes of `name`, version 1, as the broker forwards it (without `sender`).
fn put_of(id: u64, name: &str, size: u64, blake3: Option<schema::Hash>) -> Message {
    Message::Put {
        id,
        name: name.into(),
        size,
        modified: 0,
        blake3,
        version: Some(1),
        growing: false,
        sender: None,
    }
}

/// A `put` of `size` bytes of `name` with no hash (chunked), on `s`.
fn open_upload(s: &zmq::Socket, id: u64, name: &str, size: u64) {
    s.send(schema::codec::encode(&put_of(id, name, size, None)), 0)
        .unwrap();
}

/// An inline `put` of `data` as `name`, on `s`.
fn send_inline(s: &zmq::Socket, id: u64, name: &str, data: &[u8]) {
    let put = put_of(id, name, data.len() as u64, Some(schema::Hash::of(data)));
    s.send(schema::codec::encode(&put), zmq::SNDMORE).unwrap();
    s.send(data, 0).unwrap();
}

/// Sends the chunk at `offset` of transfer `id` with `len` bytes.
fn send_chunk(s: &zmq::Socket, id: u64, offset: u64, len: usize) {
    let chunk = Message::Chunk {
        id,
        offset,
        blake3: None,
        modified: None,
    };
    s.send(schema::codec::encode(&chunk), zmq::SNDMORE).unwrap();
    s.send(vec![7u8; len], 0).unwrap();
}

/// The credit granted on `s` until it adds up to `total`, by transfer.
fn credit_until(s: &zmq::Socket, port: u16, total: u32) -> BTreeMap<u64, u32> {
    let mut credit = BTreeMap::new();
    while credit.values().sum::<u32>() < total {
        match reply(s, port, "credit") {
            Message::Credit { id, chunks } => *credit.entry(id).or_insert(0) += chunks,
            other => panic!("port {port}: expected credit, got {other:?}"),
        }
    }
    credit
}

/// Waits until the broker of `c` has filled its new index from the node (until then it answers
/// changes with `busy` and reads with `unavailable`).
fn wait_index(c: &Cluster) {
    wait_until(
        "the broker's index is rebuilt",
        Duration::from_secs(30),
        || c.fetch(&["--json"]).status.success(),
    );
}

/// Claims the root volume on the broker's ingest connection `s`, asking again while the broker
/// answers `busy` (it refuses claims until its owners are back from the node).
fn claim_root(s: &zmq::Socket, port: u16) {
    let mut id = 900;
    wait_until("the broker takes a claim", Duration::from_secs(30), || {
        id += 1;
        let claim = Message::Claim {
            id,
            volume: String::new(),
            owner: "raw-peer".into(),
            take_over: false,
        };
        s.send(schema::codec::encode(&claim), 0).unwrap();
        match reply(s, port, "claim") {
            Message::Claimed { id: got, .. } if got == id => true,
            Message::Error {
                code: ErrorCode::Busy,
                ..
            } => false,
            other => panic!("claim answered {other:?}"),
        }
    });
}

#[test]
fn a_chunk_without_credit_is_refused_and_its_upload_dropped_on_every_hop() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let chunk = schema::limits::CHUNK_SIZE;
    let budget = schema::limits::GLOBAL_WINDOW;
    // Straight to the node's txt port, then through the broker's ingest port. Forty uploads of
    // a thousand chunks: the first ones share the budget (each takes half of what is free),
    // the rest get none while nobody sends.
    for (port, ingest) in [(c.base_port + 1, false), (c.ingest_port, true)] {
        let s = dealer(&ctx, port);
        if ingest {
            wait_index(&c);
            claim_root(&s, port);
        }
        let name = |id: u64| format!("credit-{}/{id}.txt", u8::from(ingest));
        for id in 1..=40u64 {
            open_upload(&s, id, &name(id), 1000 * chunk as u64);
        }
        let credit = credit_until(&s, port, budget);
        assert!(!credit.contains_key(&40), "{credit:?}");
        // A chunk of an upload that holds no credit: refused with its id, the upload dropped.
        send_chunk(&s, 40, 0, chunk);
        let (id, code, message) = error_of(&s, port, "a chunk without credit");
        assert_eq!((id, code), (40, ErrorCode::BadMessage), "{message}");
        assert!(message.contains("without credit"), "{message}");
        // Through the broker, the broker refuses it itself: the node never sees the chunk.
        assert_eq!(ingest, message.contains("granted so far"), "{message}");
        send_chunk(&s, 40, 0, chunk);
        let (id, code, message) = error_of(&s, port, "a chunk of a dropped upload");
        assert_eq!((id, code), (40, ErrorCode::UnknownTransfer), "{message}");
        // An upload that spends its credit and sends one chunk more at once: the units its
        // chunks free go to the uploads waiting (it queues behind them), so the extra chunk has
        // no credit on any hop.
        let (&spender, &units) = credit.iter().next().unwrap();
        for k in 0..=u64::from(units) {
            send_chunk(&s, spender, k * chunk as u64, chunk);
        }
        let refused = loop {
            match reply(&s, port, "a chunk past the credit") {
                Message::Error { id, code, message } => break (id, code, message),
                Message::Credit { id, .. } => assert_ne!(id, spender, "no credit back yet"),
                other => panic!("port {port}: {other:?}"),
            }
        };
        assert_eq!(
            (refused.0, refused.1),
            (spender, ErrorCode::BadMessage),
            "{refused:?}"
        );
        assert!(refused.2.contains("without credit"), "{refused:?}");
        assert_eq!(ingest, refused.2.contains("granted so far"), "{refused:?}");
        for id in 1..=39u64 {
            s.send(schema::codec::encode(&Message::Abort { id }), 0)
                .unwrap();
        }
        // Nothing of the refused or aborted uploads is kept.
        wait_until(
            "the node's upload space is empty",
            Duration::from_secs(10),
            || std::fs::read_dir(c.root.join(".dfs/tmp")).is_ok_and(|d| d.count() == 0),
        );
    }
    // The node still takes uploads.
    assert!(!c.root.join("txt/credit-0").exists());
    assert!(!c.root.join("txt/credit-1").exists());
    let s = dealer(&ctx, c.base_port + 1);
    let data = random_bytes(8, chunk * 2 + 1);
    let done = chunked_put(&s, c.base_port + 1, 50, "after.txt", &data, 1);
    assert!(matches!(done, Message::Done { id: 50, .. }), "{done:?}");
    assert_eq!(std::fs::read(c.root.join("txt/after.txt")).unwrap(), data);
}

/// Stores `len` random bytes (from `seed`) as big.txt on the node's txt port, and waits until the
/// broker lists it (it learns of the file by rebuilding its new index from the node).
fn store_big_txt(c: &Cluster, ctx: &zmq::Context, seed: u64, len: usize) -> Vec<u8> {
    let txt = dealer(ctx, c.base_port + 1);
    let data = random_bytes(seed, len);
    let done = chunked_put(&txt, c.base_port + 1, 1, "big.txt", &data, 1);
    assert!(matches!(done, Message::Done { .. }), "{done:?}");
    wait_until("big.txt listed", Duration::from_secs(30), || {
        c.listing().contains_key("big.txt")
    });
    data
}

/// The content of read `id` on `s`, received chunk by chunk until `len` bytes came.
fn read_chunks(s: &zmq::Socket, id: u64, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        match s.recv_multipart(0) {
            Ok(frames) => match schema::codec::decode(&frames[0]).unwrap() {
                Message::Chunk { id: got_id, .. } if got_id == id => {
                    got.extend_from_slice(&frames[1])
                }
                other => panic!("read {id}: {other:?}"),
            },
            Err(e) => panic!("read {id} stalled at {}: {e}", got.len()),
        }
    }
    got
}

#[test]
fn a_grant_past_the_window_is_refused_and_the_read_dropped() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let data = store_big_txt(&c, &ctx, 9, schema::limits::CHUNK_SIZE * 3 + 5);
    let window = schema::limits::TRANSFER_WINDOW;
    // On the node's serve port (with the class, as the broker sends it) and on the broker's
    // fetch port.
    for (port, class) in [
        (c.base_port + 4, Some(schema::Class::Txt)),
        (c.fetch_port, None),
    ] {
        let s = dealer(&ctx, port);
        let get = |id: u64| {
            let get = Message::Get {
                id,
                name: "big.txt".into(),
                class,
                version: None,
                sender: None,
            };
            s.send(schema::codec::encode(&get), 0).unwrap();
            match reply(&s, port, "get") {
                Message::Meta { entry, .. } => assert_eq!(entry.size, data.len() as u64),
                other => panic!("port {port}: get answered {other:?}"),
            }
        };
        get(2);
        let credit = |id: u64, chunks: u32| {
            s.send(schema::codec::encode(&Message::Credit { id, chunks }), 0)
                .unwrap();
        };
        credit(2, window + 1);
        let (id, code, message) = error_of(&s, port, "a grant of 33");
        assert_eq!((id, code), (2, ErrorCode::BadMessage), "{message}");
        assert!(message.contains(&format!("at most {window}")), "{message}");
        // The broker refuses it itself (the node never sees the grant).
        assert_eq!(
            class.is_none(),
            message.starts_with("read of "),
            "{message}"
        );
        credit(2, 1);
        let (id, code, message) = error_of(&s, port, "credit for a dropped read");
        assert_eq!((id, code), (2, ErrorCode::UnknownTransfer), "{message}");
        // A whole window is fine, and so is a grant of a whole window at once after it.
        get(3);
        credit(3, window);
        assert_eq!(read_chunks(&s, 3, data.len()), data, "port {port}");
    }
}

#[test]
fn a_class_port_refuses_a_name_of_another_class() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let others = c.base_port + 3;
    let s = dealer(&ctx, others);
    let data = b"not for the others port";
    send_inline(&s, 4, "notes.txt", data);
    let (id, code, message) = error_of(&s, others, "a txt name on the others port");
    assert_eq!((id, code), (4, ErrorCode::BadMessage), "{message}");
    assert!(
        message.contains("class txt") && message.contains("not others"),
        "{message}"
    );
    assert!(!c.root.join("others/notes.txt").exists());
    // The same on its own port is stored; a rename of it to a name of another class with the
    // wrong `to_class` is refused too, and the file stays.
    let txt = dealer(&ctx, c.base_port + 1);
    send_inline(&txt, 5, "notes.txt", data);
    assert!(matches!(
        reply(&txt, c.base_port + 1, "put"),
        Message::Done { id: 5, .. }
    ));
    let rename = Message::Rename {
        id: 6,
        from: "notes.txt".into(),
        to: "notes.pdf".into(),
        blake3: schema::Hash::of(data),
        to_class: Some(schema::Class::Txt),
        version: Some(1),
    };
    txt.send(schema::codec::encode(&rename), 0).unwrap();
    let (id, code, message) = error_of(&txt, c.base_port + 1, "a rename into the wrong class");
    assert_eq!((id, code), (6, ErrorCode::BadMessage), "{message}");
    assert_eq!(std::fs::read(c.root.join("txt/notes.txt")).unwrap(), data);
    assert!(!c.root.join("txt/notes.pdf").exists());
}

#[test]
fn routes_given_to_the_broker_and_the_node_place_files_by_them() {
    let mut c = Cluster::new(&[]);
    c.storage_args = vec!["--routes".into(), "md=txt".into()];
    c.broker_args = vec!["--routes".into(), "md=txt".into()];
    c.start_storage(0);
    c.start_broker();
    c.start_watcher();
    std::fs::write(c.source.join("readme.md"), b"# routed").unwrap();
    let stored = c.root.join("txt/readme.md");
    wait_until(
        "readme.md stored under txt/",
        Duration::from_secs(60),
        || std::fs::read(&stored).is_ok_and(|d| d == b"# routed"),
    );
    wait_until("readme.md listed", Duration::from_secs(30), || {
        c.listing().contains_key("readme.md")
    });
    assert_eq!(c.listing()["readme.md"].class, "txt");
    assert!(!c.root.join("others/readme.md").exists());
    let (code, v, _) = crate::status::status_json(&c, &[]);
    assert_eq!(code, Some(0), "the same routes on both: healthy: {v:#}");
    // A broker whose routes the node lacks gets such names refused, never stored elsewhere.
    let ctx = zmq::Context::new();
    let others = dealer(&ctx, c.base_port + 3);
    send_inline(&others, 1, "b.md", b"x");
    let (_, code, message) = error_of(&others, c.base_port + 3, "an md name on the others port");
    assert_eq!(code, ErrorCode::BadMessage, "{message}");
    assert!(message.contains("--routes"), "{message}");
}

#[test]
fn a_node_routing_otherwise_than_its_broker_is_a_problem_in_dfs_status() {
    let mut c = Cluster::new(&[]);
    c.broker_args = vec!["--routes".into(), "md=txt".into()];
    c.start_storage(0);
    c.start_broker();
    c.start_watcher();
    // The file is refused by the node, and dfs status says why.
    std::fs::write(c.source.join("readme.md"), b"# refused").unwrap();
    let mut last = serde_json::Value::Null;
    wait_until(
        "dfs status names the routes",
        Duration::from_secs(30),
        || {
            let (code, v, _) = crate::status::status_json(&c, &[]);
            last = v;
            code != Some(0) && last.to_string().contains(".md: txt here, others there")
        },
    );
    assert!(last.to_string().contains("--routes"), "{last:#}");
    assert!(!c.root.join("others/readme.md").exists());
    assert!(!c.root.join("txt/readme.md").exists());
}

#[test]
fn an_empty_file_travels_with_an_empty_data_frame() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let port = c.base_port + 1;
    let s = dealer(&ctx, port);
    let put = |id: u64| put_of(id, "empty.txt", 0, Some(schema::Hash::of(b"")));
    s.send(schema::codec::encode(&put(1)), 0).unwrap();
    let (id, code, message) = error_of(&s, port, "an empty file without a data frame");
    assert_eq!((id, code), (1, ErrorCode::BadMessage), "{message}");
    assert!(
        message.contains("an empty file still carries its data frame"),
        "{message}"
    );
    s.send(schema::codec::encode(&put(2)), zmq::SNDMORE)
        .unwrap();
    s.send(&b""[..], 0).unwrap();
    assert!(matches!(
        reply(&s, port, "put"),
        Message::Done { id: 2, .. }
    ));
    assert_eq!(std::fs::read(c.root.join("txt/empty.txt")).unwrap(), b"");
}

#[test]
fn a_busy_peer_does_not_take_the_credit_of_another() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let port = c.base_port + 1;
    let chunk = schema::limits::CHUNK_SIZE;
    // Peer A opens forty uploads and is given the whole budget.
    let a = dealer(&ctx, port);
    for id in 1..=40u64 {
        open_upload(&a, id, &format!("busy/{id}.txt"), 100 * chunk as u64);
    }
    let mut held = credit_until(&a, port, schema::limits::GLOBAL_WINDOW);
    // Peer B opens one: nothing is free until A sends.
    let b = dealer(&ctx, port);
    open_upload(&b, 1, "quiet.txt", 100 * chunk as u64);
    b.set_rcvtimeo(300).unwrap();
    assert!(b.recv_multipart(0).is_err(), "no credit is free yet");
    b.set_rcvtimeo(5000).unwrap();
    // Every chunk A sends frees a unit, and it goes to B (A is over its half) until B holds
    // half of the budget.
    let half = schema::limits::GLOBAL_WINDOW / 2;
    let mut next_offset = BTreeMap::<u64, u64>::new();
    let mut to_b = 0;
    while to_b < half {
        // An upload of A that still holds credit.
        let (&id, left) = held.iter_mut().find(|(_, left)| **left > 0).unwrap();
        *left -= 1;
        let off = next_offset.entry(id).or_insert(0);
        send_chunk(&a, id, *off, chunk);
        *off += chunk as u64;
        match reply(&b, port, "credit for the quiet peer") {
            Message::Credit { id: 1, chunks } => to_b += chunks,
            other => panic!("peer B got {other:?}"),
        }
    }
    assert_eq!(to_b, half);
    // A was given nothing back meanwhile.
    a.set_rcvtimeo(300).unwrap();
    assert!(
        a.recv_multipart(0).is_err(),
        "peer A over its share got credit"
    );
    for id in 1..=40u64 {
        a.send(schema::codec::encode(&Message::Abort { id }), 0)
            .unwrap();
    }
    b.send(schema::codec::encode(&Message::Abort { id: 1 }), 0)
        .unwrap();
}

#[test]
fn a_peer_that_fills_every_upload_slot_leaves_one_to_a_peer_that_waits() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let port = c.base_port + 1;
    let chunk = schema::limits::CHUNK_SIZE as u64;
    let slots = 1024u64;
    // Peer A opens as many uploads as the node takes at once.
    let a = dealer(&ctx, port);
    for id in 1..=slots {
        open_upload(&a, id, &format!("slots/{id}.txt"), 10 * chunk);
    }
    // A ping behind them: its pong comes once the node has taken every one.
    a.send(schema::codec::encode(&Message::Ping { id: 0 }), 0)
        .unwrap();
    loop {
        match reply(&a, port, "the uploads and a ping") {
            Message::Pong { id: 0 } => break,
            Message::Credit { .. } => {}
            other => panic!("an upload of A answered {other:?}"),
        }
    }
    let inline = |s: &zmq::Socket, id: u64, name: &str| send_inline(s, id, name, name.as_bytes());
    // Peer B finds the node full.
    let b = dealer(&ctx, port);
    inline(&b, 1, "waiting.txt");
    let (id, code, message) = error_of(&b, port, "a put to a full node");
    assert_eq!((id, code), (1, ErrorCode::Busy), "{message}");
    // A slot frees. A, over its share while B waits, may not take it; B may.
    a.send(schema::codec::encode(&Message::Abort { id: slots }), 0)
        .unwrap();
    wait_until(
        "A is refused the freed slot",
        Duration::from_secs(10),
        || {
            inline(&a, slots + 1, "greedy.txt");
            loop {
                match reply(&a, port, "a put over its share") {
                    Message::Error { id, code, message } if id == slots + 1 => {
                        assert_eq!(code, ErrorCode::Busy, "{message}");
                        // Full until the abort is handled, then over its share.
                        break message.contains("its share");
                    }
                    Message::Credit { .. } => continue,
                    other => panic!("{other:?}"),
                }
            }
        },
    );
    inline(&b, 2, "waiting.txt");
    assert!(
        matches!(
            reply(&b, port, "a put of a waiting peer"),
            Message::Done { id: 2, .. }
        ),
        "B was given the slot"
    );
    assert_eq!(
        std::fs::read(c.root.join("txt/waiting.txt")).unwrap(),
        b"waiting.txt"
    );
    for id in 1..slots {
        a.send(schema::codec::encode(&Message::Abort { id }), 0)
            .unwrap();
    }
}

#[test]
fn a_fetcher_holding_every_read_slot_leaves_one_to_a_fetcher_that_waits() {
    let c = Cluster::start_without_watcher();
    let ctx = zmq::Context::new();
    let data = store_big_txt(&c, &ctx, 11, schema::limits::CHUNK_SIZE * 2 + 1);
    let port = c.fetch_port;
    let get = |s: &zmq::Socket, id: u64| {
        let get = Message::Get {
            id,
            name: "big.txt".into(),
            class: None,
            version: None,
            sender: None,
        };
        s.send(schema::codec::encode(&get), 0).unwrap();
        reply(s, port, "get")
    };
    // Fetcher A opens as many reads as the node serves at once, and grants no credit. Both
    // fetchers reach the node through the broker's one connection.
    let slots = 256u64;
    let a = dealer(&ctx, port);
    for id in 1..=slots {
        let got = get(&a, id);
        assert!(
            matches!(got, Message::Meta { .. }),
            "read {id} of A: {got:?}"
        );
    }
    // Fetcher B finds the node full.
    let b = dealer(&ctx, port);
    match get(&b, 1) {
        Message::Error {
            id: 1,
            code,
            message,
        } => {
            assert_eq!(code, ErrorCode::Busy, "{message}");
            assert!(message.contains("256 reads open"), "{message}");
        }
        other => panic!("a get of B answered {other:?}"),
    }
    // A slot frees. A, over its share while B waits, may not take it; B may.
    a.send(schema::codec::encode(&Message::Abort { id: slots }), 0)
        .unwrap();
    let mut id = slots;
    wait_until(
        "A is refused the freed slot",
        Duration::from_secs(10),
        || {
            id += 1;
            match get(&a, id) {
                // Full until the abort reaches the node, then over its share.
                Message::Error { code, message, .. } => {
                    assert_eq!(code, ErrorCode::Busy, "{message}");
                    message.contains("its share")
                }
                other => panic!("a get of A over its share answered {other:?}"),
            }
        },
    );
    assert!(matches!(get(&b, 2), Message::Meta { id: 2, .. }));
    b.send(
        schema::codec::encode(&Message::Credit { id: 2, chunks: 3 }),
        0,
    )
    .unwrap();
    assert_eq!(
        read_chunks(&b, 2, data.len()),
        data,
        "B read the file whole"
    );
    for id in 1..slots {
        a.send(schema::codec::encode(&Message::Abort { id }), 0)
            .unwrap();
    }
}
