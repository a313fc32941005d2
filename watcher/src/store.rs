//! Whether the store behind the broker takes changes. The broker may be up while its storage
//! node is not (or is rebuilding, or out of space): then every change comes back refused as
//! transient. That is one outage, not one per file: it is logged once, the refused names are
//! held instead of each retrying on its own, one held name at a time is let through as a probe
//! at backoff intervals, and the first change that succeeds ends the outage and lets every held
//! name through at once.

use crate::state::next_backoff;
use crate::watcher::Watcher;
use schema::ErrorCode;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// First probe interval in a store outage (short: an outage at start, a broker still rebuilding
/// an empty index, lasts milliseconds); doubles up to [`PROBE_MAX`].
pub const PROBE_MIN: Duration = Duration::from_millis(10);
/// Longest probe interval in a store outage.
pub const PROBE_MAX: Duration = Duration::from_secs(5);

/// Whether `code` says the whole store is away, not that one file has a problem.
pub fn is_store_wide(code: ErrorCode) -> bool {
    code.retry() == schema::Retry::StoreWide
}

/// A store outage in progress.
#[derive(Debug)]
pub struct StoreOutage {
    since: Instant,
    /// Names refused during the outage, not due until a probe or the end of the outage.
    held: BTreeSet<String>,
    backoff: Option<Duration>,
    next_probe: Instant,
}

impl StoreOutage {
    /// When the next held name is let through.
    pub fn next_probe(&self) -> Option<Instant> {
        (!self.held.is_empty()).then_some(self.next_probe)
    }

    /// How many names are held until the store is back.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }
}

impl Watcher {
    /// A change of `name` was refused because the store is away: the first refusal of an
    /// outage is logged, the name is held until the store answers again.
    pub(crate) fn store_refused(&mut self, name: &str, code: ErrorCode, why: &str, now: Instant) {
        self.table.finish(name);
        if self.store_outage.is_none() {
            self.note_error(format!("{}: {why}", schema::names::escape(name)));
        }
        let outage = self.store_outage.get_or_insert_with(|| {
            tracing::warn!(
                "{}: the store behind broker {} does not take changes: {why} ({code:?}); \
                 holding changes and retrying with backoff",
                schema::names::escape(name),
                self.link.endpoint()
            );
            StoreOutage {
                since: now,
                held: BTreeSet::new(),
                backoff: None,
                next_probe: now,
            }
        });
        if outage.held.is_empty() || outage.backoff.is_none() {
            let delay = next_backoff(outage.backoff, PROBE_MIN, PROBE_MAX);
            outage.backoff = Some(delay);
            outage.next_probe = now + delay;
        }
        outage.held.insert(name.to_string());
        tracing::debug!("{name}: {why} ({code:?}); held until the store is back");
    }

    /// Lets one held name through when its probe time came; the next waits twice as long.
    pub(crate) fn store_probe(&mut self, now: Instant) {
        let Some(outage) = &mut self.store_outage else {
            return;
        };
        if outage.held.is_empty() || now < outage.next_probe {
            return;
        }
        let delay = next_backoff(outage.backoff, PROBE_MIN, PROBE_MAX);
        outage.backoff = Some(delay);
        outage.next_probe = now + delay;
        if let Some(name) = outage.held.pop_first() {
            tracing::debug!("probing the store with {name}");
            self.table.mark(&name, now);
        }
    }

    /// A change succeeded: an outage in progress is over, every held name is due now.
    pub(crate) fn store_answered(&mut self, now: Instant) {
        let Some(outage) = self.store_outage.take() else {
            return;
        };
        tracing::info!(
            "the store takes changes again after {} s; sending the {} held changes",
            now.duration_since(outage.since).as_secs(),
            outage.held.len()
        );
        for name in outage.held {
            self.table.mark_by(&name, now);
        }
    }
}
