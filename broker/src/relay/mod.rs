//! The broker's decisions: for each message from a front peer ([`requests`]) or from the
//! storage node ([`replies`]), what to answer, what to forward under which broker id, and what
//! to record in the index. [`Relay`] owns the state behind them (the index, the requests in
//! flight, the rebuild, fsck and status desks) but no socket: replies go into its [`Outbox`],
//! messages to the node through a [`ToNode`]. The serving loop (`serve`) owns the sockets and
//! delivers.

mod replies;
mod requests;

use crate::alarm::MassChange;
use crate::fsck_relay::Fsck;
use crate::in_flight::{Forwarded, InFlight, Op};
use crate::index::Index;
use crate::links::{NodePort, ToNode};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::owner_sync::OwnerSync;
use crate::owners::Owners;
use crate::peer::{Bids, Front, Requester};
use crate::rebuild::Rebuild;
use crate::status::{Facts, StatusDesk};
use schema::{ErrorCode, Message, Routes};
use std::time::Duration;

/// The state behind the broker's decisions, and the decisions.
pub struct Relay {
    pub(crate) index: Index,
    routes: Routes,
    /// Requests forwarded to the node and not finished.
    table: InFlight,
    bids: Bids,
    rebuild: Rebuild,
    /// The `fsck` running, if any.
    fsck: Fsck,
    /// What `status` reports, and the `status` requests waiting for the node.
    pub(crate) status: StatusDesk,
    /// Counters and histograms for `--metrics`.
    pub(crate) metrics: Metrics,
    /// How long a request may go without a message before it is dropped.
    pub(crate) idle_timeout: Duration,
    /// What to send to front peers.
    out: Outbox,
    /// Who owns each volume, and which volume each watcher connection claimed.
    owners: Owners,
    /// The owners still to be copied to the node.
    owner_sync: OwnerSync,
    /// The watchers' allow-list: which volumes each key may claim.
    pub(crate) ingest_gate: net::auth::Gate,
    /// Recent deletes and rewrites per volume, and the alarms they raised.
    alarm: MassChange,
}

/// The fsck's view of a relay (its fields, borrowed apart so the fsck can be borrowed too).
macro_rules! fsck_cx {
    ($relay:expr, $node:expr) => {
        crate::fsck_relay::Ctx {
            index: &$relay.index,
            table: &$relay.table,
            bids: &mut $relay.bids,
            node: $node,
            out: &mut $relay.out,
        }
    };
}
use fsck_cx;

impl Relay {
    /// A relay over `index`, routing by `routes`, with the volume `owners` kept in it;
    /// `rebuild` says whether the index must first be refilled from the node.
    pub fn new(index: Index, routes: Routes, rebuild: Rebuild, owners: Owners) -> Relay {
        Relay {
            index,
            routes,
            table: InFlight::default(),
            bids: Bids::default(),
            rebuild,
            fsck: Fsck::default(),
            status: StatusDesk::default(),
            metrics: Metrics::default(),
            idle_timeout: schema::limits::IDLE_TIMEOUT,
            out: Outbox::default(),
            owner_sync: OwnerSync::with_all(owners.all()),
            ingest_gate: net::auth::Gate::open(),
            owners,
            alarm: MassChange::default(),
        }
    }

    /// What the relay decided to send to front peers, for the loop to deliver.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Whether the index is being rebuilt from the node.
    pub fn is_rebuilding(&self) -> bool {
        self.rebuild.is_active()
    }

    /// Whether no forwarded request is waiting for the node.
    pub fn is_idle(&self) -> bool {
        self.table.is_empty()
    }

    /// Work on a clock: drops idle requests (when `sweep`), times out and continues the fsck,
    /// the status requests and the rebuild, and updates the gauges.
    pub fn tick(&mut self, sweep: bool, node: &mut dyn ToNode) {
        if sweep {
            self.expire_idle(node);
        }
        self.fsck.tick(&mut fsck_cx!(self, node));
        if self.status.is_waiting() {
            let facts = self.facts(node);
            self.status.tick(&facts, &mut self.out);
        }
        self.update_gauges();
        if self.rebuild.is_active() {
            self.rebuild.tick(&mut self.bids, node);
        } else if self.rebuild.just_finished() {
            if let Err(e) = self.owners.reload(&self.index) {
                tracing::error!("cannot read the volume owners rebuilt from the node: {e}");
            }
            self.out.changed();
        } else {
            self.owner_sync.tick(&mut self.bids, node);
        }
    }

