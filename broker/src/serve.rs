//! The serving loop: one thread owns the two front ROUTERs, the node's DEALERs and the flush
//! report socket, polls them, hands each message to the [`Relay`] (admitted by the port's
//! gate first), and delivers what the relay decided: replies now, and the `done` of index
//! changes through [`GroupCommit`] once they are durable.

use crate::commit::GroupCommit;
use crate::export::Exporter;
use crate::links::NodeLinks;
use crate::outbox::Reply;
use crate::peer::Front;
use crate::relay::Relay;
use daemon::{Shutdown, POLL_MS};
use net::security::Gate;
use schema::codec;
use schema::Message;
use std::time::{Duration, Instant};

/// Most messages read from one socket in one poll round, so no socket starves the others.
const BATCH: usize = 256;

/// How long a stopping broker waits for the node to finish changes already committing.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often idle requests are dropped and refused node handshakes retried.
const SWEEP: Duration = Duration::from_millis(500);

/// Everything the serving thread owns.
pub struct Serve {
    ingest: zmq::Socket,
    fetch: zmq::Socket,
    /// Who may send on the ingest and fetch ports (watcher keys, fetcher keys).
    gates: [Gate; 2],
    node: NodeLinks,
    commit: GroupCommit,
    pub(crate) relay: Relay,
}

impl Serve {
    /// A loop over bound front sockets (admitting what `gates` allow), connected node links,
    /// group commit and the relay's decisions.
    pub fn new(
        (ingest, fetch): (zmq::Socket, zmq::Socket),
        gates: [Gate; 2],
        node: NodeLinks,
        commit: GroupCommit,
        relay: Relay,
    ) -> Serve {
        Serve {
            ingest,
            fetch,
            gates,
            node,
            commit,
            relay,
        }
    }

    /// Serves until `stop`, then abandons or finishes what is in flight and flushes the index.
    pub fn run(&mut self, stop: &Shutdown, exporter: &Exporter) {
        let mut last_sweep = Instant::now();
        while !stop.is_triggered() {
            match self.round(true) {
                Ok(()) | Err(zmq::Error::EINTR) => {}
                Err(e) => {
                    tracing::warn!("polling the broker's sockets failed: {e}");
                    std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                }
            }
            let sweep = last_sweep.elapsed() >= SWEEP;
            if sweep {
                last_sweep = Instant::now();
                self.node.check_handshakes(last_sweep);
            }
            self.relay.tick(sweep, &mut self.node);
            self.deliver();
            if self.relay.outbox().take_changed() {
                exporter.request();
            }
        }
        self.stop();
    }

    /// One poll round: waits up to `POLL_MS`, reads what is ready (front ports too when
    /// `fronts`), then starts the next flush and sends the replies that waited for the last.
    fn round(&mut self, fronts: bool) -> zmq::Result<()> {
        // The two front ports, five per node, the commit reports.
        let mut ready = vec![false; 3 + self.node.sockets().len()];
        let front_events = if fronts {
            zmq::POLLIN
        } else {
            zmq::PollEvents::empty()
        };
        {
            let mut items: Vec<zmq::PollItem> = Vec::with_capacity(ready.len());
            items.push(self.ingest.as_poll_item(front_events));
            items.push(self.fetch.as_poll_item(front_events));
            for s in self.node.sockets() {
                items.push(s.as_poll_item(zmq::POLLIN));
            }
            items.push(self.commit.socket().as_poll_item(zmq::POLLIN));
            zmq::poll(&mut items, POLL_MS)?;
            for (r, item) in ready.iter_mut().zip(&items) {
                *r = item.is_readable();
            }
        }
        let fronts_and_nodes = 2 + self.node.sockets().len();
        for (slot, _) in ready
            .iter()
            .enumerate()
            .take(fronts_and_nodes)
            .filter(|(_, r)| **r)
        {
            for _ in 0..BATCH {
                let sock = match slot {
                    0 => &self.ingest,
                    1 => &self.fetch,
                    n => &self.node.sockets()[n - 2],
                };
                match codec::recv(sock, slot < 2, zmq::DONTWAIT) {
                    Ok(inbound) => match slot {
                        0 | 1 => {
                            let front = [Front::Ingest, Front::Fetch][slot];
                            if self.gates[slot].admits(&inbound) {
                                self.relay.on_front(front, inbound, &mut self.node);
                            }
                        }
                        n => {
                            let (port, _) = self.node.port_of(n - 2);
                            self.relay.on_node(port, inbound, &mut self.node)
                        }
                    },
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => {
                        tracing::warn!("reading a message failed: {e}");
                        break;
                    }
                }
                self.deliver();
            }
        }
        let (ready, started) = self.commit.step();
        if started {
            self.relay.outbox().changed();
        }
        self.send_all(ready);
        Ok(())
    }

    /// Sends what the relay decided: its replies now, and hands those that wait for the index
    /// to group commit.
    fn deliver(&mut self) {
        let out = self.relay.outbox();
        let now = out.take_now();
        let later = out.take_after_flush();
        if !later.is_empty() {
            self.commit.hold(later);
        }
        self.send_all(now);
    }

    /// Sends `replies` to their front peers. A peer that is gone loses its transfers (aborted
    /// toward the node); any other failure is logged.
    fn send_all(&mut self, replies: Vec<Reply>) {
        for r in replies {
            if let Message::Error { code, .. } = &r.msg {
                let errors = &self.relay.metrics.errors;
                daemon::metrics::count_error(errors, daemon::metrics::code_kind(*code));
            }
            let sock = match r.front {
                Front::Ingest => &self.ingest,
                Front::Fetch => &self.fetch,
            };
            match codec::send(sock, Some(&r.peer), &r.msg, r.data) {
                Ok(()) => continue,
                Err(zmq::Error::EHOSTUNREACH) => {
                    tracing::debug!(
                        "{} peer went away; dropping its transfers",
                        r.front.as_str()
                    );
                }
                Err(e) => {
                    let kind = r.msg.kind();
                    tracing::warn!("cannot send {kind} to a {} peer: {e}", r.front.as_str());
                }
            }
            self.relay.drop_peer(r.front, &r.peer, &mut self.node);
        }
    }

    /// On stop: abandons transfers still moving content, gives changes already committing a
    /// short grace to finish, refuses the rest, and flushes the index.
    fn stop(&mut self) {
        self.relay.begin_stop(&mut self.node);
        self.deliver();
        let until = Instant::now() + STOP_GRACE;
        while !self.relay.is_idle() && Instant::now() < until {
            if let Err(e) = self.round(false) {
                tracing::debug!("polling while stopping failed: {e}");
                break;
            }
        }
        self.relay.end_stop(&mut self.node);
        self.deliver();
        let ready = self.commit.finish(&self.relay.index);
        self.send_all(ready);
    }
}
