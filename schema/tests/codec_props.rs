//! Property tests of the codec: every message round-trips with arbitrary field values, and
//! decoding never panics whatever the bytes (arbitrary, arbitrary CBOR, mutated valid headers,
//! CBOR claiming huge lengths).

use ciborium::Value;
use proptest::prelude::*;
use schema::codec::{check_data, decode, encode, DecodeError};
use schema::{Class, Entry, ErrorCode, Hash, Message};

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn class() -> impl Strategy<Value = Class> {
    prop::sample::select(Class::ALL.to_vec())
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::BadMessage,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unexpected,
        ErrorCode::BadName,
        ErrorCode::NotFound,
        ErrorCode::Uploading,
        ErrorCode::Unavailable,
        ErrorCode::Integrity,
        ErrorCode::NoSpace,
        ErrorCode::Io,
        ErrorCode::UnknownTransfer,
        ErrorCode::Busy,
        ErrorCode::Forbidden,
        ErrorCode::Unknown,
    ])
}

/// Any text: names on the wire are checked by the roles, not by the codec.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9./_ -]{0,40}",
        "\\PC{0,300}",
        Just(String::new()),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        text(),
        class(),
        any::<u64>(),
        hash(),
        any::<i64>(),
        any::<u64>(),
    )
        .prop_map(|(name, class, size, blake3, modified, version)| Entry {
            name,
            class,
            size,
            blake3,
            modified,
            version,
        })
}

fn message() -> impl Strategy<Value = Message> {
    let id = any::<u64>;
    prop_oneof![
        id().prop_map(|id| Message::Ping { id }),
        id().prop_map(|id| Message::Pong { id }),
        (
            id(),
            text(),
            any::<u64>(),
            any::<i64>(),
            prop::option::of(hash()),
            prop::option::of(any::<u64>()),
            any::<bool>()
        )
            .prop_map(|(id, name, size, modified, blake3, version, growing)| {
                Message::Put {
                    id,
                    name,
                    size,
                    modified,
                    blake3,
                    version,
                    growing,
                    sender: None,
                }
            }),
        (
            id(),
            any::<u64>(),
            prop::option::of(hash()),
            prop::option::of(any::<i64>())
        )
            .prop_map(|(id, offset, blake3, modified)| Message::Chunk {
                id,
                offset,
                blake3,
                modified,
            }),
        (id(), any::<u32>()).prop_map(|(id, chunks)| Message::Credit { id, chunks }),
        id().prop_map(|id| Message::Abort { id }),
        (id(), any::<u64>(), any::<bool>()).prop_map(|(id, version, unchanged)| {
            Message::Done {
                id,
                version,
                unchanged,
            }
        }),
        (id(), text()).prop_map(|(id, name)| Message::Delete { id, name }),
        (
            id(),
            text(),
            text(),
            hash(),
            prop::option::of(class()),
            prop::option::of(any::<u64>())
        )
            .prop_map(
                |(id, from, to, blake3, to_class, version)| Message::Rename {
                    id,
                    from,
                    to,
                    blake3,
                    to_class,
                    version
                }
            ),
        (
            id(),
            prop::option::of(text()),
            any::<u32>(),
            prop::option::of(any::<i64>()),
            any::<bool>()
        )
            .prop_map(|(id, after, limit, at, deleted)| Message::List {
                id,
                after,
                limit,
                at,
                deleted
            }),
        (id(), prop::collection::vec(entry(), 0..40), any::<bool>())
            .prop_map(|(id, entries, more)| Message::Listing { id, entries, more }),
        (
            id(),
            text(),
            prop::option::of(class()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(id, name, class, version, sender)| Message::Get {
                id,
                name,
                class,
                version,
                sender,
            }),
        (id(), text()).prop_map(|(id, name)| Message::History { id, name }),
        (
            id(),
            text(),
            prop::collection::vec(
                (
                    any::<u64>(),
                    class(),
                    any::<u64>(),
                    hash(),
                    any::<i64>(),
                    any::<i64>(),
                    prop::option::of(any::<i64>()),
                    any::<bool>()
                )
                    .prop_map(
                        |(version, class, size, blake3, modified, since, until, deleted)| {
                            schema::VersionInfo {
                                version,
                                class,
                                size,
                                blake3,
                                modified,
                                since,
                                until,
                                deleted,
                            }
                        }
                    ),
                0..8
            )
        )
            .prop_map(|(id, name, versions)| Message::Versions { id, name, versions }),
        (id(), entry()).prop_map(|(id, entry)| Message::Meta { id, entry }),
        (id(), code(), text()).prop_map(|(id, code, message)| Message::Error { id, code, message }),
        (id(), text(), text(), any::<bool>()).prop_map(|(id, volume, owner, take_over)| {
            Message::Claim {
                id,
                volume,
                owner,
                take_over,
            }
        }),
        (id(), prop::collection::vec(text(), 0..8))
            .prop_map(|(id, volumes)| Message::Claimed { id, volumes }),
        (id(), text(), text()).prop_map(|(id, volume, owner)| Message::SetOwner {
            id,
            volume,
            owner
        }),
        id().prop_map(|id| Message::Owners { id }),
        (id(), prop::collection::btree_map(text(), text(), 0..8))
            .prop_map(|(id, owners)| Message::Owned { id, owners }),
    ]
}

/// Arbitrary CBOR values, nested a few levels, with the header keys common among map keys so
/// that many values get past the envelope.
fn cbor() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "v", "t", "id", "name", "size", "entries", "entry", "blake3", "more", "offset",
            "class", "code", "limit", "after", "from", "to", "modified", "version",
        ])
        .prop_map(|k| Value::Text(k.into())),
        any::<String>().prop_map(Value::Text),
    ];
    let leaf = prop_oneof![
        any::<u64>().prop_map(|n| Value::Integer(n.into())),
        any::<i64>().prop_map(|n| Value::Integer(n.into())),
        Just(Value::Integer(schema::PROTOCOL_VERSION.into())),
        prop::sample::select(vec![
            "ping",
            "pong",
            "put",
            "chunk",
            "credit",
            "abort",
            "done",
            "delete",
            "rename",
            "list",
            "listing",
            "get",
            "meta",
            "error",
            "mp3",
            "others",
            "not_found",
        ])
        .prop_map(|t| Value::Text(t.into())),
        any::<String>().prop_map(Value::Text),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        any::<[u8; 32]>().prop_map(|b| Value::Bytes(b.to_vec())),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(Value::Float),
        Just(Value::Null),
        (any::<u64>(), any::<u8>()).prop_map(|(t, v)| Value::Tag(t, Box::new(v.into()))),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(Value::Map),
        ]
    })
}

fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).expect("a CBOR value serializes in memory");
    out
}

/// A header map with this protocol version in `v` and `t` beside the given fields.
fn header(t: &str, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut map = vec![
        (
            Value::Text("v".into()),
            Value::Integer(schema::PROTOCOL_VERSION.into()),
        ),
        (Value::Text("t".into()), Value::Text(t.into())),
    ];
    map.extend(fields.into_iter().map(|(k, v)| (Value::Text(k.into()), v)));
    to_bytes(&Value::Map(map))
}

/// Decodes and, when that succeeds, checks the result round-trips: whatever the codec accepts
/// it can also write.
fn decode_is_sound(bytes: &[u8]) {
    if let Ok(m) = decode(bytes) {
        assert_eq!(decode(&encode(&m)).as_ref(), Ok(&m), "re-encoding {m:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = encode(&m);
        prop_assert_eq!(decode(&bytes), Ok(m.clone()));
        prop_assert_eq!(decode(&bytes).map(|d| d.id()), Ok(m.id()));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_is_sound(&bytes);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_cbor(v in cbor()) {
        decode_is_sound(&to_bytes(&v));
    }

    #[test]
    fn decode_never_panics_on_mutated_headers(
        m in message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 1..8),
    ) {
        let mut bytes = encode(&m);
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.truncate(i),
            }
        }
        decode_is_sound(&bytes);
    }

    /// A header from another protocol version is refused as such, with the id it carried.
    #[test]
    fn other_versions_are_refused_with_their_id(v in any::<u64>(), id in any::<u64>(), m in message()) {
        prop_assume!(v != schema::PROTOCOL_VERSION);
        let mut value: Value = ciborium::from_reader(&encode(&m.with_id(id))[..]).unwrap();
        let map = match &mut value { Value::Map(map) => map, _ => unreachable!() };
        map[0].1 = Value::Integer(v.into());
        let r = decode(&to_bytes(&value)).unwrap_err();
        prop_assert_eq!(&r.error, &DecodeError::Version(v));
        prop_assert_eq!(r.id, id);
        prop_assert_eq!(r.reply().id(), id);
    }

    /// The data rules hold whatever the header says and whatever data comes.
    #[test]
    fn check_data_never_panics(m in message(), data in prop::option::of(prop::collection::vec(any::<u8>(), 0..300))) {
        let _ = check_data(&m, data.as_deref());
    }
}

