//! The rules of a file's transfer that every hop applies alike (watcher → broker → node for an
//! upload, node → broker → fetcher for a read): how a `put` says its content travels, which
//! chunk ends the stream, what a receiver checks of each chunk ([`Receiver`]), and how a reader
//! grants credit ([`ReadWindow`]). The credit windows are in [`limits`](crate::limits).

use crate::hash::Hash;
use crate::limits::{CHUNK_SIZE, INLINE_MAX, TRANSFER_WINDOW};

/// How the content of a `put` travels, by its size and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutKind {
    /// At most [`INLINE_MAX`] bytes, in one data frame after the header, with their hash.
    Inline { blake3: Hash },
    /// Larger: in `chunk` messages under credit; the last one carries the hash.
    Chunked,
    /// Larger and still being written: chunked, and the chunk with the hash ends the file.
    Growing,
}

/// A `put` that breaks the put rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    #[error("a growing put is of a file over {INLINE_MAX} bytes")]
    SmallGrowing,
    #[error("a put of at most {INLINE_MAX} bytes carries its blake3")]
    InlineWithoutHash,
}

/// How a `put` of `size` bytes with these fields sends its content, or which rule it breaks.
pub fn put_kind(size: u64, blake3: Option<Hash>, growing: bool) -> Result<PutKind, PutError> {
    match (size <= INLINE_MAX, blake3, growing) {
        (true, _, true) => Err(PutError::SmallGrowing),
        (true, Some(blake3), false) => Ok(PutKind::Inline { blake3 }),
        (true, None, false) => Err(PutError::InlineWithoutHash),
        (false, _, true) => Ok(PutKind::Growing),
        (false, _, false) => Ok(PutKind::Chunked),
    }
}

/// Whether the chunk ending at `stop` (its offset plus its length) ends the stream: for a file
/// of known `size` the one that reaches it, for a growing file the one that carries the hash.
pub fn is_last_chunk(growing: bool, size: u64, stop: u64, has_hash: bool) -> bool {
    if growing {
        has_hash
    } else {
        stop >= size
    }
}

/// Whether a chunk of `len` bytes is allowed: every chunk but the last is exactly
/// [`CHUNK_SIZE`], and none is empty or larger.
pub fn chunk_len_ok(len: usize, last: bool) -> bool {
    len == CHUNK_SIZE || (last && (1..=CHUNK_SIZE).contains(&len))
}

/// A chunk that breaks the stream rules, as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk at offset {offset}, expected {expected}")]
    OutOfOrder { offset: u64, expected: u64 },
    #[error("chunk ends at {stop}, past the file size {size}")]
    PastSize { stop: u64, size: u64 },
    #[error("chunk of {len} bytes; every chunk but the last has {CHUNK_SIZE}")]
    BadLength { len: usize },
}

/// What an accepted chunk meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More chunks follow.
    More,
    /// This chunk ended the stream; `actual` is the hash of everything received (compare it
    /// with the hash the sender gave).
    Last { actual: Hash },
}

/// The receiving end of one chunk stream (the node for an upload, the fetcher for a read):
/// checks that each chunk comes in order, has the right length and stays within the size, and
/// hashes the content as it comes.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The file's size; for a growing upload, known once the last chunk is in.
    size: u64,
    growing: bool,
    /// Bytes received so far: the offset the next chunk must have.
    received: u64,
    hasher: blake3::Hasher,
}

impl Receiver {
    /// A stream of `size` bytes (`growing`: a file still being written, ended by the chunk that
    /// carries the hash).
    pub fn new(size: u64, growing: bool) -> Receiver {
        Receiver {
            size,
            growing,
            received: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The file's size (final once a growing stream ended).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks the chunk of `data` at `offset` (`has_hash`: it carries a `blake3`) and hashes it.
    /// A refused chunk changes nothing.
    pub fn accept(&mut self, offset: u64, data: &[u8], has_hash: bool) -> Result<Step, ChunkError> {
        if offset != self.received {
            return Err(ChunkError::OutOfOrder {
                offset,
                expected: self.received,
            });
        }
        let stop = offset + data.len() as u64;
        if !self.growing && stop > self.size {
            return Err(ChunkError::PastSize {
                stop,
                size: self.size,
            });
        }
        let last = is_last_chunk(self.growing, self.size, stop, has_hash);
        if !chunk_len_ok(data.len(), last) {
            return Err(ChunkError::BadLength { len: data.len() });
        }
        self.hasher.update(data);
        self.received = stop;
        if !last {
            return Ok(Step::More);
        }
        self.size = stop;
        Ok(Step::Last {
            actual: Hash::from(self.hasher.finalize()),
        })
    }
}

/// A chunk or a grant that breaks the credit rules (PROTOCOL.md, flow control).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    #[error("chunk {chunk} sent without credit ({granted} granted so far)")]
    NoCredit { chunk: u64, granted: u64 },
    #[error(
        "a grant of {grant} would leave {outstanding} chunks of credit outstanding; \
         at most {TRANSFER_WINDOW}"
    )]
    OverWindow { grant: u32, outstanding: u64 },
}

