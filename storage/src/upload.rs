//! Uploads on the class ports: `put` (inline or chunked under credit), `chunk`, `abort`, and the
//! `done` replies once the sync pool has made a file durable.
//!
//! [`Uploads`] owns every upload of the node and decides what each message means; it reaches
//! the disk through the [`Layout`] and says what to send through an [`Outbox`], so it runs
//! without sockets (the socket loop in `node` drives it).

use crate::admission::{Refused, Share};
use crate::credit::Ledger;
use crate::error::StoreError;
use crate::layout::Layout;
use crate::meta::{self, StoredMeta};
use crate::outbox::Outbox;
use crate::peer::{hex, Key, Party};
use crate::sync::{SyncJob, SyncPool, Work};
use disk::atomic::TempFile;
use disk::direct::ContentWriter;
use schema::limits::IDLE_TIMEOUT;
use schema::limits::{CHUNK_SIZE, INLINE_MAX};
use schema::transfer::{PutKind, Receiver, Step};
use schema::{Class, Hash, Message};
use std::collections::HashMap;
use std::sync::Arc;
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
    /// The front peer a broker relays the upload for, if it named one.
    pub sender: Option<u64>,
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
pub struct Incoming {
    meta: StoredMeta,
    /// The hash the `put` announced, if any; the content must match it too.
    announced: Option<Hash>,
    /// The stream's checks (order, lengths, size) and the hash of what came so far.
    stream: Receiver,
    growing: bool,
    temp: TempFile,
    /// Puts the content on disk while the rest arrives (directly, for large files).
    writer: ContentWriter,
    /// When the sender last spoke.
    pub last_seen: Instant,
    /// Whose upload slot it holds.
    party: Party,
}

/// Where a sync job's reply goes.
#[derive(Debug)]
pub struct ReplyTo {
    /// The socket the request came on.
    pub sock: usize,
    /// The requester's identity.
    pub peer: Vec<u8>,
    /// The request id.
    pub id: u64,
    /// For an upload being committed, whose upload slot the job holds.
    party: Option<Party>,
}

/// What one accepted chunk meant.
enum Progress {
    More,
    /// The last chunk arrived and the content has the hash it should have.
    Complete(Hash),
}

impl Incoming {
    /// Writes one chunk at `offset`; checks order, size and, on the last chunk, the hash.
    fn accept(&mut self, offset: u64, data: &[u8], end: ChunkEnd) -> Result<Progress, StoreError> {
        let name = &self.meta.name;
        let step = self
            .stream
            .accept(offset, data, end.blake3.is_some())
            .map_err(|e| StoreError::Protocol(format!("{name}: {e}")))?;
        let actual = match step {
            Step::More => None,
            Step::Last { actual } => Some(actual),
        };
        if actual.is_some() && self.growing {
            // The last chunk of a growing upload is the one with the hash; it ends the file.
            let Some(modified) = end.modified else {
                return Err(StoreError::Protocol(format!(
                    "{name}: the last chunk of a growing upload gives no modification time"
                )));
            };
            self.meta.modified = modified;
        }
        let blake3 = end.blake3;
        self.writer
            .write(self.temp.file(), data)
            .map_err(|e| StoreError::io("write", self.temp.path(), e))?;
        let Some(actual) = actual else {
            return Ok(Progress::More);
        };
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

/// The uploads of one node: those being received, their credit, and the jobs handed to the
/// sync pool (finished uploads, and the checks and status walks that also run there) until
/// their reply comes back.
pub struct Uploads {
    layout: Arc<Layout>,
    /// `None` once stopped: jobs are then refused with `error busy`.
    pool: Option<SyncPool>,
    receiving: HashMap<Key, Incoming>,
    ledger: Ledger<Key, Party>,
    /// The rule sharing the upload slots between parties: every upload receiving or
    /// committing holds one.
    slots: Share<Party>,
    /// Jobs in the sync pool, by ticket.
    pending: HashMap<u64, ReplyTo>,
    next_ticket: u64,
    /// The files go to a bucket ([`Uploads::on_s3`]).
    on_s3: bool,
}

impl Uploads {
    /// No uploads yet; jobs go to `pool`.
    pub fn new(layout: Arc<Layout>, pool: Option<SyncPool>) -> Uploads {
        Uploads {
            layout,
            pool,
            receiving: HashMap::new(),
            ledger: Ledger::default(),
            slots: Share::new(MAX_UPLOADS),
            pending: HashMap::new(),
            next_ticket: 0,
            on_s3: false,
        }
    }

    /// Uploads being received (not counting those the sync pool is making durable).
    pub fn len(&self) -> usize {
        self.receiving.len()
    }

    /// Whether no upload is being received.
    pub fn is_empty(&self) -> bool {
        self.receiving.is_empty()
    }

    /// Stops the sync pool (see [`SyncPool::stop`]); later jobs are refused.
    pub fn stop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.stop();
        }
    }

