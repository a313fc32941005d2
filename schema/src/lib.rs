//! The dfs wire protocol and the rules every role shares.
//!
//! Everything a peer must agree on lives here and only here: the message types and their CBOR
//! codec ([`message`], [`codec`]), the protocol version, the name rules ([`names`]), the routing
//! table from extension to storage class ([`route`]), the size limits and flow-control windows
//! ([`limits`]), and how sockets are bound and connected ([`socket`]). `PROTOCOL.md` beside this
//! crate describes the same rules for someone writing a peer in another language.
//!
//! [`daemon`] holds the small runtime pieces every daemon shares: the stop signal, the ready file
//! and address parsing; [`metrics`] the `--metrics` endpoint and the metric types; [`status`] the
//! reports behind `dfs status`. [`keys`], [`security`] and [`zap`] are CURVE: key files, who may
//! connect to which socket, and the ZAP handler that enforces it. [`writeback`] and [`direct`]
//! are how the node and the fetcher put received content on disk.

pub mod codec;
pub mod daemon;
pub mod direct;
pub mod hash;
pub mod keys;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod names;
pub mod route;
pub mod security;
pub mod socket;
pub mod status;
pub mod time;
pub mod writeback;
pub mod zap;

pub use codec::{DecodeError, Inbound};
pub use hash::Hash;
pub use message::{CheckedFile, Entry, ErrorCode, Finding, FindingKind, Message, PageBuilder};
pub use route::{Class, Routes};

/// The protocol version carried in every message header (`v`). A peer speaking another version
/// gets an `unsupported_version` error reply.
pub const PROTOCOL_VERSION: u64 = 2;