/// One transfer's credit as a peer on its path counts it (the node and the broker for an
/// upload's chunks, the node and the broker for a reader's grants): the chunks granted, and
/// those sent under them. Every hop refuses a chunk beyond what it has seen granted, and a grant
/// that would leave more than [`TRANSFER_WINDOW`] chunks outstanding, so no peer on the path
/// queues more than a window of one transfer's content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credit {
    granted: u64,
    used: u64,
}

impl Credit {
    /// Adds a grant of `chunks`; refused (and not counted) when it would leave more than the
    /// window outstanding.
    pub fn grant(&mut self, chunks: u32) -> Result<(), CreditError> {
        let outstanding = self.outstanding() + u64::from(chunks);
        if outstanding > u64::from(TRANSFER_WINDOW) {
            return Err(CreditError::OverWindow {
                grant: chunks,
                outstanding,
            });
        }
        self.granted += u64::from(chunks);
        Ok(())
    }

    /// Counts one chunk; refused (and not counted) when no credit is left.
    pub fn spend(&mut self) -> Result<(), CreditError> {
        if self.used >= self.granted {
            return Err(CreditError::NoCredit {
                chunk: self.used,
                granted: self.granted,
            });
        }
        self.used += 1;
        Ok(())
    }

    /// Chunks granted and not sent yet.
    pub fn outstanding(&self) -> u64 {
        self.granted - self.used
    }

    /// Chunks granted so far.
    pub fn granted(&self) -> u64 {
        self.granted
    }
}

/// A reader's credit for one chunked read (PROTOCOL.md, flow control): [`TRANSFER_WINDOW`]
/// chunks at first, then one more for every chunk received, never more than the file needs, so
/// at most a window of chunks is ever outstanding and the window stays full. A chunk beyond the
/// credit granted is refused.
#[derive(Debug, Clone, Copy)]
pub struct ReadWindow {
    total: u64,
    credit: Credit,
}

impl ReadWindow {
    /// The window of a read of `size` bytes, and the credit to grant at once.
    pub fn open(size: u64) -> (ReadWindow, u32) {
        let total = size.div_ceil(CHUNK_SIZE as u64);
        let first = total.min(u64::from(TRANSFER_WINDOW)) as u32;
        let mut credit = Credit::default();
        credit.grant(first).expect("a first grant fits the window");
        (ReadWindow { total, credit }, first)
    }

