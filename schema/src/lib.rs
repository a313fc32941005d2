//! The dfs wire protocol and the rules every role shares.
//!
//! Everything a peer must agree on lives here and only here: the message types and their CBOR
//! codec ([`message`], [`codec`]), the protocol version, the name rules ([`names`]), the routing
//! table from extension to storage class ([`route`]), the default ports ([`ports`]),
//! paging of listings and their cursors ([`page`]), the size limits and flow-control windows
//! ([`limits`]), the put and chunk rules of a transfer ([`transfer`]), content hashes
//! ([`hash`]), times on the wire ([`time`]) and the reports behind
//! `dfs status` ([`status`]). `PROTOCOL.md` beside this crate describes the same rules for
//! someone writing a peer in another language.
//!
//! What is not protocol lives in crates named for it: `net` (sockets, CURVE, ZAP), `disk` (how
//! received content reaches the disk) and `daemon` (stop signal, ready file, metrics endpoint).

pub mod codec;
pub mod hash;
pub mod limits;
pub mod message;
pub mod names;
pub mod page;
pub mod ports;
pub mod route;
pub mod status;
pub mod time;
pub mod transfer;

pub use codec::{DecodeError, Inbound};
pub use hash::Hash;
pub use message::{
    CheckedFile, Entry, ErrorCode, Finding, FindingKind, Message, Retry, VersionInfo,
};
pub use page::PageBuilder;
pub use route::{Class, Routes};

/// The protocol version carried in every message header (`v`). A peer speaking another version
/// gets an `unsupported_version` error reply.
pub const PROTOCOL_VERSION: u64 = 2;
