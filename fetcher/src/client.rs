//! The link to the broker's fetch port: one DEALER, requests with fresh ids, and waits for the
//! matching reply that never last longer than `--timeout` and stop on SIGINT/SIGTERM.

use crate::error::{FetchError, Secs};
use daemon::{Shutdown, POLL_MS};
use net::security::{ClientAuth, HandshakeProbe};
use schema::codec::{self, Rejected};
use schema::Message;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// One reply: its header and its data frame, if any.
pub(crate) struct Reply {
    pub msg: Message,
    pub data: Option<zmq::Message>,
}

/// A connected DEALER to the broker, with the timeout and stop signal every wait obeys.
pub(crate) struct Client {
    sock: zmq::Socket,
    endpoint: String,
    timeout: Duration,
    secs: Secs,
    next_id: u64,
    stop: Shutdown,
}

/// How a client of the broker's fetch port at `endpoint` authenticates: CURVE with the client's
/// `secret_key` and the broker's public `broker_key` (`--secret-key`, `--broker-key`), or none
/// on loopback.
pub fn broker_auth(
    endpoint: &str,
    secret_key: Option<&std::path::Path>,
    broker_key: Option<&std::path::Path>,
) -> Result<ClientAuth, FetchError> {
    Ok(net::security::client_auth(net::security::ClientOptions {
        peer: "the broker",
        host: endpoint,
        secret_key,
        server_key: broker_key,
        server_option: "--broker-key",
        insecure: None,
    })?)
}

impl Client {
    /// Connects to `endpoint` with the security `auth` and waits, at most `secs`, until the
    /// connection is up (with ZMQ_IMMEDIATE the socket becomes writable only then, after the
    /// CURVE handshake when there is one). A refused handshake is named in the error.
    pub fn connect(
        endpoint: &str,
        auth: &ClientAuth,
        secs: f64,
        stop: Shutdown,
    ) -> Result<Client, FetchError> {
        let ctx = net::socket::context();
        let (sock, mut probe): (zmq::Socket, HandshakeProbe) =
            net::socket::dealer_probed(&ctx, endpoint, auth)?;
        let client = Client {
            sock,
            endpoint: endpoint.to_string(),
            timeout: Duration::from_secs_f64(secs),
            secs: Secs(secs),
            next_id: 1,
            stop,
        };
        if client.wait(zmq::POLLOUT)? {
            debug!(broker = %endpoint, "connected");
            Ok(client)
        } else if let Some(why) = probe.failure() {
            Err(FetchError::Refused {
                endpoint: endpoint.to_string(),
                secs: client.secs,
                why,
            })
        } else {
            Err(FetchError::Unreachable {
                endpoint: endpoint.to_string(),
                secs: client.secs,
            })
        }
    }

    /// The broker's endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A fresh request id.
    pub fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends `msg` without blocking; a failure means the broker went away.
    pub fn send(&self, msg: &Message) -> Result<(), FetchError> {
        codec::send(&self.sock, None, msg, None).map_err(|e| FetchError::Disconnected {
            endpoint: self.endpoint.clone(),
            reason: if e == zmq::Error::EAGAIN {
                "the connection is down".to_string()
            } else {
                e.to_string()
            },
        })
    }

    /// Tells the broker to drop transfer `id`; best effort, as the link may be gone already.
    pub fn abort(&self, id: u64) {
        if let Err(e) = self.send(&Message::Abort { id }) {
            debug!(id, "could not send abort: {e}");
        }
    }

    /// Waits, at most the timeout, for the next reply to request `id`. Replies to other
    /// (abandoned) requests are skipped; an `error` reply becomes [`FetchError::Remote`].
    pub fn reply(&self, id: u64) -> Result<Reply, FetchError> {
        loop {
            if !self.wait(zmq::POLLIN)? {
                return Err(FetchError::Timeout {
                    endpoint: self.endpoint.clone(),
                    secs: self.secs,
                });
            }
            let (msg, data) = self.read()?;
            let msg = match msg {
                Ok(m) => m,
                Err(r) if r.id == id => {
                    warn!(broker = %self.endpoint, "undecodable reply: {}", r.error);
                    return Err(FetchError::Protocol(r.error.to_string()));
                }
                Err(r) => {
                    warn!(broker = %self.endpoint, "undecodable reply ignored: {}", r.error);
                    continue;
                }
            };
            if msg.id() != id {
                debug!(
                    id = msg.id(),
                    kind = msg.kind(),
                    "reply to an abandoned request ignored"
                );
                continue;
            }
            if let Message::Error { code, message, .. } = msg {
                return Err(FetchError::Remote { code, message });
            }
            return Ok(Reply { msg, data });
        }
    }

    /// Waits for `events` on the socket for at most the timeout, in slices of `POLL_MS` so a
    /// stop signal is seen quickly. `Ok(false)` when the time ran out.
    fn wait(&self, events: zmq::PollEvents) -> Result<bool, FetchError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.stop.is_triggered() {
                return Err(FetchError::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = (left.as_millis() as i64).min(POLL_MS);
            match self.sock.poll(events, slice) {
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) => {}
                Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(self.link_error(e)),
            }
            if left.is_zero() {
                return Ok(false);
            }
        }
    }

    /// Reads one whole message (the socket is readable).
    fn read(&self) -> Result<(Result<Message, Rejected>, Option<zmq::Message>), FetchError> {
        let inbound =
            codec::recv(&self.sock, false, zmq::DONTWAIT).map_err(|e| self.link_error(e))?;
        Ok((inbound.msg, inbound.data))
    }

    fn link_error(&self, e: zmq::Error) -> FetchError {
        FetchError::Disconnected {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        }
    }
}
