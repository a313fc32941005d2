//! The watcher's errors that are not fatal: why an upload was torn. A torn upload is aborted,
//! logged with this reason, and the file is sent again once it settles.

use std::io;

/// Why an upload stopped before its last chunk: the file changed, shrank or could not be read
/// while it was being sent.
#[derive(Debug, thiserror::Error)]
pub enum Torn {
    #[error("the file changed while it was being sent")]
    Changed,
    #[error("the file changed since it was hashed")]
    ChangedSinceHashed,
    #[error("bytes already sent were rewritten")]
    Rewritten,
    #[error("it shrank to {size} bytes, below the {sent} already sent")]
    Shrank { size: u64, sent: u64 },
    #[error("read {got} of {want} bytes at offset {offset} (the file shrank)")]
    ShortRead {
        got: usize,
        want: usize,
        offset: u64,
    },
    #[error("read failed at offset {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("cannot read it again at offset {offset}: {source}")]
    Reread { offset: u64, source: io::Error },
    /// Another failed step (stat, reopen, start the check thread).
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("the check of the part sent failed")]
    CheckFailed,
    #[error("no open file")]
    NoFile,
}
