//! The watcher's decisions while the store behind the broker refuses changes (the state is
//! `crate::store::StoreOutage`): hold the refused names, probe, and send them again.

use super::Watcher;
use crate::store::StoreOutage;
use schema::ErrorCode;
use std::time::Instant;

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
            StoreOutage::new(now)
        });
        outage.hold(name, now);
        tracing::debug!("{name}: {why} ({code:?}); held until the store is back");
    }

    /// Lets one held name through when its probe time came; the next waits twice as long.
    pub(crate) fn store_probe(&mut self, now: Instant) {
        let Some(outage) = &mut self.store_outage else {
            return;
        };
        if let Some(name) = outage.probe(now) {
            tracing::debug!("probing the store with {name}");
            self.table.mark(&name, now);
        }
    }

    /// A change succeeded: an outage in progress is over, every held name is due now.
    pub(crate) fn store_answered(&mut self, now: Instant) {
        let Some(outage) = self.store_outage.take() else {
            return;
        };
        for name in outage.end(now) {
            self.table.mark_by(&name, now);
        }
    }
}
