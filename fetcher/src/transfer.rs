//! One read (`get`): the `meta` answer, then the content, inline or in chunks under credit,
//! checked for order and hashed as it arrives, handed to a [`Sink`].
//!
//! Flow control and the checks of each chunk are the protocol's (`schema::transfer`:
//! [`ReadWindow`], [`Receiver`]), the same the node applies to an upload.

use crate::client::Client;
use crate::error::FetchError;
use schema::limits::INLINE_MAX;
use schema::transfer::{ReadWindow, Receiver, Step};
use schema::{Entry, Hash, Message};
use tracing::debug;

/// Where the content of a read goes, in order.
pub trait Sink {
    /// Takes the next bytes of the file.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError>;
}

/// Asks the broker for `name` (its current version, or `version` from the history) and
/// returns its entry, before any content moves.
pub fn request(
    client: &mut Client,
    name: &str,
    version: Option<u64>,
) -> Result<Started, FetchError> {
    let id = client.new_id();
    client.send(&Message::Get {
        id,
        name: name.to_string(),
        class: None,
        version,
        sender: None,
    })?;
    let reply = client.reply(id)?;
    match reply.msg {
        Message::Meta { entry, .. } => Ok(Started {
            id,
            entry,
            inline: reply.data,
        }),
        other => Err(FetchError::Protocol(format!(
            "expected meta or error in answer to get, got {}",
            other.kind()
        ))),
    }
}

/// A read the broker accepted: its entry and, for a small file, the whole content.
pub struct Started {
    id: u64,
    /// What the broker holds for the name.
    pub entry: Entry,
    inline: Option<zmq::Message>,
}

impl Started {
    /// Gives the read up before any content moved.
    pub fn abandon(self, client: &Client) {
        if self.entry.size > INLINE_MAX {
            client.abort(self.id);
        }
    }

    /// Moves the content into `sink` and checks it against `entry.blake3`. On any failure of a
    /// chunked read the broker is told to drop the transfer.
    pub fn receive(self, client: &mut Client, sink: &mut dyn Sink) -> Result<(), FetchError> {
        let actual = if self.entry.size <= INLINE_MAX {
            let data = self.inline.as_deref().unwrap_or_default();
            sink.write_all(data)?;
            Hash::of(data)
        } else {
            match stream(client, self.id, &self.entry, sink) {
                Ok(actual) => actual,
                Err(e) => {
                    if !matches!(e, FetchError::Remote { .. }) {
                        client.abort(self.id);
                    }
                    return Err(e);
                }
            }
        };
        if actual == self.entry.blake3 {
            Ok(())
        } else {
            Err(FetchError::Integrity)
        }
    }
}

/// Receives the chunks of transfer `id` in order, granting credit as they come; returns the
/// hash of the content.
fn stream(
    client: &mut Client,
    id: u64,
    entry: &Entry,
    sink: &mut dyn Sink,
) -> Result<Hash, FetchError> {
    let (mut window, first) = ReadWindow::open(entry.size);
    client.send(&Message::Credit { id, chunks: first })?;
    let mut stream = Receiver::new(entry.size, false);
    loop {
        let offset = stream.received();
        let reply = client.reply(id)?;
        let Message::Chunk { offset: at, .. } = reply.msg else {
            return Err(FetchError::Protocol(format!(
                "expected a chunk at offset {offset}, got {}",
                reply.msg.kind()
            )));
        };
        let data = reply.data.as_deref().unwrap_or_default();
        let step = stream.accept(at, data, false).map_err(|_| {
            FetchError::Protocol(format!(
                "chunk of {} bytes at offset {at}, expected offset {offset} of {} bytes",
                data.len(),
                entry.size
            ))
        })?;
        // Grant the next chunk before writing this one, so the window stays full.
        if window
            .received()
            .map_err(|e| FetchError::Protocol(e.to_string()))?
        {
            client.send(&Message::Credit { id, chunks: 1 })?;
        }
        sink.write_all(data)?;
        if let Step::Last { actual } = step {
            debug!(id, size = entry.size, "transfer complete");
            return Ok(actual);
        }
    }
}
