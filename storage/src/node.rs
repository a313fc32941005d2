//! The node: its sockets, the loop that owns them, and the dispatch of each message.

use crate::credit::Ledger;
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::read::Read;
use crate::sync::{self, SyncPool, Work};
use crate::upload::{Pending, Upload};
use crate::{change, list, Args, StoreError};
use anyhow::Context as _;
use daemon::{Shutdown, POLL_MS};
use net::security::{Domain, Gate, ServerOptions, ServerSecurity};
use schema::codec::{self, Inbound};
use schema::limits::IDLE_TIMEOUT;
use schema::route::SERVE_OFFSET;
use schema::{Class, ErrorCode, Message};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Index of the serve socket among the node's sockets (after the four class sockets).
pub const SERVE: usize = SERVE_OFFSET as usize;

/// A transfer is named by the socket it runs on, the peer's identity and the request id.
pub type Key = (usize, Vec<u8>, u64);

/// Most messages read from one socket before looking at the others.
const BATCH: usize = 256;

/// A bound storage node, ready to serve.
pub struct Node {
    ctx: zmq::Context,
    layout: Arc<Layout>,
    sockets: Vec<zmq::Socket>,
    results: zmq::Socket,
    results_endpoint: String,
    base_port: u16,
    sync_threads: usize,
    metrics: Metrics,
    gate: Gate,
    /// The ZAP handler, when the ports use CURVE; dropped after the sockets.
    security: ServerSecurity,
    _lock: File,
}

impl Node {
    /// Prepares the root (folders, lock, leftovers of interrupted uploads, extended attribute
    /// check) and binds the five ROUTERs on consecutive ports.
    pub fn bind(ctx: &zmq::Context, args: &Args) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&args.root)
            .with_context(|| format!("cannot create the storage root {}", args.root.display()))?;
        let root = args
            .root
            .canonicalize()
            .with_context(|| format!("cannot resolve the storage root {}", args.root.display()))?;
        let layout = Arc::new(Layout::new(&root));
        let lock = layout.prepare()?;
        let security = ServerSecurity::start(
            ctx,
            ServerOptions {
                bind: &args.bind,
                secret_key: args.secret_key.as_deref(),
                allow: vec![(Domain::Storage, args.allow.as_deref())],
                insecure: args.insecure,
            },
        )?;
        let (sockets, base_port) = net::socket::routers_consecutive_with(
            ctx,
            &args.bind,
            args.base_port,
            SERVE as u16 + 1,
            &security.auth(Domain::Storage),
        )
        .with_context(|| {
            format!(
                "cannot bind the storage node's five ports on {} from base port {}",
                args.bind, args.base_port
            )
        })?;
        let results_endpoint = net::inproc::endpoint("storage-results");
        let results = ctx
            .socket(zmq::PULL)
            .context("cannot create the sync result socket")?;
        results.set_rcvhwm(0)?;
        results.set_linger(0)?;
        results
            .bind(&results_endpoint)
            .with_context(|| format!("cannot bind {results_endpoint}"))?;
        tracing::info!(
            root = %root.display(),
            bind = %args.bind,
            "storage node listening: mp3 :{base_port}, txt :{}, pdf :{}, others :{}, serve :{}",
            base_port + 1,
            base_port + 2,
            base_port + 3,
            base_port + 4
        );
        Ok(Node {
            ctx: ctx.clone(),
            layout,
            sockets,
            results,
            results_endpoint,
            base_port,
            sync_threads: usize::from(args.sync_threads),
            metrics: Metrics::default(),
            gate: security.gate(Domain::Storage),
            security,
            _lock: lock,
        })
    }

    /// The first of the five bound ports (mp3); reads are on `base_port() + 4`.
    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    /// The node's metrics (served with `--metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The storage root, as resolved at bind.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Serves until `stop` triggers; returns `Ok` after a clean stop. Uploads not yet durable
    /// are abandoned (their temporary files removed) and never acknowledged.
    pub fn serve(self, stop: Shutdown) -> anyhow::Result<()> {
        let pool = SyncPool::start(
            &self.ctx,
            &self.results_endpoint,
            self.layout.clone(),
            self.sync_threads,
            stop.clone(),
            &self.metrics,
        )?;
        let _security = self.security;
        let mut server = Server {
            gate: self.gate,
            sockets: self.sockets,
            layout: self.layout,
            pool: Some(pool),
            uploads: HashMap::new(),
            ledger: Ledger::default(),
            pending: HashMap::new(),
            next_ticket: 0,
            reads: HashMap::new(),
            started: Instant::now(),
            metrics: self.metrics,
        };
        let result = server.run(&self.results, &stop);
        if let Some(pool) = server.pool.take() {
            pool.stop();
        }
        tracing::info!("storage node stopped");
        result
    }
}

