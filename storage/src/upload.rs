//! Uploads on the class ports: `put` (inline or chunked under credit), `chunk`, `abort`, and the
//! `done` replies once the sync pool has made a file durable.

use crate::error::StoreError;
use crate::meta::{self, StoredMeta};
use crate::node::{hex, Key, Server};
use crate::sync::{Job, Work};
use disk::atomic::TempFile;
use disk::direct::ContentWriter;
use schema::limits::{CHUNK_SIZE, INLINE_MAX};
use schema::transfer::PutKind;
use schema::{Class, Hash, Message};
use std::time::Instant;

/// Most uploads in progress at once (receiving or syncing); more get `error busy`.
pub const MAX_UPLOADS: usize = 1024;

/// The fields of a `put`.
#[derive(Debug, Clone)]
pub struct Put {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub modified: i64,
    pub blake3: Option<Hash>,
    pub version: Option<u64>,
    /// The file is still being written: its size is known at the last chunk.
    pub growing: bool,
}

/// What a chunk may say besides its content: the hash on the last chunk, and the final
/// modification time on the last chunk of a growing upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkEnd {
    pub blake3: Option<Hash>,
    pub modified: Option<i64>,
}

/// A chunked upload being received.
#[derive(Debug)]
pub struct Upload {
    meta: StoredMeta,
    /// The hash the `put` announced, if any; the content must match it too.
    announced: Option<Hash>,
    /// The file's size; for a growing upload, known once the last chunk is in.
    size: u64,
    growing: bool,
    temp: TempFile,
    hasher: blake3::Hasher,
    /// Puts the content on disk while the rest arrives (directly, for large files).
    writer: ContentWriter,
    /// Bytes received so far: the offset the next chunk must have.
    received: u64,
    /// When the sender last spoke.
    pub last_seen: Instant,
}

/// Where a durable-write job's reply goes.
#[derive(Debug)]
pub struct Pending {
    sock: usize,
    peer: Vec<u8>,
}

/// What one accepted chunk meant.
enum Progress {
    More,
    /// The last chunk arrived and the content has the hash it should have.
    Complete(Hash),
}

impl Upload {
    /// Writes one chunk at `offset`; checks order, size and, on the last chunk, the hash.
    fn accept(&mut self, offset: u64, data: &[u8], end: ChunkEnd) -> Result<Progress, StoreError> {
        let name = &self.meta.name;
        if offset != self.received {
            return Err(StoreError::Protocol(format!(
                "{name}: chunk at offset {offset}, expected {}",
                self.received
            )));
        }
        let stop = offset + data.len() as u64;
        if !self.growing && stop > self.size {
            return Err(StoreError::Protocol(format!(
                "{name}: chunk ends at {stop}, past the file size {}",
                self.size
            )));
        }
        // The last chunk of a growing upload is the one with the hash; it ends the file.
        let last =
            schema::transfer::is_last_chunk(self.growing, self.size, stop, end.blake3.is_some());
        if !schema::transfer::chunk_len_ok(data.len(), last) {
            return Err(StoreError::Protocol(format!(
                "{name}: chunk of {} bytes; every chunk but the last has {CHUNK_SIZE}",
                data.len()
            )));
        }
        if last && self.growing {
            let Some(modified) = end.modified else {
                return Err(StoreError::Protocol(format!(
                    "{name}: the last chunk of a growing upload gives no modification time"
                )));
            };
            self.size = stop;
            self.meta.modified = modified;
        }
        let blake3 = end.blake3;
        self.writer
            .write(self.temp.file(), data)
            .map_err(|e| StoreError::io("write", self.temp.path(), e))?;
        self.hasher.update(data);
        self.received = stop;
        if !last {
            return Ok(Progress::More);
        }
        let actual = Hash::from(self.hasher.finalize());
        let Some(expected) = blake3 else {
            return Err(StoreError::Unverified(format!(
                "{name}: the last chunk carries no blake3, so the content cannot be verified; \
                 nothing stored"
            )));
        };
        for expected in [Some(expected), self.announced].into_iter().flatten() {
            if expected != actual {
                return Err(StoreError::Integrity {
                    name: name.clone(),
                    expected,
                    actual,
                });
            }
        }
        Ok(Progress::Complete(actual))
    }
}

