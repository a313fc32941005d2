//! Copying the volume owners to the storage node (`set_owner`; docs/CONTRACT.md §8), so that an
//! index rebuilt from the node gets them back. Each owner recorded in the index is queued here
//! and sent, one at a time, until the node acknowledges it; a node that is away or refuses is
//! asked again after a pause. At start every owner is queued once, so a node that missed one
//! (or a store made before owners were copied) catches up.

use crate::links::{NodePort, ToNode};
use crate::peer::Bids;
use schema::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long an unanswered `set_owner` waits before it is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after the node was away or refused.
const RETRY: Duration = Duration::from_secs(1);

/// The owners the node has not acknowledged yet.
#[derive(Debug, Default)]
pub struct OwnerSync {
    /// Volume (empty: the root volume) → owner, still to be acknowledged by the node.
    unsent: BTreeMap<String, String>,
    /// The `set_owner` in flight: its bid, what it carries, and when it went.
    asked: Option<(u64, String, String, Instant)>,
    next_try: Option<Instant>,
}

impl OwnerSync {
    /// Queues every owner of `owners` (volume, owner).
    pub fn with_all(owners: impl IntoIterator<Item = (String, String)>) -> OwnerSync {
        OwnerSync {
            unsent: owners.into_iter().collect(),
            ..OwnerSync::default()
        }
    }

    /// Queues `owner` of `volume` (replacing an older owner of it still queued).
    pub fn queue(&mut self, volume: &str, owner: &str) {
        self.unsent.insert(volume.to_string(), owner.to_string());
    }

    /// Whether `bid` is the `set_owner` in flight.
    pub fn owns(&self, bid: u64) -> bool {
        self.asked.as_ref().is_some_and(|a| a.0 == bid)
    }

    /// Sends the next queued owner when none is in flight (or the last one went unanswered).
    pub fn tick(&mut self, bids: &mut Bids, node: &mut dyn ToNode) {
        let now = Instant::now();
        if let Some((_, _, _, sent)) = &self.asked {
            if now.duration_since(*sent) < ANSWER_TIMEOUT {
                return;
            }
            self.asked = None;
        }
        if self.next_try.is_some_and(|t| now < t) {
            return;
        }
        let Some((volume, owner)) = self.unsent.first_key_value() else {
            return;
        };
        let (volume, owner) = (volume.clone(), owner.clone());
        let bid = bids.next();
        let msg = Message::SetOwner {
            id: bid,
            volume: volume.clone(),
            owner: owner.clone(),
        };
        match node.send(NodePort::Serve, &msg, None) {
            Ok(()) => self.asked = Some((bid, volume, owner, now)),
            Err(e) => {
                tracing::debug!("cannot copy the owner of a volume to the node yet: {e}");
                self.next_try = Some(now + RETRY);
            }
        }
    }

    /// Takes the node's answer to the `set_owner` in flight.
    pub fn on_reply(&mut self, msg: Message) {
        let Some((_, volume, owner, _)) = self.asked.take() else {
            return;
        };
        match msg {
            Message::Done { .. } => {
                if self.unsent.get(&volume) == Some(&owner) {
                    self.unsent.remove(&volume);
                }
            }
            Message::Error { message, .. } => {
                tracing::warn!(
                    "the storage node did not record the owner of a volume: {message}; will \
                     try again"
                );
                self.next_try = Some(Instant::now() + RETRY);
            }
            other => tracing::debug!("ignoring a {} in answer to set_owner", other.kind()),
        }
    }
}
