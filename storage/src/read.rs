//! Reads on the serve port: `get` answers `meta` (with the content inline for small files), then
//! `chunk`s as the reader grants `credit`.
//!
//! The node hashes what it sends: a read whose content no longer matches the hash recorded for
//! the file (changed behind the node's back) ends with `error integrity` instead of its inline
//! data or its last chunk, so the bad version is never delivered whole.
//!
//! A read keeps its file open: a new version renamed over the name while the read runs replaces
//! the folder entry, not the open file, so the reader gets the whole version it started with.

use crate::error::StoreError;
use crate::meta::StoredMeta;
use crate::node::{hex, Key, Server, SERVE};
use schema::limits::{CHUNK_SIZE, INLINE_MAX};
use schema::{Class, ErrorCode, Hash, Message};
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::Instant;

/// Most reads open at once; more get `error busy`.
pub const MAX_READS: usize = 256;

/// A chunked read in progress.
#[derive(Debug)]
pub struct Read {
    file: File,
    /// The name read, for logs.
    pub name: String,
    size: u64,
    /// Offset of the next chunk to send.
    offset: u64,
    /// The hash recorded for the file, and the hash of what was sent so far.
    expected: Hash,
    hasher: blake3::Hasher,
    /// When the reader last spoke.
    pub last_seen: Instant,
}

/// Opens the stored file `name`, looking in `class` or, when the reader gives none, in every
/// class in turn. Returns the open file and its entry.
pub fn open(
    layout: &crate::layout::Layout,
    name: &str,
    class: Option<Class>,
) -> Result<(File, schema::Entry), StoreError> {
    let classes = match class {
        Some(c) => vec![c],
        None => Class::ALL.to_vec(),
    };
    for class in classes {
        let path = layout.file_path(class, name)?;
        let Some(file) = open_regular(&path)? else {
            continue;
        };
        let meta = StoredMeta::read(&file, name)
            .map_err(|e| StoreError::io("read the metadata of", &path, io::Error::other(e)))?;
        let size = file
            .metadata()
            .map_err(|e| StoreError::io("read the size of", &path, e))?
            .len();
        let mut entry = meta.entry(size);
        // The path is the truth about where a file is; the attribute may predate a crash.
        entry.name = name.to_string();
        entry.class = class;
        return Ok((file, entry));
    }
    Err(StoreError::NotFound(format!(
        "{name}: not stored on this node"
    )))
}

/// The regular file at `path`, or `None` when there is none.
fn open_regular(path: &Path) -> Result<Option<File>, StoreError> {
    match File::open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(Some(f)),
            Ok(_) => Ok(None),
            Err(e) => Err(StoreError::io("read the metadata of", path, e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(StoreError::io("open", path, e)),
    }
}

/// The error that ends a read whose content hashes to `actual` instead of `expected`.
fn changed(name: &str, expected: Hash, actual: Hash) -> StoreError {
    tracing::warn!(
        name,
        %expected,
        %actual,
        "stored content no longer matches its recorded hash: not served (run dfs fsck --repair)"
    );
    StoreError::Corrupt(format!(
        "{name}: the stored content hashes to {actual}, not to its recorded {expected}; not \
         served (the node's copy changed; `dfs fsck --repair` sets it aside)"
    ))
}

/// Reads `len` bytes at `offset` of `file` into a new frame. The bytes land in a buffer that is
/// never zeroed first and that the frame takes over without a copy.
fn read_frame(
    file: &File,
    offset: u64,
    len: usize,
    name: &str,
) -> Result<zmq::Message, StoreError> {
    let failed = |e| StoreError::io("read", Path::new(name), e);
    let mut data = Vec::with_capacity(len);
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset)).map_err(failed)?;
    reader
        .take(len as u64)
        .read_to_end(&mut data)
        .map_err(failed)?;
    if data.len() != len {
        return Err(failed(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ends {} bytes early", len - data.len()),
        )));
    }
    Ok(zmq::Message::from(data))
}

