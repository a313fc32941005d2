//! Reads, listings, renames, deletes, bad input and the entry point.

use super::*;
use crate::Args;
use std::path::Path;

#[test]
fn rename_and_delete() {
    let node = TestNode::start();
    let txt = node.dealer(Some(Class::Txt));
    let pdf = node.dealer(Some(Class::Pdf));
    let data = content(300, 10);
    assert!(matches!(
        put_inline(&txt, 1, "old/a.txt", &data),
        Message::Done { .. }
    ));
    let rename = |id, blake3, version| Message::Rename {
        id,
        from: "old/a.txt".into(),
        to: "new/b.pdf".into(),
        blake3,
        to_class: Some(Class::Pdf),
        version,
    };
    let reply = request(&txt, &rename(2, Hash::of(b"other"), Some(4)), None).0;
    assert_eq!(error_code(&reply), ErrorCode::NotFound);
    let reply = request(&txt, &rename(3, Hash::of(&data), Some(4)), None).0;
    assert_eq!(
        reply,
        Message::Done {
            id: 3,
            version: 4,
            unchanged: false
        }
    );
    assert!(!node.path(Class::Txt, "old").exists(), "empty folder left");
    assert_stored(&node, Class::Pdf, "new/b.pdf", &data, 4);
    let reply = request(&txt, &rename(4, Hash::of(&data), None), None).0;
    assert_eq!(error_code(&reply), ErrorCode::NotFound);

    let delete = |id, name: &str| Message::Delete {
        id,
        name: name.into(),
    };
    let reply = request(&pdf, &delete(5, "new/b.pdf"), None).0;
    assert_eq!(
        reply,
        Message::Done {
            id: 5,
            version: 0,
            unchanged: false
        }
    );
    assert!(!node.path(Class::Pdf, "new").exists());
    assert!(node.root.join("pdf").is_dir());
    let reply = request(&pdf, &delete(6, "never/was.pdf"), None).0;
    assert_eq!(
        reply,
        Message::Done {
            id: 6,
            version: 0,
            unchanged: false
        }
    );
    let reply = request(&pdf, &delete(7, "../escape"), None).0;
    assert_eq!(error_code(&reply), ErrorCode::BadName);
}