    /// A `put` on the port of `sock`'s class.
    pub fn on_put(
        &mut self,
        sock: usize,
        peer: Vec<u8>,
        put: Put,
        data: Option<zmq::Message>,
        out: &mut impl Outbox,
    ) {
        let root = self.layout.root();
        let class = Class::ALL[sock];
        let id = put.id;
        let dest = match self.layout.file_path(class, &put.name) {
            Ok(p) => p,
            Err(e) => return out.send_error(sock, &peer, id, &e.into(), root),
        };
        if self.on_s3 {
            if let Err(e) = crate::s3::key(class, &put.name) {
                return out.send_error(sock, &peer, id, &e, root);
            }
        }
        let key: Key = (sock, peer, id);
        if self.receiving.contains_key(&key) {
            let e = StoreError::Protocol(format!("transfer id {id} is already in use"));
            return out.send_error(sock, &key.1, id, &e, root);
        }
        let party = Party::of(put.sender, &key.1);
        let version = put.version.unwrap_or(1);
        let kind = match schema::transfer::put_kind(put.size, put.blake3, put.growing) {
            Ok(kind) => kind,
            Err(e) => {
                let e = StoreError::Protocol(format!("{}: {e}", put.name));
                return out.send_error(sock, &key.1, id, &e, root);
            }
        };
        if let PutKind::Inline { blake3 } = kind {
            let Some(data) = data else {
                let e = StoreError::Protocol(format!(
                    "{}: a put of at most {INLINE_MAX} bytes carries its content",
                    put.name
                ));
                return out.send_error(sock, &key.1, id, &e, root);
            };
            if !self.admit(&key, &party, &put.name, out) {
                return;
            }
            let meta = StoredMeta::new(&put.name, class, blake3, put.modified, version);
            let work = Work::Inline {
                meta,
                data: data.to_vec(),
            };
            return self.submit_for(key, work, Some(party), out);
        }
        if let Some(h) = put.blake3.filter(|_| !self.on_s3) {
            if let Some(old) = meta::stored(&dest, &put.name).filter(|old| old.blake3 == h) {
                tracing::debug!(name = %put.name, "unchanged");
                let done = Message::Done {
                    id,
                    version: old.version,
                    unchanged: true,
                };
                out.send(sock, &key.1, &done, None);
                return;
            }
        }
        let temp = match self.layout.new_temp() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("upload of {} refused: {e}", put.name);
                return out.send_error(sock, &key.1, id, &e, root);
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
        // A file sent on to a bucket is read back at once: it stays in the page cache.
        let writer = if self.on_s3 {
            ContentWriter::Cached
        } else {
            ContentWriter::new(&temp.reopen_path(), expected)
        };
        let upload = Incoming {
            // The hash is known once the last chunk is in; until then it holds the announced one.
            meta: StoredMeta::new(
                &put.name,
                class,
                put.blake3.unwrap_or(Hash([0; 32])),
                put.modified,
                version,
            ),
            announced: put.blake3,
            stream: Receiver::new(put.size, put.growing),
            growing: put.growing,
            temp,
            writer,
            last_seen: Instant::now(),
            party: party.clone(),
        };
        tracing::debug!(peer = %hex(&key.1), id, name = %put.name, size = put.size, "upload started");
        if !self.admit(&key, &party, &put.name, out) {
            return;
        }
        self.receiving.insert(key.clone(), upload);
        self.ledger.open(key, party, chunks);
        self.grant(out);
    }

