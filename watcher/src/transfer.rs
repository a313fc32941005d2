//! Changes in flight: uploads (inline, or chunked under the broker's credit), deletes and
//! renames, each named by the request id it was sent with.
//!
//! A large file still being written is followed: a growing upload sends it as it grows, one
//! full chunk at a time and always short of its end, and is finished once the writer closes it
//! (or goes quiet). At that point the part already sent is read and hashed again: a writer may
//! have changed bytes behind the read position, and then the upload is torn and sent again as
//! usual. So what is stored is always the file as it was at the end, never a mix.

use crate::error::Torn;
use crate::local::{read_up_to, Stamp};
use crate::state::Stored;
use schema::limits::CHUNK_SIZE;
use schema::{Hash, Message};
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::time::Instant;

/// One change sent to the broker and not answered yet.
#[derive(Debug)]
pub struct InFlight {
    pub change: Change,
    /// When the broker last said something about this change (or it was sent).
    pub heard: Instant,
    /// When the change was sent.
    pub sent: Instant,
    /// How many source events had come when the change was sent.
    pub events_before: u64,
}

/// What kind of change is in flight.
#[derive(Debug)]
pub enum Change {
    /// An upload of a file.
    Put(Box<Outgoing>),
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
pub struct Outgoing {
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
    /// For a file followed while it is written: until it is finished, `stamp` is how it looked
    /// when the upload began.
    growing: Option<Growing>,
    /// A finished growing upload's check of the part it sent while the file was open.
    check: Option<std::thread::JoinHandle<Result<(), Torn>>>,
}

/// A growing upload's progress while the file is still open.
#[derive(Debug, Clone, Copy)]
struct Growing {
    /// The writer closed the file (or went quiet): the size is final from now on.
    finished: bool,
    /// Since when the upload has had credit but not a full chunk beyond its offset.
    starved: Option<Instant>,
    /// How the file looked when last looked at while starved, and since when it looks so.
    seen: Option<(Instant, Stamp)>,
}

/// What a growing upload that waits for data should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Stall {
    /// Keep waiting for the file to grow.
    Wait,
    /// The file did not change for the quiet time: finish with what it holds.
    Quiet,
    /// The file changes too slowly to follow: give up and send it the usual way.
    Slow,
}

/// What a chunked upload can do next.
#[derive(Debug)]
pub enum Next {
    /// Nothing until more credit comes (or everything was sent).
    Wait,
    /// Send this chunk (header and content).
    Chunk(Message, Vec<u8>),
    /// The file changed or came up short while being read: abort, try again later.
    Torn(Torn),
}

impl Outgoing {
    /// An upload whose content rides inline in the `put`.
    pub fn inline(name: String, stamp: Stamp, blake3: Hash) -> Outgoing {
        Outgoing {
            name,
            stamp,
            blake3: Some(blake3),
            file: None,
            offset: 0,
            hasher: blake3::Hasher::new(),
            credit: 0,
            growing: None,
            check: None,
        }
    }

    /// An upload of a file still being written, sent as it grows (see the module
    /// documentation); `stamp` is how it looks now.
    pub fn growing(name: String, stamp: Stamp, file: File) -> Outgoing {
        Outgoing {
            growing: Some(Growing {
                finished: false,
                starved: None,
                seen: None,
            }),
            ..Outgoing::chunked(name, stamp, file, None)
        }
    }

    /// An upload read from `file` chunk by chunk as credit comes.
    pub fn chunked(name: String, stamp: Stamp, file: File, blake3: Option<Hash>) -> Outgoing {
        Outgoing {
            name,
            stamp,
            blake3,
            file: Some(file),
            offset: 0,
            hasher: blake3::Hasher::new(),
            credit: 0,
            growing: None,
            check: None,
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
            growing: self.growing.is_some(),
            sender: None,
        }
    }

    /// Whether this is a growing upload whose file is still open.
    pub fn is_open(&self) -> bool {
        self.growing.is_some_and(|g| !g.finished)
    }

    /// Whether this open growing upload has credit and waits for the file to grow.
    pub fn is_starved(&self) -> bool {
        self.growing
            .is_some_and(|g| !g.finished && g.starved.is_some())
    }