/// The state owned by the socket thread.
pub(crate) struct Server {
    /// Who may send on the node's ports (every port serves the broker only).
    pub(crate) gate: Gate,
    pub(crate) sockets: Vec<zmq::Socket>,
    pub(crate) layout: Arc<Layout>,
    pub(crate) pool: Option<SyncPool>,
    pub(crate) uploads: HashMap<Key, Upload>,
    pub(crate) ledger: Ledger<Key>,
    pub(crate) pending: HashMap<u64, Pending>,
    pub(crate) next_ticket: u64,
    pub(crate) reads: HashMap<Key, Read>,
    /// When the node started serving (for its uptime).
    pub(crate) started: Instant,
    pub(crate) metrics: Metrics,
}

impl Server {
    /// The poll loop: the five ROUTERs and the sync workers' results.
    fn run(&mut self, results: &zmq::Socket, stop: &Shutdown) -> anyhow::Result<()> {
        let mut last_sweep = Instant::now();
        while !stop.is_triggered() {
            let mut readable = [false; SERVE + 2];
            {
                let mut items: Vec<zmq::PollItem> = self
                    .sockets
                    .iter()
                    .chain(std::iter::once(results))
                    .map(|s| s.as_poll_item(zmq::POLLIN))
                    .collect();
                match zmq::poll(&mut items, POLL_MS) {
                    Ok(_) => {}
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => return Err(e).context("cannot poll the storage node's sockets"),
                }
                for (flag, item) in readable.iter_mut().zip(&items) {
                    *flag = item.is_readable();
                }
            }
            // Results first: a finished upload's `done` is the latency a sender waits on.
            if readable[SERVE + 1] {
                while let Some((ticket, reply)) = sync::read_result(results) {
                    self.on_result(ticket, reply);
                }
            }
            for (sock, _) in readable[..=SERVE].iter().enumerate().filter(|(_, r)| **r) {
                for _ in 0..BATCH {
                    match codec::recv(&self.sockets[sock], true, zmq::DONTWAIT) {
                        Ok(inbound) => self.handle(sock, inbound),
                        Err(zmq::Error::EAGAIN) => break,
                        Err(e) => {
                            tracing::warn!("cannot read from socket {sock}: {e}");
                            break;
                        }
                    }
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                self.sweep();
                last_sweep = Instant::now();
            }
            self.metrics.uploads.set(self.uploads.len() as i64);
            self.metrics.reads.set(self.reads.len() as i64);
        }
        Ok(())
    }

    /// Sends `msg` (and `data`) to `peer` on socket `sock`; `false` when the peer is gone.
    pub(crate) fn send(
        &self,
        sock: usize,
        peer: &[u8],
        msg: &Message,
        data: Option<zmq::Message>,
    ) -> bool {
        if let Message::Error { code, .. } = msg {
            daemon::metrics::count_error(&self.metrics.errors, daemon::metrics::code_kind(*code));
        }
        match codec::send(&self.sockets[sock], Some(peer), msg, data) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(peer = %hex(peer), "cannot send {}: {e}", msg.kind());
                false
            }
        }
    }

    /// Replies to request `id` with the error `e`.
    pub(crate) fn send_error(&self, sock: usize, peer: &[u8], id: u64, e: &StoreError) {
        tracing::debug!(peer = %hex(peer), id, "refused: {e}");
        self.send(sock, peer, &e.reply(id, self.layout.root()), None);
    }

    /// Dispatches one inbound message.
    fn handle(&mut self, sock: usize, inbound: Inbound) {
        if !self.gate.admits(&inbound) {
            return;
        }
        let Some(peer) = inbound.peer else { return };
        let msg = match inbound.msg {
            Ok(msg) => msg,
            Err(rejected) => {
                tracing::warn!(peer = %hex(&peer), "refused a message: {}", rejected.error);
                self.send(sock, &peer, &rejected.reply(), None);
                return;
            }
        };
        let data = inbound.data;
        match (sock, msg) {
            (_, Message::Ping { id }) => {
                self.send(sock, &peer, &Message::Pong { id }, None);
            }
            (SERVE, Message::Get { id, name, class }) => self.on_get(peer, id, &name, class),
            (SERVE, Message::Credit { id, chunks }) => self.on_credit(peer, id, chunks),
            (SERVE, Message::Abort { id }) => self.on_read_abort(peer, id),
            (SERVE, Message::List { id, after, limit }) => {
                let reply = match list::page(&self.layout, after.as_deref(), limit) {
                    Ok((entries, more)) => Message::Listing { id, entries, more },
                    Err(e) => e.reply(id, self.layout.root()),
                };
                self.send(sock, &peer, &reply, None);
            }
            (SERVE, Message::Check { id, after, limit }) => {
                self.submit((sock, peer, id), Work::Check { after, limit });
            }
            (SERVE, Message::Status { id, .. }) => {
                let snapshot = crate::status::Snapshot {
                    uploads: self.uploads.len() as u64,
                    reads: self.reads.len() as u64,
                    uptime: self.started.elapsed().as_secs(),
                };
                self.submit((sock, peer, id), Work::Status(snapshot));
            }
            (SERVE, other) => self.unexpected(sock, &peer, &other),
            (_, Message::Quarantine { id, class, name }) => {
                if class == Class::ALL[sock] {
                    self.submit((sock, peer, id), Work::Quarantine { class, name });
                } else {
                    let e = StoreError::Protocol(format!(
                        "quarantine of {name} ({class}) sent to the {} upload port",
                        Class::ALL[sock]
                    ));
                    self.send_error(sock, &peer, id, &e);
                }
            }
            (
                _,
                Message::Put {
                    id,
                    name,
                    size,
                    modified,
                    blake3,
                    version,
                    growing,
                },
            ) => {
                let put = crate::upload::Put {
                    growing,
                    id,
                    name,
                    size,
                    modified,
                    blake3,
                    version,
                };
                self.on_put(sock, peer, put, data);
            }
            (
                _,
                Message::Chunk {
                    id,
                    offset,
                    blake3,
                    modified,
                },
            ) => {
                if let Some(data) = data {
                    let end = crate::upload::ChunkEnd { blake3, modified };
                    self.on_chunk(sock, peer, id, offset, end, &data);
                }
            }
            (_, Message::Abort { id }) => self.on_upload_abort(sock, peer, id),
            (_, Message::Delete { id, name }) => {
                let class = Class::ALL[sock];
                let reply = match change::delete(&self.layout, class, &name) {
                    Ok(()) => Message::Done {
                        id,
                        version: 0,
                        unchanged: false,
                    },
                    Err(e) => e.reply(id, self.layout.root()),
                };
                self.send(sock, &peer, &reply, None);
            }
            (
                _,
                Message::Rename {
                    id,
                    from,
                    to,
                    blake3,
                    to_class,
                    version,
                },
            ) => {
                let class = Class::ALL[sock];
                let rename = change::Rename {
                    class,
                    from: &from,
                    to: &to,
                    blake3,
                    to_class,
                    version,
                };
                let reply = match change::rename(&self.layout, &rename) {
                    Ok(version) => Message::Done {
                        id,
                        version,
                        unchanged: false,
                    },
                    Err(e) => e.reply(id, self.layout.root()),
                };
                self.send(sock, &peer, &reply, None);
            }
            (_, other) => self.unexpected(sock, &peer, &other),
        }
    }

    /// Answers a message type this socket does not take.
    fn unexpected(&self, sock: usize, peer: &[u8], msg: &Message) {
        let port = if sock == SERVE {
            "serve port".to_string()
        } else {
            format!("{} upload port", Class::ALL[sock])
        };
        tracing::warn!(peer = %hex(peer), "refused `{}` on the {port}", msg.kind());
        let reply = Message::error(
            msg.id(),
            ErrorCode::Unexpected,
            format!("the storage node's {port} does not take `{}`", msg.kind()),
        );
        self.send(sock, peer, &reply, None);
    }

    /// Drops transfers idle for longer than [`IDLE_TIMEOUT`].
    fn sweep(&mut self) {
        let now = Instant::now();
        let idle: Vec<Key> = self
            .uploads
            .iter()
            .filter(|(_, u)| now.duration_since(u.last_seen) > IDLE_TIMEOUT)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            tracing::warn!(peer = %hex(&key.1), id = key.2, "upload idle for 30 s: dropped");
            self.drop_upload(&key);
        }
        self.grant();
        self.reads.retain(|key, r| {
            let keep = now.duration_since(r.last_seen) <= IDLE_TIMEOUT;
            if !keep {
                tracing::warn!(peer = %hex(&key.1), id = key.2, name = %r.name, "read idle for 30 s: dropped");
            }
            keep
        });
    }
}

/// A peer identity in hex, for logs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
