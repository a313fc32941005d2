//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`: one valid encoded
//! message of each type, whole inbound messages, names, routes, addresses, metadata and records.
//! Run from `fuzz/`: `cargo run --bin seeds`.

use schema::codec::encode;
use schema::{Class, Entry, ErrorCode, Hash, Message};
use std::path::Path;

fn messages() -> Vec<Message> {
    let h = Hash::of(b"seed");
    let entry = |name: &str, class, size| Entry {
        name: name.into(),
        class,
        size,
        blake3: h,
        modified: 1_700_000_000_000_000_000,
        version: 3,
    };
    vec![
        Message::Ping { id: 1 },
        Message::Pong { id: 1 },
        Message::Put {
            id: 2,
            name: "music/a.mp3".into(),
            size: 5,
            modified: 7,
            blake3: Some(h),
            version: None,
            growing: false,
            sender: None,
        },
        Message::Put {
            id: 3,
            name: "big.bin".into(),
            size: 1 << 30,
            modified: -1,
            blake3: None,
            version: Some(4),
            growing: false,
            sender: None,
        },
        Message::Put {
            id: 5,
            name: "video/rec.mp4".into(),
            size: 8 << 20,
            modified: 9,
            blake3: None,
            version: Some(1),
            growing: true,
            sender: None,
        },
        Message::Chunk {
            id: 3,
            offset: 262_144,
            blake3: Some(h),
            modified: None,
        },
        Message::Chunk {
            id: 5,
            offset: 8 << 20,
            blake3: Some(h),
            modified: Some(11),
        },
        Message::Credit { id: 3, chunks: 8 },
        Message::Abort { id: 3 },
        Message::Done {
            id: 2,
            version: 1,
            unchanged: true,
        },
        Message::Delete {
            id: 4,
            name: "a\tb\nc.txt".into(),
        },
        Message::Rename {
            id: 5,
            from: "a.txt".into(),
            to: "d/b.pdf".into(),
            blake3: h,
            to_class: Some(Class::Pdf),
            version: Some(2),
        },
        Message::list(6, Some("m".into()), 5000),
        Message::Listing {
            id: 6,
            entries: vec![
                entry("a.mp3", Class::Mp3, 1),
                entry("名前/b.txt", Class::Txt, 0),
            ],
            more: true,
        },
        Message::Get {
            id: 7,
            name: "a.mp3".into(),
            class: Some(Class::Mp3),
            version: Some(2),
            sender: Some(7),
        },
        Message::History {
            id: 8,
            name: "photos/a.jpg".into(),
        },
        Message::Claim {
            id: 9,
            volume: "photos".into(),
            owner: "host:/home/a/Pictures".into(),
            take_over: true,
        },
        Message::Claimed {
            id: 9,
            volumes: vec!["photos".into()],
        },
        Message::SetOwner {
            id: 10,
            volume: "photos".into(),
            owner: "key abc".into(),
        },
        Message::Owners { id: 11 },
        Message::Owned {
            id: 11,
            owners: [("photos".to_string(), "key abc".to_string())].into(),
        },
        Message::List {
            id: 12,
            after: Some("txt/a.txt".into()),
            limit: 100,
            at: Some(1_700_000_000_000_000_000),
            deleted: false,
        },
        Message::Meta {
            id: 7,
            entry: entry("a.mp3", Class::Mp3, 5),
        },
        Message::error(8, ErrorCode::NotFound, "no such file: a.mp3"),
    ]
}

/// Frames in the `inbound` target's format: u16 LE length, then the bytes.
fn framed(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&(f.len() as u16).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    let p = d.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for m in messages() {
        let header = encode(&m);
        let n = format!("{}-{}", m.kind(), m.id());
        write(&dir, "header", &n, &header);
        let data: Vec<u8> = match m.data() {
            schema::message::DataRule::Exactly(n) => vec![b'x'; n as usize],
            schema::message::DataRule::Chunk => vec![b'y'; 100],
            schema::message::DataRule::None => Vec::new(),
        };
        let frames: Vec<&[u8]> = if m.data() == schema::message::DataRule::None {
            vec![&header]
        } else {
            vec![&header, &data]
        };
        write(&dir, "inbound", &n, &framed(&frames));
    }
    write(
        &dir,
        "inbound",
        "too-many-frames",
        &framed(&[b"a", b"b", b"c"]),
    );
    for (i, name) in [
        "a.txt",
        "music/a.mp3",
        "ünïcødé/名前.pdf",
        "a\tb\nc\u{85}.txt",
        "../x",
        "a//b",
        "/etc/passwd",
        "a\\b",
    ]
    .iter()
    .enumerate()
    {
        write(&dir, "names", &format!("name-{i}"), name.as_bytes());
    }
    for (i, spec) in ["flac=mp3, .MD=txt\nsong.FLAC", "ogg=others,", "x=\na.x"]
        .iter()
        .enumerate()
    {
        write(&dir, "routes", &format!("route-{i}"), spec.as_bytes());
    }
    for (i, addr) in [
        "127.0.0.1:12345",
        "[::1]:9000",
        "::1",
        "host",
        "[fe80::1%eth0]",
    ]
    .iter()
    .enumerate()
    {
        write(&dir, "host_port", &format!("addr-{i}"), addr.as_bytes());
    }
    let meta = storage::meta::StoredMeta::new("music/a.mp3", Class::Mp3, Hash::of(b"x"), 7, 2);
    write(&dir, "storage_meta", "meta", &meta.encode());
    let record = broker::Record::stored(Class::Txt, 12, Hash::of(b"y"), -3, 4);
    let mut keyed = b"notes.tx".to_vec();
    keyed.extend(record.encode());
    write(&dir, "broker_record", "record", &keyed);
    println!("seed corpus written to {}", dir.display());
}
