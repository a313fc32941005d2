//! Whether the broker is reachable, and the ping schedule while it is not.
//!
//! The link starts down. While down, only a `ping` goes out, at backoff intervals, until a
//! `pong` comes back; an outage is logged once when it starts and once when it ends.

use crate::state::next_backoff;
use std::time::{Duration, Instant};

/// First ping interval after an outage; doubles up to [`PING_MAX`].
pub const PING_MIN: Duration = Duration::from_millis(250);
/// First ping interval at start-up (the connection is usually made within milliseconds).
pub const PING_START: Duration = Duration::from_millis(10);
/// Longest ping interval while the broker is down.
pub const PING_MAX: Duration = Duration::from_secs(5);
/// A change (or ping, or listing) with no message back for this long means the broker is down.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// How long the broker may be unreachable at start-up before that is logged.
const START_GRACE: Duration = Duration::from_secs(1);

/// The broker link's state and ping schedule.
#[derive(Debug)]
pub struct BrokerLink {
    endpoint: String,
    up: bool,
    /// Interval before the next ping while down.
    backoff: Option<Duration>,
    min: Duration,
    next_ping: Instant,
    down_since: Instant,
    /// Whether this outage was logged (so its end is logged too).
    warned: bool,
    /// Whether a failed handshake was logged since the last connection.
    handshake_warned: bool,
    /// A handshake was refused: libzmq gave up on the endpoint, connect again before pinging.
    reconnect_wanted: bool,
    /// When anything last came from the broker.
    heard: Instant,
    /// A ping sent because the broker fell silent while changes wait.
    probe: Option<Instant>,
}

impl BrokerLink {
    /// A link to `endpoint`, down until the first `pong`.
    pub fn new(endpoint: &str, now: Instant) -> BrokerLink {
        BrokerLink {
            endpoint: endpoint.to_string(),
            up: false,
            backoff: None,
            min: PING_START,
            next_ping: now,
            down_since: now,
            warned: false,
            handshake_warned: false,
            reconnect_wanted: false,
            heard: now,
            probe: None,
        }
    }

    /// The broker's endpoint (`tcp://host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the broker answered lately and nothing has timed out since.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The broker stopped answering (a failed send, or silence): log once, ping from now on.
    pub fn down(&mut self, now: Instant, why: &str) {
        self.probe = None;
        if !self.up {
            return;
        }
        self.up = false;
        self.backoff = None;
        self.min = PING_MIN;
        self.next_ping = now;
        self.down_since = now;
        self.warned = true;
        tracing::warn!("broker {} unreachable ({why}), will retry", self.endpoint);
    }

    /// Whether a ping should go out now.
    pub fn ping_due(&self, now: Instant) -> bool {
        !self.up && now >= self.next_ping
    }

    /// A ping went out (or failed to); the next one waits for the doubled interval.
    pub fn pinged(&mut self, now: Instant) {
        let delay = next_backoff(self.backoff, self.min, PING_MAX);
        self.backoff = Some(delay);
        self.next_ping = now + delay;
        if !self.warned && now.duration_since(self.down_since) >= START_GRACE {
            self.warned = true;
            tracing::warn!("broker {} unreachable, will retry", self.endpoint);
        }
    }

    /// The connection (re)opened: ping at once instead of waiting for the backoff.
    pub fn connected(&mut self, now: Instant) {
        if !self.up {
            self.next_ping = now;
        }
    }

    /// A `pong` (or any answer) came at `now`: the broker is up.
    pub fn answered(&mut self, now: Instant) {
        self.heard = now;
        self.probe = None;
        if self.up {
            return;
        }
        self.up = true;
        self.handshake_warned = false;
        self.backoff = None;
        if self.warned {
            tracing::info!("broker {} back", self.endpoint);
        } else {
            tracing::debug!("connected to broker {}", self.endpoint);
        }
        self.warned = false;
    }

    /// Whether the socket must connect again (a handshake was refused since the last call).
    pub fn take_reconnect(&mut self) -> bool {
        std::mem::take(&mut self.reconnect_wanted)
    }

    /// The broker refused the handshake (keys): logged once until a connection is made; the
    /// socket connects again before the next ping.
    pub fn handshake_failed(&mut self, why: &str) {
        self.reconnect_wanted = true;
        if !std::mem::replace(&mut self.handshake_warned, true) {
            tracing::warn!(
                "broker {}: {why}; retrying (fix the keys, or send SIGHUP to the broker after \
                 adding this watcher's key to its --allow-watchers)",
                self.endpoint
            );
        }
    }

    /// How long the broker has said nothing.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.duration_since(self.heard)
    }

    /// When the ping sent because the broker fell silent went out, if one is unanswered.
    pub fn probe(&self) -> Option<Instant> {
        self.probe
    }

    /// A ping went out at `now` because the broker fell silent.
    pub fn probed(&mut self, now: Instant) {
        self.probe = Some(now);
    }

    /// When the loop must wake for the next ping, if the link is down.
    pub fn next_wake(&self) -> Option<Instant> {
        (!self.up).then_some(self.next_ping)
    }
}

/// The connection events of the broker socket the watcher follows.
pub const CONNECTION_EVENTS: i32 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
    | zmq::SocketEvent::DISCONNECTED as i32
    | net::security::HANDSHAKE_FAILURES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_back_off_while_down_and_stop_when_up() {
        let t0 = Instant::now();
        let mut link = BrokerLink::new("tcp://x:1", t0);
        assert!(!link.is_up());
        assert!(link.ping_due(t0));
        link.pinged(t0);
        assert!(!link.ping_due(t0));
        assert!(link.ping_due(t0 + PING_START));
        link.answered(t0);
        assert!(link.is_up() && !link.ping_due(t0 + PING_MAX) && link.next_wake().is_none());

        // an outage: pings at 250 ms, 500 ms, 1 s, … capped at 5 s
        let t1 = t0 + Duration::from_secs(60);
        link.down(t1, "test");
        let mut now = t1;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            assert!(link.ping_due(now));
            link.pinged(now);
            let next = link.next_wake().unwrap();
            gaps.push(next - now);
            now = next;
        }
        assert_eq!(gaps[0], PING_MIN);
        assert_eq!(gaps[1], PING_MIN * 2);
        assert_eq!(*gaps.last().unwrap(), PING_MAX);
        link.answered(t1);
        assert!(link.is_up());
    }
}
