//! Every message of the protocol: one CBOR map per header frame, tagged by its type in `t`.
//!
//! Which socket accepts which message, and which reply each gets, is in `PROTOCOL.md`.
//! Requests carry an `id` chosen by the requester; every reply echoes it. An upload or a read is
//! a *transfer* named by the `id` of the `put` or `get` that started it.

use crate::hash::Hash;
use crate::limits::INLINE_MAX;
use crate::route::Class;
use crate::status::{BrokerReport, NodeReport};
use serde::{Deserialize, Serialize};

/// One protocol message (the header frame). Data frames travel beside it, see [`Message::data`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    /// Liveness probe; answered with `pong` carrying the same id.
    Ping { id: u64 },
    /// Answer to `ping`.
    Pong { id: u64 },
    /// Starts an upload of `name` (`size` bytes, source modification time `modified` in ns since
    /// the epoch). Files of at most [`INLINE_MAX`] bytes carry their whole content in one data
    /// frame and must give `blake3`; larger ones wait for `credit` and send `chunk`s. `blake3`,
    /// when given for a larger file, lets the receiver answer "unchanged" at once. `version` is
    /// set by the broker when it forwards the upload to a node. A `growing` upload is of a file
    /// still being written: `size` and `modified` are what the sender saw when it began, and the
    /// last chunk (the one with `blake3`) ends the file and gives its final `modified`.
    Put {
        id: u64,
        name: String,
        size: u64,
        modified: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blake3: Option<Hash>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        growing: bool,
        /// Set by a broker: an opaque number naming the front peer it relays the upload for, so
        /// the node shares its credit fairly between peers, not only between uploads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender: Option<u64>,
    },
    /// File content of transfer `id` at `offset`, in the following data frame (at most
    /// `CHUNK_SIZE` bytes). In an upload the last chunk (offset + length = size) carries the
    /// file's `blake3`; in a growing upload it is the chunk with `blake3` that ends the file, and
    /// it carries the file's final `modified` too.
    Chunk {
        id: u64,
        offset: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blake3: Option<Hash>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        modified: Option<i64>,
    },
    /// The receiver of transfer `id` allows `chunks` more `chunk` messages.
    Credit { id: u64, chunks: u32 },
    /// The sender gives up transfer `id` (for example: the source file changed while being read).
    /// No reply.
    Abort { id: u64 },
    /// Transfer or change `id` is durable: bytes fsynced on the node, index flushed. `unchanged`
    /// says the stored content already had this hash and nothing was written.
    Done {
        id: u64,
        version: u64,
        #[serde(default)]
        unchanged: bool,
    },
    /// Removes `name` from the store.
    Delete { id: u64, name: String },
    /// Moves the stored `from` (whose content has hash `blake3`) to `to` without re-sending its
    /// bytes. The broker fills `to_class` and `version` when it forwards the move to a node.
    Rename {
        id: u64,
        from: String,
        to: String,
        blake3: Hash,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_class: Option<Class>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// Asks for up to `limit` entries following the cursor `after` (the last name of the previous
    /// page; absent for the first page). Answered with `listing`. With `at` (ns since the epoch)
    /// the entries are the versions current at that instant, deleted names included; with
    /// `deleted`, the names not current now that the history still holds, each as its last
    /// kept version. Both come from the node's history, class by class, and their cursor is a
    /// node's (`"<class>/<name>"` of the last entry).
    List {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        limit: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    },
    /// A page of entries in the answering peer's order; `more` says whether another page follows.
    Listing {
        id: u64,
        entries: Vec<Entry>,
        more: bool,
    },
    /// Starts a read of `name`: its current version, or with `version` that version from the
    /// history (current or kept). A node also gets the `class` to look in. Answered with `meta`
    /// (then chunks under credit) or `error`.
    Get {
        id: u64,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<Class>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        /// Set by a broker: an opaque number naming the front peer it relays the read for, so
        /// the node shares its read slots fairly between peers (as `put.sender` does for
        /// uploads).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender: Option<u64>,
    },
    /// Asks for every version of `name` the node holds: the current one and those kept in the
    /// history. Answered with `versions`.
    History { id: u64, name: String },
    /// Answer to `history`: the versions of `name`, oldest first (the current one last).
    Versions {
        id: u64,
        name: String,
        versions: Vec<VersionInfo>,
    },
    /// What a read returns first. Files of at most [`INLINE_MAX`] bytes carry their content in one
    /// data frame; for larger ones the reader sends `credit` and gets `chunk`s.
    Meta { id: u64, entry: Entry },
    /// Asks a storage node (serve port) to re-read what it stores: up to `limit` files after
    /// the cursor `after` (as in `list`), each hashed again. With `history`, the versions its
    /// history keeps instead, name by name (every kept version of a name in one page), each
    /// object hashed again. Answered with `checked`.
    Check {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        limit: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        history: bool,
    },
    /// A page of a `check`: each file's recorded entry with the hash of its content as read now;
    /// `more` says whether another page follows.
    Checked {
        id: u64,
        files: Vec<CheckedFile>,
        more: bool,
    },
    /// Asks a storage node (class port of `class`) to set aside the stored `name` whose content no
    /// longer matches its recorded hash: it moves to `ROOT/.dfs/quarantine/<class>/<name>`, is no
    /// longer served or listed. Answered with `done` (version 0), or `error` `not_found` when the
    /// file is not stored or its content matches its hash (then it stays).
    Quarantine { id: u64, class: Class, name: String },
    /// Asks the broker to compare its index with what the node holds; with `repair` (ingest port
    /// only) it also makes the index agree with the node. Answered with `findings` pages.
    Fsck {
        id: u64,
        #[serde(default)]
        repair: bool,
    },
    /// A page of an `fsck`'s findings; `checked` counts the node's files compared so far, `more`
    /// says whether another page follows.
    Findings {
        id: u64,
        findings: Vec<Finding>,
        checked: u64,
        more: bool,
    },
    /// Asks how a peer is (`dfs status`). A storage node (serve port) answers `node_status`; a
    /// broker (either front port) asks its node, waiting at most `wait_ms` (default 2,500, at
    /// most 60,000), and answers `broker_status` with both reports.
    Status {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u32>,
    },
    /// A storage node's answer to `status`.
    NodeStatus { id: u64, node: Box<NodeReport> },
    /// A broker's answer to `status`: its own report, and its node's or why there is none
    /// (`node_error`, naming the node's address).
    BrokerStatus {
        id: u64,
        broker: Box<BrokerReport>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<Box<NodeReport>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node_error: Option<String>,
    },
    /// A watcher claims `volume` (empty: the root volume) for the rest of its connection, as
    /// `owner` (its host and canonical source folder; with CURVE the broker uses the key it
    /// admitted instead). A volume owned by someone else is refused with `forbidden` unless
    /// `take_over` moves it. Answered with `claimed`. Every `put`, `delete` and `rename` on the
    /// ingest port needs a claim on its connection, and may touch only names of that volume.
    Claim {
        id: u64,
        #[serde(default)]
        volume: String,
        owner: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        take_over: bool,
    },
    /// Answer to `claim`: the claim holds; `volumes` are every named volume the broker knows (a
    /// root-volume watcher leaves the folders of those names alone).
    Claimed { id: u64, volumes: Vec<String> },
    /// The broker records on a storage node (serve port) that `owner` owns `volume` (empty:
    /// the root volume), so that an index rebuilt from the node knows the owners again.
    /// Answered with `done` (version 0) once durable.
    SetOwner {
        id: u64,
        #[serde(default)]
        volume: String,
        owner: String,
    },
    /// Asks a storage node (serve port) for the owners it records. Answered with `owned`.
    Owners { id: u64 },
    /// Answer to `owners`: volume (empty: the root volume) → owner.
    Owned {
        id: u64,
        owners: std::collections::BTreeMap<String, String>,
    },
    /// Request `id` failed; `code` says how, `message` says what and why in one line.
    Error {
        id: u64,
        code: ErrorCode,
        message: String,
    },
}

