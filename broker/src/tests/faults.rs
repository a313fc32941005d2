//! An unreachable node, idle and vanished transfers, and `dfs index export` on a held database.

use super::*;

#[test]
fn an_unreachable_node_is_reported_not_waited_for() {
    let ctx = zmq::Context::new();
    let dir = tempfile::tempdir().unwrap();
    // Make an existing index so no rebuild is needed; no node listens at the storage address.
    {
        let (idx, _) = Index::open(&dir.path().join("server/index.db")).unwrap();
        let rec = crate::Record::stored(Class::Txt, 1, Hash::of(b"q"), 0, 1);
        idx.put("q.txt", &rec).unwrap();
        idx.mark_complete().unwrap();
    }
    let (probe, port) = net::socket::router(&ctx, "127.0.0.1", 0).unwrap();
    drop(probe);
    let args = Args {
        data: dir.path().join("server"),
        bind: "127.0.0.1".into(),
        ingest_port: 0,
        fetch_port: 0,
        storage: vec![format!("127.0.0.1:{port}")],
        routes: Some("md=txt".into()),
        ready_file: None,
        metrics: None,
        secret_key: None,
        allow_watchers: None,
        allow_fetchers: None,
        storage_key: None,
        insecure: false,
    };
    let broker = Broker::bind(&ctx, &args).unwrap();
    let watcher = dealer(&ctx, broker.ingest_port());
    let fetcher = dealer(&ctx, broker.fetch_port());
    let stop = Shutdown::new();
    let s = stop.clone();
    let t = std::thread::spawn(move || broker.serve(s));
    claim_root(&watcher);
    send(
        &watcher,
        None,
        put(1, "n.md", 1, Some(Hash::of(b"n"))),
        Some(b"n"),
    );
    let (msg, _) = Harness::from_broker(&watcher, "unavailable");
    assert_eq!(error_code(&msg), ErrorCode::Unavailable);
    send(
        &fetcher,
        None,
        Message::Get {
            id: 2,
            name: "q.txt".into(),
            class: None,
            version: None,
            sender: None,
        },
        None,
    );
    let (msg, _) = Harness::from_broker(&fetcher, "unavailable");
    assert_eq!(error_code(&msg), ErrorCode::Unavailable);
    let started = std::time::Instant::now();
    stop.trigger();
    t.join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    let export = std::fs::read_to_string(dir.path().join("server/myIndex/index.txt")).unwrap();
    assert!(export
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("q.txt\ttxt\t1\t"));
}

#[test]
fn idle_and_vanished_transfers_are_dropped() {
    let ctx = zmq::Context::new();
    let dir = tempfile::tempdir().unwrap();
    let (node, base) = routers_consecutive(&ctx, "127.0.0.1", 0, 5).unwrap();
    std::fs::create_dir_all(dir.path().join("server")).unwrap();
    let (idx, _) = Index::open(&dir.path().join("server/index.db")).unwrap();
    idx.mark_complete().unwrap();
    drop(idx);
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
    broker.relay_mut().idle_timeout = Duration::from_millis(200);
    let watcher = dealer(&ctx, broker.ingest_port());
    let stop = Shutdown::new();
    let s = stop.clone();
    let port = broker.ingest_port();
    let t = std::thread::spawn(move || broker.serve(s));
    claim_root(&watcher);
    // The node's links connect in the background; retry until the put goes through.
    let size = (CHUNK_SIZE * 3) as u64;
    let mut id = 1;
    loop {
        send(&watcher, None, put(id, "slow.bin", size, None), None);
        if quiet(&node[3], 300) {
            let reply = Harness::from_broker(&watcher, "unavailable").0;
            assert_eq!(error_code(&reply), ErrorCode::Unavailable);
            id += 1;
            continue;
        }
        break;
    }
    let inb = recv(&node[3], true, "the put");
    assert!(matches!(inb.msg, Ok(Message::Put { .. })));
    // Nobody speaks: the node gets an abort, the watcher unknown_transfer.
    let inb = recv(&node[3], true, "the abort after the idle timeout");
    assert!(
        matches!(inb.msg, Ok(Message::Abort { .. })),
        "{:?}",
        inb.msg
    );
    let reply = Harness::from_broker(&watcher, "unknown_transfer").0;
    assert_eq!(
        (reply.id(), error_code(&reply)),
        (id, ErrorCode::UnknownTransfer)
    );

    // A watcher that goes away mid-upload: its transfer is aborted toward the node.
    let gone = dealer(&ctx, port);
    claim_root(&gone);
    send(&gone, None, put(50, "gone.bin", size, None), None);
    let inb = recv(&node[3], true, "the second put");
    let (peer, bid) = (inb.peer.unwrap(), inb.msg.unwrap().id());
    drop(gone);
    std::thread::sleep(Duration::from_millis(100));
    send(
        &node[3],
        Some(&peer),
        Message::Credit { id: bid, chunks: 8 },
        None,
    );
    let inb = recv(&node[3], true, "the abort of the vanished watcher's upload");
    assert_eq!(inb.msg.unwrap(), Message::Abort { id: bid });

    stop.trigger();
    t.join().unwrap().unwrap();
}

#[test]
fn export_command_refuses_a_held_database_and_writes_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let args = crate::ExportArgs {
        data: data.clone(),
        out: Some(dir.path().join("out.txt")),
    };
    let err = crate::export_index(&args).unwrap_err();
    assert!(format!("{err:#}").contains("no index database"), "{err:#}");
    let (idx, _) = Index::open(&data.join("index.db")).unwrap();
    let rec = crate::Record::stored(Class::Txt, 1, Hash::of(b"q"), 0, 1);
    idx.put("q.txt", &rec).unwrap();
    idx.mark_complete().unwrap();
    let err = crate::export_index(&args).unwrap_err();
    assert!(format!("{err:#}").contains("locked"), "{err:#}");
    drop(idx);
    crate::export_index(&args).unwrap();
    let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(text.lines().count(), 2);
}
