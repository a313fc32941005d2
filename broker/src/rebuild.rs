//! Rebuilding the index from the storage node when the database was missing or damaged: first
//! the volume owners the node records (`owners`), then page through the node's serve port with
//! `list` and insert every entry, without blocking the serving loop (one request in flight at
//! a time, retried while the node is away).

use crate::index::Index;
use crate::links::{NodePort, ToNode};
use crate::peer::Bids;
use crate::record::Record;
use schema::{names, Message};
use std::time::{Duration, Instant};

/// Entries asked for per page. Smaller than `MAX_LIST_PAGE` so a page of long names still fits
/// in one frame under the sockets' `ZMQ_MAXMSGSIZE`.
pub const REBUILD_PAGE: u32 = 1000;

/// How long to wait for a page before asking again.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// First wait before retrying after the node was unreachable or refused; it doubles up to
/// [`RETRY_MAX`]. Short, because at start the node is usually just not connected yet.
const RETRY_MIN: Duration = Duration::from_millis(10);
/// Longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Progress of a rebuild.
#[derive(Debug, Default)]
pub struct Rebuild {
    active: bool,
    finished: bool,
    /// Whether the owners are back (they come before the first page).
    owners_done: bool,
    /// The node's cursor (`class/name` of the last entry received).
    after: Option<String>,
    /// The bid of the page request in flight and when it was sent.
    asked: Option<(u64, Instant)>,
    next_try: Option<Instant>,
    /// The last wait before a retry (doubles while the node stays away).
    retry: Option<Duration>,
    inserted: u64,
    told_unreachable: bool,
}

impl Rebuild {
    /// A rebuild to run (`needed`) or none.
    pub fn new(needed: bool) -> Rebuild {
        Rebuild {
            active: needed,
            ..Rebuild::default()
        }
    }

    /// Whether the index is still being rebuilt.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether the rebuild finished since the last call (once).
    pub fn just_finished(&mut self) -> bool {
        std::mem::take(&mut self.finished)
    }

    /// Tries again after a wait that doubles with each failure in a row.
    fn retry_later(&mut self) {
        let wait = self.retry.map_or(RETRY_MIN, |w| (w * 2).min(RETRY_MAX));
        self.retry = Some(wait);
        self.next_try = Some(Instant::now() + wait);
    }

    /// Whether `bid` is the page request in flight.
    pub fn owns(&self, bid: u64) -> bool {
        self.asked.is_some_and(|(b, _)| b == bid)
    }
}

impl Rebuild {
    /// Asks the node for the next page when none is in flight (or the last one timed out).
    pub fn tick(&mut self, bids: &mut Bids, node: &mut dyn ToNode) {
        let now = Instant::now();
        if let Some((_, sent)) = self.asked {
            if now.duration_since(sent) < PAGE_TIMEOUT {
                return;
            }
            tracing::debug!("index rebuild: no answer to a page request; asking again");
            self.asked = None;
        }
        if self.next_try.is_some_and(|t| now < t) {
            return;
        }
        let bid = bids.next();
        let msg = if self.owners_done {
            Message::list(bid, self.after.clone(), REBUILD_PAGE)
        } else {
            Message::Owners { id: bid }
        };
        match node.send(NodePort::Serve, &msg, None) {
            Ok(()) => {
                self.asked = Some((bid, now));
                self.retry = None;
            }
            Err(e) => {
                if !std::mem::replace(&mut self.told_unreachable, true) {
                    tracing::warn!(
                        "cannot rebuild the index yet: {e}; will keep trying (uploads are \
                         refused as busy until it is done)"
                    );
                }
                self.retry_later();
            }
        }
    }

    /// Takes the owners the node records.
    fn on_owners(&mut self, msg: Message, index: &Index) {
        let owners = match msg {
            Message::Owned { owners, .. } => owners,
            Message::Error { message, .. } => {
                tracing::warn!(
                    "index rebuild: the storage node did not give the owners: {message}"
                );
                self.retry_later();
                return;
            }
            other => {
                tracing::debug!("index rebuild: ignoring a {} from the node", other.kind());
                return;
            }
        };
        for (volume, owner) in &owners {
            if schema::names::Volume::named(volume).is_err() || owner.is_empty() {
                tracing::warn!("index rebuild: skipping an owner the node recorded for {volume:?}");
                continue;
            }
            if let Err(e) = index.set_owner(volume, owner) {
                tracing::error!("index rebuild: {e}");
                self.retry_later();
                return;
            }
        }
        tracing::info!(
            "index rebuild: {} volume owners back from the node",
            owners.len()
        );
        self.owners_done = true;
    }

    /// Takes a page from the node.
    pub fn on_reply(&mut self, msg: Message, index: &Index, storage: &str) {
        self.asked = None;
        if !self.owners_done {
            return self.on_owners(msg, index);
        }
        let (entries, more) = match msg {
            Message::Listing { entries, more, .. } => (entries, more),
            Message::Error { message, .. } => {
                tracing::warn!("index rebuild: the storage node refused to list: {message}");
                self.retry_later();
                return;
            }
            other => {
                tracing::debug!("index rebuild: ignoring a {} from the node", other.kind());
                return;
            }
        };
        if let Some(last) = entries.last() {
            self.after = Some(schema::page::node_cursor(last));
        }
        for e in &entries {
            if let Err(err) = names::check(&e.name) {
                tracing::warn!("index rebuild: skipping an entry the node listed: {err}");
                continue;
            }
            match index.put_if_absent(&e.name, &Record::from_entry(e)) {
                Ok(true) => self.inserted += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::error!("index rebuild: {err}");
                    self.retry_later();
                    return;
                }
            }
        }
        if more && !entries.is_empty() {
            return;
        }
        if let Err(e) = index.mark_complete() {
            tracing::error!("index rebuild: flushing failed: {e}; starting over");
            self.after = None;
            self.retry_later();
            return;
        }
        self.active = false;
        self.finished = true;
        tracing::info!(
            "rebuilt the index from the storage node {}: {} files",
            storage,
            self.inserted
        );
    }
}
