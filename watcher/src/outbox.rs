//! What the watcher's decisions ask of the broker socket, in order. The decisions (reconcile,
//! replies, timers) never touch the socket: they leave messages here, and the socket loop
//! (`watcher.rs`) sends them after each step. So every decision can be tested by looking at
//! what it left, without a socket.

use schema::Message;

/// One thing for the socket loop to do.
#[derive(Debug)]
pub enum Out {
    /// Send `msg` (with its data frame). When `required`, a failed send means the broker is
    /// unreachable and starts an outage; otherwise (a ping while down, a best-effort reply) the
    /// failure is only logged.
    Send {
        msg: Message,
        data: Option<Vec<u8>>,
        required: bool,
    },
    /// Connect the socket again (libzmq gave up on the endpoint after a refused handshake).
    Reconnect,
}

/// The queue of [`Out`]s the decisions left since the loop last sent them.
#[derive(Debug, Default)]
pub struct Outbox {
    items: Vec<Out>,
}

impl Outbox {
    /// Queues `msg` for the broker; its failure starts an outage.
    pub fn send(&mut self, msg: Message, data: Option<Vec<u8>>) {
        self.items.push(Out::Send {
            msg,
            data,
            required: true,
        });
    }

    /// Queues `msg` for the broker; a failure to send it is not an outage.
    pub fn try_send(&mut self, msg: Message) {
        self.items.push(Out::Send {
            msg,
            data: None,
            required: false,
        });
    }

    /// Asks for the socket to connect again.
    pub fn reconnect(&mut self) {
        self.items.push(Out::Reconnect);
    }

    /// Everything queued, oldest first; the outbox is empty afterwards.
    pub fn take(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.items)
    }

    /// The messages queued, oldest first (for tests).
    #[cfg(test)]
    pub fn messages(&self) -> Vec<&Message> {
        self.items
            .iter()
            .filter_map(|o| match o {
                Out::Send { msg, .. } => Some(msg),
                Out::Reconnect => None,
            })
            .collect()
    }
}