/// What the store holds about one file: an index entry, a listing row, a read's metadata.
/// On the wire it is the array `[name, class, size, blake3, modified, version]`: listings carry
/// a million of them, and an array costs half the bytes and decoding time of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub class: Class,
    pub size: u64,
    pub blake3: Hash,
    /// Source modification time, ns since the Unix epoch.
    pub modified: i64,
    pub version: u64,
}

/// Fields of an [`Entry`] on the wire, in order.
const ENTRY_FIELDS: usize = 6;

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(ENTRY_FIELDS)?;
        t.serialize_element(&self.name)?;
        t.serialize_element(&self.class)?;
        t.serialize_element(&self.size)?;
        t.serialize_element(&self.blake3)?;
        t.serialize_element(&self.modified)?;
        t.serialize_element(&self.version)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entry: [name, class, size, blake3, modified, version]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Entry, A::Error> {
                let missing = |i| serde::de::Error::invalid_length(i, &V);
                let name = a.next_element()?.ok_or_else(|| missing(0))?;
                let class = a.next_element()?.ok_or_else(|| missing(1))?;
                let size = a.next_element()?.ok_or_else(|| missing(2))?;
                let blake3 = a.next_element()?.ok_or_else(|| missing(3))?;
                let modified = a.next_element()?.ok_or_else(|| missing(4))?;
                let version = a.next_element()?.ok_or_else(|| missing(5))?;
                if a.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(ENTRY_FIELDS + 1, &V));
                }
                Ok(Entry {
                    name,
                    class,
                    size,
                    blake3,
                    modified,
                    version,
                })
            }
        }
        d.deserialize_tuple(ENTRY_FIELDS, V)
    }
}

