//! Reads on the serve port: `get` answers `meta` (with the content inline for small files), then
//! `chunk`s as the reader grants `credit`.
//!
//! The node hashes what it sends: a read whose content no longer matches the hash recorded for
//! the file (changed behind the node's back) ends with `error integrity` instead of its inline
//! data or its last chunk, so the bad version is never delivered whole.
//!
//! A read keeps its file open: a new version renamed over the name while the read runs replaces
//! the folder entry, not the open file, so the reader gets the whole version it started with.
//!
//! [`Reads`] owns the open reads; it opens files through the [`Layout`] and sends through an
//! [`Outbox`], so it runs without sockets (the socket loop in `node` drives it).

use crate::admission::{Refused, Share};
use crate::arrival::Arrival;
use crate::error::StoreError;
use crate::layout::Layout;
use crate::meta::StoredMeta;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::peer::{hex, Key, Party, SERVE};
use schema::limits::{CHUNK_SIZE, IDLE_TIMEOUT, INLINE_MAX};
use schema::transfer::Credit;
use schema::{Class, ErrorCode, Hash, Message};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Most reads open at once; more get `error busy`. They are shared fairly between parties
/// ([`Share`]): through a broker, between the fetchers it relays for.
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
    /// While the file is still being copied from the object store: how much has arrived. A
    /// chunk goes out only once its bytes are there.
    arrival: Option<Arc<Arrival>>,
    /// The reader's credit: chunks granted, and those sent under it (a grant past the window
    /// is refused).
    credit: Credit,
    /// Whom the read's slot counts against.
    party: Party,
}

/// Every version of `name` on the node, the current one last (`history`).
pub fn history(layout: &Layout, name: &str) -> Result<Vec<schema::VersionInfo>, StoreError> {
    schema::names::check(name)?;
    let current = match open(layout, name, None) {
        Ok((_, entry)) => Some((layout.file_path(entry.class, name)?, entry)),
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(e),
    };
    let current = current.as_ref().map(|(p, e)| (p.as_path(), e));
    layout.history().report(name, current)
}

/// Opens version `version` of `name`: the current file when it has that version (or no
/// version is asked for), else the kept version from the history. Returns the open file and
/// its entry.
pub fn open_version(
    layout: &Layout,
    name: &str,
    class: Option<Class>,
    version: Option<u64>,
) -> Result<(File, schema::Entry), StoreError> {
    let Some(wanted) = version else {
        return open(layout, name, class);
    };
    match open(layout, name, class) {
        Ok((file, entry)) if entry.version == wanted => return Ok((file, entry)),
        Ok(_) => {}
        Err(e) if e.code() == ErrorCode::NotFound => {}
        Err(e) => return Err(e),
    }
    let gone =
        || StoreError::NotFound(format!("{name}: version {wanted} is not kept on this node"));
    let Some((class, v)) = layout.history().find(name, wanted)? else {
        return Err(gone());
    };
    let Some(path) = layout.history().object(&v.blake3) else {
        return Err(gone());
    };
    let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
    let entry = schema::Entry {
        name: name.to_string(),
        class,
        size: v.size,
        blake3: v.blake3,
        modified: v.modified,
        version: v.version,
    };
    Ok((file, entry))
}