    /// A chunk arrived: whether to grant one more (before writing it, so the window stays
    /// full), or the error of a chunk sent without credit.
    pub fn received(&mut self) -> Result<bool, CreditError> {
        self.credit.spend()?;
        if self.credit.granted() < self.total {
            self.credit.grant(1)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_put_rules() {
        let h = Hash::of(b"x");
        assert_eq!(
            put_kind(5, Some(h), false),
            Ok(PutKind::Inline { blake3: h })
        );
        assert_eq!(put_kind(0, None, false), Err(PutError::InlineWithoutHash));
        assert_eq!(
            put_kind(INLINE_MAX, Some(h), true),
            Err(PutError::SmallGrowing)
        );
        assert_eq!(put_kind(INLINE_MAX + 1, None, false), Ok(PutKind::Chunked));
        assert_eq!(
            put_kind(INLINE_MAX + 1, Some(h), false),
            Ok(PutKind::Chunked)
        );
        assert_eq!(put_kind(INLINE_MAX + 1, None, true), Ok(PutKind::Growing));
    }

    #[test]
    fn the_last_chunk_rule() {
        let size = 3 * CHUNK_SIZE as u64 - 7;
        assert!(!is_last_chunk(false, size, CHUNK_SIZE as u64, false));
        assert!(is_last_chunk(false, size, size, true));
        assert!(
            is_last_chunk(false, size, size, false),
            "reaching the size ends it"
        );
        assert!(
            !is_last_chunk(true, size, size, false),
            "a growing file may grow on"
        );
        assert!(is_last_chunk(true, size, CHUNK_SIZE as u64, true));
        assert!(chunk_len_ok(CHUNK_SIZE, false));
        assert!(!chunk_len_ok(CHUNK_SIZE - 1, false));
        assert!(chunk_len_ok(1, true));
        assert!(!chunk_len_ok(0, true));
        assert!(!chunk_len_ok(CHUNK_SIZE + 1, true));
    }

    #[test]
    fn a_receiver_takes_chunks_in_order_and_hashes_them() {
        let c = CHUNK_SIZE;
        let data: Vec<u8> = (0..2 * c + 5).map(|i| i as u8).collect();
        let mut r = Receiver::new(data.len() as u64, false);
        assert_eq!(
            r.accept(c as u64, &data[c..2 * c], false),
            Err(ChunkError::OutOfOrder {
                offset: c as u64,
                expected: 0
            })
        );
        assert_eq!(
            r.accept(0, &data[..c - 1], false),
            Err(ChunkError::BadLength { len: c - 1 })
        );
        assert_eq!(r.accept(0, &data[..c], false), Ok(Step::More));
        assert_eq!(r.accept(c as u64, &data[c..2 * c], false), Ok(Step::More));
        assert_eq!(r.received(), 2 * c as u64);
        let mut long = data[2 * c..].to_vec();
        long.push(0);
        assert_eq!(
            r.accept(2 * c as u64, &long, true),
            Err(ChunkError::PastSize {
                stop: 2 * c as u64 + 6,
                size: data.len() as u64
            })
        );
        let last = r.accept(2 * c as u64, &data[2 * c..], true);
        assert_eq!(
            last,
            Ok(Step::Last {
                actual: Hash::of(&data)
            })
        );
    }

    #[test]
    fn a_growing_stream_ends_with_the_hash() {
        let c = CHUNK_SIZE;
        let data = vec![7u8; c + 3];
        let mut r = Receiver::new(c as u64 + 1, true);
        assert_eq!(r.accept(0, &data[..c], false), Ok(Step::More));
        let end = r.accept(c as u64, &data[c..], true).unwrap();
        assert_eq!(
            end,
            Step::Last {
                actual: Hash::of(&data)
            }
        );
        assert_eq!(r.size(), data.len() as u64, "the last chunk gives the size");
    }

    #[test]
    fn credit_is_counted_on_both_sides() {
        let mut c = Credit::default();
        assert_eq!(
            c.spend(),
            Err(CreditError::NoCredit {
                chunk: 0,
                granted: 0
            })
        );
        c.grant(TRANSFER_WINDOW).unwrap();
        assert_eq!(
            c.grant(1),
            Err(CreditError::OverWindow {
                grant: 1,
                outstanding: u64::from(TRANSFER_WINDOW) + 1
            })
        );
        c.spend().unwrap();
        c.grant(1).unwrap();
        for _ in 0..TRANSFER_WINDOW {
            c.spend().unwrap();
        }
        assert_eq!(c.outstanding(), 0);
        assert!(c.spend().is_err(), "nothing left");
        assert!(c.grant(u32::MAX).is_err());
    }

    #[test]
    fn a_read_window_keeps_a_window_outstanding() {
        let c = CHUNK_SIZE as u64;
        let (mut w, first) = ReadWindow::open(INLINE_MAX + 1);
        assert_eq!(first, 1);
        assert_eq!(w.received(), Ok(false));
        assert!(w.received().is_err(), "a chunk past the file's credit");
        let chunks = u64::from(TRANSFER_WINDOW) + 3;
        let (mut w2, first) = ReadWindow::open(chunks * c);
        assert_eq!(first, TRANSFER_WINDOW);
        let more: Vec<bool> = (0..chunks).map(|_| w2.received().unwrap()).collect();
        assert_eq!(more.iter().filter(|m| **m).count(), 3);
        assert!(
            more[..3].iter().all(|m| *m),
            "granted as the first chunks come"
        );
    }
}
