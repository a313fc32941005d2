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

/// The rule, for slots their owner counts (the node's uploads, its reads): the parties waiting,
/// and whether one more slot may go to a party given what every party holds.
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
    /// `holders` yields the party of each slot taken (walked only while some party waits);
    /// a refused party counts as waiting.
    pub fn admit<'a>(
        &mut self,
        party: &P,
        holders: impl IntoIterator<Item = &'a P>,
        in_use: usize,
        now: Instant,
    ) -> Result<(), Refused>
    where
        P: 'a,
    {
        self.waiting
            .retain(|_, at| now.saturating_duration_since(*at) < WAITING_FOR);
        let refused = if in_use >= self.max {
            Some(Refused::Full)
        } else if self.waiting.keys().any(|p| p != party) {
            let mut held: HashMap<&P, usize> = HashMap::new();
            for p in holders {
                *held.entry(p).or_insert(0) += 1;
            }
            let mut parties: HashSet<&P> =
                held.keys().copied().chain(self.waiting.keys()).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots held by party, as their owner counts them.
    #[derive(Default)]
    struct Held(HashMap<u8, usize>);

    impl Held {
        fn take(&mut self, share: &mut Share<u8>, party: u8, now: Instant) -> Result<(), Refused> {
            let in_use = self.0.values().sum();
            let holders = self.0.iter().flat_map(|(p, n)| std::iter::repeat_n(p, *n));
            share.admit(&party, holders, in_use, now)?;
            *self.0.entry(party).or_insert(0) += 1;
            Ok(())
        }

        fn free(&mut self, party: u8, n: usize) {
            let held = self.0.get_mut(&party).unwrap();
            *held -= n;
            if *held == 0 {
                self.0.remove(&party);
            }
        }
    }

    #[test]
    fn a_lone_party_takes_every_slot() {
        let (mut share, mut held) = (Share::new(4), Held::default());
        let now = Instant::now();
        for _ in 0..4 {
            held.take(&mut share, 0, now).unwrap();
        }
        assert_eq!(held.take(&mut share, 0, now), Err(Refused::Full));
        held.free(0, 1);
        // It waited itself, but nobody else does: it takes the slot back.
        held.take(&mut share, 0, now).unwrap();
        assert_eq!(held.0[&0], 4);
    }

    #[test]
    fn a_waiting_party_holds_the_busy_one_to_its_share_until_it_stops_waiting() {
        let (mut share, mut held) = (Share::new(8), Held::default());
        let t0 = Instant::now();
        for _ in 0..8 {
            held.take(&mut share, 0, t0).unwrap();
        }
        // Party 1 finds the node full, and waits.
        assert_eq!(held.take(&mut share, 1, t0), Err(Refused::Full));
        // A slot frees: party 0 (over its half) may not take it, party 1 may.
        held.free(0, 1);
        assert_eq!(
            held.take(&mut share, 0, t0),
            Err(Refused::OverShare { share: 4 })
        );
        held.take(&mut share, 1, t0).unwrap();
        // Party 0 drains below its half; both wait now, so each keeps to its share.
        held.free(0, 4);
        assert_eq!(held.0[&0], 3);
        held.take(&mut share, 0, t0).unwrap();
        assert!(held.take(&mut share, 0, t0).is_err(), "party 0 holds its 4");
        for _ in 0..3 {
            held.take(&mut share, 1, t0).unwrap();
        }
        assert_eq!(held.take(&mut share, 1, t0), Err(Refused::Full));
        // Long after the last refusal, a lone party may take everything again.
        held.free(0, 4);
        held.free(1, 4);
        let later = t0 + WAITING_FOR + Duration::from_secs(1);
        for _ in 0..8 {
            held.take(&mut share, 0, later).unwrap();
        }
    }
}
