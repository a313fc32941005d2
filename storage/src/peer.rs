//! Who a transfer belongs to: the key that names it, and peer identities written for logs.
//! Shared by the socket loop (`node`) and the components it drives (`upload`,
//! `read`), which do not import each other.

use schema::route::SERVE_OFFSET;

/// Index of the serve socket among the node's sockets (after the four class sockets).
pub const SERVE: usize = SERVE_OFFSET as usize;

/// A transfer is named by the socket it runs on, the peer's identity and the request id.
pub type Key = (usize, Vec<u8>, u64);

/// A peer identity in hex, for logs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
