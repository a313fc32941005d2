//! Credit for uploads: who may send how many chunks.
//!
//! All transfers together hold at most `GLOBAL_WINDOW` chunks of unspent credit, so at most
//! about `GLOBAL_WINDOW * CHUNK_SIZE` bytes are ever queued toward the node, and the budget is
//! shared fairly on two levels. Each *party* (the peer an upload comes from: a broker names the
//! front peer it relays for) may hold `GLOBAL_WINDOW` divided by the parties with uploads open
//! (at least 1), and each upload its party's share divided by the party's uploads (at least 1,
//! at most `TRANSFER_WINDOW`). Parties wanting credit take turns, one grant each; within a party
//! its uploads wait in FIFO order. Every chunk that arrives returns one unit to the budget, so a
//! newcomer waits at most for one chunk of the uploads that hold credit, and one busy peer
//! cannot take the credit of the others.

use schema::limits::{GLOBAL_WINDOW, TRANSFER_WINDOW};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// What the ledger knows of one transfer.
#[derive(Debug, Clone)]
struct Account<P> {
    party: P,
    /// Credit granted and not yet spent.
    outstanding: u32,
    /// Chunks of the file not covered by any grant yet.
    ungranted: u64,
    /// Whether the transfer waits in its party's queue.
    queued: bool,
}

/// What the ledger knows of one party.
#[derive(Debug)]
struct Party<K> {
    /// Its uploads open.
    open: u32,
    /// Credit its uploads hold.
    outstanding: u32,
    /// Its uploads waiting for credit, first come first.
    waiting: VecDeque<K>,
    /// Whether it is in the turn queue.
    in_turn: bool,
}

impl<K> Party<K> {
    /// Puts the party (named `name`) in `turn` if it waits for credit and is not there yet.
    fn take_turn<P: Clone>(&mut self, name: &P, turn: &mut VecDeque<P>) {
        if !self.waiting.is_empty() && !self.in_turn {
            self.in_turn = true;
            turn.push_back(name.clone());
        }
    }
}

/// A chunk arrived for a transfer that holds no credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoCredit;

/// The credit ledger of all uploads of one node, keyed by transfer, grouped by party.
#[derive(Debug)]
pub struct Ledger<K, P> {
    accounts: HashMap<K, Account<P>>,
    parties: HashMap<P, Party<K>>,
    /// Parties with uploads waiting, in turn.
    turn: VecDeque<P>,
    in_use: u32,
    window: u32,
    global: u32,
}

impl<K: Clone + Eq + Hash, P: Clone + Eq + Hash> Default for Ledger<K, P> {
    fn default() -> Self {
        Ledger::new(TRANSFER_WINDOW, GLOBAL_WINDOW)
    }
}

impl<K: Clone + Eq + Hash, P: Clone + Eq + Hash> Ledger<K, P> {
    /// A ledger with the given per-transfer and global windows.
    pub fn new(window: u32, global: u32) -> Ledger<K, P> {
        Ledger {
            accounts: HashMap::new(),
            parties: HashMap::new(),
            turn: VecDeque::new(),
            in_use: 0,
            window,
            global,
        }
    }

    /// Opens an account for a transfer of `chunks` chunks from `party`; it waits for credit.
    /// Call [`Ledger::distribute`] next.
    pub fn open(&mut self, key: K, party: P, chunks: u64) {
        self.close(&key);
        self.accounts.insert(
            key.clone(),
            Account {
                party: party.clone(),
                outstanding: 0,
                ungranted: chunks,
                queued: false,
            },
        );
        self.parties
            .entry(party)
            .or_insert_with(|| Party {
                open: 0,
                outstanding: 0,
                waiting: VecDeque::new(),
                in_turn: false,
            })
            .open += 1;
        self.enqueue(&key);
    }

    /// Puts `key` at the back of its party's queue, and its party in turn.
    fn enqueue(&mut self, key: &K) {
        let Some(acc) = self.accounts.get_mut(key) else {
            return;
        };
        acc.queued = true;
        let party = self
            .parties
            .get_mut(&acc.party)
            .expect("an account's party");
        party.waiting.push_back(key.clone());
        party.take_turn(&acc.party, &mut self.turn);
    }

