//! The two layers of the codec: frames off a socket ([`recv`], [`send`]) and CBOR headers to
//! typed messages ([`encode`], [`decode`]).
//!
//! A message is one header frame (a CBOR map with `v` and `t`) optionally followed by one data
//! frame of raw file content. On a ROUTER socket the peer's identity frame comes first and is
//! kept intact so the reply can be routed back.

use crate::limits::{CHUNK_SIZE, MAX_FRAME, MAX_FRAMES, MAX_HEADER};
use crate::message::{DataRule, ErrorCode, Message};
use crate::PROTOCOL_VERSION;

/// Why an inbound message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed CBOR header: {0}")]
    Malformed(String),
    #[error("header is not a CBOR map with an unsigned `v` and a text `t`")]
    NotAHeader,
    #[error("protocol version {0} is not supported (this peer speaks {PROTOCOL_VERSION})")]
    Version(u64),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("bad {kind} message: {reason}")]
    Invalid { kind: String, reason: String },
    #[error("message has {0} frames; at most 2 are allowed (a header and one data frame)")]
    TooManyFrames(usize),
    #[error("message has no header frame")]
    NoHeader,
    #[error("header frame of {size} bytes is larger than {limit} bytes")]
    HeaderTooLarge { size: usize, limit: usize },
    #[error("{kind} message: {reason}")]
    Data { kind: String, reason: String },
}

impl DecodeError {
    /// The error code a reply to this refusal carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Version(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownType(_) => ErrorCode::Unexpected,
            _ => ErrorCode::BadMessage,
        }
    }
}

/// A refused message: why, and the request id it carried if one could be read (else 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub id: u64,
    pub error: DecodeError,
}

impl Rejected {
    /// The error reply for the sender.
    pub fn reply(&self) -> Message {
        Message::error(self.id, self.error.code(), self.error.to_string())
    }
}

/// The header frame of `msg`: a CBOR map with `v` first, then `t` and the fields.
pub fn encode(msg: &Message) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Versioned<'a> {
        v: u64,
        #[serde(flatten)]
        msg: &'a Message,
    }
    let mut out = Vec::with_capacity(128);
    ciborium::into_writer(
        &Versioned {
            v: PROTOCOL_VERSION,
            msg,
        },
        &mut out,
    )
    .expect("every message serializes to CBOR in memory");
    out
}

/// The keys every header has; read first so that the version is checked before anything else.
#[derive(serde::Deserialize)]
struct Envelope {
    v: Option<u64>,
    t: Option<String>,
    id: Option<u64>,
}

/// A `listing` header read straight into its fields: listings are the largest headers by far
/// (thousands of entries), so they skip the buffering a tagged enum needs.
#[derive(serde::Deserialize)]
struct ListingHeader {
    id: u64,
    entries: Vec<crate::Entry>,
    more: bool,
}

/// A decoding error in words, without the parser's internals.
fn describe(e: &ciborium::de::Error<std::io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "truncated CBOR".into(),
        E::Io(e) => e.to_string(),
        E::Syntax(at) => format!("CBOR syntax error at byte {at}"),
        E::Semantic(_, what) => what.clone(),
        E::RecursionLimitExceeded => "CBOR nested too deeply".into(),
    }
}

/// The message in header frame `frame`.
///
/// Keys that are not text are ignored, like unknown text keys: the header is read again
/// without them.
pub fn decode(frame: &[u8]) -> Result<Message, Rejected> {
    match decode_map(frame) {
        Ok(m) => Ok(m),
        Err(first) => match without_other_keys(frame) {
            Some(clean) => decode_map(&clean).map_err(|e| if e.id != 0 { e } else { first }),
            None => Err(first),
        },
    }
}

/// `frame` re-encoded without its keys that are not text, when it is a CBOR map that has such
/// keys (and not larger than a request may be).
fn without_other_keys(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.len() > MAX_HEADER {
        return None;
    }
    let ciborium::Value::Map(pairs) = ciborium::from_reader(frame).ok()? else {
        return None;
    };
    if pairs.iter().all(|(k, _)| k.is_text()) {
        return None;
    }
    let kept: Vec<_> = pairs.into_iter().filter(|(k, _)| k.is_text()).collect();
    let mut out = Vec::with_capacity(frame.len());
    ciborium::into_writer(&ciborium::Value::Map(kept), &mut out).ok()?;
    Some(out)
}

/// The id of the header in `frame`, when one can be read (0 otherwise).
pub fn id_of(frame: &[u8]) -> u64 {
    let env: Result<Envelope, _> = ciborium::from_reader(frame);
    match env {
        Ok(e) => e.id.unwrap_or(0),
        Err(_) => without_other_keys(frame)
            .and_then(|clean| ciborium::from_reader::<Envelope, _>(&clean[..]).ok())
            .and_then(|e| e.id)
            .unwrap_or(0),
    }
}

