//! What the relay has decided to send to front peers, for the serving loop to deliver: replies
//! to send now, replies held until the index change they report is durable (group commit), and
//! whether the index changed (a new export is due).

use crate::peer::{Front, Requester};
use schema::Message;

/// One message for a front peer.
#[derive(Debug)]
pub struct Reply {
    pub front: Front,
    pub peer: Vec<u8>,
    pub msg: Message,
    pub data: Option<zmq::Message>,
}

/// The relay's outgoing front traffic, drained by the serving loop after every message.
#[derive(Debug, Default)]
pub struct Outbox {
    now: Vec<Reply>,
    after_flush: Vec<Reply>,
    changed: bool,
}

impl Outbox {
    /// Sends `msg` (with the requester's id put back) and `data` to whoever made `req`.
    pub fn answer(&mut self, req: &Requester, msg: Message, data: Option<zmq::Message>) {
        self.now.push(Reply {
            front: req.front,
            peer: req.peer.clone(),
            msg: msg.with_id(req.id),
            data,
        });
    }

    /// Sends `msg` as it is to `peer` on `front` (a refusal of a message whose id was unreadable).
    pub fn reply(&mut self, front: Front, peer: Vec<u8>, msg: Message) {
        self.now.push(Reply {
            front,
            peer,
            msg,
            data: None,
        });
    }

    /// Holds `msg` for `req` until the index changes made so far are flushed.
    pub fn after_flush(&mut self, req: &Requester, msg: Message) {
        self.after_flush.push(Reply {
            front: req.front,
            peer: req.peer.clone(),
            msg: msg.with_id(req.id),
            data: None,
        });
    }

    /// Notes that the index changed (the export is requested after the round).
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// The replies to send now, in the order they were decided.
    pub fn take_now(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.now)
    }

    /// The replies waiting for a flush.
    pub fn take_after_flush(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.after_flush)
    }

    /// Whether the index changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}