    /// Spends one unit of `key`'s credit for a chunk that arrived; the unit returns to the global
    /// budget. Call [`Ledger::distribute`] next.
    pub fn spend(&mut self, key: &K) -> Result<(), NoCredit> {
        let Some(acc) = self.accounts.get_mut(key) else {
            return Err(NoCredit);
        };
        if acc.outstanding == 0 {
            return Err(NoCredit);
        }
        acc.outstanding -= 1;
        self.in_use -= 1;
        if let Some(party) = self.parties.get_mut(&acc.party) {
            party.outstanding -= 1;
        }
        if acc.ungranted > 0 && !acc.queued {
            self.enqueue(key);
        }
        Ok(())
    }

    /// Closes `key`'s account (done, failed or dropped); its unspent credit returns to the budget.
    pub fn close(&mut self, key: &K) {
        let Some(acc) = self.accounts.remove(key) else {
            return;
        };
        self.in_use -= acc.outstanding;
        let party = self
            .parties
            .get_mut(&acc.party)
            .expect("an account's party");
        party.outstanding -= acc.outstanding;
        party.open -= 1;
        if acc.queued {
            party.waiting.retain(|k| k != key);
        }
        if party.open == 0 {
            self.parties.remove(&acc.party);
            self.turn.retain(|p| p != &acc.party);
            // The other parties' shares rise: those held back take turns again.
            for (p, party) in &mut self.parties {
                party.take_turn(p, &mut self.turn);
            }
        } else {
            // Its credit may have held the party back: it takes turns again.
            party.take_turn(&acc.party, &mut self.turn);
        }
    }

    /// Grants what the budget allows to waiting transfers, a party at a time in turn, each
    /// party's uploads first come first served. Returns the grants to send as `credit`
    /// messages.
    ///
    /// A transfer gets at most its share, its party at most the party's share, and a grant at
    /// most half of the budget still free (at least one unit): a newcomer then finds credit left
    /// even when the transfers before it could each have taken all they wanted, and the early
    /// ones reach their share as they send.
    pub fn distribute(&mut self) -> Vec<(K, u32)> {
        let mut grants = Vec::new();
        let party_share = self.party_share();
        while self.in_use < self.global {
            let Some(p) = self.turn.pop_front() else {
                break;
            };
            let Some(party) = self.parties.get_mut(&p) else {
                continue;
            };
            let Some(key) = party.waiting.pop_front() else {
                party.in_turn = false;
                continue;
            };
            let Some(acc) = self.accounts.get_mut(&key) else {
                self.turn.push_front(p);
                continue;
            };
            let share = (party_share / party.open.max(1)).clamp(1, self.window.max(1));
            let room = u64::from(share.saturating_sub(acc.outstanding));
            let want = room.min(acc.ungranted) as u32;
            let party_room = party_share.saturating_sub(party.outstanding);
            let free = self.global - self.in_use;
            let give = want.min(party_room).min(free).min((free / 2).max(1));
            acc.outstanding += give;
            acc.ungranted -= u64::from(give);
            party.outstanding += give;
            self.in_use += give;
            if give > 0 {
                grants.push((key.clone(), give));
            }
            if give < want && give == free {
                // The budget ran out before this transfer's wish: it stays first in line.
                party.waiting.push_front(key);
                self.turn.push_front(p);
                break;
            }
            if give < want && give == party_room {
                // Its party holds its share: it waits first in its party's line, and the party
                // takes turns again once one of its chunks (or its end) returns credit.
                party.waiting.push_front(key);
                party.in_turn = false;
                continue;
            }
            // Served for now; it asks again as it spends (`spend` queues it).
            acc.queued = false;
            if party.waiting.is_empty() {
                party.in_turn = false;
            } else {
                self.turn.push_back(p);
            }
        }
        grants
    }

    /// The credit one party may hold now: its fair share of the budget.
    fn party_share(&self) -> u32 {
        let parties = u32::try_from(self.parties.len()).unwrap_or(u32::MAX).max(1);
        (self.global / parties).max(1)
    }

