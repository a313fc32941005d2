//! The requests the broker has forwarded to the node and not yet seen finish.
//!
//! Each gets a fresh broker id (bid), the id the node sees; the table maps it back to who asked
//! (front port, peer identity, the peer's own id) and what was asked, and enforces one change
//! per name in flight.

use crate::links::NodePort;
use crate::peer::{Front, Requester};
use crate::record::Record;
use schema::transfer::Credit;
use schema::{Class, Hash};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most requests in flight at once; more get `busy`.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// What was forwarded.
#[derive(Debug, Clone)]
pub enum Op {
    /// An upload. `blake3` is the hash given with the put or the last chunk; `last_sent` says
    /// the whole content has been relayed (the node is committing).
    Put {
        name: String,
        class: Class,
        /// For a growing upload: as first seen, then as given by its last chunk.
        size: u64,
        modified: i64,
        blake3: Option<Hash>,
        last_sent: bool,
        growing: bool,
        /// The node's credit relayed to the sender, and the chunks relayed under it.
        credit: Credit,
    },
    /// A delete of an indexed name.
    Delete { name: String },
    /// A move; `rec` is the record `to` gets.
    Rename {
        from: String,
        to: String,
        rec: Record,
    },
    /// A read; `size` is known once the node's `meta` came; `credit` is the reader's, relayed
    /// to the node, and the chunks relayed under it.
    Get {
        name: String,
        size: Option<u64>,
        credit: Credit,
    },
    /// A question about a name's versions.
    History { name: String },
    /// A page of the tree as it was (`list` with `at`) or of deleted names, from the history.
    Past,
}

impl Op {
    fn names(&self) -> Vec<&str> {
        match self {
            Op::Put { name, .. } | Op::Delete { name } => vec![name],
            Op::Rename { from, to, .. } => vec![from, to],
            Op::Get { .. } | Op::History { .. } | Op::Past => vec![],
        }
    }

    /// The operation's name in metrics (`op` label).
    pub fn label(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Rename { .. } => "rename",
            Op::Get { .. } => "get",
            Op::History { .. } => "history",
            Op::Past => "list",
        }
    }

    /// Whether content is still moving (a read, or an upload whose content is not all sent):
    /// such a job can be abandoned with an `abort`.
    pub fn is_streaming(&self) -> bool {
        match self {
            Op::Put { last_sent, .. } => !last_sent,
            Op::Get { .. } => true,
            Op::Delete { .. } | Op::Rename { .. } | Op::History { .. } | Op::Past => false,
        }
    }
}

/// One forwarded request.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub req: Requester,
    pub link: NodePort,
    pub op: Op,
    pub touched: Instant,
    /// When the request arrived (for the latency metrics).
    pub started: Instant,
}

/// Why a request could not be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer already has a request in flight with this id.
    IdInUse,
    /// A change of one of these names is in flight.
    NameBusy(String),
    /// Too many requests in flight.
    Full,
}

/// The in-flight requests.
#[derive(Default)]
pub struct InFlight {
    by_bid: HashMap<u64, Forwarded>,
    by_req: HashMap<Requester, u64>,
    changing: HashMap<String, u64>,
}

impl InFlight {
    /// Admits a request under the fresh broker id `bid` (see [`Bids`](crate::peer::Bids)).
    pub fn insert(
        &mut self,
        bid: u64,
        req: Requester,
        link: NodePort,
        job: Op,
    ) -> Result<(), Refusal> {
        if self.by_req.contains_key(&req) {
            return Err(Refusal::IdInUse);
        }
        if let Some(n) = job
            .names()
            .into_iter()
            .find(|n| self.changing.contains_key(*n))
        {
            return Err(Refusal::NameBusy(n.to_string()));
        }
        if self.by_bid.len() >= MAX_IN_FLIGHT {
            return Err(Refusal::Full);
        }
        for n in job.names() {
            self.changing.insert(n.to_string(), bid);
        }
        self.by_req.insert(req.clone(), bid);
        self.by_bid.insert(
            bid,
            Forwarded {
                req,
                link,
                op: job,
                touched: Instant::now(),
                started: Instant::now(),
            },
        );
        Ok(())
    }

