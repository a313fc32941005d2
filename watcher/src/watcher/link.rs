//! The watcher's reaction to the connection monitor's events (the link's state is
//! `crate::link::BrokerLink`).

use super::Watcher;
use std::time::Instant;

impl Watcher {
    /// A connection event of the broker socket: a lost connection starts an outage at once
    /// (changes in flight are due again); a new one is pinged at once; a refused handshake is
    /// logged and the socket connects again.
    pub(crate) fn on_connection_event(&mut self, e: net::inproc::MonitorEvent, now: Instant) {
        if e.is(zmq::SocketEvent::DISCONNECTED) {
            self.outage(now, "connection lost");
        } else if e.is(zmq::SocketEvent::HANDSHAKE_SUCCEEDED) {
            self.link.connected(now);
        } else if let Some(why) = net::security::handshake_failure(e.event, e.value) {
            self.link.handshake_failed(&why);
        }
    }
}
