//! Hostile and broken peers: every bound port answers malformed input with an error reply (or,
//! for non-ZMTP bytes and oversized frames, drops that connection), and keeps serving the others.

use crate::harness::*;
use schema::{ErrorCode, Message};
use std::io::Write;
use std::time::Duration;

/// `{"v": 2, "t": "ping", "id": 5}` in CBOR: a message from a future protocol version.
const WRONG_VERSION: &[u8] = b"\xa3\x61v\x02\x61t\x64ping\x62id\x05";
/// `{"v": 1, "t": "launch", "id": 6}`: an unknown message type.
const UNKNOWN_TYPE: &[u8] = b"\xa3\x61v\x01\x61t\x66launch\x62id\x06";

fn dealer(ctx: &zmq::Context, port: u16) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(5000).unwrap();
    s.set_sndtimeo(5000).unwrap();
    s.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    s
}

fn reply(s: &zmq::Socket, port: u16, what: &str) -> Message {
    let frames = s
        .recv_multipart(0)
        .unwrap_or_else(|e| panic!("port {port}: no reply to {what}: {e}"));
    schema::codec::decode(&frames[0])
        .unwrap_or_else(|e| panic!("port {port}: undecodable reply to {what}: {e:?}"))
}

fn expect_error(s: &zmq::Socket, port: u16, what: &str, code: ErrorCode) {
    match reply(s, port, what) {
        Message::Error {
            code: got, message, ..
        } => {
            assert_eq!(got, code, "port {port}, {what}: {message}");
            assert!(!message.is_empty());
        }
        other => panic!("port {port}: {what} answered {other:?}"),
    }
}

#[test]
fn malformed_messages_on_every_port_leave_every_process_serving() {
    let mut c = Cluster::start();
    let ctx = zmq::Context::new();
    let ports: Vec<u16> = [c.ingest_port, c.fetch_port]
        .into_iter()
        .chain((0..5).map(|i| c.base_port + i))
        .collect();
    for &port in &ports {
        // Raw bytes that are not ZMTP at all.
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &random_bytes(port as u64, 4096),
        ] {
            let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let _ = t.write_all(junk);
        }
        let s = dealer(&ctx, port);
        s.send(&b"\xff\xfe not cbor"[..], 0).unwrap();
        expect_error(&s, port, "non-CBOR header", ErrorCode::BadMessage);
        s.send(WRONG_VERSION, 0).unwrap();
        expect_error(&s, port, "version 2", ErrorCode::UnsupportedVersion);
        s.send(UNKNOWN_TYPE, 0).unwrap();
        expect_error(&s, port, "unknown type", ErrorCode::Unexpected);
        let ping = schema::codec::encode(&Message::Ping { id: 9 });
        s.send_multipart([&ping[..], b"a", b"b", b"c"], 0).unwrap();
        expect_error(&s, port, "too many frames", ErrorCode::BadMessage);
        s.send(&ping[..], zmq::SNDMORE).unwrap();
        s.send(&b"unexpected data"[..], 0).unwrap();
        expect_error(&s, port, "ping with data", ErrorCode::BadMessage);
        // A truncated header, and one nested deeper than any real message.
        s.send(&ping[..ping.len() / 2], 0).unwrap();
        expect_error(&s, port, "truncated CBOR", ErrorCode::BadMessage);
        let deep: Vec<u8> = std::iter::repeat_n(0x81u8, 5000).chain([0x01]).collect();
        s.send(&deep[..], 0).unwrap();
        expect_error(&s, port, "deeply nested CBOR", ErrorCode::BadMessage);
        // Still answering on the same connection.
        s.send(&ping[..], 0).unwrap();
        assert_eq!(reply(&s, port, "ping"), Message::Pong { id: 9 });
        // A frame over the size limit closes that connection only; a new one works.
        let big = dealer(&ctx, port);
        big.send(vec![0u8; 1 << 20], 0).unwrap();
        let fresh = dealer(&ctx, port);
        fresh.send(&ping[..], 0).unwrap();
        assert_eq!(
            reply(&fresh, port, "ping after oversized frame"),
            Message::Pong { id: 9 }
        );
    }

    // And the pipeline still works end to end.
    std::fs::write(c.source.join("after-abuse.txt"), "still here").unwrap();
    c.wait_synced(Duration::from_secs(60));
    for p in [&mut c.watch, &mut c.broker, &mut c.storage]
        .into_iter()
        .flatten()
    {
        assert!(p.child.try_wait().unwrap().is_none(), "{} exited", p.name);
    }
}
