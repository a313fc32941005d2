//! The watcher's status file (`--status-file FILE`): one JSON object that `dfs status` reads to
//! tell whether the watcher is running, connected and keeping up.
//!
//! The file is rewritten atomically (a temporary file beside it, then a rename), at most once a
//! second when something changed and at least every [`HEARTBEAT`] even when nothing did, so a
//! reader can tell a stopped or stuck watcher by its `updated_at`. Its fields
//! (`schema::status::WatcherReport`, which `dfs status` reads it back into):
//!
//! | key | meaning |
//! |---|---|
//! | `pid`, `source`, `broker` | the process, the folder it syncs, the broker's ingest endpoint |
//! | `running` | false in the last write of a watcher that stopped |
//! | `connected` | whether the broker answers |
//! | `error` | the condition in effect now that keeps files from syncing (broker unreachable, store refusing changes), or null |
//! | `pending`, `pending_names` | names waiting for a look (the first few of them) |
//! | `in_flight`, `in_flight_names` | changes sent and not yet acknowledged (the first few names) |
//! | `refused` | names the broker refused for good (not retried until the file changes) |
//! | `files_synced`, `bytes_sent` | uploads acknowledged (new content), and their bytes, since start |
//! | `last_sync` | when the last change was acknowledged (RFC 3339), or null |
//! | `last_error` | `{time, message}` of the last error, or null |
//! | `heartbeat_secs` | the longest gap between two writes |
//! | `updated_at` | when this was written (RFC 3339) |

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Shortest gap between two writes.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// Longest gap between two writes: the heartbeat a reader checks for staleness.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How many pending and in-flight names the file shows.
pub(crate) const SAMPLE: usize = 10;

/// What the watcher has done since it started, for the status file and the logs.
#[derive(Debug, Default)]
pub struct Progress {
    pub files_synced: u64,
    pub bytes_sent: u64,
    pub last_sync: Option<SystemTime>,
    pub last_error: Option<(SystemTime, String)>,
}

/// The status file's writer: where, and what was last written when.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    /// The last content written, without `updated_at`, to see whether anything changed.
    last: Option<serde_json::Value>,
    written: Option<Instant>,
}

impl StatusFile {
    /// A writer for `path`; nothing is written yet.
    pub fn new(path: &Path) -> StatusFile {
        StatusFile {
            path: path.to_path_buf(),
            last: None,
            written: None,
        }
    }

    /// Whether a write may be due at `now` (at most one a second).
    pub fn may_write(&self, now: Instant) -> bool {
        self.written
            .is_none_or(|at| now.duration_since(at) >= MIN_GAP)
    }

    /// Writes `content` (plus `updated_at`) if it changed, or if the heartbeat is due, or if
    /// `force`. A failed write is logged and tried again at the next chance.
    pub fn offer(&mut self, content: serde_json::Value, now: Instant, force: bool) {
        let heartbeat = self
            .written
            .is_none_or(|at| now.duration_since(at) >= HEARTBEAT);
        if !force && !heartbeat && self.last.as_ref() == Some(&content) {
            return;
        }
        let mut full = content.clone();
        full["updated_at"] = rfc3339(SystemTime::now()).into();
        match write_atomically(&self.path, &full) {
            Ok(()) => {
                self.last = Some(content);
                self.written = Some(now);
            }
            Err(e) => {
                // Not fatal: syncing goes on; the stale file tells `dfs status` something is off.
                tracing::warn!("cannot write the status file {}: {e}", self.path.display());
                self.written = Some(now);
            }
        }
    }
}

/// Writes `value` to `path` through a temporary file beside it and a rename.
fn write_atomically(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written =
        std::fs::write(&tmp, format!("{value:#}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `t` as RFC 3339 UTC to the millisecond.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_on_change_at_most_once_a_second_and_on_the_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let mut f = StatusFile::new(&path);
        let t0 = Instant::now();
        let read = || -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        assert!(f.may_write(t0));
        f.offer(serde_json::json!({"pending": 1}), t0, false);
        let first = read();
        assert_eq!(first["pending"], 1);
        assert!(first["updated_at"].is_string());
        assert!(!f.may_write(t0 + Duration::from_millis(500)));
        assert!(f.may_write(t0 + MIN_GAP));
        // unchanged: no write until the heartbeat
        std::fs::remove_file(&path).unwrap();
        f.offer(serde_json::json!({"pending": 1}), t0 + MIN_GAP, false);
        assert!(!path.exists());
        f.offer(serde_json::json!({"pending": 1}), t0 + HEARTBEAT, false);
        assert_eq!(read()["pending"], 1);
        // changed: written at once
        f.offer(
            serde_json::json!({"pending": 0}),
            t0 + HEARTBEAT + MIN_GAP,
            false,
        );
        assert_eq!(read()["pending"], 0);
        assert!(!dir.path().join("status.json.tmp").exists());
    }
}