fn decode_map(frame: &[u8]) -> Result<Message, Rejected> {
    let reject = |id, error| Rejected { id, error };
    if frame.len() as i64 > MAX_FRAME {
        let limit = MAX_FRAME as usize;
        let error = DecodeError::HeaderTooLarge {
            size: frame.len(),
            limit,
        };
        return Err(reject(0, error));
    }
    let env: Envelope = ciborium::from_reader(frame).map_err(|e| {
        let error = match e {
            ciborium::de::Error::Semantic(..) => DecodeError::NotAHeader,
            e => DecodeError::Malformed(describe(&e)),
        };
        reject(0, error)
    })?;
    let id = env.id.unwrap_or(0);
    let (Some(version), Some(kind)) = (env.v, env.t) else {
        return Err(reject(id, DecodeError::NotAHeader));
    };
    if version != PROTOCOL_VERSION {
        return Err(reject(id, DecodeError::Version(version)));
    }
    let invalid = |e: ciborium::de::Error<std::io::Error>, kind: String| {
        let text = describe(&e);
        if text.contains("unknown variant") {
            reject(id, DecodeError::UnknownType(kind))
        } else {
            reject(id, DecodeError::Invalid { kind, reason: text })
        }
    };
    if kind == "listing" {
        let h: ListingHeader = ciborium::from_reader(frame).map_err(|e| invalid(e, kind))?;
        return Ok(Message::Listing {
            id: h.id,
            entries: h.entries,
            more: h.more,
        });
    }
    ciborium::from_reader::<Message, _>(frame).map_err(|e| invalid(e, kind))
}

/// Checks that `data` is what `msg` requires beside it.
pub fn check_data(msg: &Message, data: Option<&[u8]>) -> Result<(), DecodeError> {
    let bad = |reason: String| DecodeError::Data {
        kind: msg.kind().to_string(),
        reason,
    };
    match (msg.data(), data) {
        (DataRule::None, None) => Ok(()),
        (DataRule::None, Some(_)) => Err(bad("takes no data frame".into())),
        (DataRule::Exactly(n), Some(d)) if d.len() as u64 == n => Ok(()),
        (DataRule::Exactly(n), Some(d)) => Err(bad(format!(
            "data frame of {} bytes, expected {n} (the whole file)",
            d.len()
        ))),
        (DataRule::Exactly(0), None) => Err(bad(
            "an empty file still carries its data frame, an empty one".into(),
        )),
        (DataRule::Exactly(n), None) => Err(bad(format!(
            "a file of {n} bytes must carry its content in one data frame"
        ))),
        (DataRule::Chunk, Some(d)) if !d.is_empty() && d.len() <= CHUNK_SIZE => Ok(()),
        (DataRule::Chunk, Some(d)) => Err(bad(format!(
            "chunk of {} bytes; chunks carry 1 to {CHUNK_SIZE} bytes",
            d.len()
        ))),
        (DataRule::Chunk, None) => Err(bad("a chunk needs a data frame".into())),
    }
}

/// One message read off a socket.
pub struct Inbound {
    /// The ROUTER identity of the sender (None on DEALER sockets).
    pub peer: Option<Vec<u8>>,
    /// The decoded header, or why it was refused.
    pub msg: Result<Message, Rejected>,
    /// The data frame, if any (checked against the header when `msg` is `Ok`).
    pub data: Option<zmq::Message>,
    /// The `User-Id` of the sender's connection: on a CURVE socket, the Z85 public key the ZAP
    /// handler admitted (see `security::Gate`); `None` on a plaintext socket.
    pub user_id: Option<String>,
}

