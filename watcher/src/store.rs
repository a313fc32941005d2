//! Whether the store behind the broker takes changes. The broker may be up while its storage
//! node is not (or is rebuilding, or out of space): then every change comes back refused as
//! transient. That is one outage, not one per file: it is logged once, the refused names are
//! held instead of each retrying on its own, one held name at a time is let through as a probe
//! at backoff intervals, and the first change that succeeds ends the outage and lets every held
//! name through at once.

use crate::state::next_backoff;
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
    /// An outage that began `now`.
    pub fn new(now: Instant) -> StoreOutage {
        StoreOutage {
            since: now,
            held: BTreeSet::new(),
            backoff: None,
            next_probe: now,
        }
    }

    /// Holds `name` until a probe or the end of the outage; the first name held (or the first
    /// after a probe went through) sets the next probe time.
    pub fn hold(&mut self, name: &str, now: Instant) {
        if self.held.is_empty() || self.backoff.is_none() {
            let delay = next_backoff(self.backoff, PROBE_MIN, PROBE_MAX);
            self.backoff = Some(delay);
            self.next_probe = now + delay;
        }
        self.held.insert(name.to_string());
    }

    /// The held name to let through now as a probe, if its time came; the next waits twice as
    /// long.
    pub fn probe(&mut self, now: Instant) -> Option<String> {
        if self.held.is_empty() || now < self.next_probe {
            return None;
        }
        let delay = next_backoff(self.backoff, PROBE_MIN, PROBE_MAX);
        self.backoff = Some(delay);
        self.next_probe = now + delay;
        self.held.pop_first()
    }

    /// Ends the outage: logs how long it lasted and returns the held names, due now.
    pub fn end(self, now: Instant) -> BTreeSet<String> {
        tracing::info!(
            "the store takes changes again after {} s; sending the {} held changes",
            now.duration_since(self.since).as_secs(),
            self.held.len()
        );
        self.held
    }

    /// When the next held name is let through.
    pub fn next_probe(&self) -> Option<Instant> {
        (!self.held.is_empty()).then_some(self.next_probe)
    }

    /// How many names are held until the store is back.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_back_off_and_the_end_releases_every_held_name() {
        let t0 = Instant::now();
        let mut outage = StoreOutage::new(t0);
        outage.hold("a", t0);
        outage.hold("b", t0);
        assert_eq!(outage.next_probe(), Some(t0 + PROBE_MIN));
        assert_eq!(outage.probe(t0), None, "not before its time");
        let first = outage.probe(t0 + PROBE_MIN);
        assert_eq!(first.as_deref(), Some("a"));
        let wait = outage.next_probe().unwrap() - (t0 + PROBE_MIN);
        assert_eq!(wait, PROBE_MIN * 2, "the next probe waits twice as long");
        assert_eq!(outage.held_count(), 1);
        let held: Vec<String> = outage.end(t0).into_iter().collect();
        assert_eq!(held, ["b"]);
    }
}
