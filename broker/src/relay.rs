//! The serving loop: one thread owns the two front ROUTERs and the node DEALERs, polls them,
//! relays between them, and commits index changes in groups: the acks of every change made
//! before a flush starts go out when that flush ends, and the flush runs on its own thread
//! ([`Flusher`]) so serving never waits for the disk.

use crate::export::Exporter;
use crate::flusher::Flusher;
use crate::index::Index;
use crate::links::{Link, NodeLinks};
use crate::rebuild::Rebuild;
use crate::table::{Front, Job, Requester, Table};
use daemon::{Shutdown, POLL_MS};
use net::security::Gate;
use schema::codec;
use schema::{ErrorCode, Message, Routes};
use std::time::{Duration, Instant};

/// Most messages read from one socket in one poll round, so no socket starves the others.
const BATCH: usize = 256;

/// How long a stopping broker waits for the node to finish changes already committing.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A `done` held back until the index change it reports is flushed.
struct Ack {
    front: Front,
    peer: Vec<u8>,
    msg: Message,
}

/// Everything the serving thread owns.
pub struct Relay {
    pub(crate) ingest: zmq::Socket,
    pub(crate) fetch: zmq::Socket,
    pub(crate) node: NodeLinks,
    pub(crate) index: Index,
    pub(crate) routes: Routes,
    pub(crate) table: Table,
    pub(crate) rebuild: Rebuild,
    pub(crate) idle_timeout: Duration,
    /// The `fsck` running, if any.
    pub(crate) fsck: Option<crate::fsck_relay::FsckRun>,
    /// What `status` reports, and the `status` requests waiting for the node.
    pub(crate) status: crate::status::StatusDesk,
    /// Counters and histograms for `--metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Acks whose index changes wait for the next flush.
    acks: Vec<Ack>,
    /// Acks whose index changes the running flush makes durable.
    flushing: Vec<Ack>,
    flusher: Flusher,
    /// The index changed since the last export request.
    dirty: bool,
    /// Who may send on the ingest and fetch ports (watcher keys, fetcher keys).
    pub(crate) gates: [Gate; 2],
}

impl Relay {
    /// A relay over bound front sockets and connected node links.
    pub fn new(
        ingest: zmq::Socket,
        fetch: zmq::Socket,
        node: NodeLinks,
        index: Index,
        flusher: Flusher,
        routes: Routes,
        rebuild: Rebuild,
    ) -> Relay {
        Relay {
            ingest,
            fetch,
            node,
            index,
            routes,
            table: Table::default(),
            rebuild,
            idle_timeout: schema::limits::IDLE_TIMEOUT,
            fsck: None,
            status: crate::status::StatusDesk::default(),
            metrics: crate::metrics::Metrics::default(),
            acks: Vec::new(),
            flushing: Vec::new(),
            flusher,
            dirty: false,
            gates: [Gate::open(), Gate::open()],
        }
    }

    /// Serves until `stop`, then abandons or finishes what is in flight and flushes the index.
    pub fn run(&mut self, stop: &Shutdown, exporter: &Exporter) {
        let mut last_sweep = Instant::now();
        while !stop.is_triggered() {
            match self.round(true) {
                Ok(()) | Err(zmq::Error::EINTR) => {}
                Err(e) => {
                    tracing::warn!("polling the broker's sockets failed: {e}");
                    std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                }
            }
            if last_sweep.elapsed() >= Duration::from_millis(500) {
                last_sweep = Instant::now();
                self.expire_idle();
                self.node.check_handshakes(last_sweep);
            }
            self.fsck_tick();
            self.status_tick();
            self.update_gauges();
            if self.rebuild.is_active() {
                self.rebuild_tick();
            } else if self.rebuild.just_finished() {
                self.dirty = true;
            }
            if std::mem::take(&mut self.dirty) {
                exporter.request();
            }
        }
        self.stop();
    }

