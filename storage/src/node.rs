//! The node: its sockets, the loop that owns them, and the dispatch of each message.
//!
//! The loop is the only code that touches a socket. It decodes each message and hands its
//! fields to the component that owns the state ([`Uploads`], [`Reads`]), with the node's ports
//! as the [`Outbox`] their replies go out through; deletes, renames and listings it answers
//! itself (one call each, no state).

use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::past::{self, Past};
use crate::peer::hex;
use crate::read::Reads;
use crate::s3::S3;
use crate::sync::{self, Backend, RenameJob, SyncPool, Work};
use crate::upload::Uploads;
use crate::{change, list, Args, StoreError};
use anyhow::Context as _;
use daemon::{Shutdown, POLL_MS};
use net::security::{Domain, Gate, ServerOptions, ServerSecurity};
use schema::codec::{self, Inbound};
use schema::{Class, ErrorCode, Message, Routes};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::peer::{Key, SERVE};

/// Most messages read from one socket before looking at the others.
const BATCH: usize = 256;

/// A bound storage node, ready to serve.
pub struct Node {
    ctx: zmq::Context,
    layout: Arc<Layout>,
    /// The bucket, with `--backend s3://…`.
    s3: Option<Arc<S3>>,
    sockets: Vec<zmq::Socket>,
    results: zmq::Socket,
    results_endpoint: String,
    base_port: u16,
    sync_threads: usize,
    metrics: Metrics,
    gate: Gate,
    /// Which class each name routes to: a class port takes only names of its class.
    routes: Routes,
    /// The ZAP handler, when the ports use CURVE; dropped after the sockets.
    security: ServerSecurity,
    _lock: File,
}

impl Node {
    /// Prepares the root (folders, lock, leftovers of interrupted uploads, extended attribute
    /// check) and binds the five ROUTERs on consecutive ports.
    pub fn bind(ctx: &zmq::Context, args: &Args) -> anyhow::Result<Node> {
        let routes = Routes::from_option(args.routes.as_deref()).map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&args.root)
            .with_context(|| format!("cannot create the storage root {}", args.root.display()))?;
        let root = args
            .root
            .canonicalize()
            .with_context(|| format!("cannot resolve the storage root {}", args.root.display()))?;
        let layout = Arc::new(
            Layout::with_history(&root, args.keep_history).with_history_budget(args.history_budget),
        );
        let s3 = match &args.backend {
            None => None,
            Some(url) => Some(Arc::new(open_backend(url, args, &layout)?)),
        };
        let lock = layout.prepare(s3.is_none())?;
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
            s3,
            sockets,
            results,
            results_endpoint,
            base_port,
            sync_threads: usize::from(args.sync_threads),
            metrics: Metrics::default(),
            gate: security.gate(Domain::Storage),
            routes,
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
        let backend = Backend {
            layout: self.layout.clone(),
            s3: self.s3.clone(),
        };
        let pool = SyncPool::start(
            &self.ctx,
            &self.results_endpoint,
            backend,
            self.sync_threads,
            stop.clone(),
            &self.metrics,
        )?;
        let _security = self.security;
        let pruner = match &self.s3 {
            Some(s3) => s3.clone().start_pruner(stop.clone())?,
            None => crate::history::start_pruner(self.layout.history().clone(), stop.clone())?,
        };
        let mut server = Server {
            gate: self.gate,
            routes: self.routes,
            ports: Ports {
                sockets: self.sockets,
                metrics: self.metrics.clone(),
            },
            results: self.results,
            layout: self.layout.clone(),
            on_s3: self.s3.is_some(),
            uploads: Uploads::new(self.layout.clone(), Some(pool)).on_s3(self.s3.is_some()),
            reads: Reads::new(self.layout, self.metrics),
            started: Instant::now(),
        };
        let result = server.run(&stop);
        server.uploads.stop();
        if pruner.join().is_err() {
            tracing::warn!("the history prune thread panicked");
        }
        tracing::info!("storage node stopped");
        result
    }
}

/// The node's five ROUTERs, as the [`Outbox`] of the components: every reply leaves here.
struct Ports {
    sockets: Vec<zmq::Socket>,
    /// Counts the error replies sent.
    metrics: Metrics,
}

