//! One read (`get`): the `meta` answer, then the content, inline or in chunks under credit,
//! checked for order and hashed as it arrives, handed to a [`Sink`].
//!
//! Flow control (PROTOCOL.md): the reader grants `TRANSFER_WINDOW` chunks at first and one more
//! for every chunk received, never more than the file still needs, so at most
//! `TRANSFER_WINDOW` chunks are ever outstanding and the window stays full while the file streams.

use crate::client::Client;
use crate::error::FetchError;
use schema::limits::{CHUNK_SIZE, INLINE_MAX, TRANSFER_WINDOW};
use schema::{Entry, Hash, Message};
use tracing::debug;

/// Where the content of a read goes, in order.
pub(crate) trait Sink {
    /// Takes the next bytes of the file.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError>;
}

/// Asks the broker for `name` and returns its entry, before any content moves.
pub(crate) fn request(client: &mut Client, name: &str) -> Result<Started, FetchError> {
    let id = client.new_id();
    client.send(&Message::Get {
        id,
        name: name.to_string(),
        class: None,
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
pub(crate) struct Started {
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
        let mut hasher = blake3::Hasher::new();
        if self.entry.size <= INLINE_MAX {
            let data = self.inline.as_deref().unwrap_or_default();
            hasher.update(data);
            sink.write_all(data)?;
        } else {
            let result = stream(client, self.id, &self.entry, &mut hasher, sink);
            if let Err(e) = result {
                if !matches!(e, FetchError::Remote { .. }) {
                    client.abort(self.id);
                }
                return Err(e);
            }
        }
        if Hash::from(hasher.finalize()) == self.entry.blake3 {
            Ok(())
        } else {
            Err(FetchError::Integrity)
        }
    }
}

/// Number of chunks a file of `size` bytes travels in.
fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

/// Receives the chunks of transfer `id` in order, granting credit as they come.
fn stream(
    client: &mut Client,
    id: u64,
    entry: &Entry,
    hasher: &mut blake3::Hasher,
    sink: &mut dyn Sink,
) -> Result<(), FetchError> {
    let total = chunk_count(entry.size);
    let mut granted = total.min(u64::from(TRANSFER_WINDOW));
    client.send(&Message::Credit {
        id,
        chunks: granted as u32,
    })?;
    let mut offset = 0u64;
    while offset < entry.size {
        let reply = client.reply(id)?;
        let Message::Chunk { offset: at, .. } = reply.msg else {
            return Err(FetchError::Protocol(format!(
                "expected a chunk at offset {offset}, got {}",
                reply.msg.kind()
            )));
        };
        let data = reply.data.as_deref().unwrap_or_default();
        let end = at.saturating_add(data.len() as u64);
        let last = schema::transfer::is_last_chunk(false, entry.size, end, false);
        if at != offset || end > entry.size || !schema::transfer::chunk_len_ok(data.len(), last) {
            return Err(FetchError::Protocol(format!(
                "chunk of {} bytes at offset {at}, expected offset {offset} of {} bytes",
                data.len(),
                entry.size
            )));
        }
        // Grant the next chunk before writing this one, so the window stays full.
        if granted < total {
            granted += 1;
            client.send(&Message::Credit { id, chunks: 1 })?;
        }
        hasher.update(data);
        sink.write_all(data)?;
        offset = end;
    }
    debug!(id, size = entry.size, "transfer complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_counts() {
        let c = CHUNK_SIZE as u64;
        assert_eq!(chunk_count(INLINE_MAX + 1), 1);
        assert_eq!(chunk_count(c), 1);
        assert_eq!(chunk_count(c + 1), 2);
        assert_eq!(chunk_count(9 * c), 9);
    }
}