    /// One poll round: waits up to `POLL_MS`, reads what is ready (front ports too when
    /// `fronts`), then flushes the index once and sends the acks that waited for it.
    fn round(&mut self, fronts: bool) -> zmq::Result<()> {
        let mut ready = [false; 8];
        let front_events = if fronts {
            zmq::POLLIN
        } else {
            zmq::PollEvents::empty()
        };
        {
            let mut items: Vec<zmq::PollItem> = Vec::with_capacity(7);
            items.push(self.ingest.as_poll_item(front_events));
            items.push(self.fetch.as_poll_item(front_events));
            for s in self.node.sockets() {
                items.push(s.as_poll_item(zmq::POLLIN));
            }
            items.push(self.flusher.socket().as_poll_item(zmq::POLLIN));
            zmq::poll(&mut items, POLL_MS)?;
            for (r, item) in ready.iter_mut().zip(&items) {
                *r = item.is_readable();
            }
        }
        for (slot, _) in ready.iter().enumerate().take(7).filter(|(_, r)| **r) {
            for _ in 0..BATCH {
                let sock = match slot {
                    0 => &self.ingest,
                    1 => &self.fetch,
                    n => &self.node.sockets()[n - 2],
                };
                match codec::recv(sock, slot < 2, zmq::DONTWAIT) {
                    Ok(inbound) => match slot {
                        0 => self.on_front(Front::Ingest, inbound),
                        1 => self.on_front(Front::Fetch, inbound),
                        n => self.on_node(Link::ALL[n - 2], inbound),
                    },
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => {
                        tracing::warn!("reading a message failed: {e}");
                        break;
                    }
                }
            }
        }
        self.commit();
        Ok(())
    }

    /// Sends the acks of a flush that ended, and starts the next flush for the acks that came
    /// meanwhile.
    fn commit(&mut self) {
        if let Some(outcome) = self.flusher.finished() {
            self.acknowledge(outcome);
        }
        if self.acks.is_empty() || self.flusher.is_busy() {
            return;
        }
        self.dirty = true;
        self.flushing = std::mem::take(&mut self.acks);
        if !self.flusher.request() {
            self.acknowledge(Err("the index flush thread is gone".into()));
        }
    }

    /// Answers the acks of the flush that ended with `outcome`.
    fn acknowledge(&mut self, outcome: Result<(), String>) {
        let acks = std::mem::take(&mut self.flushing);
        if let Err(e) = &outcome {
            tracing::error!("flushing the index failed: {e}");
        }
        for a in acks {
            let msg = match &outcome {
                Ok(()) => a.msg,
                Err(e) => Message::error(
                    a.msg.id(),
                    ErrorCode::Io,
                    format!("the broker could not make its index durable: {e}"),
                ),
            };
            self.reply(a.front, &a.peer, &msg, None);
        }
    }

    /// Holds `msg` for `req` until the next flush.
    pub(crate) fn ack_after_flush(&mut self, req: &Requester, msg: Message) {
        self.acks.push(Ack {
            front: req.front,
            peer: req.peer.clone(),
            msg: msg.with_id(req.id),
        });
    }

    /// Sends `msg` to a front peer. A peer that is gone loses its transfers (aborted toward the
    /// node); any other failure is logged.
    pub(crate) fn reply(
        &mut self,
        front: Front,
        peer: &[u8],
        msg: &Message,
        data: Option<zmq::Message>,
    ) {
        if let Message::Error { code, .. } = msg {
            daemon::metrics::count_error(&self.metrics.errors, daemon::metrics::code_kind(*code));
        }
        self.send_frames(front, peer, codec::encode(msg), data, msg.kind());
    }

    /// Sends an encoded header (and data) to a front peer; see [`Relay::reply`].
    pub(crate) fn send_frames(
        &mut self,
        front: Front,
        peer: &[u8],
        header: Vec<u8>,
        data: Option<zmq::Message>,
        kind: &str,
    ) {
        let sock = match front {
            Front::Ingest => &self.ingest,
            Front::Fetch => &self.fetch,
        };
        match schema::codec::send_encoded(sock, Some(peer), header, data) {
            Ok(()) => {}
            Err(zmq::Error::EHOSTUNREACH) => {
                tracing::debug!("{} peer went away; dropping its transfers", front.as_str());
                self.drop_peer(front, peer);
            }
            Err(e) => {
                tracing::warn!("cannot send {kind} to a {} peer: {e}", front.as_str());
                self.drop_peer(front, peer);
            }
        }
    }

