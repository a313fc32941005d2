//! Sockets between the threads of one process: a fresh `inproc://` endpoint, a bound and a
//! connected socket on it, and the connection events of a socket ([`Monitor`]).
//!
//! A daemon's poll loop waits on sockets only, so whatever another thread has for it (inotify
//! events, a finished flush, a socket's connection events) arrives on an inproc socket.

use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh endpoint `inproc://dfs-<what>-<pid>-<n>`, unique in the process.
pub fn endpoint(what: &str) -> String {
    format!(
        "inproc://dfs-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Two sockets joined on a fresh endpoint: the first of type `bound` bound to it, the second of
/// type `connected` connected to it; neither lingers at close.
pub fn pair(
    ctx: &zmq::Context,
    what: &str,
    bound: zmq::SocketType,
    connected: zmq::SocketType,
) -> zmq::Result<(zmq::Socket, zmq::Socket)> {
    let ep = endpoint(what);
    let a = ctx.socket(bound)?;
    a.set_linger(0)?;
    a.bind(&ep)?;
    let b = ctx.socket(connected)?;
    b.set_linger(0)?;
    b.connect(&ep)?;
    Ok((a, b))
}

/// One connection event of a monitored socket (libzmq's version 1 monitor events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorEvent {
    /// The `ZMQ_EVENT_*` number.
    pub event: u16,
    /// The event's value (an errno, a protocol error code, a ZAP status).
    pub value: u32,
}

impl MonitorEvent {
    /// Whether this is `kind`.
    pub fn is(&self, kind: zmq::SocketEvent) -> bool {
        self.event == kind.to_raw()
    }
}

/// The connection events of one socket, read without blocking; poll [`Monitor::socket`] to
/// wait for them.
pub struct Monitor {
    events: zmq::Socket,
}

impl Monitor {
    /// Starts watching the `events` (a mask of `zmq::SocketEvent`s) of `sock`. Call before it
    /// connects, so that no event is missed.
    pub fn attach(ctx: &zmq::Context, sock: &zmq::Socket, events: i32) -> zmq::Result<Monitor> {
        let ep = endpoint("monitor");
        sock.monitor(&ep, events)?;
        let events = ctx.socket(zmq::PAIR)?;
        events.set_linger(0)?;
        events.connect(&ep)?;
        Ok(Monitor { events })
    }

    /// The socket the events arrive on, for a poll.
    pub fn socket(&self) -> &zmq::Socket {
        &self.events
    }

    /// The next event, if one is waiting. An event is two frames: the number and value, then
    /// the endpoint (not kept).
    pub fn next(&self) -> Option<MonitorEvent> {
        loop {
            let frames = self.events.recv_multipart(zmq::DONTWAIT).ok()?;
            let Some(head) = frames.first().filter(|f| f.len() >= 6) else {
                continue;
            };
            return Some(MonitorEvent {
                event: u16::from_ne_bytes([head[0], head[1]]),
                value: u32::from_ne_bytes([head[2], head[3], head[4], head[5]]),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_pair_carries_messages_and_a_monitor_sees_a_connection() {
        let ctx = zmq::Context::new();
        let (pull, push) = pair(&ctx, "test", zmq::PULL, zmq::PUSH).unwrap();
        push.send("hello", 0).unwrap();
        assert_eq!(pull.recv_bytes(0).unwrap(), b"hello");
        assert_ne!(endpoint("x"), endpoint("x"));

        let (server, port) = crate::socket::router(&ctx, "127.0.0.1", 0).unwrap();
        let client = ctx.socket(zmq::DEALER).unwrap();
        client.set_linger(0).unwrap();
        let monitor =
            Monitor::attach(&ctx, &client, zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32).unwrap();
        client
            .connect(&crate::socket::endpoint("127.0.0.1", port))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let event = loop {
            if let Some(e) = monitor.next() {
                break e;
            }
            assert!(Instant::now() < deadline, "no connection event within 5 s");
            monitor.socket().poll(zmq::POLLIN, 100).unwrap();
        };
        assert!(event.is(zmq::SocketEvent::HANDSHAKE_SUCCEEDED), "{event:?}");
        drop(server);
    }
}