    /// What an open growing upload that waits for data should do at `now`: nothing yet, finish
    /// (the file has not changed for `quiet`), or give up (it has been short of a chunk for
    /// `quiet` while still changing: too slow to follow).
    pub fn stall(&self, now: Instant, quiet: std::time::Duration) -> Stall {
        let Some(Growing {
            finished: false,
            starved: Some(starved),
            seen,
        }) = self.growing
        else {
            return Stall::Wait;
        };
        let current = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| Stamp::of(&m));
        let unchanged_since = seen.filter(|(_, stamp)| Some(*stamp) == current);
        if unchanged_since.is_some_and(|(since, _)| now.duration_since(since) >= quiet) {
            return Stall::Quiet;
        }
        if now.duration_since(starved) >= quiet {
            Stall::Slow
        } else {
            Stall::Wait
        }
    }

    /// The writer closed the file (or went quiet): its size is final. The part already sent is
    /// read again and must hash as it did when it was sent; then the upload goes on as a plain
    /// chunked one with the file as it looks now. Returns why not when the file shrank or was
    /// changed behind the part sent (the upload is torn).
    pub fn finish(&mut self) -> Result<(), Torn> {
        let Some(g) = self.growing.as_mut() else {
            return Ok(());
        };
        if g.finished {
            return Ok(());
        }
        let Some(file) = self.file.as_ref() else {
            return Err(Torn::NoFile);
        };
        let stamp = match file.metadata() {
            Ok(m) => Stamp::of(&m),
            Err(source) => {
                return Err(Torn::Io {
                    what: "stat it again",
                    source,
                })
            }
        };
        // The upload holds back the end of the file: the last chunk comes from what is left.
        if stamp.size <= self.offset {
            return Err(Torn::Shrank {
                size: stamp.size,
                sent: self.offset,
            });
        }
        // The check reads on its own thread while the rest of the file goes out; the last
        // chunk waits for it.
        let sent = Hash::from(self.hasher.finalize());
        let copy = file.try_clone().map_err(|source| Torn::Io {
            what: "open it again",
            source,
        })?;
        let upto = self.offset;
        let check = std::thread::Builder::new()
            .name("follow-check".into())
            .spawn(move || check_sent(&copy, upto, sent))
            .map_err(|source| Torn::Io {
                what: "start the check of the part sent",
                source,
            })?;
        g.finished = true;
        self.check = Some(check);
        self.stamp = stamp;
        Ok(())
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
    pub fn next(&mut self, id: u64, now: Instant) -> Next {
        if self.is_open() {
            return self.next_growing(id, now);
        }
        let size = self.stamp.size;
        if self.file.is_none() || self.credit == 0 || self.offset >= size {
            return Next::Wait;
        }
        let len = usize::try_from((size - self.offset).min(CHUNK_SIZE as u64)).unwrap_or(0);
        let last = self.offset + len as u64 == size;
        if last {
            if let Some(check) = self.check.take() {
                match check.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => return Next::Torn(why),
                    Err(_) => return Next::Torn(Torn::CheckFailed),
                }
            }
        }
        let offset = self.offset;
        let data = match self.read_chunk(len) {
            Ok(data) => data,
            Err(why) => return Next::Torn(why),
        };
        let mut blake3 = None;
        if last {
            let Some(file) = self.file.as_ref() else {
                return Next::Wait;
            };
            match file.metadata() {
                Ok(m) if Stamp::of(&m) == self.stamp => {}
                Ok(_) => return Next::Torn(Torn::Changed),
                Err(source) => {
                    return Next::Torn(Torn::Io {
                        what: "stat it again",
                        source,
                    })
                }
            }
            let hash: Hash = self.hasher.finalize().into();
            if self.blake3.is_some_and(|h| h != hash) {
                return Next::Torn(Torn::ChangedSinceHashed);
            }
            self.blake3 = Some(hash);
            blake3 = Some(hash);
        }
        // The last chunk of a growing upload gives the file's final modification time.
        let modified = blake3
            .filter(|_| self.growing.is_some())
            .map(|_| self.stamp.modified);
        Next::Chunk(
            Message::Chunk {
                id,
                offset,
                blake3,
                modified,
            },
            data,
        )
    }

    /// Reads the next `len` bytes (the file's position is the offset), hashes them and spends
    /// one credit; a short read means the file shrank.
    fn read_chunk(&mut self, len: usize) -> Result<Vec<u8>, Torn> {
        let Some(file) = self.file.as_mut() else {
            return Err(Torn::NoFile);
        };
        let offset = self.offset;
        let data = match read_up_to(file, len) {
            Ok(data) if data.len() == len => data,
            Ok(data) => {
                return Err(Torn::ShortRead {
                    got: data.len(),
                    want: len,
                    offset,
                })
            }
            Err(source) => return Err(Torn::Read { offset, source }),
        };
        self.hasher.update(&data);
        self.offset += len as u64;
        self.credit -= 1;
        Ok(data)
    }

    /// The next chunk of an open growing upload: a full chunk once the file holds more than
    /// that beyond the offset (its end stays for the last chunk), else wait.
    fn next_growing(&mut self, id: u64, now: Instant) -> Next {
        let Some(file) = self.file.as_mut() else {
            return Next::Wait;
        };
        if self.credit == 0 {
            return Next::Wait;
        }
        let stamp = match file.metadata() {
            Ok(m) => Stamp::of(&m),
            Err(source) => {
                return Next::Torn(Torn::Io {
                    what: "stat it",
                    source,
                })
            }
        };
        if stamp.size < self.offset {
            return Next::Torn(Torn::Shrank {
                size: stamp.size,
                sent: self.offset,
            });
        }
        if stamp.size - self.offset <= CHUNK_SIZE as u64 {
            if let Some(g) = self.growing.as_mut() {
                g.starved.get_or_insert(now);
                // Any change restarts the quiet time.
                if g.seen.is_none_or(|(_, seen)| seen != stamp) {
                    g.seen = Some((now, stamp));
                }
            }
            return Next::Wait;
        }
        let offset = self.offset;
        let data = match self.read_chunk(CHUNK_SIZE) {
            Ok(data) => data,
            Err(why) => return Next::Torn(why),
        };
        if let Some(g) = self.growing.as_mut() {
            g.starved = None;
            g.seen = None;
        }
        let msg = Message::Chunk {
            id,
            offset,
            blake3: None,
            modified: None,
        };
        Next::Chunk(msg, data)
    }
}