impl Entry {
    /// About how many bytes this entry takes in a `listing` header.
    pub fn wire_size(&self) -> usize {
        self.name.len() + crate::limits::ENTRY_OVERHEAD
    }
}

/// One version of a name, as `versions` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub class: Class,
    pub size: u64,
    pub blake3: Hash,
    /// Source modification time, ns since the Unix epoch.
    pub modified: i64,
    /// When it became current under this name, ns (0 when not known).
    pub since: i64,
    /// When it stopped being current, ns; absent for the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// It was deleted or moved away (no version followed it at once).
    #[serde(default)]
    pub deleted: bool,
}

/// One file of a `checked` page: what the node recorded for it, and the BLAKE3 of its content
/// as read now (`None` when it could not be read; `reason` then says why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedFile {
    pub entry: Entry,
    #[serde(default)]
    pub content: Option<Hash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CheckedFile {
    /// Whether the content read now is what the node recorded for the file.
    pub fn is_intact(&self) -> bool {
        self.content == Some(self.entry.blake3)
    }
}

/// What an `fsck` found wrong with one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Indexed, but the node does not hold it.
    Missing,
    /// Held by the node with intact content, but not indexed.
    Extra,
    /// The node's content no longer matches the hash recorded for it.
    Corrupt,
    /// The node holds it intact, but under another hash than the index records.
    Differs,
    /// A version the history keeps whose content is gone from the node.
    KeptMissing,
    /// A version the history keeps whose content no longer matches its hash.
    KeptCorrupt,
    /// A kind this version does not know.
    #[serde(other)]
    Unknown,
}

impl FindingKind {
    /// The kind's wire (and report) name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::Extra => "extra",
            FindingKind::Corrupt => "corrupt",
            FindingKind::Differs => "differs",
            FindingKind::KeptMissing => "kept_missing",
            FindingKind::KeptCorrupt => "kept_corrupt",
            FindingKind::Unknown => "unknown",
        }
    }
}

