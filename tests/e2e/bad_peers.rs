//! Hostile and broken peers: every bound port answers malformed input with an error reply (or,
//! for non-ZMTP bytes and oversized frames, drops that connection), keeps serving the others, and
//! keeps its memory bounded.

use crate::harness::*;
use schema::{ErrorCode, Message};
use std::io::Write;
use std::time::Duration;

/// `{"v": 99, "t": "ping", "id": 5}` in CBOR: a message from a future protocol version.
const WRONG_VERSION: &[u8] = b"\xa3\x61v\x18\x63\x61t\x64ping\x62id\x05";
/// `{"v": 2, "t": "launch", "id": 6}`: an unknown message type.
const UNKNOWN_TYPE: &[u8] = b"\xa3\x61v\x02\x61t\x66launch\x62id\x06";

/// Most a process may have had resident at any time (VmHWM) after the abuse.
const LIMIT_KIB: u64 = 100 * 1024;

/// A plain DEALER on `port` with 5 s timeouts.
pub fn dealer(ctx: &zmq::Context, port: u16) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(5000).unwrap();
    s.set_sndtimeo(5000).unwrap();
    s.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    s
}

/// The next reply on `s`, decoded.
pub fn reply(s: &zmq::Socket, port: u16, what: &str) -> Message {
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
    for port in ports(&c) {
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
        expect_error(&s, port, "version 99", ErrorCode::UnsupportedVersion);
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
        // Heads claiming 2^60 bytes or items in a frame of a few dozen bytes.
        for (what, head) in huge_claims() {
            s.send(&head[..], 0).unwrap();
            expect_error(&s, port, &what, ErrorCode::BadMessage);
        }
        // Random frames, one to three of them after the header slot.
        for i in 0..20u64 {
            let seed = u64::from(port) * 100 + i;
            let frames: Vec<Vec<u8>> = (0..1 + seed % 3)
                .map(|j| random_bytes(seed * 7 + j, 1 + (seed as usize * 37) % 3000))
                .collect();
            s.send_multipart(&frames, 0).unwrap();
            match reply(&s, port, "random frames") {
                Message::Error { .. } => {}
                other => panic!("port {port}: random frames answered {other:?}"),
            }
        }
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

    still_serving(&mut c, "after-abuse.txt");
}

/// Thousands of frames in one message, and thousands of messages at once from many connections
/// (pings, garbage, huge-length claims, frames near the size limit): every port answers every
/// one, then the pipeline still syncs and fetches, and no process grew past [`LIMIT_KIB`].
#[test]
fn floods_of_frames_and_messages_leave_every_process_serving_in_bounded_memory() {
    let mut c = Cluster::start();
    let ctx = zmq::Context::new();
    let conns: usize = env_or("DFS_FLOOD_CONNECTIONS", 8);
    let per_conn: usize = env_or("DFS_FLOOD_MESSAGES", 400);
    let ping = schema::codec::encode(&Message::Ping { id: 1 });
    let big_junk = random_bytes(99, 200 * 1024);
    let claims = huge_claims();
    for port in ports(&c) {
        // 5000 frames in one message: refused as a whole, connection kept.
        let s = dealer(&ctx, port);
        let frames: Vec<Vec<u8>> = (0..5000).map(|i| random_bytes(i, 64)).collect();
        s.send_multipart(&frames, 0).unwrap();
        expect_error(&s, port, "5000 frames", ErrorCode::BadMessage);
        let frames: Vec<&[u8]> = std::iter::once(&ping[..])
            .chain(std::iter::repeat_n(&b""[..], 4999))
            .collect();
        s.send_multipart(frames, 0).unwrap();
        expect_error(
            &s,
            port,
            "ping and 4999 empty frames",
            ErrorCode::BadMessage,
        );

        // Many connections, each sending its whole share before reading any reply.
        let socks: Vec<zmq::Socket> = (0..conns).map(|_| dealer(&ctx, port)).collect();
        for (k, s) in socks.iter().enumerate() {
            for i in 0..per_conn {
                let id = (k * per_conn + i) as u64;
                match i % 4 {
                    0 => s.send(schema::codec::encode(&Message::Ping { id }), 0),
                    1 => s.send(&big_junk[..], 0),
                    2 => s.send(&claims[i % claims.len()].1[..], 0),
                    _ => s.send_multipart([&ping[..], b"data", b"more"], 0),
                }
                .unwrap_or_else(|e| panic!("port {port}: send {id}: {e}"));
            }
        }
        for (k, s) in socks.iter().enumerate() {
            let (mut pongs, mut errors) = (0, 0);
            for _ in 0..per_conn {
                match reply(s, port, "a flooded message") {
                    Message::Pong { .. } => pongs += 1,
                    Message::Error { .. } => errors += 1,
                    other => panic!("port {port}: flood answered {other:?}"),
                }
            }
            assert_eq!(
                (pongs, errors),
                (per_conn.div_ceil(4), per_conn - per_conn.div_ceil(4)),
                "port {port}, connection {k}"
            );
        }
    }
    still_serving(&mut c, "after-flood.txt");
    c.assert_peaks_below(LIMIT_KIB, Vec::new());
}

/// Every port a cluster binds: ingest, fetch, the node's four class ports and its serve port.
/// Every port a peer may reach: the broker's ingest and fetch ports, the node's five.
pub fn ports(c: &Cluster) -> Vec<u16> {
    [c.ingest_port, c.fetch_port]
        .into_iter()
        .chain((0..5).map(|i| c.base_port + i))
        .collect()
}

/// `NAME` from the environment, else `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Headers whose CBOR heads claim 2^60 bytes, characters, items or pairs: alone, and as the
/// `name` of a put, the `entries` of a listing and the `message` of an error.
fn huge_claims() -> Vec<(String, Vec<u8>)> {
    let head = |major: u8| {
        let mut h = vec![major | 27];
        h.extend_from_slice(&(1u64 << 60).to_be_bytes());
        h.extend_from_slice(b"abc");
        h
    };
    let mut out = Vec::new();
    for (major, what) in [
        (0x40, "bytes"),
        (0x60, "text"),
        (0x80, "array"),
        (0xa0, "map"),
    ] {
        out.push((format!("a bare {what} head claiming 2^60"), head(major)));
        for (t, field) in [
            ("put", "name"),
            ("listing", "entries"),
            ("error", "message"),
        ] {
            // {v: 1, t: T, id: 3, FIELD: <head>}
            let mut h = vec![0xa4, 0x61, b'v', 0x01, 0x61, b't', 0x60 | t.len() as u8];
            h.extend_from_slice(t.as_bytes());
            h.extend_from_slice(&[0x62, b'i', b'd', 0x03, 0x60 | field.len() as u8]);
            h.extend_from_slice(field.as_bytes());
            h.extend(head(major));
            out.push((format!("{t}.{field} as a {what} head claiming 2^60"), h));
        }
    }
    out
}

/// A new file still syncs to the node and fetches back byte for byte, and no process exited.
fn still_serving(c: &mut Cluster, name: &str) {
    let content = format!("{name} still here");
    std::fs::write(c.source.join(name), &content).unwrap();
    c.wait_synced(Duration::from_secs(60));
    let out = c.fetch(&["--target", &c.target.display().to_string(), name]);
    assert!(
        out.status.success(),
        "fetch {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(c.target.join(name)).unwrap(),
        content
    );
    for p in [&mut c.watch, &mut c.broker, &mut c.storage]
        .into_iter()
        .flatten()
    {
        assert!(p.child.try_wait().unwrap().is_none(), "{} exited", p.name);
    }
}
