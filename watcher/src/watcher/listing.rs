//! The broker's listing: its whole index, fetched page by page into the table before the first
//! scan, and again before each periodic rescan, so that what the watcher believes stored follows
//! what the broker holds (a name it no longer lists is sent again).

use super::{Phase, Watcher, LIST_RETRY};
use crate::state::Stored;
use schema::limits::MAX_LIST_PAGE;
use schema::{names, Message};
use std::time::Instant;

impl Watcher {
    /// Asks for the next page of the broker's listing, if one is due.
    pub(crate) fn ask_listing(&mut self, now: Instant) {
        let after = match &self.phase {
            Phase::Listing {
                after,
                pending: None,
                retry_at,
                ..
            } if now >= *retry_at => after.clone(),
            _ => return,
        };
        let id = self.next_id();
        if let Phase::Listing { pending, .. } = &mut self.phase {
            *pending = Some((id, now));
        }
        let msg = Message::list(id, after, MAX_LIST_PAGE);
        self.send(msg, None);
    }

    /// Starts a periodic refresh: the listing is fetched again, then the folder is rescanned.
    pub(crate) fn refresh_listing(&mut self, now: Instant) {
        tracing::debug!("periodic rescan: refreshing the broker's listing first");
        // The names the listing holds are marked seen; the stored names it lacks are sent again.
        self.table.begin_sweep();
        self.scans.next_full = now + self.settings.rescan_period;
        self.phase = Phase::Listing {
            after: None,
            pending: None,
            retry_at: now,
            warned: false,
            refresh: true,
        };
    }

    /// A page of the broker's listing came: record it, ask for the next, or start syncing.
    pub fn on_listing(&mut self, id: u64, entries: Vec<schema::Entry>, more: bool, now: Instant) {
        let Phase::Listing {
            after,
            pending,
            refresh,
            ..
        } = &mut self.phase
        else {
            tracing::debug!("ignoring a listing (id {id}) after start-up");
            return;
        };
        if pending.map(|(p, _)| p) != Some(id) {
            tracing::debug!("ignoring a stale listing (id {id})");
            return;
        }
        *pending = None;
        let last = entries.last().map(|e| e.name.clone());
        for e in entries {
            if names::check(&e.name).is_err() {
                tracing::warn!("broker listed a bad name {:?}; ignoring it", e.name);
                continue;
            }
            // Only this watcher's volume, by its source paths.
            let Some(local) = self.claim.local(&e.name) else {
                continue;
            };
            let local = local.to_string();
            let stored = Stored {
                size: e.size,
                modified: e.modified,
                blake3: e.blake3,
                racy: crate::state::is_racy(e.modified),
            };
            self.table.set_stored(&local, Some(stored));
        }
        if more && last.is_some() {
            *after = last;
            return;
        }
        if *refresh {
            let mut dropped = 0usize;
            for name in self.table.unseen() {
                if !self.table.in_flight(&name) {
                    self.table.set_stored(&name, None);
                    dropped += 1;
                }
            }
            if dropped > 0 {
                tracing::info!("the broker no longer holds {dropped} files; sending them again");
            }
        }
        tracing::info!(
            "broker holds {} files; comparing with {}",
            self.table.stored_count(),
            self.root.display()
        );
        self.phase = Phase::Running;
        self.full_scan(now);
    }

    /// The broker refused the listing: ask again a little later.
    pub fn listing_refused(&mut self, id: u64, message: &str, now: Instant) -> bool {
        let Phase::Listing {
            pending,
            retry_at,
            warned,
            ..
        } = &mut self.phase
        else {
            return false;
        };
        if pending.map(|(p, _)| p) != Some(id) {
            return false;
        }
        if !*warned {
            tracing::warn!("broker refused the listing: {message}; will retry");
            *warned = true;
        }
        *pending = None;
        *retry_at = now + LIST_RETRY;
        true
    }
}