impl Server {
    /// A `put` on the port of `sock`'s class.
    pub(crate) fn on_put(
        &mut self,
        sock: usize,
        peer: Vec<u8>,
        put: Put,
        data: Option<zmq::Message>,
    ) {
        let class = Class::ALL[sock];
        let id = put.id;
        let dest = match self.layout.file_path(class, &put.name) {
            Ok(p) => p,
            Err(e) => return self.send_error(sock, &peer, id, &e.into()),
        };
        let key: Key = (sock, peer, id);
        if self.uploads.contains_key(&key) {
            let e = StoreError::Protocol(format!("transfer id {id} is already in use"));
            return self.send_error(sock, &key.1, id, &e);
        }
        if self.uploads.len() + self.pending.len() >= MAX_UPLOADS {
            let e = StoreError::Busy(format!(
                "{}: the node has {MAX_UPLOADS} uploads in progress; try again later",
                put.name
            ));
            return self.send_error(sock, &key.1, id, &e);
        }
        let version = put.version.unwrap_or(1);
        let kind = match schema::transfer::put_kind(put.size, put.blake3, put.growing) {
            Ok(kind) => kind,
            Err(e) => {
                let e = StoreError::Protocol(format!("{}: {e}", put.name));
                return self.send_error(sock, &key.1, id, &e);
            }
        };
        if let PutKind::Inline { blake3 } = kind {
            let Some(data) = data else {
                let e = StoreError::Protocol(format!(
                    "{}: a put of at most {INLINE_MAX} bytes carries its content",
                    put.name
                ));
                return self.send_error(sock, &key.1, id, &e);
            };
            let meta = StoredMeta::new(&put.name, class, blake3, put.modified, version);
            let work = Work::Inline {
                meta,
                data: data.to_vec(),
            };
            return self.submit(key, work);
        }
        if let Some(h) = put.blake3 {
            if let Some(old) = meta::stored(&dest, &put.name).filter(|old| old.blake3 == h) {
                tracing::debug!(name = %put.name, "unchanged");
                let done = Message::Done {
                    id,
                    version: old.version,
                    unchanged: true,
                };
                self.send(sock, &key.1, &done, None);
                return;
            }
        }
        let temp = match self.layout.new_temp() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("upload of {} refused: {e}", put.name);
                return self.send_error(sock, &key.1, id, &e);
            }
        };
        // A growing upload takes credit until its last chunk comes.
        let chunks = if put.growing {
            u64::MAX
        } else {
            put.size.div_ceil(CHUNK_SIZE as u64)
        };
        // A file followed while written is large by the time its writer closes it.
        let expected = if put.growing { u64::MAX } else { put.size };
        let writer = ContentWriter::new(&temp.reopen_path(), expected);
        let upload = Upload {
            // The hash is known once the last chunk is in; until then it holds the announced one.
            meta: StoredMeta::new(
                &put.name,
                class,
                put.blake3.unwrap_or(Hash([0; 32])),
                put.modified,
                version,
            ),
            announced: put.blake3,
            size: put.size,
            growing: put.growing,
            temp,
            hasher: blake3::Hasher::new(),
            writer,
            received: 0,
            last_seen: Instant::now(),
        };
        tracing::debug!(peer = %hex(&key.1), id, name = %put.name, size = put.size, "upload started");
        self.uploads.insert(key.clone(), upload);
        self.ledger.open(key, chunks);
        self.grant();
    }

    /// A `chunk` of an upload.
    pub(crate) fn on_chunk(
        &mut self,
        sock: usize,
        peer: Vec<u8>,
        id: u64,
        offset: u64,
        end: ChunkEnd,
        data: &[u8],
    ) {
        let key: Key = (sock, peer, id);
        let Some(upload) = self.uploads.get_mut(&key) else {
            let reply = Message::error(
                id,
                schema::ErrorCode::UnknownTransfer,
                format!("no upload {id} in progress from this peer (finished, dropped or never started)"),
            );
            self.send(sock, &key.1, &reply, None);
            return;
        };
        upload.last_seen = Instant::now();
        let result = match self.ledger.spend(&key) {
            Ok(()) => upload.accept(offset, data, end),
            Err(_) => Err(StoreError::Protocol(format!(
                "{}: chunk at offset {offset} sent without credit",
                upload.meta.name
            ))),
        };
        match result {
            Ok(Progress::More) => {}
            Ok(Progress::Complete(hash)) => {
                if let Some(mut upload) = self.uploads.remove(&key) {
                    self.ledger.close(&key);
                    upload.meta.blake3 = hash;
                    let work = Work::Finish {
                        temp: upload.temp,
                        writer: upload.writer,
                        meta: upload.meta,
                        size: upload.size,
                    };
                    self.submit(key.clone(), work);
                }
            }
            Err(e) => {
                tracing::warn!(peer = %hex(&key.1), id, "upload failed: {e}");
                // Drop first: the temporary file is gone before the sender hears of the failure.
                self.drop_upload(&key);
                self.send_error(sock, &key.1, id, &e);
            }
        }
        self.grant();
    }

    /// An `abort` of an upload: drop it and its temporary file. No reply.
    pub(crate) fn on_upload_abort(&mut self, sock: usize, peer: Vec<u8>, id: u64) {
        let key: Key = (sock, peer, id);
        if self.uploads.contains_key(&key) {
            tracing::debug!(peer = %hex(&key.1), id, "upload aborted by the sender");
            self.drop_upload(&key);
            self.grant();
        }
    }

    /// Forgets an upload: its temporary file is removed, its credit returns to the budget.
    pub(crate) fn drop_upload(&mut self, key: &Key) {
        self.uploads.remove(key);
        self.ledger.close(key);
    }

    /// Sends the credit the budget allows; a peer that cannot be reached loses its upload.
    pub(crate) fn grant(&mut self) {
        loop {
            let grants = self.ledger.distribute();
            if grants.is_empty() {
                return;
            }
            let mut lost = Vec::new();
            for (key, chunks) in grants {
                let credit = Message::Credit { id: key.2, chunks };
                if !self.send(key.0, &key.1, &credit, None) {
                    lost.push(key);
                }
            }
            if lost.is_empty() {
                return;
            }
            for key in lost {
                tracing::debug!(peer = %hex(&key.1), id = key.2, "sender gone: upload dropped");
                self.drop_upload(&key);
            }
        }
    }

    /// Hands a finished upload to the sync pool; its reply comes back through [`Server::on_result`].
    pub(crate) fn submit(&mut self, key: Key, work: Work) {
        let (sock, peer, id) = key;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let job = Job { ticket, id, work };
        let submitted = match &self.pool {
            Some(pool) => pool.submit(job),
            None => false,
        };
        if submitted {
            self.pending.insert(ticket, Pending { sock, peer });
        } else {
            let e = StoreError::Busy("the node is stopping".into());
            self.send_error(sock, &peer, id, &e);
        }
    }

    /// A sync worker finished job `ticket`: forward its reply header to the requester.
    pub(crate) fn on_result(&mut self, ticket: u64, reply: Vec<u8>) {
        let Some(p) = self.pending.remove(&ticket) else {
            tracing::warn!(ticket, "result of an unknown sync job");
            return;
        };
        let sock = &self.sockets[p.sock];
        if let Err(e) = schema::codec::send_encoded(sock, Some(&p.peer), reply, None) {
            tracing::debug!(peer = %hex(&p.peer), "cannot send the result of an upload: {e}");
        }
    }
}