#[test]
fn get_inline_and_chunked_and_list() {
    let node = TestNode::start();
    let mp3 = node.dealer(Some(Class::Mp3));
    let serve = node.dealer(None);
    let small = content(2000, 11);
    let big = content(2 * CHUNK_SIZE + 77, 12);
    assert!(matches!(
        put_inline(&mp3, 1, "s.mp3", &small),
        Message::Done { .. }
    ));
    assert!(matches!(
        put_chunked(&mp3, 2, "b/big.mp3", &big, Hash::of(&big)),
        Message::Done { .. }
    ));

    let get = |id, name: &str| Message::Get {
        id,
        name: name.into(),
        class: Some(Class::Mp3),
        version: None,
        sender: None,
    };
    let (reply, data) = request(&serve, &get(3, "s.mp3"), None);
    let Message::Meta { id: 3, entry } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (entry.size, entry.blake3, entry.version),
        (2000, Hash::of(&small), 1)
    );
    assert_eq!(data.unwrap(), small);

    let (reply, data) = request(&serve, &get(4, "b/big.mp3"), None);
    let Message::Meta { id: 4, entry } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(entry.size, big.len() as u64);
    assert!(data.is_none());
    // A new version renamed over the name mid-read does not disturb the read.
    let newer = content(2 * CHUNK_SIZE + 5, 13);
    assert!(matches!(
        put_chunked(&mp3, 5, "b/big.mp3", &newer, Hash::of(&newer)),
        Message::Done { .. }
    ));
    let mut got = Vec::new();
    for n in [1, 8] {
        send(&serve, &Message::Credit { id: 4, chunks: n }, None);
        for _ in 0..n.min(3 - (got.len() / CHUNK_SIZE) as u32) {
            let (reply, data) = recv(&serve);
            assert_eq!(
                reply,
                Message::Chunk {
                    id: 4,
                    offset: got.len() as u64,
                    blake3: None,
                    modified: None
                }
            );
            got.extend(data.unwrap());
        }
    }
    assert_eq!(got, big);
    let reply = request(&serve, &Message::Credit { id: 4, chunks: 1 }, None).0;
    assert_eq!(error_code(&reply), ErrorCode::UnknownTransfer);

    let reply = request(&serve, &get(6, "missing.mp3"), None).0;
    assert_eq!(error_code(&reply), ErrorCode::NotFound);
    let reply = request(&serve, &get(7, "a//b"), None).0;
    assert_eq!(error_code(&reply), ErrorCode::BadName);
    // Without a class the node looks in every class.
    let (reply, _) = request(
        &serve,
        &Message::Get {
            id: 8,
            name: "s.mp3".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    assert!(matches!(reply, Message::Meta { id: 8, .. }), "{reply:?}");

    let list = |id, after: Option<&str>| Message::list(id, after.map(String::from), 1);
    let (reply, _) = request(&serve, &list(9, None), None);
    let Message::Listing {
        entries,
        more: true,
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(entries[0].name, "b/big.mp3");
    assert_eq!(entries[0].blake3, Hash::of(&newer));
    let (reply, _) = request(&serve, &list(10, Some("mp3/b/big.mp3")), None);
    let Message::Listing {
        entries,
        more: false,
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(entries[0].name, "s.mp3");
}

/// A stored file cut short behind the node's back while a read runs ends the read with an error
/// naming the file; the node keeps serving.
#[test]
fn a_file_cut_short_during_a_read_ends_it_with_an_error() {
    let node = TestNode::start();
    let pdf = node.dealer(Some(Class::Pdf));
    let serve = node.dealer(None);
    let big = content(3 * CHUNK_SIZE, 14);
    assert!(matches!(
        put_chunked(&pdf, 1, "cut.pdf", &big, Hash::of(&big)),
        Message::Done { .. }
    ));
    let get = Message::Get {
        id: 2,
        name: "cut.pdf".into(),
        class: Some(Class::Pdf),
        version: None,
        sender: None,
    };
    assert!(matches!(
        request(&serve, &get, None).0,
        Message::Meta { id: 2, .. }
    ));
    let stored = std::fs::OpenOptions::new()
        .write(true)
        .open(node.path(Class::Pdf, "cut.pdf"))
        .unwrap();
    stored.set_len(CHUNK_SIZE as u64 + 10).unwrap();
    send(&serve, &Message::Credit { id: 2, chunks: 3 }, None);
    let (first, data) = recv(&serve);
    assert!(
        matches!(
            first,
            Message::Chunk {
                id: 2,
                offset: 0,
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(data.unwrap(), &big[..CHUNK_SIZE]);
    let (reply, _) = recv(&serve);
    assert_eq!(error_code(&reply), ErrorCode::Io, "{reply:?}");
    let Message::Error { message, .. } = &reply else {
        unreachable!()
    };
    assert!(
        message.contains("cut.pdf") && message.contains("ends"),
        "{message}"
    );
    let ping = request(&serve, &Message::Ping { id: 3 }, None).0;
    assert!(matches!(ping, Message::Pong { id: 3, .. }), "{ping:?}");
}

#[test]
fn malformed_input_gets_an_error_and_the_node_keeps_serving() {
    let node = TestNode::start();
    let mp3 = node.dealer(Some(Class::Mp3));
    let serve = node.dealer(None);
    let raw = |sock: &zmq::Socket, frames: Vec<Vec<u8>>| {
        send(sock, &Message::Ping { id: 0 }, None);
        assert_eq!(recv(sock).0, Message::Pong { id: 0 });
        sock.send_multipart(frames, 0).unwrap();
        error_code(&recv(sock).0)
    };
    assert_eq!(
        raw(&mp3, vec![b"\xff\x00garbage".to_vec()]),
        ErrorCode::BadMessage
    );
    let mut header = codec::encode(&Message::Ping { id: 5 });
    header[3] = 9; // the map, the key "v" (2 bytes), then its value: 9, a future version
    assert_eq!(raw(&mp3, vec![header]), ErrorCode::UnsupportedVersion);
    let ping = codec::encode(&Message::Ping { id: 6 });
    assert_eq!(
        raw(&mp3, vec![ping.clone(), vec![1], vec![2]]),
        ErrorCode::BadMessage
    );
    assert_eq!(raw(&serve, vec![ping, vec![1]]), ErrorCode::BadMessage);

    let get = Message::Get {
        id: 7,
        name: "a.mp3".into(),
        class: None,
        version: None,
        sender: None,
    };
    assert_eq!(
        error_code(&request(&mp3, &get, None).0),
        ErrorCode::Unexpected
    );
    let data = content(10, 14);
    let reply = request(&serve, &put(8, "a.mp3", &data, None), Some(&data)).0;
    assert_eq!(error_code(&reply), ErrorCode::Unexpected);
    let reply = request(&mp3, &Message::Credit { id: 9, chunks: 1 }, None).0;
    assert_eq!(error_code(&reply), ErrorCode::Unexpected);
    for bad in ["../x.mp3", "/etc/passwd", "a/./b", "a\\b"] {
        let reply = request(&mp3, &put(10, bad, &data, None), Some(&data)).0;
        assert_eq!(error_code(&reply), ErrorCode::BadName, "{bad}");
    }
    let mut no_hash = put(11, "a.mp3", &data, None);
    if let Message::Put { blake3, .. } = &mut no_hash {
        *blake3 = None;
    }
    assert_eq!(
        error_code(&request(&mp3, &no_hash, Some(&data)).0),
        ErrorCode::BadMessage
    );
    assert_eq!(
        request(&mp3, &Message::Ping { id: 12 }, None).0,
        Message::Pong { id: 12 }
    );
    assert!(matches!(
        put_inline(&mp3, 13, "fine.mp3", &data),
        Message::Done { .. }
    ));
    let root_entries: Vec<_> = std::fs::read_dir(&node.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(root_entries.len(), 5, "{root_entries:?}");
}

#[test]
fn run_writes_the_ready_file_and_stops_on_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let args = Args {
        root: dir.path().join("root"),
        bind: "127.0.0.1".into(),
        base_port: 0,
        ready_file: Some(ready.clone()),
        sync_threads: 2,
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
    let stop = Shutdown::new();
    let s = stop.clone();
    let t = std::thread::spawn(move || crate::run(args, s));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(v["role"], "storage");
    assert!(v["base_port"].as_u64().unwrap() > 0);
    assert!(Path::new(v["root"].as_str().unwrap()).join("mp3").is_dir());
    let stopped = Instant::now();
    stop.trigger();
    t.join().unwrap().unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(2));
}
