//! The outbox: how the components (`upload::Uploads`, `read::Reads`) say what
//! to send without holding a socket.
//!
//! Sending is synchronous and reports whether the peer was reached, because the components
//! decide on it: credit to a sender that is gone drops its upload, a read is kept only once its
//! `meta` went out, and chunks of a read stop at the first one that cannot be sent (so a reader
//! never gets a gap). The socket loop's implementation sends on the node's ROUTERs; tests record.

use crate::error::StoreError;
use crate::peer::hex;
use schema::Message;
use std::path::Path;

/// Where the replies of a component go.
pub trait Outbox {
    /// Sends `msg` (and `data`) to `peer` on socket `sock`; `false` when the peer is gone.
    fn send(&mut self, sock: usize, peer: &[u8], msg: &Message, data: Option<zmq::Message>)
        -> bool;

    /// Replies to request `id` with the error `e` (an I/O error names the storage `root`).
    fn send_error(&mut self, sock: usize, peer: &[u8], id: u64, e: &StoreError, root: &Path) {
        tracing::debug!(peer = %hex(peer), id, "refused: {e}");
        self.send(sock, peer, &e.reply(id, root), None);
    }
}

/// One message a [`Recorder`] took: socket, peer, header and data frame.
#[cfg(test)]
pub(crate) type Sent = (usize, Vec<u8>, Message, Option<Vec<u8>>);

/// An outbox for tests: keeps what was sent; peers in `gone` cannot be reached.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) sent: Vec<Sent>,
    pub(crate) gone: Vec<Vec<u8>>,
}

#[cfg(test)]
impl Recorder {
    /// Takes the messages sent so far.
    pub(crate) fn take(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }
}

#[cfg(test)]
impl Outbox for Recorder {
    fn send(
        &mut self,
        sock: usize,
        peer: &[u8],
        msg: &Message,
        data: Option<zmq::Message>,
    ) -> bool {
        if self.gone.iter().any(|g| g == peer) {
            return false;
        }
        let data = data.map(|d| d.to_vec());
        self.sent.push((sock, peer.to_vec(), msg.clone(), data));
        true
    }
}
