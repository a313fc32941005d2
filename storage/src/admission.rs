//! Slots: which party may open one more upload, or one more read, on the node.
//!
//! A node takes at most [`MAX_UPLOADS`](crate::upload::MAX_UPLOADS) uploads at once (receiving
//! or committing) and [`MAX_READS`](crate::read::MAX_READS) reads. Taken first come, first
//! served, one busy party (a watcher with a deep backlog, a fetcher with many large files)
//! refills every slot the moment one frees and keeps every other party at `busy` for as long
//! as its work lasts. So a party refused a slot counts as *waiting* for [`WAITING_FOR`]; while
//! any party waits, no party may hold more than its share of the slots (the slots divided by
//! the parties holding slots or waiting), and a party over its share is refused too. Once
//! nobody has waited for a while, a lone party may take every slot again.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a party refused a slot counts as waiting for one. Longer than a refused sender's
/// longest pause between tries (the watcher's probes back off to 5 s).
pub const WAITING_FOR: Duration = Duration::from_secs(10);

/// Why a transfer was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is taken.
    Full,
    /// Other parties wait, and this one already holds its share of `share` slots.
    OverShare { share: usize },
}

/// The rule itself, for slots counted by their owner: the parties waiting, and whether one
/// more slot may go to a party given what every party holds.
#[derive(Debug)]
pub struct Share<P> {
    max: usize,
    /// Parties refused a slot, and when last.
    waiting: HashMap<P, Instant>,
}

impl<P: Clone + Eq + Hash> Share<P> {
    /// The rule for `max` slots.
    pub fn new(max: usize) -> Share<P> {
        Share {
            max,
            waiting: HashMap::new(),
        }
    }

    /// Whether `party` may take one more slot at `now`, when `in_use` slots are taken and
    /// `held` says how many each party holds; a refused party counts as waiting.
    pub fn admit(
        &mut self,
        party: &P,
        held: &HashMap<P, usize>,
        in_use: usize,
        now: Instant,
    ) -> Result<(), Refused> {
        self.waiting
            .retain(|_, at| now.saturating_duration_since(*at) < WAITING_FOR);
        let refused = if in_use >= self.max {
            Some(Refused::Full)
        } else if self.waiting.keys().any(|p| p != party) {
            let mut parties: HashSet<&P> = held.keys().chain(self.waiting.keys()).collect();
            parties.insert(party);
            let share = (self.max / parties.len().max(1)).max(1);
            let mine = held.get(party).copied().unwrap_or(0);
            (mine >= share).then_some(Refused::OverShare { share })
        } else {
            None
        };
        match refused {
            Some(why) => {
                self.waiting.insert(party.clone(), now);
                Err(why)
            }
            None => Ok(()),
        }
    }
}

/// The upload slots of one node, by party, keyed by transfer.
#[derive(Debug)]
pub struct Admission<K, P> {
    share: Share<P>,
    party_of: HashMap<K, P>,
    open: HashMap<P, usize>,
}

impl<K: Clone + Eq + Hash, P: Clone + Eq + Hash> Admission<K, P> {
    /// Slots for `max` uploads.
    pub fn new(max: usize) -> Admission<K, P> {
        Admission {
            share: Share::new(max),
            party_of: HashMap::new(),
            open: HashMap::new(),
        }
    }

    /// Admits upload `key` of `party` at `now`, when `in_use` slots are taken (uploads and the
    /// node's other jobs); a refused party counts as waiting.
    pub fn admit(&mut self, key: K, party: P, in_use: usize, now: Instant) -> Result<(), Refused> {
        self.share.admit(&party, &self.open, in_use, now)?;
        *self.open.entry(party.clone()).or_insert(0) += 1;
        self.party_of.insert(key, party);
        Ok(())
    }

    /// Frees the slot of `key` (finished, failed or dropped); a key never admitted is ignored.
    pub fn release(&mut self, key: &K) {
        let Some(party) = self.party_of.remove(key) else {
            return;
        };
        if let Some(n) = self.open.get_mut(&party) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&party);
            }
        }
    }

    /// Slots held by `party`.
    #[cfg(test)]
    fn held(&self, party: &P) -> usize {
        self.open.get(party).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_party_takes_every_slot() {
        let mut a: Admission<u32, u8> = Admission::new(4);
        let now = Instant::now();
        for k in 0..4 {
            a.admit(k, 0, k as usize, now).unwrap();
        }
        assert_eq!(a.admit(4, 0, 4, now), Err(Refused::Full));
        a.release(&0);
        assert_eq!(a.held(&0), 3);
        // It waited itself, but nobody else does: it takes the slot back.
        a.admit(5, 0, 3, now).unwrap();
        a.release(&99);
        assert_eq!(a.held(&0), 4);
    }

    #[test]
    fn a_waiting_party_holds_the_busy_one_to_its_share_until_it_stops_waiting() {
        let mut a: Admission<u32, u8> = Admission::new(8);
        let t0 = Instant::now();
        for k in 0..8 {
            a.admit(k, 0, k as usize, t0).unwrap();
        }
        // Party 1 finds the node full, and waits.
        assert_eq!(a.admit(100, 1, 8, t0), Err(Refused::Full));
        // A slot frees: party 0 (over its half) may not take it, party 1 may.
        a.release(&0);
        assert_eq!(a.admit(8, 0, 7, t0), Err(Refused::OverShare { share: 4 }));
        a.admit(101, 1, 7, t0).unwrap();
        // Party 0 drains to its half; both wait now, so each keeps to its share.
        for k in 1..5 {
            a.release(&k);
        }
        assert_eq!(a.held(&0), 3);
        a.admit(9, 0, 4, t0).unwrap();
        assert!(a.admit(10, 0, 5, t0).is_err(), "party 0 holds its 4");
        for k in 0..3 {
            a.admit(102 + k, 1, 5 + k as usize, t0).unwrap();
        }
        assert!(a.admit(105, 1, 8, t0).is_err(), "the node is full");
        // Long after the last refusal, a lone party may take everything again.
        for k in [5, 6, 7, 9, 101, 102, 103, 104] {
            a.release(&k);
        }
        let later = t0 + WAITING_FOR + Duration::from_secs(1);
        for k in 0..8 {
            a.admit(200 + k, 0, k as usize, later).unwrap();
        }
    }
}
