//! Credit for uploads: who may send how many chunks.
//!
//! All transfers together hold at most `GLOBAL_WINDOW` chunks of unspent credit, so at most
//! about `GLOBAL_WINDOW * CHUNK_SIZE` bytes are ever queued toward the node, and the budget is
//! shared fairly: each transfer may hold its share, `GLOBAL_WINDOW` divided by the transfers
//! open (at least 1, at most `TRANSFER_WINDOW`). With up to `GLOBAL_WINDOW` transfers every one
//! of them holds credit at once; beyond that, transfers wanting credit wait in FIFO order, and
//! every chunk that arrives returns one unit to the budget, which goes to the first in line (a
//! transfer that spent a unit queues behind the others), so none waits for longer than the
//! others take to send one chunk each.

use schema::limits::{GLOBAL_WINDOW, TRANSFER_WINDOW};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// What the ledger knows of one transfer.
#[derive(Debug, Clone, Copy)]
struct Account {
    /// Credit granted and not yet spent.
    outstanding: u32,
    /// Chunks of the file not covered by any grant yet.
    ungranted: u64,
    /// Whether the transfer waits in the queue.
    queued: bool,
}

/// A chunk arrived for a transfer that holds no credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoCredit;

/// The credit ledger of all uploads of one node, keyed by transfer.
#[derive(Debug)]
pub struct Ledger<K> {
    accounts: HashMap<K, Account>,
    queue: VecDeque<K>,
    in_use: u32,
    window: u32,
    global: u32,
}

impl<K: Clone + Eq + Hash> Default for Ledger<K> {
    fn default() -> Self {
        Ledger::new(TRANSFER_WINDOW, GLOBAL_WINDOW)
    }
}

impl<K: Clone + Eq + Hash> Ledger<K> {
    /// A ledger with the given per-transfer and global windows.
    pub fn new(window: u32, global: u32) -> Ledger<K> {
        Ledger {
            accounts: HashMap::new(),
            queue: VecDeque::new(),
            in_use: 0,
            window,
            global,
        }
    }

    /// Opens an account for a transfer of `chunks` chunks; it waits for credit.
    /// Call [`Ledger::distribute`] next.
    pub fn open(&mut self, key: K, chunks: u64) {
        self.accounts.insert(
            key.clone(),
            Account {
                outstanding: 0,
                ungranted: chunks,
                queued: true,
            },
        );
        self.queue.push_back(key);
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
        if acc.ungranted > 0 && !acc.queued {
            acc.queued = true;
            self.queue.push_back(key.clone());
        }
        Ok(())
    }

    /// Closes `key`'s account (done, failed or dropped); its unspent credit returns to the budget.
    pub fn close(&mut self, key: &K) {
        if let Some(acc) = self.accounts.remove(key) {
            self.in_use -= acc.outstanding;
            if acc.queued {
                self.queue.retain(|k| k != key);
            }
        }
    }

    /// Grants what the budget allows to waiting transfers, first come first served. Returns the
    /// grants to send as `credit` messages.
    ///
    /// A transfer gets at most its share, and at most half of the budget still free (at least
    /// one unit): a newcomer then finds credit left even when the transfers before it could
    /// each have taken all they wanted, and the early ones reach their share as they send.
    pub fn distribute(&mut self) -> Vec<(K, u32)> {
        let mut grants = Vec::new();
        let share = self.share();
        while self.in_use < self.global {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let Some(acc) = self.accounts.get_mut(&key) else {
                continue;
            };
            let room = u64::from(share.saturating_sub(acc.outstanding));
            let want = room.min(acc.ungranted) as u32;
            let free = self.global - self.in_use;
            let give = want.min(free).min((free / 2).max(1));
            acc.outstanding += give;
            acc.ungranted -= u64::from(give);
            self.in_use += give;
            if give > 0 {
                grants.push((key.clone(), give));
            }
            if give < want && give == free {
                // The budget ran out before this transfer's wish: it stays first in line.
                self.queue.push_front(key);
                break;
            }
            // Served for now; it asks again as it spends (`spend` queues it).
            acc.queued = false;
        }
        grants
    }

    /// The credit one transfer may hold now: its fair share of the budget.
    pub fn share(&self) -> u32 {
        let open = u32::try_from(self.accounts.len())
            .unwrap_or(u32::MAX)
            .max(1);
        (self.global / open).clamp(1, self.window.max(1))
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
        l.open(1, 20);
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
        l.open(1, 1);
        assert_eq!(l.spend(&1), Err(NoCredit));
        l.distribute();
        assert_eq!(l.spend(&1), Ok(()));
        assert_eq!(l.spend(&1), Err(NoCredit));
    }

    #[test]
    fn never_exceeds_the_windows_and_serves_waiters_in_order() {
        let mut l = Ledger::new(8, 32);
        for k in 0..6 {
            l.open(k, 100);
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
            l.open(k, 3);
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
            l.open(k, 1000);
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
    fn randomised_spending_keeps_the_invariants() {
        let mut l = Ledger::new(8, 32);
        let mut left: HashMap<u32, u64> = HashMap::new();
        for k in 0..50u32 {
            let chunks = u64::from(k % 13 + 1);
            l.open(k, chunks);
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
