//! The link to the broker's fetch port: one DEALER, requests with fresh ids, and waits for the
//! matching reply that never last longer than `--timeout` and stop on SIGINT/SIGTERM.

use crate::error::{FetchError, Secs};
use schema::codec::{self, DecodeError, Rejected};
use schema::daemon::{Shutdown, POLL_MS};
use schema::limits::{MAX_FRAMES, MAX_HEADER, MAX_LIST_PAGE, MAX_NAME};
use schema::Message;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Largest `listing` header the fetcher accepts: a full page of the longest names with room for
/// the other fields. Listings are the one reply whose header may exceed `MAX_HEADER`.
const MAX_LISTING_HEADER: usize = MAX_LIST_PAGE as usize * (MAX_NAME + 256);

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

impl Client {
    /// Connects to `endpoint` and waits, at most `secs`, until the connection is up (with
    /// ZMQ_IMMEDIATE the socket becomes writable only then).
    pub fn connect(endpoint: &str, secs: f64, stop: Shutdown) -> Result<Client, FetchError> {
        let ctx = zmq::Context::new();
        let sock = schema::socket::dealer(&ctx, endpoint)?;
        // A listing page may be larger than a chunk frame (see MAX_LISTING_HEADER). The option
        // must be set before the connection's session starts, hence the reconnect.
        let widen = sock
            .set_maxmsgsize(MAX_LISTING_HEADER as i64)
            .and_then(|()| sock.disconnect(endpoint))
            .and_then(|()| sock.connect(endpoint));
        if let Err(source) = widen {
            return Err(schema::socket::SocketError {
                action: "connect to",
                endpoint: endpoint.to_string(),
                source,
            }
            .into());
        }
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
        let mut frames = Vec::with_capacity(MAX_FRAMES);
        let mut count = 0usize;
        loop {
            let frame = self
                .sock
                .recv_msg(zmq::DONTWAIT)
                .map_err(|e| self.link_error(e))?;
            count += 1;
            let more = frame.get_more();
            if frames.len() < MAX_FRAMES {
                frames.push(frame);
            }
            if !more {
                break;
            }
        }
        let reject = |error| Err(Rejected { id: 0, error });
        if count > MAX_FRAMES - 1 {
            return Ok((reject(DecodeError::TooManyFrames(count)), None));
        }
        let mut it = frames.into_iter();
        let Some(header) = it.next() else {
            return Ok((reject(DecodeError::NoHeader), None));
        };
        let data = it.next();
        let msg =
            decode_reply(&header).and_then(|m| match codec::check_data(&m, data.as_deref()) {
                Ok(()) => Ok(m),
                Err(error) => Err(Rejected { id: m.id(), error }),
            });
        Ok((msg, data))
    }

    fn link_error(&self, e: zmq::Error) -> FetchError {
        FetchError::Disconnected {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        }
    }
}

/// Decodes a reply header. A `listing` is read straight into its entries (the shared codec goes
/// through a generic CBOR tree, several times slower for a page of 5,000 entries) and may exceed
/// `MAX_HEADER`, as a full page does not fit in 16 KiB; every other reply goes through the shared
/// codec with its limits.
pub(crate) fn decode_reply(frame: &[u8]) -> Result<Message, Rejected> {
    if let Some(listing) = decode_listing(frame) {
        return listing;
    }
    if frame.len() > MAX_HEADER {
        return Err(Rejected {
            id: 0,
            error: DecodeError::HeaderTooLarge(frame.len()),
        });
    }
    codec::decode(frame)
}

/// The header of a `listing`, field by field (unknown keys are ignored, as the protocol says).
#[derive(serde::Deserialize)]
struct ListingHeader {
    v: u64,
    t: String,
    id: u64,
    entries: Vec<schema::Entry>,
    more: bool,
}

/// `Some` when `frame` is a `listing` header; `None` sends it to the general decoder.
fn decode_listing(frame: &[u8]) -> Option<Result<Message, Rejected>> {
    let h: ListingHeader = ciborium::from_reader(frame).ok()?;
    if h.t != "listing" {
        return None;
    }
    if h.v != schema::PROTOCOL_VERSION {
        return Some(Err(Rejected {
            id: h.id,
            error: DecodeError::Version(h.v),
        }));
    }
    Some(Ok(Message::Listing {
        id: h.id,
        entries: h.entries,
        more: h.more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Entry, Hash};

    #[test]
    fn large_listings_decode_and_other_large_headers_do_not() {
        let entries: Vec<Entry> = (0..500)
            .map(|i| Entry {
                name: format!("folder/file-{i:05}.txt"),
                class: Class::Txt,
                size: i,
                blake3: Hash::of(b"x"),
                modified: 0,
                version: 1,
            })
            .collect();
        let listing = Message::Listing {
            id: 7,
            entries,
            more: true,
        };
        let frame = codec::encode(&listing);
        assert!(frame.len() > MAX_HEADER);
        assert_eq!(decode_reply(&frame).unwrap(), listing);
        let big_error = Message::error(7, schema::ErrorCode::Io, "x".repeat(MAX_HEADER));
        assert!(decode_reply(&codec::encode(&big_error)).is_err());
    }
}
