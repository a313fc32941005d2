//! Changes in flight: uploads (inline, or chunked under the broker's credit), deletes and
//! renames, each named by the request id it was sent with.

use crate::local::{read_up_to, Stamp};
use crate::state::Stored;
use schema::limits::CHUNK_SIZE;
use schema::{Hash, Message};
use std::fs::File;
use std::time::Instant;

/// One change sent to the broker and not answered yet.
#[derive(Debug)]
pub struct InFlight {
    pub change: Change,
    /// When the broker last said something about this change (or it was sent).
    pub heard: Instant,
    /// When the change was sent.
    pub sent: Instant,
}

/// What kind of change is in flight.
#[derive(Debug)]
pub enum Change {
    /// An upload of a file.
    Put(Box<Upload>),
    /// A delete of a name gone from the source.
    Delete { name: String },
    /// A move of the stored `from` (which the store holds as `stored`) to `to`.
    Rename {
        from: String,
        to: String,
        stored: Stored,
    },
}

impl Change {
    /// The names this change holds in flight.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Change::Put(u) => vec![u.name.as_str()],
            Change::Delete { name } => vec![name.as_str()],
            Change::Rename { from, to, .. } => vec![from.as_str(), to.as_str()],
        }
    }
}

/// An upload: an inline one waits only for `done`; a chunked one reads the file as credit comes.
#[derive(Debug)]
pub struct Upload {
    pub name: String,
    /// How the file looked when the upload started; a change before the end aborts it.
    pub stamp: Stamp,
    /// The content hash: known up front for inline files and compared ones, else known once the
    /// last chunk is read.
    pub blake3: Option<Hash>,
    /// The open file of a chunked upload (None for inline uploads).
    file: Option<File>,
    offset: u64,
    hasher: blake3::Hasher,
    credit: u32,
}

/// What a chunked upload can do next.
#[derive(Debug)]
pub enum Next {
    /// Nothing until more credit comes (or everything was sent).
    Wait,
    /// Send this chunk (header and content).
    Chunk(Message, Vec<u8>),
    /// The file changed or came up short while being read: abort, try again later.
    Torn(String),
}

impl Upload {
    /// An upload whose content rides inline in the `put`.
    pub fn inline(name: String, stamp: Stamp, blake3: Hash) -> Upload {
        Upload {
            name,
            stamp,
            blake3: Some(blake3),
            file: None,
            offset: 0,
            hasher: blake3::Hasher::new(),
            credit: 0,
        }
    }

    /// An upload read from `file` chunk by chunk as credit comes.
    pub fn chunked(name: String, stamp: Stamp, file: File, blake3: Option<Hash>) -> Upload {
        Upload {
            name,
            stamp,
            blake3,
            file: Some(file),
            offset: 0,
            hasher: blake3::Hasher::new(),
            credit: 0,
        }
    }

    /// The `put` that starts this upload.
    pub fn put(&self, id: u64) -> Message {
        Message::Put {
            id,
            name: self.name.clone(),
            size: self.stamp.size,
            modified: self.stamp.modified,
            blake3: self.blake3,
            version: None,
        }
    }

    /// Whether the content is read and sent chunk by chunk.
    pub fn is_chunked(&self) -> bool {
        self.file.is_some()
    }

    /// Whether every chunk went out.
    pub fn all_sent(&self) -> bool {
        self.file.is_none() || self.offset >= self.stamp.size
    }

    /// Adds credit from the broker.
    pub fn grant(&mut self, chunks: u32) {
        self.credit = self.credit.saturating_add(chunks);
    }

    /// Reads the next chunk if credit allows. Before the last chunk the file is checked: if it
    /// changed since the upload started, the upload is torn.
    pub fn next(&mut self, id: u64) -> Next {
        let size = self.stamp.size;
        let Some(file) = self.file.as_mut() else {
            return Next::Wait;
        };
        if self.credit == 0 || self.offset >= size {
            return Next::Wait;
        }
        let len = usize::try_from((size - self.offset).min(CHUNK_SIZE as u64)).unwrap_or(0);
        let data = match read_up_to(file, len) {
            Ok(data) if data.len() == len => data,
            Ok(data) => {
                let n = data.len();
                return Next::Torn(format!(
                    "read {n} of {len} bytes at offset {} (the file shrank)",
                    self.offset
                ));
            }
            Err(e) => return Next::Torn(format!("read failed at offset {}: {e}", self.offset)),
        };
        self.hasher.update(&data);
        let offset = self.offset;
        self.offset += len as u64;
        self.credit -= 1;
        let mut blake3 = None;
        if self.offset == size {
            match file.metadata() {
                Ok(m) if Stamp::of(&m) == self.stamp => {}
                Ok(_) => return Next::Torn("the file changed while it was being sent".into()),
                Err(e) => return Next::Torn(format!("cannot stat it again: {e}")),
            }
            let hash: Hash = self.hasher.finalize().into();
            if self.blake3.is_some_and(|h| h != hash) {
                return Next::Torn("the file changed since it was hashed".into());
            }
            self.blake3 = Some(hash);
            blake3 = Some(hash);
        }
        Next::Chunk(Message::Chunk { id, offset, blake3 }, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{look, Look};
    use std::io::Write;

    fn start(path: &std::path::Path) -> Upload {
        let Look::File(stamp) = look(path).unwrap() else {
            panic!("no file")
        };
        let file = File::open(path).unwrap();
        Upload::chunked("big".into(), stamp, file, None)
    }

    #[test]
    fn chunks_only_under_credit_with_the_hash_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let content: Vec<u8> = (0..CHUNK_SIZE * 2 + 10).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut up = start(&path);
        assert!(matches!(up.next(1), Next::Wait), "no credit, no chunk");
        up.grant(2);
        let mut offsets = Vec::new();
        while let Next::Chunk(Message::Chunk { offset, blake3, .. }, data) = up.next(1) {
            assert!(blake3.is_none());
            assert_eq!(data.len(), CHUNK_SIZE);
            offsets.push(offset);
        }
        assert_eq!(offsets, [0, CHUNK_SIZE as u64]);
        assert!(!up.all_sent());
        up.grant(8);
        let Next::Chunk(Message::Chunk { offset, blake3, .. }, data) = up.next(1) else {
            panic!("expected the last chunk")
        };
        assert_eq!(offset, 2 * CHUNK_SIZE as u64);
        assert_eq!(data.len(), 10);
        assert_eq!(blake3, Some(Hash::of(&content)));
        assert!(up.all_sent());
        assert!(matches!(up.next(1), Next::Wait));
    }

    #[test]
    fn a_change_during_the_upload_tears_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![1u8; CHUNK_SIZE + 5]).unwrap();
        let mut up = start(&path);
        up.grant(8);
        assert!(matches!(up.next(1), Next::Chunk(..)));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"more").unwrap();
        assert!(matches!(up.next(1), Next::Torn(_)));

        // a file that shrinks comes up short
        std::fs::write(&path, vec![1u8; CHUNK_SIZE + 5]).unwrap();
        let mut up = start(&path);
        up.grant(8);
        std::fs::write(&path, b"tiny").unwrap();
        assert!(matches!(up.next(1), Next::Torn(_)));
    }
}
