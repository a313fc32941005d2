//! Errors of the broker's routine work (index reads and writes, exports).

use std::path::PathBuf;

/// Why an index or export operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// sled reported an error.
    #[error("index database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// A stored value could not be read.
    #[error("index record of {name:?} is unreadable: {reason}")]
    BadRecord { name: String, reason: String },
    /// Another process (a running broker) holds the database.
    #[error(
        "index database {path} is locked by another process (is a broker running? \
         it keeps myIndex/index.txt current itself; stop it to use this command)"
    )]
    Locked { path: PathBuf },
    /// The database folder cannot be used (for example: permission denied); moving it aside
    /// would not help.
    #[error("cannot use the index database {path}: {source}")]
    Inaccessible {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database lacks its completion mark (a rebuild is pending or it is damaged).
    #[error(
        "index database {path} is incomplete (damaged, or its rebuild from the storage node \
         has not finished); start the broker to rebuild it"
    )]
    Incomplete { path: PathBuf },
    /// The export file could not be written.
    #[error("cannot write the index export {path}: {source}")]
    Export {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
