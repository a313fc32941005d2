//! A one-shot client's link to a daemon (`dfs fetch`, `dfs status`, `dfs fsck`): one DEALER,
//! requests with fresh ids, and waits for the matching reply that never last longer than the
//! timeout and end early when the client is interrupted.

use crate::auth::{ClientAuth, HandshakeProbe};
use crate::socket::SocketError;
use schema::codec::{self, Rejected};
use schema::{ErrorCode, Message};
use std::time::{Duration, Instant};

/// Longest single poll of a wait (ms), so that an interruption is seen quickly.
const SLICE_MS: i64 = 50;

/// One reply: its header and its data frame, if any.
pub struct Reply {
    pub msg: Message,
    pub data: Option<zmq::Message>,
}

/// Why a request of a [`Client`] failed. Each caller turns these into its own errors and exit
/// codes.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The local socket could not be set up.
    #[error("{0}")]
    Socket(#[from] SocketError),
    /// No connection could be made before the timeout.
    #[error("{endpoint} is unreachable: no connection within {secs} s")]
    Unreachable { endpoint: String, secs: f64 },
    /// The peer refused the secure handshake (keys) until the timeout.
    #[error("cannot connect to {endpoint} within {secs} s: {why}")]
    Refused {
        endpoint: String,
        secs: f64,
        why: String,
    },
    /// The peer did not answer within the timeout.
    #[error("no answer from {endpoint} within {secs} s")]
    Timeout { endpoint: String, secs: f64 },
    /// A send or a read failed: the connection went away.
    #[error("lost the connection to {endpoint}: {reason}")]
    Disconnected { endpoint: String, reason: String },
    /// The client was interrupted (SIGINT, SIGTERM).
    #[error("interrupted")]
    Interrupted,
    /// The reply to the request could not be decoded.
    #[error("bad reply from {endpoint}: {error}")]
    BadReply { endpoint: String, error: String },
    /// The peer answered with an error.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
}

/// A connected DEALER with the timeout and interruption every wait obeys.
pub struct Client {
    sock: zmq::Socket,
    endpoint: String,
    timeout: Duration,
    next_id: u64,
    interrupted: Option<Box<dyn Fn() -> bool>>,
}

impl Client {
    /// Connects to `endpoint` with the security `auth` and waits, at most `timeout`, until the
    /// connection is up (with ZMQ_IMMEDIATE the socket becomes writable only then, after the
    /// CURVE handshake when there is one). A refused handshake is named in the error. Every
    /// wait ends early with [`ClientError::Interrupted`] once `interrupted` says so.
    pub fn connect(
        endpoint: &str,
        auth: &ClientAuth,
        timeout: Duration,
        interrupted: Option<Box<dyn Fn() -> bool>>,
    ) -> Result<Client, ClientError> {
        let ctx = crate::socket::context();
        let (sock, mut probe): (zmq::Socket, HandshakeProbe) =
            crate::socket::dealer_probed(&ctx, endpoint, auth)?;
        let client = Client {
            sock,
            endpoint: endpoint.to_string(),
            timeout,
            next_id: 1,
            interrupted,
        };
        if client.wait(zmq::POLLOUT)? {
            tracing::debug!(peer = %endpoint, "connected");
            return Ok(client);
        }
        let secs = timeout.as_secs_f64();
        let endpoint = endpoint.to_string();
        Err(match probe.failure() {
            Some(why) => ClientError::Refused {
                endpoint,
                secs,
                why,
            },
            None => ClientError::Unreachable { endpoint, secs },
        })
    }

    /// The peer's endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The timeout of every wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A fresh request id.
    pub fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends `msg` without blocking; a failure means the peer went away.
    pub fn send(&self, msg: &Message) -> Result<(), ClientError> {
        codec::send(&self.sock, None, msg, None).map_err(|e| ClientError::Disconnected {
            endpoint: self.endpoint.clone(),
            reason: if e == zmq::Error::EAGAIN {
                "the connection is down".to_string()
            } else {
                e.to_string()
            },
        })
    }

    /// Sends `msg` with a fresh id and returns the id.
    pub fn request(&mut self, msg: Message) -> Result<u64, ClientError> {
        let id = self.new_id();
        self.send(&msg.with_id(id))?;
        Ok(id)
    }

    /// Tells the peer to drop transfer `id`; best effort, as the link may be gone already.
    pub fn abort(&self, id: u64) {
        if let Err(e) = self.send(&Message::Abort { id }) {
            tracing::debug!(id, "could not send abort: {e}");
        }
    }

    /// Waits, at most the timeout, for the next reply to request `id`. Replies to other
    /// (abandoned) requests are skipped; an `error` reply becomes [`ClientError::Remote`].
    pub fn reply(&self, id: u64) -> Result<Reply, ClientError> {
        self.reply_of(&|other| other == id)?.1
    }