    /// Whether `key` holds no credit and waits for some: its sender can send nothing until the
    /// node grants it, so its silence is the node's doing, not the sender's.
    pub fn starved(&self, key: &K) -> bool {
        self.accounts
            .get(key)
            .is_some_and(|a| a.outstanding == 0 && a.ungranted > 0)
    }

    /// Credit granted and not yet spent, across all transfers.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Unspent credit of `key`.
    pub fn outstanding(&self, key: &K) -> u32 {
        self.accounts.get(key).map_or(0, |a| a.outstanding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_a_window_and_refills_as_chunks_arrive() {
        let mut l = Ledger::new(8, 32);
        l.open(1, 0u8, 20);
        assert_eq!(l.distribute(), vec![(1, 8)]);
        assert!(l.distribute().is_empty());
        l.spend(&1).unwrap();
        assert_eq!(l.distribute(), vec![(1, 1)]);
        // The last grants stop at the file's chunk count.
        for _ in 0..11 {
            l.spend(&1).unwrap();
            l.distribute();
        }
        assert_eq!(l.outstanding(&1), 8);
        l.spend(&1).unwrap();
        assert!(l.distribute().is_empty());
        assert_eq!(l.outstanding(&1), 7);
        l.close(&1);
        assert_eq!(l.in_use(), 0);
    }

    #[test]
    fn spending_without_credit_is_refused() {
        let mut l = Ledger::new(8, 32);
        assert_eq!(l.spend(&1), Err(NoCredit));
        l.open(1, 0u8, 1);
        assert_eq!(l.spend(&1), Err(NoCredit));
        l.distribute();
        assert_eq!(l.spend(&1), Ok(()));
        assert_eq!(l.spend(&1), Err(NoCredit));
    }

    #[test]
    fn never_exceeds_the_windows_and_serves_waiters_in_order() {
        let mut l = Ledger::new(8, 32);
        for k in 0..6 {
            l.open(k, 0u8, 100);
        }
        // Six transfers share the budget (32 / 6 = 5 each), all at once; the last takes half of
        // what is left.
        let g = l.distribute();
        assert_eq!(g, vec![(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 3)]);
        assert_eq!(l.in_use(), 28);
        // A chunk of transfer 0 frees one unit, which it gets back.
        l.spend(&0).unwrap();
        assert_eq!(l.distribute(), vec![(0, 1)]);
        // Closing a transfer raises the others' share (32 / 5 = 6), which each takes up when
        // it next sends: transfer 1 holds 4 after a chunk and is topped up to 6.
        l.close(&2);
        assert!(l.distribute().is_empty());
        l.spend(&1).unwrap();
        assert_eq!(l.distribute(), vec![(1, 2)]);
        assert!(l.in_use() <= 32);
        for k in 0..6 {
            assert!(l.outstanding(&k) <= 8);
        }
    }

    #[test]
    fn many_small_transfers_all_get_credit_at_once() {
        // Twelve 3-chunk uploads: each gets 2 at once (32 / 12), none waits for the others.
        let mut l = Ledger::new(32, 32);
        for k in 0..12 {
            l.open(k, 0u8, 3);
        }
        let g = l.distribute();
        assert_eq!(g, (0..12).map(|k| (k, 2)).collect::<Vec<_>>());
        assert!((0..12).all(|k| !l.starved(&k)));
    }

    #[test]
    fn beyond_the_budget_waiters_are_served_in_turn_without_starving() {
        // Forty transfers of many chunks and a budget of 32: 32 get one unit, 8 wait.
        let mut l = Ledger::new(32, 32);
        for k in 0..40 {
            l.open(k, 0u8, 1000);
        }
        assert_eq!(l.distribute().len(), 32);
        assert!((32..40).all(|k| l.starved(&k)));
        // Each chunk that arrives gives its unit to the next waiter, in order; a transfer that
        // just sent waits behind the others.
        let mut served = Vec::new();
        for round in 0..40u32 {
            let sender = (0..40).find(|k| l.outstanding(k) > 0).unwrap();
            l.spend(&sender).unwrap();
            for (k, n) in l.distribute() {
                assert_eq!(n, 1, "round {round}");
                served.push(k);
            }
        }
        assert_eq!(&served[..8], &[32, 33, 34, 35, 36, 37, 38, 39]);
        assert!(l.in_use() <= 32);
    }

    #[test]
    fn a_busy_peer_does_not_take_the_credit_of_another() {
        // Peer 0 opens forty uploads and takes the whole budget; peer 1 then opens one.
        let mut l = Ledger::new(32, 32);
        for k in 0..40 {
            l.open(k, 0u8, 1000);
        }
        assert_eq!(l.distribute().len(), 32);
        l.open(100, 1u8, 1000);
        assert!(l.distribute().is_empty(), "nothing free yet");
        // The first chunk of peer 0 frees a unit: it goes to peer 1, and so does every unit
        // after it until peer 1 holds its share (half of the budget), as peer 0 is over its own.
        let mut to_new = 0;
        for _ in 0..16 {
            let sender = (0..40).find(|k| l.outstanding(k) > 0).unwrap();
            l.spend(&sender).unwrap();
            for (k, n) in l.distribute() {
                assert_eq!(k, 100, "peer 0 is over its share");
                to_new += n;
            }
        }
        assert_eq!(to_new, 16);
        assert_eq!(l.outstanding(&100), 16);
        // From then on each peer gets back what it spends.
        l.spend(&100).unwrap();
        assert_eq!(l.distribute(), vec![(100, 1)]);
        let sender = (0..40).find(|k| l.outstanding(k) > 0).unwrap();
        l.spend(&sender).unwrap();
        let g = l.distribute();
        assert_eq!(g.len(), 1);
        assert!(g[0].0 < 40, "{g:?}");
        // When peer 1 is done, peer 0 may take the whole budget again.
        l.close(&100);
        let back: u32 = l.distribute().iter().map(|g| g.1).sum();
        assert_eq!(back, 16);
        assert_eq!(l.in_use(), 32);
    }

    #[test]
    fn parties_take_turns() {
        // Three peers, each with more uploads than the budget serves at once: grants alternate
        // between them, so each holds about a third.
        let mut l = Ledger::new(32, 32);
        for k in 0..30u32 {
            l.open(k, k % 3, 100);
        }
        let g = l.distribute();
        let held = |l: &Ledger<u32, u32>, p: u32| -> u32 {
            (0..30)
                .filter(|k| k % 3 == p)
                .map(|k| l.outstanding(&k))
                .sum()
        };
        assert!(g.len() >= 30, "every upload gets some: {g:?}");
        for p in 0..3 {
            assert!(
                (9..=11).contains(&held(&l, p)),
                "party {p}: {}",
                held(&l, p)
            );
        }
    }

    #[test]
    fn randomised_spending_keeps_the_invariants() {
        let mut l = Ledger::new(8, 32);
        let mut left: HashMap<u32, u64> = HashMap::new();
        for k in 0..50u32 {
            let chunks = u64::from(k % 13 + 1);
            l.open(k, (k % 4) as u8, chunks);
            left.insert(k, chunks);
        }
        l.distribute();
        let mut seed = 7u64;
        while !left.is_empty() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let holders: Vec<u32> = left
                .keys()
                .copied()
                .filter(|k| l.outstanding(k) > 0)
                .collect();
            assert!(!holders.is_empty(), "credit stalled with transfers left");
            let k = holders[(seed >> 33) as usize % holders.len()];
            l.spend(&k).unwrap();
            let n = left.get_mut(&k).unwrap();
            *n -= 1;
            if *n == 0 {
                left.remove(&k);
                l.close(&k);
            }
            l.distribute();
            assert!(l.in_use() <= 32);
            for k in left.keys() {
                assert!(l.outstanding(k) <= 8);
                assert!(u64::from(l.outstanding(k)) <= left[k]);
            }
        }
        assert_eq!(l.in_use(), 0);
    }
}
