//! The routine errors of the node: each becomes an `error` reply with a protocol code, and the
//! node keeps serving.

use schema::names::NameError;
use schema::{ErrorCode, Hash};
use std::io;
use std::path::{Path, PathBuf};

/// Why one request (a put, a read, a delete, a rename) failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name breaks the name rules.
    #[error("{0}")]
    BadName(#[from] NameError),
    /// The peer broke a rule of the protocol (chunk out of order, without credit, ...).
    #[error("{0}")]
    Protocol(String),
    /// The content did not hash to what the sender said.
    #[error("{name}: content hashes to {actual}, the sender said {expected}; nothing stored")]
    Integrity {
        name: String,
        expected: Hash,
        actual: Hash,
    },
    /// Stored content no longer matches the hash recorded for it.
    #[error("{0}")]
    Corrupt(String),
    /// The content came without the hash needed to verify it.
    #[error("{0}")]
    Unverified(String),
    /// No such stored file (or not with the expected hash).
    #[error("{0}")]
    NotFound(String),
    /// Too many transfers at once.
    #[error("{0}")]
    Busy(String),
    /// The object store behind the node (`--backend s3://…`) is away or refused the request
    /// (credentials, permissions, quota): the sender tries again later.
    #[error("the object store: {0}")]
    Store(String),
    /// An I/O operation on the node's disk failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl From<disk::atomic::DiskError> for StoreError {
    fn from(e: disk::atomic::DiskError) -> StoreError {
        StoreError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

impl StoreError {
    /// An I/O failure of `action` on `path`.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The protocol code of the error reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::BadName(_) => ErrorCode::BadName,
            StoreError::Protocol(_) => ErrorCode::BadMessage,
            StoreError::Integrity { .. } | StoreError::Unverified(_) | StoreError::Corrupt(_) => {
                ErrorCode::Integrity
            }
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Busy(_) => ErrorCode::Busy,
            StoreError::Store(_) => ErrorCode::Unavailable,
            StoreError::Io { source, .. } if is_no_space(source) => ErrorCode::NoSpace,
            StoreError::Io { .. } => ErrorCode::Io,
        }
    }
}

impl StoreError {
    /// The `error` reply to request `id`. I/O failures also name the node's root, so the
    /// operator knows which disk to look at.
    pub fn reply(&self, id: u64, root: &Path) -> schema::Message {
        let message = match self {
            StoreError::Io { .. } => format!("{self} (storage root {})", root.display()),
            _ => self.to_string(),
        };
        schema::Message::error(id, self.code(), message)
    }
}

/// Whether `e` says the disk (or the user's quota) is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        let e = StoreError::io("write", Path::new("/r/.dfs/tmp/1"), full);
        assert_eq!(e.code(), ErrorCode::NoSpace);
        assert!(e.to_string().contains("/r/.dfs/tmp/1"), "{e}");
        let other = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(
            StoreError::io("write", Path::new("x"), other).code(),
            ErrorCode::Io
        );
    }
}
