//! What can go wrong while listing or retrieving, and the exit code each failure maps to.
//!
//! Exit codes (docs/CONTRACT.md §3): 0 success; 1 a per-file failure (not found, refused name, local write
//! error, a reply that breaks the protocol); 2 usage error; 3 broker or storage unreachable or
//! timed out, or "try again later"; 4 integrity failure. With several failures the highest wins.

use schema::names::NameError;
use schema::ErrorCode;
use std::fmt;
use std::path::PathBuf;

/// Exit code: success.
pub const EXIT_OK: u8 = daemon::exit::OK;
/// Exit code: a named file could not be retrieved (not found, refused, written, ...).
pub const EXIT_FILE: u8 = daemon::exit::FAILURE;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = daemon::exit::USAGE;
/// Exit code: the broker or the storage behind it is unreachable, timed out, or asks to retry.
pub const EXIT_UNREACHABLE: u8 = daemon::exit::UNREACHABLE;
/// Exit code: content did not match its BLAKE3 hash.
pub const EXIT_INTEGRITY: u8 = daemon::exit::INTEGRITY;
/// Exit code: stopped by SIGINT or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = daemon::exit::INTERRUPTED;

/// A duration in seconds as the user gave it (`5`, `0.5`), for messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs(pub f64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0)
    }
}

impl From<net::client::ClientError> for FetchError {
    fn from(e: net::client::ClientError) -> FetchError {
        use net::client::ClientError as C;
        match e {
            C::Socket(e) => FetchError::Socket(e),
            C::Unreachable { endpoint, secs } => FetchError::Unreachable {
                endpoint,
                secs: Secs(secs),
            },
            C::Refused {
                endpoint,
                secs,
                why,
            } => FetchError::Refused {
                endpoint,
                secs: Secs(secs),
                why,
            },
            C::Timeout { endpoint, secs } => FetchError::Timeout {
                endpoint,
                secs: Secs(secs),
            },
            C::Disconnected { endpoint, reason } => FetchError::Disconnected { endpoint, reason },
            C::Interrupted => FetchError::Interrupted,
            C::BadReply { error, .. } => FetchError::Protocol(error),
            C::Remote { code, message } => FetchError::Remote { code, message },
        }
    }
}

