//! Group commit of index changes: the `done` of every change made before a flush starts goes
//! out when that flush ends, and the flush runs on its own thread ([`Flusher`]) so serving never
//! waits for the disk.

use crate::flusher::Flusher;
use crate::index::Index;
use crate::outbox::Reply;
use schema::{ErrorCode, Message};

/// The replies waiting for the index to be durable, and the thread that makes it so.
pub struct GroupCommit {
    /// Replies whose index changes wait for the next flush.
    waiting: Vec<Reply>,
    /// Replies whose index changes the running flush makes durable.
    flushing: Vec<Reply>,
    flusher: Flusher,
}

impl GroupCommit {
    /// Group commit through `flusher`.
    pub fn new(flusher: Flusher) -> GroupCommit {
        GroupCommit {
            waiting: Vec::new(),
            flushing: Vec::new(),
            flusher,
        }
    }

    /// The socket that becomes readable when a flush ends (for polling).
    pub fn socket(&self) -> &zmq::Socket {
        self.flusher.socket()
    }

    /// Holds `replies` until the next flush ends.
    pub fn hold(&mut self, replies: Vec<Reply>) {
        self.waiting.extend(replies);
    }

    /// Takes the outcome of a flush that ended (its replies, to send now) and starts the next
    /// flush for the replies that came meanwhile. `started` says a flush began (the index
    /// changed, so the export is due).
    pub fn step(&mut self) -> (Vec<Reply>, bool) {
        let mut ready = Vec::new();
        if let Some(outcome) = self.flusher.finished() {
            ready = self.acknowledge(outcome);
        }
        if self.waiting.is_empty() || self.flusher.is_busy() {
            return (ready, false);
        }
        self.flushing = std::mem::take(&mut self.waiting);
        if !self.flusher.request() {
            ready.extend(self.acknowledge(Err("the index flush thread is gone".into())));
        }
        (ready, true)
    }

    /// On stop: waits for the running flush, then flushes `index` for the replies still
    /// waiting; returns every reply to send.
    pub fn finish(&mut self, index: &Index) -> Vec<Reply> {
        let mut ready = Vec::new();
        if let Some(outcome) = self.flusher.wait() {
            ready = self.acknowledge(outcome);
        }
        let outcome = index.flush().map_err(|e| e.to_string());
        self.flushing = std::mem::take(&mut self.waiting);
        ready.extend(self.acknowledge(outcome));
        ready
    }

    /// The replies of the flush that ended with `outcome`: as held, or an `io` error.
    fn acknowledge(&mut self, outcome: Result<(), String>) -> Vec<Reply> {
        let mut replies = std::mem::take(&mut self.flushing);
        if let Err(e) = &outcome {
            tracing::error!("flushing the index failed: {e}");
            for r in &mut replies {
                r.msg = Message::error(
                    r.msg.id(),
                    ErrorCode::Io,
                    format!("the broker could not make its index durable: {e}"),
                );
            }
        }
        replies
    }
}
