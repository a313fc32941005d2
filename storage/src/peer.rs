//! Who a transfer belongs to: the key that names it, the party it shares the node with, and
//! peer identities written for logs.
//! Shared by the socket loop (`node`) and the components it drives (`upload`,
//! `read`), which do not import each other.

use schema::route::SERVE_OFFSET;

/// Index of the serve socket among the node's sockets (after the four class sockets).
pub const SERVE: usize = SERVE_OFFSET as usize;

/// A transfer is named by the socket it runs on, the peer's identity and the request id.
pub type Key = (usize, Vec<u8>, u64);

/// Whom a transfer shares the node's credit and slots with ([`Ledger`](crate::credit::Ledger),
/// [`Share`](crate::admission::Share)): the front peer its broker named (`sender`),
/// else the peer that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Party {
    Sender(u64),
    Peer(Vec<u8>),
}

impl Party {
    /// The party of a request from `peer` that names `sender`, if any.
    pub fn of(sender: Option<u64>, peer: &[u8]) -> Party {
        match sender {
            Some(s) => Party::Sender(s),
            None => Party::Peer(peer.to_vec()),
        }
    }
}

/// A peer identity in hex, for logs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
