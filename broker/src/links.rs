//! The broker's links to the storage node: one DEALER per class port and one to the serve port,
//! with outage bookkeeping so an unreachable node is logged once, not once per file.

use net::security::{ClientAuth, HandshakeProbe};
use net::socket::{dealer_watched, endpoint, reconnect, SocketError};
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

    /// Every node's serve address, and whether it took the last message sent to it.
    fn nodes(&self) -> Vec<(String, bool)> {
        vec![(self.endpoint(NodePort::Serve).to_string(), true)]
    }
}

/// The DEALERs connected to the storage nodes: five a node (its four class ports and its serve
/// port), node after node. Several nodes share one backend (an S3 bucket, CONTRACT §9), so any
/// of them can take any request: a request goes to the node its id points at, or, when that
/// one is away, to the next that takes it. All messages of one transfer carry the same id, so
/// they go to the same node while the set of nodes that answer stays the same.
pub struct NodeLinks {
    /// Every socket, node after node, in the order of [`NodePort::ALL`] within a node.
    sockets: Vec<zmq::Socket>,
    endpoints: Vec<String>,
    down: Vec<bool>,
    /// Handshake failures of each socket (the node refused the broker's key, ...).
    probes: Vec<HandshakeProbe>,
    /// When to connect a refused socket again.
    retry_at: Vec<Option<Instant>>,
    /// Whether the refusal of each node was logged (once until it admits the broker).
    refused_warned: Vec<bool>,
    /// Whether each socket's node is connected, as its monitor last said.
    connected: Vec<Option<bool>>,
}

/// Sockets per node.
const PER_NODE: usize = NodePort::ALL.len();

impl NodeLinks {
    /// Connects to the nodes `nodes` (host, base port: class ports `base..base+3`, serve at
    /// `base+4`), each with its security. Connecting never waits for a node: ZeroMQ reconnects
    /// in the background.
    pub fn connect(
        ctx: &zmq::Context,
        nodes: &[(String, u16, ClientAuth)],
    ) -> Result<NodeLinks, SocketError> {
        let mut sockets = Vec::with_capacity(PER_NODE * nodes.len());
        let mut endpoints = Vec::with_capacity(PER_NODE * nodes.len());
        let mut probes = Vec::with_capacity(PER_NODE * nodes.len());
        for (host, base, auth) in nodes {
            for link in NodePort::ALL {
                let ep = endpoint(host, u32::from(*base) + link.slot() as u32);
                let (sock, probe) = dealer_watched(ctx, &ep, auth)?;
                sockets.push(sock);
                probes.push(probe);
                endpoints.push(ep);
            }
        }
        let n = sockets.len();
        Ok(NodeLinks {
            sockets,
            endpoints,
            down: vec![false; n],
            probes,
            retry_at: vec![None; n],
            refused_warned: vec![false; nodes.len()],
            connected: vec![None; n],
        })
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.sockets.len() / PER_NODE
    }

    /// The node port of the socket at `index` of [`NodeLinks::sockets`], and its address.
    pub fn port_of(&self, index: usize) -> (NodePort, &str) {
        (NodePort::ALL[index % PER_NODE], &self.endpoints[index])
    }

    /// Looks for refused handshakes (logged once a node) and connects refused sockets again
    /// after [`HANDSHAKE_RETRY`]: libzmq itself gives up on them, and the node may admit the
    /// broker after a reload of its allow-list.
    pub fn check_handshakes(&mut self, now: Instant) {
        for slot in 0..self.sockets.len() {
            let failure = self.probes[slot].take_failure();
            self.connected[slot] = self.probes[slot].connected();
            if let Some(why) = failure {
                if !std::mem::replace(&mut self.refused_warned[slot / PER_NODE], true) {
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

    /// The sockets, node after node, in the order of [`NodePort::ALL`] within a node (for
    /// polling; [`NodeLinks::port_of`] names each).
    pub fn sockets(&self) -> &[zmq::Socket] {
        &self.sockets
    }

    /// Sends on the socket at `slot`; logs the first failure after a success as an outage of
    /// that port, the first success after an outage as a recovery.
    /// A message the socket did not take at all comes back with its data, for another node.
    fn send_on(
        &mut self,
        slot: usize,
        msg: &Message,
        data: Option<zmq::Message>,
    ) -> Result<(), (Unreachable, Option<zmq::Message>)> {
        match codec::try_send(&self.sockets[slot], msg, data) {
            Ok(()) => {
                self.refused_warned[slot / PER_NODE] = false;
                if std::mem::replace(&mut self.down[slot], false) {
                    tracing::info!("storage node {} is reachable again", self.endpoints[slot]);
                }
                Ok(())
            }
            Err((e, spare)) => {
                let reason = match e {
                    zmq::Error::EAGAIN => "not connected".to_string(),
                    other => other.to_string(),
                };
                if !std::mem::replace(&mut self.down[slot], true) {
                    tracing::warn!(
                        "storage node {} is unreachable ({reason}); its requests go to the \
                         other nodes, or are refused until one is back",
                        self.endpoints[slot]
                    );
                }
                let why = Unreachable {
                    endpoint: self.endpoints[slot].clone(),
                    reason,
                };
                Err((why, spare))
            }
        }
    }
}

impl ToNode for NodeLinks {
    /// The serve address of each node, and whether it took the last message sent to it (any
    /// of its ports).
    fn nodes(&self) -> Vec<(String, bool)> {
        (0..self.nodes())
            .map(|n| {
                let serve = n * PER_NODE + NodePort::Serve.slot();
                // The serve port's connection, as its monitor saw it last (check_handshakes
                // reads the events every sweep); before any event, its last send.
                let up = self.connected[serve].unwrap_or(!self.down[serve]);
                (self.endpoints[serve].clone(), up)
            })
            .collect()
    }

    /// The address of `link` on the first node that was reachable last (for logs).
    fn endpoint(&self, link: NodePort) -> &str {
        let up = (0..self.nodes())
            .map(|n| n * PER_NODE + link.slot())
            .find(|&slot| !self.down[slot])
            .unwrap_or(link.slot());
        &self.endpoints[up]
    }

    /// Sends `msg` (and `data`) on `link` of the node its id points at, or of the next node
    /// that takes it, without blocking. Fails when no node takes it.
    fn send(
        &mut self,
        link: NodePort,
        msg: &Message,
        data: Option<zmq::Message>,
    ) -> Result<(), Unreachable> {
        let nodes = self.nodes();
        let first = (msg.id() % nodes as u64) as usize;
        let with_data = data.is_some();
        let mut data = data;
        let mut last = None;
        for k in 0..nodes {
            let slot = ((first + k) % nodes) * PER_NODE + link.slot();
            match self.send_on(slot, msg, data) {
                Ok(()) => return Ok(()),
                // A message taken in part (ZeroMQ takes all of it or none) goes nowhere else.
                Err((why, None)) if with_data => return Err(why),
                Err((why, spare)) => {
                    last = Some(why);
                    data = spare;
                }
            }
        }
        Err(last.expect("at least one storage node"))
    }
}