    /// Sends `msg` (with the requester's id put back) to whoever made request `req`.
    pub(crate) fn answer(&mut self, req: &Requester, msg: Message, data: Option<zmq::Message>) {
        let msg = msg.with_id(req.id);
        self.reply(req.front, &req.peer, &msg, data);
    }

    /// Abandons the streaming transfers of a vanished peer; changes already committing finish.
    fn drop_peer(&mut self, front: Front, peer: &[u8]) {
        for bid in self.table.of_peer(front, peer) {
            let streaming = self.table.touch(bid).is_some_and(|p| p.job.is_streaming());
            if streaming {
                if let Some(p) = self.table.remove(bid) {
                    let _ = self.node.send(p.link, &Message::Abort { id: bid }, None);
                }
            }
        }
    }

    /// Drops request `bid`: an `abort` to the node if content was moving, `error` to the peer.
    pub(crate) fn fail(&mut self, bid: u64, code: ErrorCode, message: String) {
        let Some(p) = self.table.remove(bid) else {
            return;
        };
        if p.job.is_streaming() {
            let _ = self.node.send(p.link, &Message::Abort { id: bid }, None);
        }
        self.answer(&p.req, Message::error(0, code, message), None);
    }

    /// Drops requests idle for longer than the timeout.
    fn expire_idle(&mut self) {
        for bid in self.table.idle(self.idle_timeout) {
            let Some(p) = self.table.touch(bid) else {
                continue;
            };
            let secs = self.idle_timeout.as_secs();
            let (code, message) = match &p.job {
                Job::Put { name, .. } | Job::Get { name, .. } => (
                    ErrorCode::UnknownTransfer,
                    format!("transfer of {name} had no message for {secs} s and was dropped"),
                ),
                Job::Delete { name } | Job::Rename { from: name, .. } => (
                    ErrorCode::Unavailable,
                    format!(
                        "storage node {} did not answer about {name} within {secs} s",
                        self.node.endpoint(p.link)
                    ),
                ),
            };
            tracing::warn!("{message}");
            self.fail(bid, code, message);
        }
    }

    /// On stop: abandons transfers still moving content, gives changes already committing a
    /// short grace to finish, refuses the rest, and flushes the index.
    fn stop(&mut self) {
        self.status_stop();
        for bid in self.table.bids() {
            if self.table.touch(bid).is_some_and(|p| p.job.is_streaming()) {
                self.fail(bid, ErrorCode::Unavailable, "the broker is stopping".into());
            }
        }
        let until = Instant::now() + STOP_GRACE;
        while !self.table.is_empty() && Instant::now() < until {
            if let Err(e) = self.round(false) {
                tracing::debug!("polling while stopping failed: {e}");
                break;
            }
        }
        for bid in self.table.bids() {
            self.fail(
                bid,
                ErrorCode::Unavailable,
                "the broker stopped before the storage node answered".into(),
            );
        }
        if let Some(outcome) = self.flusher.wait() {
            self.acknowledge(outcome);
        }
        let outcome = self.index.flush().map_err(|e| e.to_string());
        self.flushing = std::mem::take(&mut self.acks);
        self.acknowledge(outcome);
    }

    /// Sets the gauges from the state now.
    fn update_gauges(&self) {
        let (files, bytes) = self.status.totals.get();
        let m = &self.metrics;
        m.in_flight.set(self.table.len() as i64);
        m.index_entries
            .set(i64::try_from(files).unwrap_or(i64::MAX));
        m.index_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Notes in the metrics that request `p` got its final answer from the node.
    pub(crate) fn observe_done(&self, p: &crate::table::Pending) {
        let op = p.job.op();
        self.metrics
            .request_seconds
            .get_or_create(&[("op", op)])
            .observe(p.started.elapsed().as_secs_f64());
    }

    /// Marks the index as changed (an export is requested after the round).
    pub(crate) fn changed(&mut self) {
        self.dirty = true;
    }
}
