//! Credit for uploads: who may send how many chunks.
//!
//! A transfer holds at most `TRANSFER_WINDOW` chunks of unspent credit, and all transfers
//! together at most `GLOBAL_WINDOW`, so at most about `GLOBAL_WINDOW * CHUNK_SIZE` bytes are ever
//! queued toward the node. When the global budget is spent, transfers wanting credit wait in
//! FIFO order; every chunk that arrives returns one unit to the budget.

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
    pub fn distribute(&mut self) -> Vec<(K, u32)> {
        let mut grants = Vec::new();
        while self.in_use < self.global {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let Some(acc) = self.accounts.get_mut(&key) else {
                continue;
            };
            let room = u64::from(self.window.saturating_sub(acc.outstanding));
            let want = room.min(acc.ungranted) as u32;
            let give = want.min(self.global - self.in_use);
            acc.outstanding += give;
            acc.ungranted -= u64::from(give);
            self.in_use += give;
            if give > 0 {
                grants.push((key.clone(), give));
            }
            if give < want {
                // The budget ran out before this transfer's wish: it stays first in line.
                self.queue.push_front(key);
                break;
            }
            acc.queued = false;
        }
        grants
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
        let g = l.distribute();
        assert_eq!(g, vec![(0, 8), (1, 8), (2, 8), (3, 8)]);
        assert_eq!(l.in_use(), 32);
        // A chunk of transfer 0 frees one unit: it goes to transfer 4, first in line.
        l.spend(&0).unwrap();
        assert_eq!(l.distribute(), vec![(4, 1)]);
        l.spend(&1).unwrap();
        assert_eq!(l.distribute(), vec![(4, 1)]);
        // Closing a transfer returns its unspent credit to the waiters.
        l.close(&2);
        let g = l.distribute();
        assert_eq!(g, vec![(4, 6), (5, 2)]);
        assert!(l.in_use() <= 32);
        for k in 0..6 {
            assert!(l.outstanding(&k) <= 8);
        }
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