impl Outbox for Ports {
    /// Sends `msg` (and `data`) to `peer` on socket `sock`; `false` when the peer is gone.
    fn send(
        &mut self,
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
}

/// The socket loop: owns the sockets and the gate, and drives the components that own the
/// state of uploads and reads.
struct Server {
    /// Who may send on the node's ports (every port serves the broker only).
    gate: Gate,
    /// Which class each name routes to.
    routes: Routes,
    ports: Ports,
    /// The sync workers' results.
    results: zmq::Socket,
    layout: Arc<Layout>,
    /// Whether the files are in a bucket: every request that reaches them then goes to the
    /// sync workers, since each is a round trip to the store.
    on_s3: bool,
    uploads: Uploads,
    reads: Reads,
    /// When the node started serving (for its uptime).
    started: Instant,
}

impl Server {
    /// The poll loop: the five ROUTERs and the sync workers' results.
    fn run(&mut self, stop: &Shutdown) -> anyhow::Result<()> {
        let mut last_sweep = Instant::now();
        while !stop.is_triggered() {
            let mut readable = [false; SERVE + 2];
            {
                let mut items: Vec<zmq::PollItem> = self
                    .ports
                    .sockets
                    .iter()
                    .chain(std::iter::once(&self.results))
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
                while let Some((ticket, reply)) = sync::read_result(&self.results) {
                    self.on_result(ticket, reply);
                }
            }
            for (sock, _) in readable[..=SERVE].iter().enumerate().filter(|(_, r)| **r) {
                for _ in 0..BATCH {
                    match codec::recv(&self.ports.sockets[sock], true, zmq::DONTWAIT) {
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
                // Drops transfers idle for longer than `IDLE_TIMEOUT`.
                let now = Instant::now();
                self.uploads.sweep(now, &mut self.ports);
                self.reads.sweep(now);
                last_sweep = Instant::now();
            }
            let metrics = &self.ports.metrics;
            metrics.uploads.set(self.uploads.len() as i64);
            metrics.reads.set(self.reads.len() as i64);
        }
        Ok(())
    }

    /// A sync worker finished job `ticket`: forward its reply header to the requester.
    fn on_result(&mut self, ticket: u64, reply: Vec<u8>) {
        if ticket == sync::NUDGE {
            // More of a read being copied from the store has arrived.
            return self.reads.pump(&mut self.ports);
        }
        let Some(p) = self.uploads.on_result(ticket) else {
            return;
        };
        if let Some((file, entry, arrival)) = self.uploads.take_spooled(ticket) {
            // A read copied from the store: served from its temporary file from here on.
            return self
                .reads
                .serve((p.peer, p.id), file, entry, arrival, &mut self.ports);
        }
        if p.sock == SERVE {
            // A read that could not be copied from the store gives its slot back.
            self.reads.forget(&p.peer, p.id);
        }
        let sock = &self.ports.sockets[p.sock];
        if let Err(e) = codec::send_encoded(sock, Some(&p.peer), reply, None) {
            tracing::debug!(peer = %hex(&p.peer), "cannot send the result of an upload: {e}");
        }
    }

    /// Dispatches one inbound message.
    fn handle(&mut self, sock: usize, inbound: Inbound) {
        if !self.gate.admits(&inbound) {
            return;
        }
        let Some(peer) = inbound.peer else { return };
        let out = &mut self.ports;
        let msg = match inbound.msg {
            Ok(msg) => msg,
            Err(rejected) => {
                tracing::warn!(peer = %hex(&peer), "refused a message: {}", rejected.error);
                out.send(sock, &peer, &rejected.reply(), None);
                return;
            }
        };
        let data = inbound.data;
        let root = self.layout.root();
        if let Err(e) = class_rule(&self.routes, sock, &msg) {
            tracing::warn!(peer = %hex(&peer), "refused a message: {e}");
            let e = StoreError::Protocol(e.to_string());
            return out.send_error(sock, &peer, msg.id(), &e, root);
        }
        if self.on_s3 {
            if let Some((id, work)) = to_worker(sock, &msg) {
                if let (SERVE, Message::Get { sender, .. }) = (sock, &msg) {
                    if let Err(e) = self.reads.admit(&peer, id, *sender) {
                        return out.send_error(sock, &peer, id, &e, root);
                    }
                }
                return self.uploads.submit((sock, peer, id), work, out);
            }
        }
        match (sock, msg) {
            (_, Message::Ping { id }) => {
                out.send(sock, &peer, &Message::Pong { id }, None);
            }
            (
                SERVE,
                Message::Get {
                    id,
                    name,
                    class,
                    version,
                    sender,
                },
            ) => self
                .reads
                .on_get((peer, id, sender), &name, (class, version), out),
            (SERVE, Message::History { id, name }) => {
                let reply = match crate::read::history(&self.layout, &name) {
                    Ok(versions) => Message::Versions { id, name, versions },
                    Err(e) => e.reply(id, root),
                };
                out.send(sock, &peer, &reply, None);
            }
            (SERVE, Message::SetOwner { id, volume, owner }) => {
                let owners = crate::owners::Owners::new(self.layout.root());
                let reply = match owners.set(&volume, &owner) {
                    Ok(()) => Message::Done {
                        id,
                        version: 0,
                        unchanged: false,
                    },
                    Err(e) => e.reply(id, root),
                };
                out.send(sock, &peer, &reply, None);
            }
            (SERVE, Message::Owners { id }) => {
                let reply = match crate::owners::Owners::new(self.layout.root()).all() {
                    Ok(owners) => Message::Owned { id, owners },
                    Err(e) => e.reply(id, root),
                };
                out.send(sock, &peer, &reply, None);
            }
            (SERVE, Message::Credit { id, chunks }) => self.reads.on_credit(peer, id, chunks, out),
            (SERVE, Message::Abort { id }) => self.reads.on_abort(peer, id),
            (
                SERVE,
                Message::List {
                    id,
                    after,
                    limit,
                    at,
                    deleted,
                },
            ) => {
                let after = after.as_deref();
                let page = match (at, deleted) {
                    (None, false) => list::page(&self.layout, after, limit),
                    (Some(t), false) => past::page(&self.layout, Past::At(t), after, limit),
                    (None, true) => past::page(&self.layout, Past::Deleted, after, limit),
                    (Some(_), true) => Err(StoreError::Protocol(
                        "list with both at and deleted; ask for one".into(),
                    )),
                };
                let reply = match page {
                    Ok((entries, more)) => Message::Listing { id, entries, more },
                    Err(e) => e.reply(id, root),
                };
                out.send(sock, &peer, &reply, None);
            }
            (
                SERVE,
                Message::Check {
                    id,
                    after,
                    limit,
                    history,
                },
            ) => {
                let work = Work::Check {
                    after,
                    limit,
                    history,
                };
                self.uploads.submit((sock, peer, id), work, out);
            }
            (SERVE, Message::Status { id, .. }) => {
                let snapshot = crate::status::Snapshot {
                    uploads: self.uploads.len() as u64,
                    reads: self.reads.len() as u64,
                    uptime: self.started.elapsed().as_secs(),
                    routes: self.routes.table(),
                };
                self.uploads
                    .submit((sock, peer, id), Work::Status(snapshot), out);
            }
            (SERVE, other) => unexpected(out, sock, &peer, &other),
            (_, Message::Quarantine { id, class, name }) => {
                if class == Class::ALL[sock] {
                    let work = Work::Quarantine { class, name };
                    self.uploads.submit((sock, peer, id), work, out);
                } else {
                    let e = StoreError::Protocol(format!(
                        "quarantine of {name} ({class}) sent to the {} upload port",
                        Class::ALL[sock]
                    ));
                    out.send_error(sock, &peer, id, &e, root);
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
                    sender,
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
                    sender,
                };
                self.uploads.on_put(sock, peer, put, data, out);
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
                    self.uploads
                        .on_chunk((sock, peer, id), offset, end, &data, out);
                }
            }
            (_, Message::Abort { id }) => self.uploads.on_abort(sock, peer, id, out),
            (_, Message::Delete { id, name }) => {
                let class = Class::ALL[sock];
                let reply = match change::delete(&self.layout, class, &name) {
                    Ok(()) => Message::Done {
                        id,
                        version: 0,
                        unchanged: false,
                    },
                    Err(e) => e.reply(id, root),
                };
                out.send(sock, &peer, &reply, None);
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
                    Err(e) => e.reply(id, root),
                };
                out.send(sock, &peer, &reply, None);
            }
            (_, other) => unexpected(out, sock, &peer, &other),
        }
    }
}

/// A class port takes only names of its class: the `name` of a `put`, the `to` of a
/// `rename` (in `to_class`, else the port's class).
fn class_rule(
    routes: &Routes,
    sock: usize,
    msg: &Message,
) -> Result<(), schema::route::WrongClass> {
    let Some(&port) = Class::ALL.get(sock) else {
        return Ok(());
    };
    // A name that breaks the name rules is refused as such, later.
    let valid = |name: &str| schema::names::check(name).is_ok();
    match msg {
        Message::Put { name, .. } if valid(name) => routes.check(name, port),
        Message::Rename { to, to_class, .. } if valid(to) => {
            routes.check(to, to_class.unwrap_or(port))
        }
        _ => Ok(()),
    }
}

/// The job for a sync worker that `msg` on socket `sock` becomes on the S3 backend, with the
/// request id; `None` for what the socket thread handles itself (uploads, credit, pings) or
/// refuses.
fn to_worker(sock: usize, msg: &Message) -> Option<(u64, Work)> {
    let job = match (sock, msg) {
        (
            SERVE,
            Message::Get {
                id,
                name,
                class,
                version,
                ..
            },
        ) => (
            *id,
            Work::Spool {
                name: name.clone(),
                class: *class,
                version: *version,
            },
        ),
        (SERVE, Message::History { id, name }) => (*id, Work::History { name: name.clone() }),
        (SERVE, Message::SetOwner { id, volume, owner }) => (
            *id,
            Work::SetOwner {
                volume: volume.clone(),
                owner: owner.clone(),
            },
        ),
        (SERVE, Message::Owners { id }) => (*id, Work::Owners),
        (
            SERVE,
            Message::List {
                id,
                after,
                limit,
                at,
                deleted,
            },
        ) => (
            *id,
            Work::List {
                after: after.clone(),
                limit: *limit,
                past: match (at, deleted) {
                    (None, false) => None,
                    (Some(t), false) => Some(Past::At(*t)),
                    (None, true) => Some(Past::Deleted),
                    // Answered by the socket thread with its error.
                    (Some(_), true) => return None,
                },
            },
        ),
        (s, Message::Delete { id, name }) if s < SERVE => (
            *id,
            Work::Delete {
                class: Class::ALL[s],
                name: name.clone(),
            },
        ),
        (
            s,
            Message::Rename {
                id,
                from,
                to,
                blake3,
                to_class,
                version,
            },
        ) if s < SERVE => (
            *id,
            Work::Rename(RenameJob {
                class: Class::ALL[s],
                from: from.clone(),
                to: to.clone(),
                blake3: *blake3,
                to_class: *to_class,
                version: *version,
            }),
        ),
        _ => return None,
    };
    Some(job)
}

/// Opens the bucket of `--backend` and checks that it answers.
fn open_backend(url: &str, args: &Args, layout: &Layout) -> anyhow::Result<S3> {
    if args.history_budget.is_some() {
        anyhow::bail!(
            "--history-budget bounds the history on a local root; on --backend {url} the \
             store's quota bounds the bucket (set one there)"
        );
    }
    let access = crate::bucket::Access {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        ..Default::default()
    };
    let bucket =
        crate::bucket::Bucket::open(url, &access).with_context(|| format!("--backend {url}"))?;
    let tmp = layout.root().join(".dfs").join("tmp");
    let s3 = S3::new(bucket, url, &tmp, args.keep_history);
    s3.probe()
        .with_context(|| format!("the bucket of --backend {url} does not answer"))?;
    tracing::info!(backend = url, "files are kept in the bucket");
    Ok(s3)
}

/// Answers a message type this socket does not take.
fn unexpected(out: &mut impl Outbox, sock: usize, peer: &[u8], msg: &Message) {
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
    out.send(sock, peer, &reply, None);
}