    /// Abandons the streaming transfers of a vanished peer; changes already committing finish.
    pub fn drop_peer(&mut self, front: Front, peer: &[u8], node: &mut dyn ToNode) {
        if front == Front::Ingest {
            self.owners.forget(peer);
        }
        for bid in self.table.of_peer(front, peer) {
            let streaming = self.table.touch(bid).is_some_and(|p| p.op.is_streaming());
            if streaming {
                if let Some(p) = self.table.remove(bid) {
                    let _ = node.send(p.link, &Message::Abort { id: bid }, None);
                }
            }
        }
    }

    /// First step of a stop: answers the status requests still waiting and abandons the
    /// transfers still moving content; changes already committing may finish.
    pub fn begin_stop(&mut self, node: &mut dyn ToNode) {
        let facts = self.facts(node);
        self.status.stop(&facts, &mut self.out);
        for bid in self.table.bids() {
            if self.table.touch(bid).is_some_and(|p| p.op.is_streaming()) {
                self.fail(
                    bid,
                    ErrorCode::Unavailable,
                    "the broker is stopping".into(),
                    node,
                );
            }
        }
    }

    /// Last step of a stop: refuses every request the node did not finish.
    pub fn end_stop(&mut self, node: &mut dyn ToNode) {
        for bid in self.table.bids() {
            self.fail(
                bid,
                ErrorCode::Unavailable,
                "the broker stopped before the storage node answered".into(),
                node,
            );
        }
    }

    /// Drops request `bid`: an `abort` to the node if content was moving, `error` to the peer.
    fn fail(&mut self, bid: u64, code: ErrorCode, message: String, node: &mut dyn ToNode) {
        let Some(p) = self.table.remove(bid) else {
            return;
        };
        if p.op.is_streaming() {
            let _ = node.send(p.link, &Message::Abort { id: bid }, None);
        }
        self.out
            .answer(&p.req, Message::error(0, code, message), None);
    }

    /// Drops requests idle for longer than the timeout.
    fn expire_idle(&mut self, node: &mut dyn ToNode) {
        for bid in self.table.idle(self.idle_timeout) {
            let Some(p) = self.table.touch(bid) else {
                continue;
            };
            let secs = self.idle_timeout.as_secs();
            let (code, message) = match &p.op {
                Op::Put { name, .. } | Op::Get { name, .. } => (
                    ErrorCode::UnknownTransfer,
                    format!("transfer of {name} had no message for {secs} s and was dropped"),
                ),
                Op::Delete { name } | Op::Rename { from: name, .. } | Op::History { name } => (
                    ErrorCode::Unavailable,
                    format!(
                        "storage node {} did not answer about {name} within {secs} s",
                        node.endpoint(p.link)
                    ),
                ),
                Op::Past => (
                    ErrorCode::Unavailable,
                    format!(
                        "storage node {} did not answer a listing of its history within {secs} s",
                        node.endpoint(p.link)
                    ),
                ),
            };
            tracing::warn!("{message}");
            self.fail(bid, code, message, node);
        }
    }

    /// What the status report says about the rest of the broker.
    fn facts(&self, node: &dyn ToNode) -> Facts {
        Facts {
            in_flight: self.table.len() as u64,
            rebuilding: self.rebuild.is_active(),
            storage: node.endpoint(NodePort::Serve).to_string(),
            nodes: node.nodes(),
            alarms: self.alarm.alarms(std::time::Instant::now()),
            routes: self.routes.clone(),
        }
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
    fn observe_done(&mut self, p: &Forwarded) {
        let op = p.op.label();
        let took = p.started.elapsed();
        self.metrics
            .request_seconds
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
        if matches!(p.op, Op::Put { .. }) {
            self.status.note_upload(took);
        }
    }

    /// Feeds the mass-change alarm: `name` was deleted or moved away (`gone`) or rewritten.
    fn note_change(&mut self, name: &str, gone: bool) {
        let owners = &self.owners;
        let volume = schema::names::Volume::of(name, |v| owners.is_named(v));
        let index = &self.index;
        let count = || match volume.is_root() {
            false => index.count_prefix(&format!("{}/", volume.name())),
            true => {
                let named: u64 = owners
                    .named()
                    .iter()
                    .map(|v| index.count_prefix(&format!("{v}/")))
                    .sum();
                (index.len() as u64).saturating_sub(named)
            }
        };
        let now = std::time::Instant::now();
        if let Some(warning) = self.alarm.changed(volume.name(), name, gone, now, count) {
            tracing::warn!("mass change: {warning}");
            self.metrics.mass_changes.inc();
        }
    }

    /// Sends `msg` to whoever made `req`.
    fn answer(&mut self, req: &Requester, msg: Message, data: Option<zmq::Message>) {
        self.out.answer(req, msg, data);
    }
}