/// Reads one whole message from `sock`, waiting at most as the socket's receive timeout allows
/// (`Err(EAGAIN)` when nothing came). `router` says whether an identity frame comes first.
/// A message that breaks a frame rule comes back with `msg: Err` so the caller can reply.
pub fn recv(sock: &zmq::Socket, router: bool, flags: i32) -> zmq::Result<Inbound> {
    let mut frames: Vec<zmq::Message> = Vec::with_capacity(MAX_FRAMES);
    let mut count = 0usize;
    loop {
        let f = if count == 0 {
            sock.recv_msg(flags)?
        } else {
            sock.recv_msg(0)?
        };
        count += 1;
        let more = f.get_more();
        if frames.len() < MAX_FRAMES {
            frames.push(f);
        }
        if !more {
            break;
        }
    }
    let user_id = frames
        .get_mut(usize::from(router))
        .and_then(|f| f.gets("User-Id").map(str::to_string));
    let mut it = frames.into_iter();
    let peer = if router {
        it.next().map(|f| f.to_vec())
    } else {
        None
    };
    let reject = |id, error| Inbound {
        peer: peer.clone(),
        msg: Err(Rejected { id, error }),
        data: None,
        user_id: user_id.clone(),
    };
    let Some(header) = it.next() else {
        return Ok(reject(0, DecodeError::NoHeader));
    };
    // The frames the sender sent, without the identity a ROUTER puts first.
    let sent = count - usize::from(router);
    if sent > MAX_FRAMES - 1 {
        return Ok(reject(id_of(&header), DecodeError::TooManyFrames(sent)));
    }
    // A request's header is small; only replies (a listing page) may be larger.
    if router && header.len() > MAX_HEADER {
        let error = DecodeError::HeaderTooLarge {
            size: header.len(),
            limit: MAX_HEADER,
        };
        return Ok(reject(id_of(&header), error));
    }
    let data = it.next();
    let msg = decode(&header).and_then(|m| {
        check_data(&m, data.as_deref())
            .map(|()| m.clone())
            .map_err(|error| Rejected { id: m.id(), error })
    });
    Ok(Inbound {
        peer,
        msg,
        data,
        user_id,
    })
}

/// Sends `msg` (and `data`, if given) without blocking. On a ROUTER socket `peer` is the
/// identity to route to. `EAGAIN` means the peer is not connected or its queue is full;
/// `EHOSTUNREACH` (ROUTER_MANDATORY) means the identity is gone.
pub fn send(
    sock: &zmq::Socket,
    peer: Option<&[u8]>,
    msg: &Message,
    data: Option<zmq::Message>,
) -> zmq::Result<()> {
    send_encoded(sock, peer, encode(msg), data)
}

/// [`send`] on a socket that sends no peer frame (a DEALER), giving `data` back when the message
/// was not taken at all (its first frame refused: the peer is away), so that it can go to
/// another peer without a copy. Once the first frame is taken, ZeroMQ takes the whole message.
pub fn try_send(
    sock: &zmq::Socket,
    msg: &Message,
    data: Option<zmq::Message>,
) -> Result<(), (zmq::Error, Option<zmq::Message>)> {
    let flags = zmq::DONTWAIT;
    let header = encode(msg);
    match data {
        None => sock.send(header, flags).map_err(|e| (e, None)),
        Some(d) => {
            if let Err(e) = sock.send(header, flags | zmq::SNDMORE) {
                return Err((e, Some(d)));
            }
            sock.send(d, flags).map_err(|e| (e, None))
        }
    }
}