    /// Waits, at most the timeout, for the next reply to any request `wanted` says is in
    /// flight (several requests outstanding at once); returns its id and the reply, or the
    /// peer's `error` for that request as [`ClientError::Remote`]. The outer error is the
    /// link's (timeout, disconnection, interruption); replies to other requests are skipped.
    pub fn reply_of(
        &self,
        wanted: &dyn Fn(u64) -> bool,
    ) -> Result<(u64, Result<Reply, ClientError>), ClientError> {
        loop {
            if !self.wait(zmq::POLLIN)? {
                return Err(ClientError::Timeout {
                    endpoint: self.endpoint.clone(),
                    secs: self.timeout.as_secs_f64(),
                });
            }
            let (msg, data) = self.read()?;
            let msg = match msg {
                Ok(m) => m,
                Err(r) if wanted(r.id) => {
                    tracing::warn!(peer = %self.endpoint, "undecodable reply: {}", r.error);
                    let bad = ClientError::BadReply {
                        endpoint: self.endpoint.clone(),
                        error: r.error.to_string(),
                    };
                    return Ok((r.id, Err(bad)));
                }
                Err(r) => {
                    tracing::warn!(peer = %self.endpoint, "undecodable reply ignored: {}", r.error);
                    continue;
                }
            };
            let id = msg.id();
            if !wanted(id) {
                tracing::debug!(
                    id,
                    kind = msg.kind(),
                    "reply to an abandoned request ignored"
                );
                continue;
            }
            if let Message::Error { code, message, .. } = msg {
                return Ok((id, Err(ClientError::Remote { code, message })));
            }
            return Ok((id, Ok(Reply { msg, data })));
        }
    }

    /// Waits for `events` on the socket for at most the timeout, in short slices so that an
    /// interruption is seen quickly. `Ok(false)` when the time ran out.
    fn wait(&self, events: zmq::PollEvents) -> Result<bool, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.interrupted.as_ref().is_some_and(|f| f()) {
                return Err(ClientError::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = (left.as_millis() as i64).min(SLICE_MS);
            match self.sock.poll(events, slice) {
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(self.link_error(e)),
            }
            if left.is_zero() {
                return Ok(false);
            }
        }
    }

    /// Reads one whole message (the socket is readable).
    fn read(&self) -> Result<(Result<Message, Rejected>, Option<zmq::Message>), ClientError> {
        let inbound =
            codec::recv(&self.sock, false, zmq::DONTWAIT).map_err(|e| self.link_error(e))?;
        Ok((inbound.msg, inbound.data))
    }

    fn link_error(&self, e: zmq::Error) -> ClientError {
        ClientError::Disconnected {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_get_their_own_reply_and_an_error_reply_is_an_error() {
        let ctx = zmq::Context::new();
        let (server, port) = crate::socket::router(&ctx, "127.0.0.1", 0).unwrap();
        let ep = crate::socket::endpoint("127.0.0.1", port);
        let mut c = Client::connect(&ep, &ClientAuth::Plain, Duration::from_secs(5), None).unwrap();
        let stale = c.request(Message::Ping { id: 0 }).unwrap();
        let id = c.request(Message::Ping { id: 0 }).unwrap();
        assert_ne!(stale, id);
        for _ in 0..2 {
            assert_eq!(server.poll(zmq::POLLIN, 5000).unwrap(), 1);
            let got = codec::recv(&server, true, 0).unwrap();
            let asked = got.msg.unwrap().id();
            let peer = got.peer.unwrap();
            let answer = if asked == id {
                Message::error(id, ErrorCode::NotFound, "no such file")
            } else {
                Message::Pong { id: asked }
            };
            codec::send(&server, Some(&peer), &answer, None).unwrap();
        }
        match c.reply(id) {
            Err(ClientError::Remote { code, message }) => {
                assert_eq!(
                    (code, message.as_str()),
                    (ErrorCode::NotFound, "no such file")
                );
            }
            other => panic!("expected the error reply, got {:?}", other.map(|r| r.msg)),
        }
    }

    #[test]
    fn a_silent_peer_times_out_and_an_interrupt_ends_the_wait() {
        let ctx = zmq::Context::new();
        let (_server, port) = crate::socket::router(&ctx, "127.0.0.1", 0).unwrap();
        let ep = crate::socket::endpoint("127.0.0.1", port);
        let t = Duration::from_millis(200);
        let mut c = Client::connect(&ep, &ClientAuth::Plain, t, None).unwrap();
        let id = c.request(Message::Ping { id: 0 }).unwrap();
        assert!(matches!(c.reply(id), Err(ClientError::Timeout { .. })));

        let c = Client::connect(&ep, &ClientAuth::Plain, t, Some(Box::new(|| true)));
        assert!(matches!(c, Err(ClientError::Interrupted)));
    }
}