/// One finding of an `fsck`: the name, what is wrong, the hashes involved, and whether a repair
/// fixed it (`repaired`) or why it could not (`note`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub name: String,
    pub kind: FindingKind,
    /// The hash the index records, if indexed.
    #[serde(default)]
    pub indexed: Option<Hash>,
    /// The hash the node records, if the node holds the name.
    #[serde(default)]
    pub stored: Option<Hash>,
    /// The hash of the node's content as read now, if read.
    #[serde(default)]
    pub content: Option<Hash>,
    #[serde(default)]
    pub repaired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Finding {
    /// About how many bytes this finding takes in a `findings` header.
    pub fn wire_size(&self) -> usize {
        self.name.len() + self.note.as_ref().map_or(0, String::len) + 3 * 40 + 64
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frames or the CBOR header could not be decoded, or broke a rule of the protocol.
    BadMessage,
    /// The header's `v` is not this peer's protocol version.
    UnsupportedVersion,
    /// The message type is unknown, or not accepted on this socket.
    Unexpected,
    /// The name breaks the name rules.
    BadName,
    /// No such file.
    NotFound,
    /// The name has no complete version yet; try again later.
    Uploading,
    /// A peer behind the answering one (the storage node) is unreachable or timed out.
    Unavailable,
    /// Content did not match its BLAKE3 hash.
    Integrity,
    /// The node's disk is full.
    NoSpace,
    /// Another I/O error on the answering peer.
    Io,
    /// The transfer id is not (or no longer) known to the answering peer.
    UnknownTransfer,
    /// Too many transfers at once; try again later.
    Busy,
    /// The sender may not do this: the volume belongs to another owner, the name is outside the
    /// sender's volume, or the sender has not claimed a volume (claim, then send again).
    Forbidden,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

/// What a client may do after an error reply: the one classification every role uses (the
/// watcher's outage handling, the exit codes of `dfs fetch` and `dfs fsck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The store behind the answering peer is away, full or busy: every change would be refused
    /// alike until it recovers. Try again later, and not name by name.
    StoreWide,
    /// This request may succeed if sent again: the name has no complete version yet, the
    /// transfer was forgotten, the content was damaged on the way, or an I/O error on the peer.
    Request,
    /// Sending the same again fails the same way.
    Never,
}

impl ErrorCode {
    /// Whether, and how, the request may succeed if sent again (see [`Retry`]).
    pub fn retry(self) -> Retry {
        match self {
            ErrorCode::Unavailable | ErrorCode::NoSpace | ErrorCode::Busy => Retry::StoreWide,
            ErrorCode::Uploading
            | ErrorCode::Io
            | ErrorCode::UnknownTransfer
            | ErrorCode::Integrity => Retry::Request,
            ErrorCode::BadMessage
            | ErrorCode::UnsupportedVersion
            | ErrorCode::Unexpected
            | ErrorCode::BadName
            | ErrorCode::NotFound
            | ErrorCode::Forbidden
            | ErrorCode::Unknown => Retry::Never,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_transient(self) -> bool {
        self.retry() != Retry::Never
    }
}

/// Whether a message must, may or must not be followed by a data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRule {
    /// No data frame.
    None,
    /// Exactly one data frame of exactly this many bytes.
    Exactly(u64),
    /// Exactly one data frame of 1 to `CHUNK_SIZE` bytes.
    Chunk,
}

impl Message {
    /// A `list` of the present: up to `limit` entries after `after`.
    pub fn list(id: u64, after: Option<String>, limit: u32) -> Message {
        Message::List {
            id,
            after,
            limit,
            at: None,
            deleted: false,
        }
    }

    /// The request id this message carries.
    pub fn id(&self) -> u64 {
        match self {
            Message::Ping { id }
            | Message::Pong { id }
            | Message::Put { id, .. }
            | Message::Chunk { id, .. }
            | Message::Credit { id, .. }
            | Message::Abort { id }
            | Message::Done { id, .. }
            | Message::Delete { id, .. }
            | Message::Rename { id, .. }
            | Message::List { id, .. }
            | Message::Listing { id, .. }
            | Message::Get { id, .. }
            | Message::Meta { id, .. }
            | Message::Check { id, .. }
            | Message::Checked { id, .. }
            | Message::Quarantine { id, .. }
            | Message::Fsck { id, .. }
            | Message::Findings { id, .. }
            | Message::Status { id, .. }
            | Message::NodeStatus { id, .. }
            | Message::BrokerStatus { id, .. }
            | Message::History { id, .. }
            | Message::Versions { id, .. }
            | Message::Claim { id, .. }
            | Message::Claimed { id, .. }
            | Message::SetOwner { id, .. }
            | Message::Owners { id }
            | Message::Owned { id, .. }
            | Message::Error { id, .. } => *id,
        }
    }

    /// The same message with its id replaced (used by the broker when it relays).
    pub fn with_id(mut self, new: u64) -> Message {
        match &mut self {
            Message::Ping { id }
            | Message::Pong { id }
            | Message::Put { id, .. }
            | Message::Chunk { id, .. }
            | Message::Credit { id, .. }
            | Message::Abort { id }
            | Message::Done { id, .. }
            | Message::Delete { id, .. }
            | Message::Rename { id, .. }
            | Message::List { id, .. }
            | Message::Listing { id, .. }
            | Message::Get { id, .. }
            | Message::Meta { id, .. }
            | Message::Check { id, .. }
            | Message::Checked { id, .. }
            | Message::Quarantine { id, .. }
            | Message::Fsck { id, .. }
            | Message::Findings { id, .. }
            | Message::Status { id, .. }
            | Message::NodeStatus { id, .. }
            | Message::BrokerStatus { id, .. }
            | Message::History { id, .. }
            | Message::Versions { id, .. }
            | Message::Claim { id, .. }
            | Message::Claimed { id, .. }
            | Message::SetOwner { id, .. }
            | Message::Owners { id }
            | Message::Owned { id, .. }
            | Message::Error { id, .. } => *id = new,
        }
        self
    }

    /// The wire name of this message's type (the `t` field).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Put { .. } => "put",
            Message::Chunk { .. } => "chunk",
            Message::Credit { .. } => "credit",
            Message::Abort { .. } => "abort",
            Message::Done { .. } => "done",
            Message::Delete { .. } => "delete",
            Message::Rename { .. } => "rename",
            Message::List { .. } => "list",
            Message::Listing { .. } => "listing",
            Message::Get { .. } => "get",
            Message::Meta { .. } => "meta",
            Message::Check { .. } => "check",
            Message::Checked { .. } => "checked",
            Message::Quarantine { .. } => "quarantine",
            Message::Fsck { .. } => "fsck",
            Message::Findings { .. } => "findings",
            Message::Status { .. } => "status",
            Message::NodeStatus { .. } => "node_status",
            Message::BrokerStatus { .. } => "broker_status",
            Message::History { .. } => "history",
            Message::Versions { .. } => "versions",
            Message::Claim { .. } => "claim",
            Message::Claimed { .. } => "claimed",
            Message::SetOwner { .. } => "set_owner",
            Message::Owners { .. } => "owners",
            Message::Owned { .. } => "owned",
            Message::Error { .. } => "error",
        }
    }

    /// Which data frame must follow this header.
    pub fn data(&self) -> DataRule {
        match self {
            Message::Put {
                size,
                growing: false,
                ..
            } if *size <= INLINE_MAX => DataRule::Exactly(*size),
            Message::Meta { entry, .. } if entry.size <= INLINE_MAX => {
                DataRule::Exactly(entry.size)
            }
            Message::Chunk { .. } => DataRule::Chunk,
            _ => DataRule::None,
        }
    }

    /// An error reply to request `id`.
    pub fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error {
            id,
            code,
            message: message.into(),
        }
    }
}
