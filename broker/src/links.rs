//! The broker's links to the storage node: one DEALER per class port and one to the serve port,
//! with outage bookkeeping so an unreachable node is logged once, not once per file.

use schema::codec;
use schema::route::SERVE_OFFSET;
use schema::security::ClientAuth;
use schema::socket::{dealer_with, endpoint, SocketError};
use schema::{Class, Message};

/// Which of the node's sockets a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// The upload port of a class (puts, deletes, renames).
    Class(Class),
    /// The serve port (reads and listings).
    Serve,
}

impl Link {
    /// Every link, in the order of [`NodeLinks::sockets`].
    pub const ALL: [Link; 5] = [
        Link::Class(Class::Mp3),
        Link::Class(Class::Txt),
        Link::Class(Class::Pdf),
        Link::Class(Class::Others),
        Link::Serve,
    ];

    fn slot(self) -> usize {
        match self {
            Link::Class(c) => usize::from(c.port_offset()),
            Link::Serve => usize::from(SERVE_OFFSET),
        }
    }
}

/// The storage node could not take a message: its address, for the error reply.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage node {endpoint} is unreachable ({reason})")]
pub struct Unreachable {
    pub endpoint: String,
    pub reason: String,
}

/// The DEALERs connected to one storage node.
pub struct NodeLinks {
    sockets: Vec<zmq::Socket>,
    endpoints: Vec<String>,
    down: [bool; 5],
}

impl NodeLinks {
    /// Connects to the node at `host` with class ports `base..base+3` and serve at `base+4`,
    /// with the security `auth`. Connecting never waits for the node: ZeroMQ reconnects in the
    /// background.
    pub fn connect(
        ctx: &zmq::Context,
        host: &str,
        base: u16,
        auth: &ClientAuth,
    ) -> Result<NodeLinks, SocketError> {
        let mut sockets = Vec::with_capacity(5);
        let mut endpoints = Vec::with_capacity(5);
        for link in Link::ALL {
            let ep = endpoint(host, u32::from(base) + link.slot() as u32);
            sockets.push(dealer_with(ctx, &ep, auth)?);
            endpoints.push(ep);
        }
        Ok(NodeLinks {
            sockets,
            endpoints,
            down: [false; 5],
        })
    }

    /// The sockets, in the order of [`Link::ALL`] (for polling).
    pub fn sockets(&self) -> &[zmq::Socket] {
        &self.sockets
    }

    /// The address of `link`.
    pub fn endpoint(&self, link: Link) -> &str {
        &self.endpoints[link.slot()]
    }

    /// Sends `msg` (and `data`) on `link` without blocking. A failure means the node is away;
    /// the first failure after a success is logged as an outage, the first success after an
    /// outage as a recovery.
    pub fn send(
        &mut self,
        link: Link,
        msg: &Message,
        data: Option<zmq::Message>,
    ) -> Result<(), Unreachable> {
        let slot = link.slot();
        match codec::send(&self.sockets[slot], None, msg, data) {
            Ok(()) => {
                if std::mem::replace(&mut self.down[slot], false) {
                    tracing::info!("storage node {} is reachable again", self.endpoints[slot]);
                }
                Ok(())
            }
            Err(e) => {
                let reason = match e {
                    zmq::Error::EAGAIN => "not connected".to_string(),
                    other => other.to_string(),
                };
                if !std::mem::replace(&mut self.down[slot], true) {
                    tracing::warn!(
                        "storage node {} is unreachable ({reason}); requests for it are \
                         refused until it is back",
                        self.endpoints[slot]
                    );
                }
                Err(Unreachable {
                    endpoint: self.endpoints[slot].clone(),
                    reason,
                })
            }
        }
    }
}