/// CBOR heads claiming 2^60 (or 2^64 - 1) bytes, characters, items or pairs in a small frame
/// are refused without allocating what they claim.
#[test]
fn huge_length_claims_are_refused_without_allocating() {
    let heads: Vec<Vec<u8>> = [0x40u8, 0x60, 0x80, 0xa0]
        .iter()
        .flat_map(|major| {
            [1u64 << 60, u64::MAX, 1 << 32].map(|n| {
                let mut h = vec![major | 27];
                h.extend_from_slice(&n.to_be_bytes());
                h.extend_from_slice(b"abc");
                h
            })
        })
        .collect();
    for head in &heads {
        // Alone, as the whole header.
        assert!(decode(head).is_err(), "{head:02x?}");
        // As the value of every field a header has, in every message type.
        for t in [
            "put", "listing", "meta", "error", "rename", "list", "get", "ping",
        ] {
            for field in [
                "id", "name", "entries", "entry", "blake3", "message", "after", "from", "t",
            ] {
                let mut bytes = header(t, vec![("id", Value::Integer(1.into()))]);
                // Rewrite the map's head to hold one more pair, then append `field: <head>`.
                bytes[0] += 1;
                bytes.extend(to_bytes(&Value::Text(field.into())));
                bytes.extend_from_slice(head);
                let r = decode(&bytes);
                assert!(r.is_err(), "{t}.{field} = {head:02x?} decoded to {r:?}");
            }
        }
    }
    // A map whose first key is such a head.
    let mut bytes = vec![0xa1];
    bytes.extend_from_slice(&heads[1]);
    assert!(decode(&bytes).is_err());
}

/// Indefinite-length strings made of many tiny segments, and deep nesting, are refused or read
/// without trouble.
#[test]
fn segmented_and_nested_cbor_is_handled() {
    // `name` as an indefinite text string of 10 000 one-byte segments: a valid put.
    let mut bytes = header("put", vec![]);
    bytes[0] += 5;
    for (k, v) in [("id", 1u64), ("size", 0), ("modified", 0)] {
        bytes.extend(to_bytes(&Value::Text(k.into())));
        bytes.extend(to_bytes(&Value::Integer(v.into())));
    }
    bytes.extend(to_bytes(&Value::Text("blake3".into())));
    bytes.extend(to_bytes(&Value::Bytes(vec![7; 32])));
    bytes.extend(to_bytes(&Value::Text("name".into())));
    bytes.push(0x7f);
    for _ in 0..10_000 {
        bytes.extend_from_slice(&[0x61, b'a']);
    }
    bytes.push(0xff);
    match decode(&bytes) {
        Ok(Message::Put { name, .. }) => assert_eq!(name.len(), 10_000),
        other => panic!("segmented name: {other:?}"),
    }
    // Nesting far past any real message, as arrays, maps and tags.
    for open in [&[0x81u8][..], &[0xa1, 0x61, b'v'], &[0xc6]] {
        let deep: Vec<u8> = std::iter::repeat_n(open, 100_000)
            .flatten()
            .copied()
            .chain([0x01])
            .collect();
        assert!(decode(&deep).is_err());
        let mut inside = header("ping", vec![("id", Value::Integer(1.into()))]);
        inside[0] += 1;
        inside.extend(to_bytes(&Value::Text("extra".into())));
        inside.extend_from_slice(&deep);
        // Unknown keys are ignored, but not at any depth.
        assert!(decode(&inside).is_err());
    }
}