    /// The bid of a peer's request.
    pub fn bid_of(&self, req: &Requester) -> Option<u64> {
        self.by_req.get(req).copied()
    }

    /// The request `bid`, marked as active now.
    pub fn touch(&mut self, bid: u64) -> Option<&mut Forwarded> {
        let p = self.by_bid.get_mut(&bid)?;
        p.touched = Instant::now();
        Some(p)
    }

    /// Forgets request `bid` and returns it.
    pub fn remove(&mut self, bid: u64) -> Option<Forwarded> {
        let p = self.by_bid.remove(&bid)?;
        self.by_req.remove(&p.req);
        for n in p.op.names() {
            if self.changing.get(n) == Some(&bid) {
                self.changing.remove(n);
            }
        }
        Some(p)
    }

    /// Whether a put of `name` is in flight.
    pub fn is_uploading(&self, name: &str) -> bool {
        self.changing
            .get(name)
            .and_then(|bid| self.by_bid.get(bid))
            .is_some_and(|p| matches!(p.op, Op::Put { .. }))
    }

    /// Whether a change of `name` is in flight.
    pub fn is_changing(&self, name: &str) -> bool {
        self.changing.contains_key(name)
    }

    /// Requests with no activity for `idle` or longer.
    pub fn idle(&self, idle: Duration) -> Vec<u64> {
        let now = Instant::now();
        self.by_bid
            .iter()
            .filter(|(_, p)| now.duration_since(p.touched) >= idle)
            .map(|(b, _)| *b)
            .collect()
    }

    /// The requests of one peer on one front port.
    pub fn of_peer(&self, front: Front, peer: &[u8]) -> Vec<u64> {
        self.by_bid
            .iter()
            .filter(|(_, p)| p.req.front == front && p.req.peer == peer)
            .map(|(b, _)| *b)
            .collect()
    }

    /// Every bid in flight.
    pub fn bids(&self) -> Vec<u64> {
        self.by_bid.keys().copied().collect()
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.by_bid.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.by_bid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64) -> Requester {
        Requester {
            front: Front::Ingest,
            peer: b"w1".to_vec(),
            id,
        }
    }

    fn put(name: &str) -> Op {
        Op::Put {
            name: name.into(),
            class: Class::Txt,
            size: 1,
            modified: 0,
            blake3: None,
            last_sent: true,
            growing: false,
            credit: Credit::default(),
        }
    }

    #[test]
    fn one_change_per_name_and_unique_ids() {
        let mut t = InFlight::default();
        let link = NodePort::Class(Class::Txt);
        let a = 1;
        t.insert(a, req(1), link, put("a.txt")).unwrap();
        assert_eq!(
            t.insert(2, req(1), link, put("b.txt")),
            Err(Refusal::IdInUse)
        );
        assert_eq!(
            t.insert(
                3,
                req(2),
                link,
                Op::Delete {
                    name: "a.txt".into()
                }
            ),
            Err(Refusal::NameBusy("a.txt".into()))
        );
        assert!(t.is_uploading("a.txt"));
        let rec = Record::stored(Class::Txt, 1, Hash::of(b""), 0, 1);
        let job = Op::Rename {
            from: "c.txt".into(),
            to: "a.txt".into(),
            rec,
        };
        assert!(t.insert(4, req(3), link, job).is_err());
        // reads never lock a name
        let get = Op::Get {
            name: "a.txt".into(),
            size: None,
            credit: Credit::default(),
        };
        let g = 5;
        t.insert(g, req(4), NodePort::Serve, get).unwrap();
        assert_eq!(t.bid_of(&req(1)), Some(a));
        assert_eq!(t.remove(a).unwrap().req, req(1));
        assert!(!t.is_uploading("a.txt"));
        assert!(t.insert(6, req(1), link, put("a.txt")).is_ok());
        assert_eq!(t.of_peer(Front::Ingest, b"w1").len(), 2);
        assert!(t.remove(g).is_some());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn idle_requests_are_found() {
        let mut t = InFlight::default();
        t.insert(1, req(1), NodePort::Serve, Op::Delete { name: "x".into() })
            .unwrap();
        assert!(t.idle(Duration::from_secs(30)).is_empty());
        assert_eq!(t.idle(Duration::ZERO).len(), 1);
    }
}