/// Opens the stored file `name`, looking in `class` or, when the reader gives none, in every
/// class in turn. Returns the open file and its entry.
pub fn open(
    layout: &Layout,
    name: &str,
    class: Option<Class>,
) -> Result<(File, schema::Entry), StoreError> {
    let classes = match class {
        Some(c) => vec![c],
        None => Class::ALL.to_vec(),
    };
    for class in classes {
        let Some((file, path)) = layout.open_file(class, name)? else {
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

/// The error that ends a read whose content hashes to `actual` instead of `expected`.
pub(crate) fn changed(name: &str, expected: Hash, actual: Hash) -> StoreError {
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

/// The open reads of one node, and the counters of what they served.
pub struct Reads {
    layout: Arc<Layout>,
    /// Shares its values with the node's metrics (`files_served`, `bytes_served`).
    metrics: Metrics,
    open: HashMap<Key, Read>,
    /// Reads given a slot that are not open yet: their file is being opened, or copied from the
    /// object store.
    admitted: HashMap<Key, Party>,
    /// The rule that shares the slots between parties.
    share: Share<Party>,
}

impl Reads {
    /// No reads open yet.
    pub fn new(layout: Arc<Layout>, metrics: Metrics) -> Reads {
        Reads {
            layout,
            metrics,
            open: HashMap::new(),
            admitted: HashMap::new(),
            share: Share::new(MAX_READS),
        }
    }

    /// Reads open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no read is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Gives a new read `id` of `peer` (relayed for `sender`, if named) a slot, if its id is
    /// free and the slots are not full or held to their share ([`Share`]).
    pub fn admit(&mut self, peer: &[u8], id: u64, sender: Option<u64>) -> Result<(), StoreError> {
        let key: Key = (SERVE, peer.to_vec(), id);
        if self.open.contains_key(&key) || self.admitted.contains_key(&key) {
            return Err(StoreError::Protocol(format!(
                "read id {id} is already in use"
            )));
        }
        let party = Party::of(sender, peer);
        let holders = self.open.values().map(|r| &r.party);
        let holders = holders.chain(self.admitted.values());
        let in_use = self.open.len() + self.admitted.len();
        match self.share.admit(&party, holders, in_use, Instant::now()) {
            Ok(()) => {
                self.admitted.insert(key, party);
                Ok(())
            }
            Err(Refused::Full) => Err(StoreError::Busy(format!(
                "the node has {MAX_READS} reads open; try again later"
            ))),
            Err(Refused::OverShare { share }) => Err(StoreError::Busy(format!(
                "this peer has {share} reads open, its share of the node's {MAX_READS} while \
                 other peers wait for one; try again later"
            ))),
        }
    }

    /// Frees the slot of read `id` of `peer`, admitted but never served (copying it from the
    /// object store failed); nothing if it is not waiting.
    pub fn forget(&mut self, peer: &[u8], id: u64) {
        self.admitted.remove(&(SERVE, peer.to_vec(), id));
    }

    /// A `get` (relayed for `sender`, if named): answer `meta` and, for small files, the
    /// content.
    pub fn on_get(
        &mut self,
        (peer, id, sender): (Vec<u8>, u64, Option<u64>),
        name: &str,
        (class, version): (Option<Class>, Option<u64>),
        out: &mut impl Outbox,
    ) {
        let layout = self.layout.clone();
        let root = layout.root();
        if let Err(e) = self.admit(&peer, id, sender) {
            return out.send_error(SERVE, &peer, id, &e, root);
        }
        match open_version(&layout, name, class, version) {
            Ok((file, entry)) => self.serve((peer, id), file, entry, None, out),
            Err(e) => {
                self.forget(&peer, id);
                if e.code() != ErrorCode::NotFound && e.code() != ErrorCode::BadName {
                    tracing::warn!("read of {name} failed: {e}");
                }
                out.send_error(SERVE, &peer, id, &e, root)
            }
        }
    }

    /// Serves the open `file` of `entry` to read `id` of `peer` (a request admitted before):
    /// `meta` with the content when small, else `meta` and chunks as credit comes.
    /// `arrival`, for a file still being copied from the object store, says how much of it is
    /// there (a file of at most `INLINE_MAX` bytes comes whole).
    pub fn serve(
        &mut self,
        (peer, id): (Vec<u8>, u64),
        file: File,
        entry: schema::Entry,
        arrival: Option<Arc<Arrival>>,
        out: &mut impl Outbox,
    ) {
        let root = self.layout.root();
        let key: Key = (SERVE, peer, id);
        let party = self
            .admitted
            .remove(&key)
            .unwrap_or_else(|| Party::of(None, &key.1));
        let name = entry.name.clone();
        let name = name.as_str();
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
                    if out.send(SERVE, &key.1, &Message::Meta { id, entry }, Some(data)) {
                        self.metrics.files_served.inc();
                        self.metrics.bytes_served.inc_by(size);
                    }
                }
                Err(e) => out.send_error(SERVE, &key.1, id, &e, root),
            }
            return;
        }
        let expected = entry.blake3;
        if out.send(SERVE, &key.1, &Message::Meta { id, entry }, None) {
            tracing::debug!(peer = %hex(&key.1), id, name, size, "read started");
            let read = Read {
                file,
                name: name.to_string(),
                size,
                offset: 0,
                expected,
                hasher: blake3::Hasher::new(),
                last_seen: Instant::now(),
                arrival,
                credit: Credit::default(),
                party,
            };
            self.open.insert(key, read);
        }
    }

    /// A `credit` of a read: send up to `chunks` more chunks.
    pub fn on_credit(&mut self, peer: Vec<u8>, id: u64, chunks: u32, out: &mut impl Outbox) {
        let key: Key = (SERVE, peer, id);
        // Taken out of the map while chunks go out; put back unless the read is over.
        let Some(mut read) = self.open.remove(&key) else {
            let reply = Message::error(
                id,
                ErrorCode::UnknownTransfer,
                format!("no read {id} open for this peer (finished, dropped or never started)"),
            );
            out.send(SERVE, &key.1, &reply, None);
            return;
        };
        read.last_seen = Instant::now();
        if let Err(e) = read.credit.grant(chunks) {
            // Dropped (it is out of the map): its reader broke flow control.
            let e = StoreError::Protocol(format!("read {id} of {}: {e}; read dropped", read.name));
            tracing::warn!(peer = %hex(&key.1), "{e}");
            return out.send_error(SERVE, &key.1, id, &e, self.layout.root());
        }
        self.send_owed(key, read, out);
    }

    /// More bytes arrived for reads still being copied from the object store: send the chunks
    /// their readers are owed.
    pub fn pump(&mut self, out: &mut impl Outbox) {
        let waiting: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, r)| r.credit.outstanding() > 0 && r.arrival.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            if let Some(read) = self.open.remove(&key) {
                self.send_owed(key, read, out);
            }
        }
    }

    /// Sends the chunks `read` is owed whose bytes are there; keeps it open unless it is over.
    fn send_owed(&mut self, key: Key, mut read: Read, out: &mut impl Outbox) {
        let root = self.layout.root();
        let id = key.2;
        while read.credit.outstanding() > 0 {
            if read.offset >= read.size {
                break;
            }
            let len = (read.size - read.offset).min(CHUNK_SIZE as u64) as usize;
            if let Some(a) = &read.arrival {
                if let Some(why) = a.failure() {
                    let e = StoreError::Store(format!("{}: {why}", read.name));
                    return out.send_error(SERVE, &key.1, id, &e, root);
                }
                if a.arrived() < read.offset + len as u64 {
                    // Sent once the bytes are there (`pump`).
                    break;
                }
                read.last_seen = Instant::now();
            }
            let frame = match read_frame(&read.file, read.offset, len, &read.name) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!("read of {} failed: {e}", read.name);
                    return out.send_error(SERVE, &key.1, id, &e, root);
                }
            };
            read.hasher.update(&frame);
            if read.offset + len as u64 >= read.size {
                let actual = Hash::from(read.hasher.finalize());
                if actual != read.expected {
                    let e = changed(&read.name, read.expected, actual);
                    return out.send_error(SERVE, &key.1, id, &e, root);
                }
            }
            let chunk = Message::Chunk {
                id,
                offset: read.offset,
                blake3: None,
                modified: None,
            };
            if !out.send(SERVE, &key.1, &chunk, Some(frame)) {
                tracing::debug!(peer = %hex(&key.1), id, "reader gone: read dropped");
                return;
            }
            read.offset += len as u64;
            read.credit.spend().expect("credit is outstanding");
            self.metrics.bytes_served.inc_by(len as u64);
        }
        if read.offset >= read.size {
            self.metrics.files_served.inc();
            tracing::debug!(peer = %hex(&key.1), id, name = %read.name, "read finished");
        } else {
            self.open.insert(key, read);
        }
    }

    /// An `abort` of a read. No reply.
    pub fn on_abort(&mut self, peer: Vec<u8>, id: u64) {
        if self.open.remove(&(SERVE, peer, id)).is_some() {
            tracing::debug!(id, "read aborted by the reader");
        }
    }

    /// Drops reads idle for longer than [`IDLE_TIMEOUT`] at `now`.
    pub fn sweep(&mut self, now: Instant) {
        self.open.retain(|key, r| {
            let keep = now.duration_since(r.last_seen) <= IDLE_TIMEOUT;
            if !keep {
                tracing::warn!(peer = %hex(&key.1), id = key.2, name = %r.name, "read idle for 30 s: dropped");
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    //! The decisions of [`Reads`], without sockets: a recording outbox over a temporary root.

    use super::*;
    use crate::outbox::{Recorder, Sent};
    use schema::limits::TRANSFER_WINDOW;

    const PEER: &[u8] = b"broker";

    /// Reads on a prepared root in `dir`, with `files` stored in class txt.
    fn reads(dir: &tempfile::TempDir, files: &[(&str, &[u8])]) -> (Reads, std::fs::File) {
        let layout = Arc::new(Layout::new(dir.path()));
        let lock = layout.prepare(true).unwrap();
        for (name, bytes) in files {
            crate::tests::store(&layout, Class::Txt, name, bytes);
        }
        (Reads::new(layout, Metrics::default()), lock)
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn error_code(sent: &[Sent]) -> ErrorCode {
        match sent {
            [(_, _, Message::Error { code, .. }, None)] => *code,
            other => panic!("expected one error, got {other:?}"),
        }
    }

    #[test]
    fn a_small_file_is_answered_inline() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(1000);
        let (mut reads, _lock) = reads(&dir, &[("a.txt", &data)]);
        let mut out = Recorder::default();
        reads.on_get((PEER.to_vec(), 1, None), "a.txt", (None, None), &mut out);
        match out.take().as_slice() {
            [(SERVE, peer, Message::Meta { id: 1, entry }, Some(d))] => {
                assert_eq!(peer, PEER);
                assert_eq!((entry.class, entry.size), (Class::Txt, 1000));
                assert_eq!(d, &data);
            }
            other => panic!("expected meta with the content, got {other:?}"),
        }
        assert_eq!(reads.len(), 0);
        assert_eq!(reads.metrics.files_served.get(), 1);
        assert_eq!(reads.metrics.bytes_served.get(), 1000);
        reads.on_get(
            (PEER.to_vec(), 2, None),
            "missing.txt",
            (None, None),
            &mut out,
        );
        assert_eq!(error_code(&out.take()), ErrorCode::NotFound);
    }

    /// A file still being copied from the store: its chunks go out as their bytes arrive, and
    /// a copy that fails ends the read with an error.
    #[test]
    fn a_file_still_arriving_is_served_as_its_bytes_come() {
        use std::os::unix::fs::FileExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (mut reads, _lock) = reads(&dir, &[]);
        let data = bytes(3 * CHUNK_SIZE);
        let file = tempfile::tempfile().unwrap();
        let entry = schema::Entry {
            name: "arriving.bin".into(),
            class: Class::Others,
            size: data.len() as u64,
            blake3: Hash::of(&data),
            modified: 0,
            version: 1,
        };
        let arrival = Arc::new(Arrival::default());
        let mut out = Recorder::default();
        let clone = file.try_clone().unwrap();
        reads.serve(
            (PEER.to_vec(), 7),
            clone,
            entry.clone(),
            Some(arrival.clone()),
            &mut out,
        );
        assert!(matches!(
            out.take().as_slice(),
            [(_, _, Message::Meta { id: 7, .. }, None)]
        ));
        // Credit for everything, nothing arrived: nothing goes out yet.
        reads.on_credit(PEER.to_vec(), 7, 3, &mut out);
        assert!(out.take().is_empty());
        // One chunk and a half arrive: one chunk goes out.
        // Written as the worker writes: at offsets (the read's handle shares the file offset).
        file.write_all_at(&data[..CHUNK_SIZE + CHUNK_SIZE / 2], 0)
            .unwrap();
        arrival.add((CHUNK_SIZE + CHUNK_SIZE / 2) as u64);
        reads.pump(&mut out);
        let sent = out.take();
        assert!(
            matches!(
                sent.as_slice(),
                [(_, _, Message::Chunk { offset: 0, .. }, Some(_))]
            ),
            "{sent:?}"
        );
        // The rest: the last two, and the read is over.
        let half = CHUNK_SIZE + CHUNK_SIZE / 2;
        file.write_all_at(&data[half..], half as u64).unwrap();
        arrival.add((data.len() - CHUNK_SIZE - CHUNK_SIZE / 2) as u64);
        reads.pump(&mut out);
        let sent = out.take();
        let got: Vec<u8> = sent.iter().flat_map(|s| s.3.clone().unwrap()).collect();
        assert_eq!(got, data[CHUNK_SIZE..]);
        assert_eq!(reads.len(), 0);

        // A copy that fails mid-way ends the read with an error, never a short file.
        let failing = Arc::new(Arrival::default());
        let clone = file.try_clone().unwrap();
        reads.serve(
            (PEER.to_vec(), 8),
            clone,
            entry,
            Some(failing.clone()),
            &mut out,
        );
        out.take();
        reads.on_credit(PEER.to_vec(), 8, 3, &mut out);
        failing.add(CHUNK_SIZE as u64);
        failing.fail("the store went away".into());
        reads.pump(&mut out);
        assert_eq!(error_code(&out.take()), ErrorCode::Unavailable);
        assert_eq!(reads.len(), 0);
    }

    #[test]
    fn a_large_file_goes_out_in_chunks_as_credit_comes() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(2 * CHUNK_SIZE + 5);
        let (mut reads, _lock) = reads(&dir, &[("big.txt", &data)]);
        let mut out = Recorder::default();
        reads.on_get(
            (PEER.to_vec(), 3, None),
            "big.txt",
            (Some(Class::Txt), None),
            &mut out,
        );
        match out.take().as_slice() {
            [(SERVE, _, Message::Meta { id: 3, entry }, None)] => {
                assert_eq!(entry.size, data.len() as u64)
            }
            other => panic!("expected meta alone, got {other:?}"),
        }
        assert_eq!(reads.len(), 1);
        let mut got = Vec::new();
        for (credit, chunks, open) in [(2, 2, 1), (5, 1, 0)] {
            reads.on_credit(PEER.to_vec(), 3, credit, &mut out);
            let sent = out.take();
            assert_eq!(sent.len(), chunks, "{sent:?}");
            for (_, _, msg, frame) in sent {
                let Message::Chunk { id: 3, offset, .. } = msg else {
                    panic!("expected a chunk, got {msg:?}");
                };
                assert_eq!(offset, got.len() as u64);
                got.extend(frame.unwrap());
            }
            assert_eq!(reads.len(), open);
        }
        assert_eq!(got, data);
        assert_eq!(reads.metrics.files_served.get(), 1);
        assert_eq!(reads.metrics.bytes_served.get(), data.len() as u64);
        // The read is over: more credit is for an unknown transfer.
        reads.on_credit(PEER.to_vec(), 3, 1, &mut out);
        assert_eq!(error_code(&out.take()), ErrorCode::UnknownTransfer);
    }

    #[test]
    fn a_grant_past_the_window_drops_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(40 * CHUNK_SIZE);
        let (mut reads, _lock) = reads(&dir, &[("big.txt", &data)]);
        let mut out = Recorder::default();
        reads.on_get((PEER.to_vec(), 9, None), "big.txt", (None, None), &mut out);
        out.take();
        // A window's worth is taken, and its chunks go out at once; credit then comes back one
        // chunk at a time.
        reads.on_credit(PEER.to_vec(), 9, TRANSFER_WINDOW, &mut out);
        assert_eq!(out.take().len(), TRANSFER_WINDOW as usize);
        reads.on_credit(PEER.to_vec(), 9, 1, &mut out);
        assert_eq!(out.take().len(), 1);
        // A grant that would leave more than the window outstanding is refused: 1000 at once.
        reads.on_credit(PEER.to_vec(), 9, 1000, &mut out);
        let sent = out.take();
        assert_eq!(error_code(&sent), ErrorCode::BadMessage, "{sent:?}");
        let [(_, _, Message::Error { message, .. }, _)] = sent.as_slice() else {
            panic!("{sent:?}");
        };
        assert!(message.contains("at most 32"), "{message}");
        assert_eq!(reads.len(), 0, "the read is dropped");
    }

    #[test]
    fn a_reader_that_cannot_be_reached_loses_its_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(3 * CHUNK_SIZE);
        let (mut reads, _lock) = reads(&dir, &[("big.txt", &data)]);
        let mut out = Recorder::default();
        reads.on_get((PEER.to_vec(), 4, None), "big.txt", (None, None), &mut out);
        assert_eq!(reads.len(), 1);
        out.take();
        out.gone.push(PEER.to_vec());
        reads.on_credit(PEER.to_vec(), 4, 3, &mut out);
        assert!(out.sent.is_empty());
        assert_eq!(
            reads.len(),
            0,
            "the read stops at the first chunk that cannot be sent"
        );
        assert_eq!(reads.metrics.bytes_served.get(), 0);
        // Nor is a read opened for a reader that cannot get its `meta`.
        reads.on_get((PEER.to_vec(), 5, None), "big.txt", (None, None), &mut out);
        assert_eq!(reads.len(), 0);
    }

    #[test]
    fn content_changed_behind_the_node_ends_with_an_error_instead_of_the_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(2 * CHUNK_SIZE);
        let (mut reads, _lock) = reads(&dir, &[("big.txt", &data)]);
        let mut out = Recorder::default();
        reads.on_get((PEER.to_vec(), 6, None), "big.txt", (None, None), &mut out);
        out.take();
        // Same size, other bytes, same inode (the metadata attribute stays).
        let path = dir.path().join("txt/big.txt");
        let mut other = data.clone();
        other[CHUNK_SIZE + 1] ^= 0xff;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &other))
            .unwrap();
        reads.on_credit(PEER.to_vec(), 6, 2, &mut out);
        let sent = out.take();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(matches!(sent[0].2, Message::Chunk { offset: 0, .. }));
        assert_eq!(error_code(&sent[1..]), ErrorCode::Integrity);
        assert_eq!(reads.len(), 0);
    }

    #[test]
    fn a_fetcher_holding_every_read_slot_leaves_one_to_a_fetcher_that_waits() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(2 * CHUNK_SIZE);
        let (mut reads, _lock) = reads(&dir, &[("big.txt", &data)]);
        let mut out = Recorder::default();
        // Fetcher 1, through the broker, opens every slot and grants no credit.
        let get = |reads: &mut Reads, out: &mut Recorder, id: u64, sender: u64| {
            reads.on_get(
                (PEER.to_vec(), id, Some(sender)),
                "big.txt",
                (None, None),
                out,
            );
            out.take()
        };
        for id in 0..MAX_READS as u64 {
            let sent = get(&mut reads, &mut out, id, 1);
            assert!(
                matches!(sent[..], [(_, _, Message::Meta { .. }, None)]),
                "{sent:?}"
            );
        }
        // Fetcher 2 finds the node full, and waits.
        let sent = get(&mut reads, &mut out, 1000, 2);
        assert_eq!(error_code(&sent), ErrorCode::Busy);
        // A slot frees: fetcher 1, over its share while 2 waits, may not take it; 2 may.
        reads.on_abort(PEER.to_vec(), 0);
        let sent = get(&mut reads, &mut out, 1001, 1);
        let [(_, _, Message::Error { code, message, .. }, None)] = sent.as_slice() else {
            panic!("{sent:?}");
        };
        assert_eq!(*code, ErrorCode::Busy);
        assert!(message.contains("its share of the node's 256"), "{message}");
        let sent = get(&mut reads, &mut out, 1002, 2);
        assert!(
            matches!(sent[..], [(_, _, Message::Meta { id: 1002, .. }, None)]),
            "{sent:?}"
        );
        assert_eq!(reads.len(), MAX_READS);
        // The slots are full again: fetcher 2 is refused the next one too.
        assert_eq!(
            error_code(&get(&mut reads, &mut out, 1003, 2)),
            ErrorCode::Busy
        );
    }

    #[test]
    fn a_read_admitted_but_never_served_gives_its_slot_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut reads, _lock) = reads(&dir, &[]);
        reads.admit(PEER, 1, None).unwrap();
        let again = reads.admit(PEER, 1, None).unwrap_err();
        assert!(again.to_string().contains("already in use"), "{again}");
        reads.forget(PEER, 1);
        reads.admit(PEER, 1, None).unwrap();
        // A get of a name not stored frees its slot at once.
        let mut out = Recorder::default();
        reads.on_get(
            (PEER.to_vec(), 2, None),
            "missing.txt",
            (None, None),
            &mut out,
        );
        assert_eq!(error_code(&out.take()), ErrorCode::NotFound);
        reads.admit(PEER, 2, None).unwrap();
    }
}