/// Sends a header already encoded with [`encode`] (a reply made on another thread, a listing
/// page encoded once), as [`send`] does.
pub fn send_encoded(
    sock: &zmq::Socket,
    peer: Option<&[u8]>,
    header: Vec<u8>,
    data: Option<zmq::Message>,
) -> zmq::Result<()> {
    let flags = zmq::DONTWAIT;
    if let Some(p) = peer {
        sock.send(p, flags | zmq::SNDMORE)?;
    }
    match data {
        None => sock.send(header, flags),
        Some(d) => {
            sock.send(header, flags | zmq::SNDMORE)?;
            sock.send(d, flags)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Class, Entry, Hash};
    use ciborium::Value;

    fn samples() -> Vec<Message> {
        let h = Hash::of(b"x");
        vec![
            Message::Ping { id: 1 },
            Message::Put {
                id: 2,
                name: "a/b.txt".into(),
                size: 10,
                modified: -5,
                blake3: Some(h),
                version: None,
                growing: false,
                sender: Some(7),
            },
            Message::Chunk {
                id: 3,
                offset: 262144,
                blake3: None,
                modified: None,
            },
            Message::Credit { id: 4, chunks: 8 },
            Message::Listing {
                id: 5,
                entries: vec![Entry {
                    name: "名前.mp3".into(),
                    class: Class::Mp3,
                    size: 1,
                    blake3: h,
                    modified: 7,
                    version: 3,
                }],
                more: false,
            },
            Message::error(6, ErrorCode::NotFound, "no such file"),
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn refuses_other_versions_with_the_id() {
        let mut bytes = Vec::new();
        let v = Value::Map(vec![
            (Value::Text("v".into()), Value::Integer(99.into())),
            (Value::Text("t".into()), Value::Text("ping".into())),
            (Value::Text("id".into()), Value::Integer(42.into())),
        ]);
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let r = decode(&bytes).unwrap_err();
        assert_eq!(r.id, 42);
        assert_eq!(r.error, DecodeError::Version(99));
        assert_eq!(r.error.code(), ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn refuses_unknown_types_and_garbage() {
        let mut bytes = Vec::new();
        let v = Value::Map(vec![
            (
                Value::Text("v".into()),
                Value::Integer(crate::PROTOCOL_VERSION.into()),
            ),
            (Value::Text("t".into()), Value::Text("launch".into())),
            (Value::Text("id".into()), Value::Integer(9.into())),
        ]);
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let r = decode(&bytes).unwrap_err();
        assert_eq!(r.error, DecodeError::UnknownType("launch".into()));
        assert_eq!(r.id, 9);
        assert!(decode(b"\xff\x00garbage").is_err());
        assert!(decode(&[]).is_err());
        // a map missing a required field
        let mut bytes = Vec::new();
        let v = Value::Map(vec![
            (
                Value::Text("v".into()),
                Value::Integer(crate::PROTOCOL_VERSION.into()),
            ),
            (Value::Text("t".into()), Value::Text("put".into())),
        ]);
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let e = decode(&bytes).unwrap_err().error;
        assert!(matches!(e, DecodeError::Invalid { .. }));
        // Said in words, without the parser's internals.
        assert_eq!(e.to_string(), "bad put message: missing field `id`");
    }

    fn map(pairs: Vec<(Value, Value)>) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(&Value::Map(pairs), &mut bytes).unwrap();
        bytes
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn keys_that_are_not_text_are_ignored_like_unknown_keys() {
        let v = Value::Integer(crate::PROTOCOL_VERSION.into());
        let bytes = map(vec![
            (text("v"), v.clone()),
            (Value::Integer(7.into()), text("ignored")),
            (text("t"), text("ping")),
            (text("id"), Value::Integer(41.into())),
            (Value::Bytes(vec![1]), Value::Null),
        ]);
        assert_eq!(decode(&bytes), Ok(Message::Ping { id: 41 }));
        assert_eq!(id_of(&bytes), 41);
        // A missing `v` is `bad_message`, with the id.
        let bytes = map(vec![
            (text("t"), text("ping")),
            (text("id"), Value::Integer(5.into())),
        ]);
        let r = decode(&bytes).unwrap_err();
        assert_eq!((r.id, r.error.code()), (5, ErrorCode::BadMessage));
        // Truncated CBOR is said as such.
        let ping = encode(&Message::Ping { id: 1 });
        let e = decode(&ping[..ping.len() - 1]).unwrap_err().error;
        assert_eq!(e.to_string(), "malformed CBOR header: truncated CBOR");
    }

    #[test]
    fn data_rules() {
        let put = |size| Message::Put {
            id: 1,
            name: "a".into(),
            size,
            modified: 0,
            blake3: None,
            version: None,
            growing: false,
            sender: None,
        };
        assert!(check_data(&put(3), Some(b"abc")).is_ok());
        assert!(check_data(&put(3), Some(b"ab")).is_err());
        assert!(check_data(&put(3), None).is_err());
        assert!(check_data(&put(0), Some(b"")).is_ok());
        assert!(check_data(&put(1 << 20), None).is_ok());
        assert!(check_data(&Message::Ping { id: 1 }, Some(b"x")).is_err());
        let chunk = Message::Chunk {
            id: 1,
            offset: 0,
            blake3: None,
            modified: None,
        };
        assert!(check_data(&chunk, Some(&[0u8; CHUNK_SIZE])).is_ok());
        assert!(check_data(&chunk, Some(&[0u8; CHUNK_SIZE + 1])).is_err());
        assert!(check_data(&chunk, Some(b"")).is_err());
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use crate::limits::{LISTING_BUDGET, MAX_FRAME, MAX_NAME};
    use crate::{Class, Entry, Hash, PageBuilder};

    /// A page filled by PageBuilder with the longest names still fits in one frame.
    #[test]
    fn a_full_page_of_longest_names_fits_in_a_frame() {
        let mut page = PageBuilder::new(u32::MAX);
        let mut i = 0u64;
        loop {
            let name = format!("{i:08}{}", "n".repeat(MAX_NAME - 8));
            let e = Entry {
                name,
                class: Class::Others,
                size: u64::MAX,
                blake3: Hash([0xff; 32]),
                modified: i64::MIN,
                version: u64::MAX,
            };
            if !page.fits(&e) {
                break;
            }
            page.push(e);
            i += 1;
        }
        assert!(i > 10);
        let msg = Message::Listing {
            id: u64::MAX,
            entries: page.into_entries(),
            more: true,
        };
        let bytes = encode(&msg);
        assert!(bytes.len() <= LISTING_BUDGET + 64 * 1024);
        assert!((bytes.len() as i64) < MAX_FRAME);
        assert_eq!(decode(&bytes).unwrap(), msg);
    }
}