    /// A `chunk` of an upload.
    pub fn on_chunk(
        &mut self,
        key: Key,
        offset: u64,
        end: ChunkEnd,
        data: &[u8],
        out: &mut impl Outbox,
    ) {
        let (sock, id) = (key.0, key.2);
        let Some(upload) = self.receiving.get_mut(&key) else {
            let reply = Message::error(
                id,
                schema::ErrorCode::UnknownTransfer,
                format!("no upload {id} in progress from this peer (finished, dropped or never started)"),
            );
            out.send(sock, &key.1, &reply, None);
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
                if let Some(mut upload) = self.receiving.remove(&key) {
                    self.ledger.close(&key);
                    upload.meta.blake3 = hash;
                    let work = Work::Finish {
                        temp: upload.temp,
                        writer: upload.writer,
                        meta: upload.meta,
                        size: upload.stream.size(),
                    };
                    self.submit_for(key.clone(), work, Some(upload.party), out);
                }
            }
            Err(e) => {
                tracing::warn!(peer = %hex(&key.1), id, "upload failed: {e}");
                // Drop first: the temporary file is gone before the sender hears of the failure.
                self.drop_upload(&key);
                out.send_error(sock, &key.1, id, &e, self.layout.root());
            }
        }
        self.grant(out);
    }

    /// An `abort` of an upload: drop it and its temporary file. No reply.
    pub fn on_abort(&mut self, sock: usize, peer: Vec<u8>, id: u64, out: &mut impl Outbox) {
        let key: Key = (sock, peer, id);
        if self.receiving.contains_key(&key) {
            tracing::debug!(peer = %hex(&key.1), id, "upload aborted by the sender");
            self.drop_upload(&key);
            self.grant(out);
        }
    }

    /// Drops uploads idle for longer than [`IDLE_TIMEOUT`] at `now`; their credit goes to the
    /// others.
    pub fn sweep(&mut self, now: Instant, out: &mut impl Outbox) {
        // A sender withheld credit cannot send: its wait is not idleness (it counts again from
        // its next grant).
        let ledger = &self.ledger;
        let idle: Vec<Key> = self
            .receiving
            .iter()
            .filter(|(k, u)| now.duration_since(u.last_seen) > IDLE_TIMEOUT && !ledger.starved(k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            tracing::warn!(peer = %hex(&key.1), id = key.2, "upload idle for 30 s: dropped");
            self.drop_upload(&key);
        }
        self.grant(out);
    }

    /// Whether upload `key` of `party` may take a slot, else answers `busy` (see [`Share`]).
    fn admit(&mut self, key: &Key, party: &Party, name: &str, out: &mut impl Outbox) -> bool {
        let in_use = self.receiving.len() + self.pending.len();
        let receiving = self.receiving.values().map(|u| &u.party);
        let holders = receiving.chain(self.pending.values().filter_map(|p| p.party.as_ref()));
        let refused = match self.slots.admit(party, holders, in_use, Instant::now()) {
            Ok(()) => return true,
            Err(Refused::Full) => {
                format!("{name}: the node has {MAX_UPLOADS} uploads in progress; try again later")
            }
            Err(Refused::OverShare { share }) => format!(
                "{name}: this peer has {share} uploads in progress, its share of the node's \
                 {MAX_UPLOADS} while other peers wait for one; try again later"
            ),
        };
        let e = StoreError::Busy(refused);
        out.send_error(key.0, &key.1, key.2, &e, self.layout.root());
        false
    }

    /// Forgets an upload: its temporary file is removed, its credit returns to the budget and
    /// its slot to the others.
    fn drop_upload(&mut self, key: &Key) {
        self.receiving.remove(key);
        self.ledger.close(key);
    }

    /// Sends the credit the budget allows; a peer that cannot be reached loses its upload.
    fn grant(&mut self, out: &mut impl Outbox) {
        loop {
            let grants = self.ledger.distribute();
            if grants.is_empty() {
                return;
            }
            let mut lost = Vec::new();
            let now = Instant::now();
            for (key, chunks) in grants {
                if let Some(u) = self.receiving.get_mut(&key) {
                    // The idle timeout runs from the grant: before it the sender could not send.
                    u.last_seen = u.last_seen.max(now);
                }
                let credit = Message::Credit { id: key.2, chunks };
                if !out.send(key.0, &key.1, &credit, None) {
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

    /// Hands `work` for request `key` to the sync pool; its reply comes back through
    /// [`Uploads::on_result`]. Refused with `error busy` once the pool is stopped.
    pub fn submit(&mut self, key: Key, work: Work, out: &mut impl Outbox) {
        self.submit_for(key, work, None, out);
    }

    /// [`Uploads::submit`], for a job that holds the upload slot of `party`, if any, until its
    /// reply.
    fn submit_for(&mut self, key: Key, work: Work, party: Option<Party>, out: &mut impl Outbox) {
        let (sock, peer, id) = key;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let job = SyncJob { ticket, id, work };
        let submitted = match &self.pool {
            Some(pool) => pool.submit(job),
            None => false,
        };
        if submitted {
            let to = ReplyTo {
                sock,
                peer,
                id,
                party,
            };
            self.pending.insert(ticket, to);
        } else {
            let e = StoreError::Busy("the node is stopping".into());
            out.send_error(sock, &peer, id, &e, self.layout.root());
        }
    }

    /// The read job `ticket` copied from the store (see [`SyncPool::take_spooled`]).
    pub fn take_spooled(&self, ticket: u64) -> Option<crate::sync::Spool> {
        self.pool.as_ref().and_then(|p| p.take_spooled(ticket))
    }

    /// Uploads to a bucket (`true`): the names must make S3 keys, and whether the store already
    /// holds a content is asked by the sync worker, not here.
    pub fn on_s3(mut self, on: bool) -> Uploads {
        self.on_s3 = on;
        self
    }

    /// A sync worker finished job `ticket`: where its reply goes (`None` for an unknown job).
    pub fn on_result(&mut self, ticket: u64) -> Option<ReplyTo> {
        let pending = self.pending.remove(&ticket);
        if pending.is_none() {
            tracing::warn!(ticket, "result of an unknown sync job");
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    //! The decisions of [`Uploads`], without sockets: a recording outbox and a sync pool
    //! without workers.

    use super::*;
    use crate::outbox::Recorder;
    use schema::limits::{GLOBAL_WINDOW, TRANSFER_WINDOW};
    use schema::ErrorCode;
    use std::sync::mpsc;

    const PEER: &[u8] = b"broker";

    /// Uploads on a prepared root in `dir`; their jobs land in the returned queue.
    fn uploads(dir: &tempfile::TempDir) -> (Uploads, mpsc::Receiver<SyncJob>, std::fs::File) {
        let layout = Arc::new(Layout::new(dir.path()));
        let lock = layout.prepare(true).unwrap();
        let (pool, jobs) = SyncPool::detached();
        (Uploads::new(layout, Some(pool)), jobs, lock)
    }

    fn put(id: u64, name: &str, size: u64, blake3: Option<Hash>) -> Put {
        Put {
            id,
            name: name.into(),
            size,
            modified: 1_700_000_000,
            blake3,
            version: None,
            growing: false,
            sender: None,
        }
    }

    fn only_message(out: &mut Recorder) -> Message {
        let mut sent = out.take();
        assert_eq!(sent.len(), 1, "{sent:?}");
        sent.remove(0).2
    }

    #[test]
    fn an_inline_put_becomes_a_durable_write_job() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uploads, jobs, _lock) = uploads(&dir);
        let mut out = Recorder::default();
        let data = b"hello".to_vec();
        let p = put(7, "a/b.mp3", 5, Some(Hash::of(&data)));
        let frame = Some(zmq::Message::from(&data[..]));
        uploads.on_put(0, PEER.to_vec(), p, frame, &mut out);
        assert!(out.sent.is_empty(), "{:?}", out.sent);
        assert_eq!(uploads.len(), 0, "an inline put is not received in chunks");
        let job = jobs.try_recv().unwrap();
        assert_eq!((job.ticket, job.id), (0, 7));
        match job.work {
            Work::Inline { meta, data: d } => {
                assert_eq!(
                    meta,
                    StoredMeta::new("a/b.mp3", Class::Mp3, Hash::of(&data), 1_700_000_000, 1)
                );
                assert_eq!(d, data);
            }
            other => panic!("expected an inline job, got {other:?}"),
        }
        // The worker's reply goes back to the requester, once.
        let p = uploads.on_result(0).unwrap();
        assert_eq!((p.sock, p.peer.as_slice()), (0, PEER));
        assert!(uploads.on_result(0).is_none());
    }

    #[test]
    fn a_chunked_upload_gets_credit_up_to_the_window_and_finishes_as_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uploads, jobs, _lock) = uploads(&dir);
        let mut out = Recorder::default();
        let big = 100 * CHUNK_SIZE as u64;
        uploads.on_put(
            1,
            PEER.to_vec(),
            put(1, "big.txt", big, None),
            None,
            &mut out,
        );
        // Half of the free budget at first: room is left for the next upload.
        let first_grant = TRANSFER_WINDOW.min(GLOBAL_WINDOW / 2);
        assert_eq!(
            only_message(&mut out),
            Message::Credit {
                id: 1,
                chunks: first_grant
            }
        );
        assert_eq!(uploads.len(), 1);

        // A small upload next to it: two chunks, the last with the hash. It gets credit at
        // once, beside the first.
        let data: Vec<u8> = (0..CHUNK_SIZE + 10).map(|i| i as u8).collect();
        let hash = Hash::of(&data);
        let small = put(2, "small.txt", data.len() as u64, Some(hash));
        uploads.on_put(1, PEER.to_vec(), small, None, &mut out);
        let credit: Vec<Message> = out.take().into_iter().map(|s| s.2).collect();
        assert_eq!(credit, vec![Message::Credit { id: 2, chunks: 2 }]);
        // Dropping the first upload returns its credit to the budget.
        uploads.on_abort(1, PEER.to_vec(), 1, &mut out);
        assert_eq!(uploads.len(), 1);
        assert!(out.take().is_empty(), "the second has all it needs");
        let first = ChunkEnd::default();
        uploads.on_chunk(
            (1, PEER.to_vec(), 2),
            0,
            first,
            &data[..CHUNK_SIZE],
            &mut out,
        );
        let last = ChunkEnd {
            blake3: Some(hash),
            modified: None,
        };
        uploads.on_chunk(
            (1, PEER.to_vec(), 2),
            CHUNK_SIZE as u64,
            last,
            &data[CHUNK_SIZE..],
            &mut out,
        );
        assert!(out.sent.is_empty(), "{:?}", out.sent);
        assert_eq!(uploads.len(), 0);
        let job = jobs.try_recv().unwrap();
        assert_eq!(job.id, 2);
        match job.work {
            Work::Finish { meta, size, .. } => {
                assert_eq!(
                    (meta.name.as_str(), meta.class, meta.blake3),
                    ("small.txt", Class::Txt, hash)
                );
                assert_eq!(size, data.len() as u64);
            }
            other => panic!("expected a finish job, got {other:?}"),
        }
    }

    #[test]
    fn a_chunk_at_a_wrong_offset_is_refused_and_drops_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uploads, jobs, _lock) = uploads(&dir);
        let mut out = Recorder::default();
        let size = 3 * CHUNK_SIZE as u64;
        uploads.on_put(
            2,
            PEER.to_vec(),
            put(5, "x.pdf", size, None),
            None,
            &mut out,
        );
        assert_eq!(only_message(&mut out), Message::Credit { id: 5, chunks: 3 });
        let chunk = vec![0u8; CHUNK_SIZE];
        let end = ChunkEnd::default();
        uploads.on_chunk(
            (2, PEER.to_vec(), 5),
            CHUNK_SIZE as u64,
            end,
            &chunk,
            &mut out,
        );
        match only_message(&mut out) {
            Message::Error { id, code, message } => {
                assert_eq!((id, code), (5, ErrorCode::BadMessage));
                assert!(message.contains("expected 0"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert_eq!(uploads.len(), 0);
        assert!(jobs.try_recv().is_err());
        // The upload is gone: its next chunk is for an unknown transfer.
        uploads.on_chunk((2, PEER.to_vec(), 5), 0, end, &chunk, &mut out);
        match only_message(&mut out) {
            Message::Error { code, .. } => assert_eq!(code, ErrorCode::UnknownTransfer),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_sender_that_cannot_be_reached_loses_its_upload() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uploads, _jobs, _lock) = uploads(&dir);
        let mut out = Recorder {
            gone: vec![PEER.to_vec()],
            ..Recorder::default()
        };
        let size = 2 * CHUNK_SIZE as u64;
        uploads.on_put(
            0,
            PEER.to_vec(),
            put(1, "a.mp3", size, None),
            None,
            &mut out,
        );
        assert!(out.sent.is_empty());
        assert_eq!(
            uploads.len(),
            0,
            "the credit could not be sent: upload dropped"
        );
    }

    #[test]
    fn a_stopped_node_refuses_jobs_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uploads, _jobs, _lock) = uploads(&dir);
        uploads.stop();
        let mut out = Recorder::default();
        let frame = Some(zmq::Message::from(&b"x"[..]));
        let p = put(3, "a.txt", 1, Some(Hash::of(b"x")));
        uploads.on_put(1, PEER.to_vec(), p, frame, &mut out);
        match only_message(&mut out) {
            Message::Error { id, code, message } => {
                assert_eq!((id, code), (3, ErrorCode::Busy));
                assert!(message.contains("stopping"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
