//! The rules of a file's transfer that every hop applies alike (watcher → broker → node for an
//! upload, node → broker → fetcher for a read): how a `put` says its content travels, and which
//! chunk ends the stream. The credit windows are in [`limits`](crate::limits).

use crate::hash::Hash;
use crate::limits::{CHUNK_SIZE, INLINE_MAX};

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
}
