//! `status` on a front port (`dfs status`): the broker asks its storage node how it is (a
//! `status` on the serve port), waits a bounded time for its `node_status`, and answers
//! `broker_status` with its own report and the node's, or why the node gave none.

use crate::export::Totals;
use crate::links::Link;
use crate::relay::Relay;
use crate::table::Requester;
use schema::status::{BrokerReport, DiskSpace, NodeReport, SOFTWARE_VERSION};
use schema::Message;
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
}

impl Default for StatusDesk {
    fn default() -> StatusDesk {
        StatusDesk {
            started: Instant::now(),
            data: PathBuf::new(),
            totals: Arc::default(),
            waiting: HashMap::new(),
        }
    }
}

impl Relay {
    /// A `status` request from a front peer: ask the node, or answer at once without it.
    pub(crate) fn status_request(&mut self, req: Requester, wait_ms: Option<u32>) {
        let wait = wait_ms.map_or(DEFAULT_WAIT, |ms| {
            Duration::from_millis(u64::from(ms)).min(MAX_WAIT)
        });
        if self.status.waiting.len() >= MAX_WAITING {
            let why = "the broker has too many status requests waiting; try again".to_string();
            return self.status_answer(&req, None, Some(why));
        }
        let bid = self.table.alloc();
        match self.node.send(
            Link::Serve,
            &Message::Status {
                id: bid,
                wait_ms: None,
            },
            None,
        ) {
            Ok(()) => {
                let deadline = Instant::now() + wait;
                self.status.waiting.insert(bid, (req, deadline));
            }
            Err(e) => self.status_answer(&req, None, Some(e.to_string())),
        }
    }

    /// Whether `bid` is a `status` this broker sent to the node.
    pub(crate) fn status_owns(&self, bid: u64) -> bool {
        self.status.waiting.contains_key(&bid)
    }

    /// The node's answer to status request `bid`.
    pub(crate) fn on_status_reply(&mut self, bid: u64, msg: Message) {
        let Some((req, _)) = self.status.waiting.remove(&bid) else {
            return;
        };
        let endpoint = self.node.endpoint(Link::Serve).to_string();
        match msg {
            Message::NodeStatus { node, .. } => self.status_answer(&req, Some(node), None),
            Message::Error { message, .. } => {
                let why = format!("storage node {endpoint} refused status: {message}");
                self.status_answer(&req, None, Some(why));
            }
            other => {
                let why = format!(
                    "storage node {endpoint} answered status with {}",
                    other.kind()
                );
                self.status_answer(&req, None, Some(why));
            }
        }
    }

    /// Answers the status requests whose node did not answer in time.
    pub(crate) fn status_tick(&mut self) {
        if self.status.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        let late: Vec<u64> = self
            .status
            .waiting
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(bid, _)| *bid)
            .collect();
        for bid in late {
            if let Some((req, _)) = self.status.waiting.remove(&bid) {
                let why = format!(
                    "storage node {} did not answer status in time",
                    self.node.endpoint(Link::Serve)
                );
                self.status_answer(&req, None, Some(why));
            }
        }
    }

    /// On stop: answers every status request still waiting, so no client waits in vain.
    pub(crate) fn status_stop(&mut self) {
        let waiting: Vec<Requester> = self.status.waiting.drain().map(|(_, (r, _))| r).collect();
        for req in waiting {
            let why = "the broker is stopping before its storage node answered".to_string();
            self.status_answer(&req, None, Some(why));
        }
    }

    /// Sends `broker_status` to `req`.
    fn status_answer(
        &mut self,
        req: &Requester,
        node: Option<Box<NodeReport>>,
        why: Option<String>,
    ) {
        let broker = self.broker_report();
        let msg = Message::BrokerStatus {
            id: req.id,
            broker: Box::new(broker),
            node,
            node_error: why,
        };
        self.answer(req, msg, None);
    }

    /// The broker's own report.
    fn broker_report(&self) -> BrokerReport {
        let (index_entries, index_bytes) = self.status.totals.get();
        let disk =
            disk::space::of(&self.status.data).map(|(free, total)| DiskSpace { free, total });
        let disk = disk.unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the free space of {}: {e}",
                self.status.data.display()
            );
            DiskSpace::default()
        });
        BrokerReport {
            version: SOFTWARE_VERSION.to_string(),
            uptime: self.status.started.elapsed().as_secs(),
            data: self.status.data.display().to_string(),
            index_entries,
            index_bytes,
            disk,
            in_flight: self.table.len() as u64,
            rebuilding: self.rebuild.is_active(),
            storage: self.node.endpoint(Link::Serve).to_string(),
        }
    }
}