/// One failure of the fetcher. The `Display` text is the reason; [`FetchError::exit_code`] is
/// what it costs.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The command line asks for something the fetcher cannot do.
    #[error("{0}")]
    Usage(String),
    /// No connection to the broker could be made before the timeout.
    #[error("cannot reach the broker at {endpoint}: no answer within {secs}")]
    Unreachable { endpoint: String, secs: Secs },
    /// The broker refused the secure handshake (keys) until the timeout.
    #[error("cannot connect to the broker at {endpoint} within {secs}: {why}")]
    Refused {
        endpoint: String,
        secs: Secs,
        why: String,
    },
    /// The key options cannot be used (a missing or unsafe key file, a key without the other).
    #[error("{0}")]
    Keys(#[from] net::security::SecurityError),
    /// The broker stopped answering in the middle of an exchange.
    #[error("no answer from the broker at {endpoint} within {secs}")]
    Timeout { endpoint: String, secs: Secs },
    /// A send failed: the connection to the broker went away.
    #[error("lost the connection to the broker at {endpoint}: {reason}")]
    Disconnected { endpoint: String, reason: String },
    /// The local ZeroMQ socket could not be set up.
    #[error("{0}")]
    Socket(#[from] net::socket::SocketError),
    /// The broker answered with an error.
    #[error("{}", remote_reason(*.code, .message))]
    Remote { code: ErrorCode, message: String },
    /// The name breaks the name rules; nothing was asked or written for it.
    #[error("refused: {0}")]
    BadName(#[from] NameError),
    /// The content did not match the BLAKE3 hash recorded for it.
    #[error("content does not match its BLAKE3 hash")]
    Integrity,
    /// A local file or folder could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Making the retrieved file durable under its name failed (fsync, rename, folder fsync).
    #[error("{0}")]
    Disk(#[from] disk::atomic::DiskError),
    /// A destination folder component is a symbolic link or not a folder.
    #[error("{} is {what}; refusing to write through it", .path.display())]
    UnsafePath { path: PathBuf, what: &'static str },
    /// The broker's reply breaks the protocol.
    #[error("bad reply from the broker: {0}")]
    Protocol(String),
    /// Standard output was closed by its reader (e.g. `| head`): a quiet stop.
    #[error("standard output was closed")]
    BrokenPipe,
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted")]
    Interrupted,
    /// A glob pattern matched no stored file (of the `--class` asked for, if any).
    #[error("no stored file{} matches", .class.map(|c| format!(" of class {c}")).unwrap_or_default())]
    NoMatch { class: Option<schema::Class> },
    /// The file is stored, but in another class than `--class` asks for; not retrieved.
    #[error("stored as class {found}, not {wanted} (--class); not fetched")]
    OtherClass {
        found: schema::Class,
        wanted: schema::Class,
    },
    /// Not asked for, because an earlier name found the link to the broker broken (`reason`,
    /// which names the broker; `code` is that failure's exit code).
    #[error("not fetched: {reason}")]
    NotTried { reason: String, code: u8 },
}

fn remote_reason(code: ErrorCode, message: &str) -> String {
    let what = match code {
        ErrorCode::NotFound => "not found",
        ErrorCode::Uploading => "is being uploaded, try again",
        ErrorCode::Unavailable => "the storage node is unavailable, try again",
        ErrorCode::Busy => "the broker is busy, try again",
        ErrorCode::BadName => "refused by the broker as a bad name",
        ErrorCode::Integrity => "content does not match its BLAKE3 hash",
        ErrorCode::UnknownTransfer => "the broker forgot the transfer, try again",
        ErrorCode::NoSpace => "no space left on the storage node",
        ErrorCode::Io => "I/O error on the storage node",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::BadMessage | ErrorCode::UnsupportedVersion | ErrorCode::Unexpected => {
            "the broker refused the request"
        }
        ErrorCode::Unknown => "the broker reported an unknown error",
    };
    if message.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {message}")
    }
}

impl FetchError {
    /// The exit code this failure asks for.
    pub fn exit_code(&self) -> u8 {
        match self {
            FetchError::Usage(_) | FetchError::Keys(_) => EXIT_USAGE,
            FetchError::Unreachable { .. }
            | FetchError::Refused { .. }
            | FetchError::Timeout { .. }
            | FetchError::Disconnected { .. }
            | FetchError::Socket(_) => EXIT_UNREACHABLE,
            FetchError::Remote { code, .. } => match (code, code.retry()) {
                (ErrorCode::Integrity, _) => EXIT_INTEGRITY,
                // An I/O error on the node is about this file: the others still complete.
                (ErrorCode::Io, _) => EXIT_FILE,
                // Away, busy, or mid-upload: try again later.
                (_, schema::Retry::StoreWide | schema::Retry::Request) => EXIT_UNREACHABLE,
                (_, schema::Retry::Never) => EXIT_FILE,
            },
            FetchError::Integrity => EXIT_INTEGRITY,
            FetchError::BadName(_)
            | FetchError::NoMatch { .. }
            | FetchError::OtherClass { .. }
            | FetchError::Write { .. }
            | FetchError::Disk(_)
            | FetchError::UnsafePath { .. }
            | FetchError::Protocol(_) => EXIT_FILE,
            FetchError::BrokenPipe => EXIT_OK,
            FetchError::Interrupted => EXIT_INTERRUPTED,
            FetchError::NotTried { code, .. } => *code,
        }
    }

    /// Whether the link to the broker is gone, so later requests would only wait in vain.
    pub fn is_link_failure(&self) -> bool {
        matches!(
            self,
            FetchError::Unreachable { .. }
                | FetchError::Refused { .. }
                | FetchError::Timeout { .. }
                | FetchError::Disconnected { .. }
                | FetchError::Socket(_)
                | FetchError::Interrupted
                | FetchError::BrokenPipe
        )
    }

    /// Whether the message already names the broker (so the line needs no `(broker …)` suffix).
    fn names_broker(&self) -> bool {
        matches!(
            self,
            FetchError::Unreachable { .. }
                | FetchError::Refused { .. }
                | FetchError::Timeout { .. }
                | FetchError::Disconnected { .. }
                | FetchError::Socket(_)
                | FetchError::NotTried { .. }
        )
    }

    /// The one stderr line for this failure: `dfs fetch: NAME: reason (broker ENDPOINT)`.
    /// `subject` is the file name (or what was being done, such as `listing`).
    pub fn line(&self, subject: Option<&str>, endpoint: &str) -> String {
        let mut s = String::from("dfs fetch: ");
        if let Some(subject) = subject {
            s.push_str(&schema::names::escape(subject));
            // "NAME is being uploaded, try again" reads better without a colon.
            let joined = matches!(
                self,
                FetchError::Remote {
                    code: ErrorCode::Uploading,
                    ..
                }
            );
            s.push_str(if joined { " " } else { ": " });
        }
        s.push_str(&self.to_string());
        // A refused name or a usage error never reached the broker.
        let local = matches!(
            self,
            FetchError::Usage(_) | FetchError::BadName(_) | FetchError::Keys(_)
        );
        if !self.names_broker() && !local {
            s.push_str(&format!(" (broker {endpoint})"));
        }
        s
    }
}

/// The error for a failed write to standard output.
pub(crate) fn stdout_error(e: std::io::Error) -> FetchError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        FetchError::BrokenPipe
    } else {
        FetchError::Write {
            path: PathBuf::from("<standard output>"),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let remote = |code| FetchError::Remote {
            code,
            message: String::new(),
        };
        assert_eq!(remote(ErrorCode::NotFound).exit_code(), 1);
        assert_eq!(remote(ErrorCode::BadName).exit_code(), 1);
        assert_eq!(remote(ErrorCode::Uploading).exit_code(), 3);
        assert_eq!(remote(ErrorCode::Unavailable).exit_code(), 3);
        assert_eq!(remote(ErrorCode::Busy).exit_code(), 3);
        assert_eq!(FetchError::Integrity.exit_code(), 4);
        assert_eq!(FetchError::Usage("x".into()).exit_code(), 2);
        assert_eq!(FetchError::BrokenPipe.exit_code(), 0);
    }

    #[test]
    fn lines_name_the_file_the_peer_and_the_reason() {
        let ep = "tcp://127.0.0.1:12346";
        let e = FetchError::Remote {
            code: ErrorCode::Uploading,
            message: String::new(),
        };
        assert_eq!(
            e.line(Some("a.txt"), ep),
            "dfs fetch: a.txt is being uploaded, try again (broker tcp://127.0.0.1:12346)"
        );
        assert_eq!(
            FetchError::Integrity.line(Some("a\tb"), ep),
            "dfs fetch: a\\tb: content does not match its BLAKE3 hash (broker tcp://127.0.0.1:12346)"
        );
        let e = FetchError::Unreachable {
            endpoint: ep.into(),
            secs: Secs(5.0),
        };
        assert_eq!(
            e.line(None, ep),
            "dfs fetch: cannot reach the broker at tcp://127.0.0.1:12346: no answer within 5 s"
        );
    }
}
