//! The watcher's decisions about files being written (see `crate::follow` for the rules and
//! the state): when to look, when to start, finish or give up a growing upload.

use super::Watcher;
use crate::follow::{FollowLook, FOLLOW_LOOK, FOLLOW_MIN, FOLLOW_POLL};
use crate::local::{look, Look};
use crate::transfer::{Change, Outgoing, Stall};
use schema::names;
use std::time::Instant;

impl Watcher {
    /// A write event for `name`: look at it soon to decide whether to follow it.
    pub(crate) fn may_follow(&mut self, name: &str, now: Instant) {
        if !self.follow.looks.contains_key(name) && !self.follow.unfollowed.contains(name) {
            let look = FollowLook {
                at: now + FOLLOW_LOOK,
                until: now + self.settings.debounce,
                size: None,
            };
            self.follow.looks.insert(name.to_string(), look);
        }
    }

    /// The writer closed `name`: a growing upload of it is finished (its size is final).
    pub(crate) fn writer_closed(&mut self, name: &str, now: Instant) {
        self.follow.looks.remove(name);
        self.follow.unfollowed.remove(name);
        if let Some(id) = self.open_growing(name) {
            self.finish_growing(id, now);
        }
    }

    /// `name` was removed or moved away: a growing upload of it is given up.
    pub(crate) fn writer_gone(&mut self, name: &str, now: Instant) {
        self.follow.looks.remove(name);
        self.follow.unfollowed.remove(name);
        if let Some(id) = self.open_growing(name) {
            self.tear(id, "it was removed or moved while being written", now);
        }
    }

    /// The id of the open growing upload of `name`, if any.
    fn open_growing(&self, name: &str) -> Option<u64> {
        let id = self.table.flight_of(name)?;
        self.flights
            .upload(id)
            .is_some_and(Outgoing::is_open)
            .then_some(id)
    }

    /// Finishes growing upload `id` and sends what its credit allows.
    fn finish_growing(&mut self, id: u64, now: Instant) {
        let finished = match self.flights.upload_mut(id) {
            Some(up) => up.finish(),
            None => return,
        };
        match finished {
            Ok(()) => self.pump_upload(id, now),
            Err(why) => self.tear(id, &why.to_string(), now),
        }
    }

    /// Gives up growing upload `id`; its file goes the usual way, and is not followed again
    /// before its writer closes it.
    fn unfollow(&mut self, id: u64, why: &str, now: Instant) {
        if let Some(up) = self.flights.upload(id) {
            self.follow.unfollowed.insert(up.name.clone());
        }
        self.tear(id, why, now);
    }

    /// Starts due follow looks, and serves the growing uploads that wait for their file.
    pub(crate) fn follow(&mut self, now: Instant) {
        if !self.follow.looks.is_empty() {
            let due: Vec<String> = self
                .follow
                .looks
                .iter()
                .filter(|(_, look)| look.at <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for name in due {
                let Some(look) = self.follow.looks.remove(&name) else {
                    continue;
                };
                if let Some(size) = self.start_growing(&name, look.size, now) {
                    if now < look.until {
                        let again = FollowLook {
                            at: now + FOLLOW_LOOK,
                            size: Some(size),
                            ..look
                        };
                        self.follow.looks.insert(name, again);
                    }
                }
            }
        }
        let waiting = self.flights.starved_growing();
        let quiet = self.settings.debounce;
        for id in waiting {
            self.pump_upload(id, now);
            let Some(up) = self.flights.upload(id) else {
                continue;
            };
            let stall = up.stall(now, quiet);
            match stall {
                Stall::Wait => {}
                Stall::Quiet => self.finish_growing(id, now),
                Stall::Slow => self.unfollow(id, "it grows too slowly to follow", now),
            }
        }
    }

    /// When `follow` has work next: a follow look, or a growing upload waiting for data.
    pub(crate) fn next_follow_wake(&self, now: Instant) -> Option<Instant> {
        let starved = self.flights.any_starved();
        let look = self.follow.looks.values().map(|l| l.at).min();
        let poll = starved.then_some(now + FOLLOW_POLL);
        look.into_iter().chain(poll).min()
    }

    /// Starts a growing upload of `name` if it is a large file still being written, larger
    /// than at the look before (`before`), and nothing else of it is under way. Returns its size
    /// when a later look may start it.
    fn start_growing(&mut self, name: &str, before: Option<u64>, now: Instant) -> Option<u64> {
        if !self.can_reconcile()
            || !self.flights.has_room()
            || self.table.in_flight(name)
            || !self.follow.writing.contains_key(name)
            || self.follow.unfollowed.contains(name)
            || self.ignores.is_ignored(name)
            || self.table.rename_target(name).is_some()
        {
            return None;
        }
        let path = names::to_path(&self.root, name).ok()?;
        let Ok(Look::File(stamp)) = look(&path) else {
            return None;
        };
        if stamp.size < FOLLOW_MIN || before.is_none_or(|b| stamp.size <= b) {
            return Some(stamp.size);
        }
        if self.table.refused(name, Some(&stamp)) {
            return None;
        }
        let file = std::fs::File::open(&path).ok()?;
        tracing::debug!("{name} is being written: sending it as it grows");
        let id = self.next_id();
        let up = Outgoing::growing(name.to_string(), stamp, file);
        let msg = up.put(id);
        self.start_change(id, Change::Put(Box::new(up)), msg, None, now);
        None
    }
}
