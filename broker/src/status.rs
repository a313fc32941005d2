//! `status` on a front port (`dfs status`): the broker asks its storage node how it is (a
//! `status` on the serve port), waits a bounded time for its `node_status`, and answers
//! `broker_status` with its own report and the node's, or why the node gave none.

use crate::export::Totals;
use crate::links::{NodePort, ToNode};
use crate::outbox::Outbox;
use crate::peer::{Bids, Requester};
use schema::status::{Activity, BrokerReport, DiskSpace, NodeReport, SOFTWARE_VERSION};
use schema::{Message, Routes};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the broker waits for the node when the request names no `wait_ms`.
const DEFAULT_WAIT: Duration = Duration::from_millis(2500);
/// The longest wait a request may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most `status` requests waiting for the node at once; more are answered without the node.
const MAX_WAITING: usize = 64;

/// What the broker knows for its status report, and the requests waiting for the node.
pub struct StatusDesk {
    /// When the broker started.
    started: Instant,
    /// The data folder (index and export).
    pub(crate) data: PathBuf,
    /// Files and bytes of the index, counted by the export thread.
    pub(crate) totals: Arc<Totals>,
    /// Node `status` requests in flight: broker id → who asked and until when to wait.
    waiting: HashMap<u64, (Requester, Instant)>,
    /// What was stored since the start, for the report's `activity`.
    activity: Activity,
}

/// What the status report says about the rest of the broker, gathered when one is answered.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Requests forwarded to the node and not finished.
    pub in_flight: u64,
    /// Whether the index is being rebuilt from the node.
    pub rebuilding: bool,
    /// The node's serve address.
    pub storage: String,
    /// Every node's serve address and whether it is reachable.
    pub nodes: Vec<(String, bool)>,
    /// Mass-change alarms in effect.
    pub alarms: Vec<String>,
    /// The broker's routing table.
    pub routes: Routes,
}

impl Default for StatusDesk {
    fn default() -> StatusDesk {
        StatusDesk {
            started: Instant::now(),
            data: PathBuf::new(),
            totals: Arc::default(),
            waiting: HashMap::new(),
            activity: Activity::default(),
        }
    }
}

impl StatusDesk {
    /// A `status` request from a front peer: ask the node, or answer at once without it.
    pub fn request(
        &mut self,
        req: Requester,
        wait_ms: Option<u32>,
        facts: &Facts,
        bids: &mut Bids,
        node: &mut dyn ToNode,
        out: &mut Outbox,
    ) {
        let wait = wait_ms.map_or(DEFAULT_WAIT, |ms| {
            Duration::from_millis(u64::from(ms)).min(MAX_WAIT)
        });
        if self.waiting.len() >= MAX_WAITING {
            let why = "the broker has too many status requests waiting; try again".to_string();
            return self.answer(&req, facts, None, Some(why), out);
        }
        let bid = bids.next();
        match node.send(
            NodePort::Serve,
            &Message::Status {
                id: bid,
                wait_ms: None,
            },
            None,
        ) {
            Ok(()) => {
                let deadline = Instant::now() + wait;
                self.waiting.insert(bid, (req, deadline));
            }
            Err(e) => self.answer(&req, facts, None, Some(e.to_string()), out),
        }
    }

    /// Whether `bid` is a `status` this broker sent to the node.
    pub fn owns(&self, bid: u64) -> bool {
        self.waiting.contains_key(&bid)
    }

    /// The node's answer to status request `bid`.
    pub fn on_reply(&mut self, bid: u64, msg: Message, facts: &Facts, out: &mut Outbox) {
        let Some((req, _)) = self.waiting.remove(&bid) else {
            return;
        };
        let endpoint = &facts.storage;
        match msg {
            Message::NodeStatus { node, .. } => self.answer(&req, facts, Some(node), None, out),
            Message::Error { message, .. } => {
                let why = format!("storage node {endpoint} refused status: {message}");
                self.answer(&req, facts, None, Some(why), out);
            }
            other => {
                let why = format!(
                    "storage node {endpoint} answered status with {}",
                    other.kind()
                );
                self.answer(&req, facts, None, Some(why), out);
            }
        }
    }

    /// Whether requests wait for the node.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Answers the status requests whose node did not answer in time.
    pub fn tick(&mut self, facts: &Facts, out: &mut Outbox) {
        if self.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(bid, _)| *bid)
            .collect();
        for bid in late {
            if let Some((req, _)) = self.waiting.remove(&bid) {
                let why = format!(
                    "storage node {} did not answer status in time",
                    facts.storage
                );
                self.answer(&req, facts, None, Some(why), out);
            }
        }
    }

    /// On stop: answers every status request still waiting, so no client waits in vain.
    pub fn stop(&mut self, facts: &Facts, out: &mut Outbox) {
        let waiting: Vec<Requester> = self.waiting.drain().map(|(_, (r, _))| r).collect();
        for req in waiting {
            let why = "the broker is stopping before its storage node answered".to_string();
            self.answer(&req, facts, None, Some(why), out);
        }
    }

    /// Sends `broker_status` to `req`.
    fn answer(
        &self,
        req: &Requester,
        facts: &Facts,
        node: Option<Box<NodeReport>>,
        why: Option<String>,
        out: &mut Outbox,
    ) {
        let mut broker = self.broker_report(facts);
        // A node routing otherwise refuses every name whose class the two tables disagree on.
        if let Some(node) = node.as_ref().filter(|n| !n.routes.is_empty()) {
            let differ = facts.routes.differences(&node.routes);
            if !differ.is_empty() {
                broker.alarms.push(format!(
                    "the storage node {} routes otherwise than this broker ({}) and refuses \
                     those files: give dfs storage the broker's --routes",
                    facts.storage,
                    differ.join(", ")
                ));
            }
        }
        let msg = Message::BrokerStatus {
            id: req.id,
            broker: Box::new(broker),
            node,
            node_error: why,
        };
        out.answer(req, msg, None);
    }

    /// The broker's own report.
    fn broker_report(&self, facts: &Facts) -> BrokerReport {
        let (index_entries, index_bytes) = self.totals.get();
        let disk = disk::space::of(&self.data).map(|(free, total)| DiskSpace { free, total });
        let disk = disk.unwrap_or_else(|e| {
            tracing::warn!("cannot read the free space of {}: {e}", self.data.display());
            DiskSpace::default()
        });
        BrokerReport {
            version: SOFTWARE_VERSION.to_string(),
            uptime: self.started.elapsed().as_secs(),
            data: self.data.display().to_string(),
            index_entries,
            index_bytes,
            disk,
            in_flight: facts.in_flight,
            rebuilding: facts.rebuilding,
            storage: facts.storage.clone(),
            storage_nodes: if facts.nodes.len() > 1 {
                facts
                    .nodes
                    .iter()
                    .map(|(address, reachable)| schema::status::NodeLink {
                        address: address.clone(),
                        reachable: *reachable,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            alarms: facts.alarms.clone(),
            activity: self.activity,
        }
    }

    /// Counts a new or changed content of `size` bytes stored.
    pub fn note_stored(&mut self, size: u64) {
        self.activity.stored_files += 1;
        self.activity.stored_bytes += size;
    }

    /// Counts an upload answered `done` after `took`.
    pub fn note_upload(&mut self, took: Duration) {
        self.activity.uploads += 1;
        self.activity.upload_micros += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    }
}