/// Reads the first `upto` bytes of `file` again: Ok if they hash to `sent`, else why not.
fn check_sent(file: &File, upto: u64, sent: Hash) -> Result<(), Torn> {
    let mut again = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut at = 0;
    while at < upto {
        let n = usize::try_from((upto - at).min(CHUNK_SIZE as u64)).unwrap_or(0);
        if let Err(source) = file.read_exact_at(&mut buf[..n], at) {
            return Err(Torn::Reread { offset: at, source });
        }
        again.update(&buf[..n]);
        at += n as u64;
    }
    if Hash::from(again.finalize()) != sent {
        return Err(Torn::Rewritten);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{look, Look};
    use std::io::Write;

    fn start(path: &std::path::Path) -> Outgoing {
        let Look::File(stamp) = look(path).unwrap() else {
            panic!("no file")
        };
        let file = File::open(path).unwrap();
        Outgoing::chunked("big".into(), stamp, file, None)
    }

    #[test]
    fn chunks_only_under_credit_with_the_hash_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let content: Vec<u8> = (0..CHUNK_SIZE * 2 + 10).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut up = start(&path);
        assert!(
            matches!(up.next(1, Instant::now()), Next::Wait),
            "no credit, no chunk"
        );
        up.grant(2);
        let mut offsets = Vec::new();
        while let Next::Chunk(Message::Chunk { offset, blake3, .. }, data) =
            up.next(1, Instant::now())
        {
            assert!(blake3.is_none());
            assert_eq!(data.len(), CHUNK_SIZE);
            offsets.push(offset);
        }
        assert_eq!(offsets, [0, CHUNK_SIZE as u64]);
        assert!(!up.all_sent());
        up.grant(8);
        let Next::Chunk(Message::Chunk { offset, blake3, .. }, data) = up.next(1, Instant::now())
        else {
            panic!("expected the last chunk")
        };
        assert_eq!(offset, 2 * CHUNK_SIZE as u64);
        assert_eq!(data.len(), 10);
        assert_eq!(blake3, Some(Hash::of(&content)));
        assert!(up.all_sent());
        assert!(matches!(up.next(1, Instant::now()), Next::Wait));
    }

    #[test]
    fn a_change_during_the_upload_tears_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![1u8; CHUNK_SIZE + 5]).unwrap();
        let mut up = start(&path);
        up.grant(8);
        assert!(matches!(up.next(1, Instant::now()), Next::Chunk(..)));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"more").unwrap();
        assert!(matches!(up.next(1, Instant::now()), Next::Torn(_)));

        // a file that shrinks comes up short
        std::fs::write(&path, vec![1u8; CHUNK_SIZE + 5]).unwrap();
        let mut up = start(&path);
        up.grant(8);
        std::fs::write(&path, b"tiny").unwrap();
        assert!(matches!(up.next(1, Instant::now()), Next::Torn(_)));
    }

    fn start_growing(path: &std::path::Path) -> Outgoing {
        let Look::File(stamp) = look(path).unwrap() else {
            panic!("no file")
        };
        Outgoing::growing("rec".into(), stamp, File::open(path).unwrap())
    }

    /// A chunk sent: offset, bytes, blake3, modified.
    type Sent = (u64, Vec<u8>, Option<Hash>, Option<i64>);

    /// Takes every chunk the upload sends now.
    fn drain(up: &mut Outgoing) -> Vec<Sent> {
        let mut out = Vec::new();
        loop {
            match up.next(1, Instant::now()) {
                Next::Chunk(
                    Message::Chunk {
                        offset,
                        blake3,
                        modified,
                        ..
                    },
                    data,
                ) => out.push((offset, data, blake3, modified)),
                Next::Chunk(other, _) => panic!("not a chunk: {other:?}"),
                Next::Wait => return out,
                Next::Torn(why) => panic!("torn: {why}"),
            }
        }
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i % 253) as u8 ^ seed).collect()
    }

    #[test]
    fn a_growing_file_is_sent_as_it_grows_and_finished_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        let mut content = pattern(3 * CHUNK_SIZE + 10, 0);
        std::fs::write(&path, &content).unwrap();
        let mut up = start_growing(&path);
        assert!(matches!(up.put(1), Message::Put { growing: true, .. }));
        up.grant(100);
        // Three full chunks go; the last 10 bytes stay until the file is finished.
        let first = drain(&mut up);
        let offsets: Vec<u64> = first.iter().map(|c| c.0).collect();
        assert_eq!(offsets, [0, CHUNK_SIZE as u64, 2 * CHUNK_SIZE as u64]);
        assert!(first.iter().all(|c| c.2.is_none() && c.3.is_none()));
        assert!(up.is_starved() && up.is_open());
        // It grows: more full chunks go.
        let more = pattern(2 * CHUNK_SIZE + 7, 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&more).unwrap();
        content.extend_from_slice(&more);
        let second = drain(&mut up);
        assert_eq!(second.len(), 2);
        // Closed: the rest goes, the last chunk with the hash and the final mtime.
        drop(f);
        up.finish().unwrap();
        assert!(!up.is_open());
        let rest = drain(&mut up);
        let last = rest.last().unwrap();
        assert_eq!(last.2, Some(Hash::of(&content)));
        let mtime = look(&path).unwrap();
        let Look::File(stamp) = mtime else { panic!() };
        assert_eq!(last.3, Some(stamp.modified));
        let sent: Vec<u8> = first
            .into_iter()
            .chain(second)
            .chain(rest)
            .flat_map(|c| c.1)
            .collect();
        assert!(sent == content, "the bytes sent are the file");
        assert!(up.all_sent());
    }

    /// A growing upload of a file of two chunks and a byte in `dir`, with both chunks sent.
    fn two_chunks_sent(dir: &std::path::Path) -> (std::path::PathBuf, Outgoing) {
        let path = dir.join("rec");
        std::fs::write(&path, pattern(2 * CHUNK_SIZE + 1, 0)).unwrap();
        let mut up = start_growing(&path);
        up.grant(100);
        assert_eq!(drain(&mut up).len(), 2);
        (path, up)
    }

    #[test]
    fn bytes_rewritten_behind_the_sent_part_tear_a_growing_upload() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut up) = two_chunks_sent(dir.path());
        // A writer that seeks back (a header patched at the end, say).
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"HEADER", 5).unwrap();
        up.finish().unwrap();
        let Next::Torn(why) = up.next(1, Instant::now()) else {
            panic!("the last chunk went out")
        };
        assert!(matches!(why, Torn::Rewritten), "{why}");
    }

    #[test]
    fn a_growing_file_that_shrinks_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut up) = two_chunks_sent(dir.path());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(CHUNK_SIZE as u64).unwrap();
        assert!(matches!(up.next(1, Instant::now()), Next::Torn(_)));
        assert!(matches!(up.finish(), Err(Torn::Shrank { .. })));
    }

    #[test]
    fn a_starved_growing_upload_finishes_when_quiet_and_gives_up_when_slow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        std::fs::write(&path, pattern(CHUNK_SIZE + 1, 0)).unwrap();
        let mut up = start_growing(&path);
        let quiet = std::time::Duration::from_millis(200);
        let t0 = Instant::now();
        assert!(!up.is_starved(), "no credit yet: not waiting for data");
        up.grant(100);
        assert!(matches!(up.next(1, t0), Next::Chunk(..)));
        assert!(matches!(up.next(1, t0), Next::Wait));
        assert!(up.is_starved());
        assert_eq!(up.stall(t0, quiet), Stall::Wait);
        assert_eq!(up.stall(t0 + quiet, quiet), Stall::Quiet);
        // A little more, not a chunk's worth: still starved, but the file changed.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"trickle").unwrap();
        assert_eq!(up.stall(t0 + quiet, quiet), Stall::Slow);
        // Seen growing, the file is still short of a chunk: being starved since t0 decides.
        assert!(matches!(up.next(1, t0 + quiet / 2), Next::Wait));
        assert_eq!(up.stall(t0 + quiet, quiet), Stall::Slow);
        assert_eq!(up.stall(t0 + quiet / 2 + quiet, quiet), Stall::Quiet);
    }
}
