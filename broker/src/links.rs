//! The broker's links to the storage node: one DEALER per class port and one to the serve port,
//! with outage bookkeeping so an unreachable node is logged once, not once per file.

use net::security::{ClientAuth, HandshakeProbe};
use net::socket::{dealer_probed, endpoint, reconnect, SocketError};
use schema::codec;
use schema::route::SERVE_OFFSET;
use schema::{Class, Message};
use std::time::{Duration, Instant};

/// How long after a refused handshake the broker connects to that node port again.
const HANDSHAKE_RETRY: Duration = Duration::from_secs(2);

/// Which of the node's sockets a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodePort {
    /// The upload port of a class (puts, deletes, renames).
    Class(Class),
    /// The serve port (reads and listings).
    Serve,
}

impl NodePort {
    /// Every link, in the order of [`NodeLinks::sockets`].
    pub const ALL: [NodePort; 5] = [
        NodePort::Class(Class::Mp3),
        NodePort::Class(Class::Txt),
        NodePort::Class(Class::Pdf),
        NodePort::Class(Class::Others),
        NodePort::Serve,
    ];

    fn slot(self) -> usize {
        match self {
            NodePort::Class(c) => usize::from(c.port_offset()),
            NodePort::Serve => usize::from(SERVE_OFFSET),
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

/// Where the relay's messages to the storage node go: the node's sockets ([`NodeLinks`]) when
/// serving, a recording stand-in when its decisions are tested without sockets.
pub trait ToNode {
    /// Sends `msg` (and `data`) on `link` without blocking; fails when the node is away.
    fn send(
        &mut self,
        link: NodePort,
        msg: &Message,
        data: Option<zmq::Message>,
    ) -> Result<(), Unreachable>;

    /// The address of `link`, for logs and error messages.
    fn endpoint(&self, link: NodePort) -> &str;
}

/// The DEALERs connected to one storage node.
pub struct NodeLinks {
    sockets: Vec<zmq::Socket>,
    endpoints: Vec<String>,
    down: [bool; 5],
    /// Handshake failures of each socket (the node refused the broker's key, ...).
    probes: Vec<HandshakeProbe>,
    /// When to connect a refused socket again.
    retry_at: [Option<Instant>; 5],
    /// Whether the refusal of the node was logged (once until it admits the broker).
    refused_warned: bool,
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
        let mut probes = Vec::with_capacity(5);
        for link in NodePort::ALL {
            let ep = endpoint(host, u32::from(base) + link.slot() as u32);
            let (sock, probe) = dealer_probed(ctx, &ep, auth)?;
            sockets.push(sock);
            probes.push(probe);
            endpoints.push(ep);
        }
        Ok(NodeLinks {
            sockets,
            endpoints,
            down: [false; 5],
            probes,
            retry_at: [None; 5],
            refused_warned: false,
        })
    }

    /// Looks for refused handshakes (logged once) and connects refused sockets again after
    /// [`HANDSHAKE_RETRY`]: libzmq itself gives up on them, and the node may admit the broker
    /// after a reload of its allow-list.
    pub fn check_handshakes(&mut self, now: Instant) {
        for slot in 0..self.sockets.len() {
            if let Some(why) = self.probes[slot].take_failure() {
                if !std::mem::replace(&mut self.refused_warned, true) {
                    tracing::warn!(
                        "storage node {}: {why}; retrying every {} s (its --allow must hold \
                         this broker's public key)",
                        self.endpoints[slot],
                        HANDSHAKE_RETRY.as_secs()
                    );
                }
                self.retry_at[slot].get_or_insert(now + HANDSHAKE_RETRY);
            }
            if self.retry_at[slot].is_some_and(|t| now >= t) {
                self.retry_at[slot] = None;
                if let Err(e) = reconnect(&self.sockets[slot], &self.endpoints[slot]) {
                    tracing::warn!("{e}");
                }
            }
        }
    }

    /// The sockets, in the order of [`NodePort::ALL`] (for polling).
    pub fn sockets(&self) -> &[zmq::Socket] {
        &self.sockets
    }
}

impl ToNode for NodeLinks {
    /// The address of `link`.
    fn endpoint(&self, link: NodePort) -> &str {
        &self.endpoints[link.slot()]
    }

    /// Sends `msg` (and `data`) on `link` without blocking. A failure means the node is away;
    /// the first failure after a success is logged as an outage, the first success after an
    /// outage as a recovery.
    fn send(
        &mut self,
        link: NodePort,
        msg: &Message,
        data: Option<zmq::Message>,
    ) -> Result<(), Unreachable> {
        let slot = link.slot();
        match codec::send(&self.sockets[slot], None, msg, data) {
            Ok(()) => {
                self.refused_warned = false;
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
