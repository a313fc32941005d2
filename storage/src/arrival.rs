//! How much of a file being copied from the object store has arrived, so that a read can serve
//! its first chunks while the rest is still coming (`--backend s3://…`, docs/CONTRACT.md §9).
//!
//! The sync worker copying the object writes the bytes in order and says so here; the socket
//! thread's read sends a chunk only once its bytes have arrived, and stops with an error when
//! the copy failed. A wrong content is still never delivered whole: the read hashes what it sends
//! and ends with `integrity` instead of the last chunk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The progress of one copy from the store into a temporary file.
#[derive(Debug, Default)]
pub struct Arrival {
    bytes: AtomicU64,
    failed: Mutex<Option<String>>,
}

impl Arrival {
    /// Bytes written so far, from the start of the file.
    pub fn arrived(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// `n` more bytes are written (after the write returned).
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    /// The copy failed: no more bytes will come.
    pub fn fail(&self, why: String) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Why the copy failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