impl Server {
    /// A `get`: answer `meta` and, for small files, the content.
    pub(crate) fn on_get(&mut self, peer: Vec<u8>, id: u64, name: &str, class: Option<Class>) {
        let key: Key = (SERVE, peer, id);
        if self.reads.contains_key(&key) {
            let e = StoreError::Protocol(format!("read id {id} is already in use"));
            return self.send_error(SERVE, &key.1, id, &e);
        }
        if self.reads.len() >= MAX_READS {
            let e = StoreError::Busy(format!(
                "{name}: the node has {MAX_READS} reads open; try again later"
            ));
            return self.send_error(SERVE, &key.1, id, &e);
        }
        let (file, entry) = match open(&self.layout, name, class) {
            Ok(found) => found,
            Err(e) => {
                if e.code() != ErrorCode::NotFound && e.code() != ErrorCode::BadName {
                    tracing::warn!("read of {name} failed: {e}");
                }
                return self.send_error(SERVE, &key.1, id, &e);
            }
        };
        let size = entry.size;
        if size <= INLINE_MAX {
            let read = read_frame(&file, 0, size as usize, name).and_then(|data| {
                let actual = Hash::of(&data);
                if actual == entry.blake3 {
                    Ok(data)
                } else {
                    Err(changed(name, entry.blake3, actual))
                }
            });
            match read {
                Ok(data) => {
                    if self.send(SERVE, &key.1, &Message::Meta { id, entry }, Some(data)) {
                        self.metrics.files_served.inc();
                        self.metrics.bytes_served.inc_by(size);
                    }
                }
                Err(e) => self.send_error(SERVE, &key.1, id, &e),
            }
            return;
        }
        let expected = entry.blake3;
        if self.send(SERVE, &key.1, &Message::Meta { id, entry }, None) {
            tracing::debug!(peer = %hex(&key.1), id, name, size, "read started");
            let read = Read {
                file,
                name: name.to_string(),
                size,
                offset: 0,
                expected,
                hasher: blake3::Hasher::new(),
                last_seen: Instant::now(),
            };
            self.reads.insert(key, read);
        }
    }

    /// A `credit` of a read: send up to `chunks` more chunks.
    pub(crate) fn on_credit(&mut self, peer: Vec<u8>, id: u64, chunks: u32) {
        let key: Key = (SERVE, peer, id);
        // Taken out of the map while chunks go out; put back unless the read is over.
        let Some(mut read) = self.reads.remove(&key) else {
            let reply = Message::error(
                id,
                ErrorCode::UnknownTransfer,
                format!("no read {id} open for this peer (finished, dropped or never started)"),
            );
            self.send(SERVE, &key.1, &reply, None);
            return;
        };
        read.last_seen = Instant::now();
        for _ in 0..chunks {
            if read.offset >= read.size {
                break;
            }
            let len = (read.size - read.offset).min(CHUNK_SIZE as u64) as usize;
            let frame = match read_frame(&read.file, read.offset, len, &read.name) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!("read of {} failed: {e}", read.name);
                    return self.send_error(SERVE, &key.1, id, &e);
                }
            };
            read.hasher.update(&frame);
            if read.offset + len as u64 >= read.size {
                let actual = Hash::from(read.hasher.finalize());
                if actual != read.expected {
                    let e = changed(&read.name, read.expected, actual);
                    return self.send_error(SERVE, &key.1, id, &e);
                }
            }
            let chunk = Message::Chunk {
                id,
                offset: read.offset,
                blake3: None,
                modified: None,
            };
            if !self.send(SERVE, &key.1, &chunk, Some(frame)) {
                tracing::debug!(peer = %hex(&key.1), id, "reader gone: read dropped");
                return;
            }
            read.offset += len as u64;
            self.metrics.bytes_served.inc_by(len as u64);
        }
        if read.offset >= read.size {
            self.metrics.files_served.inc();
            tracing::debug!(peer = %hex(&key.1), id, name = %read.name, "read finished");
        } else {
            self.reads.insert(key, read);
        }
    }

    /// An `abort` of a read. No reply.
    pub(crate) fn on_read_abort(&mut self, peer: Vec<u8>, id: u64) {
        if self.reads.remove(&(SERVE, peer, id)).is_some() {
            tracing::debug!(id, "read aborted by the reader");
        }
    }
}
