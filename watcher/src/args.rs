//! The watcher's command-line options (`dfs watch`), each also read from a `DFS_WATCH_*`
//! environment variable.

use std::path::PathBuf;
use std::time::Duration;

/// Options of `dfs watch`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Folder to watch, recursively; every file in it is synced to the broker.
    #[arg(long, env = "DFS_WATCH_SOURCE", default_value = "./source_folder")]
    pub source: PathBuf,
    /// Broker ingest address, HOST[:PORT] (default port 12345).
    #[arg(long, env = "DFS_WATCH_BROKER", default_value = schema::ports::INGEST_ADDR)]
    pub broker: String,
    /// Glob of names not to sync (repeatable). Without `/` it matches a file or folder name at
    /// any depth; with `/` it matches the whole name from the source root. Several globs may be
    /// given in one value separated by commas (commas inside `{a,b}` belong to the glob).
    #[arg(long, env = "DFS_WATCH_IGNORE")]
    pub ignore: Vec<String>,
    /// Sync editor and tool temporary files too (`*.swp`, `*~`, `.#*`, rsync's `.name.XXXXXX`…).
    #[arg(long, env = "DFS_WATCH_NO_DEFAULT_IGNORES")]
    pub no_default_ignores: bool,
    /// Keep the stored copy when a file is deleted or renamed away in the source.
    #[arg(long, env = "DFS_WATCH_KEEP_DELETED")]
    pub keep_deleted: bool,
    /// Quiet time (ms) before a file written without being closed is sent.
    #[arg(long, env = "DFS_WATCH_DEBOUNCE_MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// Seconds between full rescans of the source folder (catches missed events).
    #[arg(long, env = "DFS_WATCH_RESCAN_SECS", default_value_t = 600)]
    pub rescan_secs: u64,
    /// Most changes (uploads, deletes, renames) in flight at once.
    #[arg(long, env = "DFS_WATCH_MAX_IN_FLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Write `{"role":"watch","source":...}` here once the folder is being watched.
    #[arg(long, env = "DFS_WATCH_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Keep a JSON status file here for `dfs status --status-file FILE`: connection, queue,
    /// progress and last error, rewritten at most once a second and at least every 10 s.
    #[arg(long, value_name = "FILE", env = "DFS_WATCH_STATUS_FILE")]
    pub status_file: Option<PathBuf>,
    /// Serve Prometheus metrics on HOST:PORT at GET /metrics (off unless given; port 0 picks a
    /// free port, reported in the ready file).
    #[arg(long, value_name = "HOST:PORT", env = "DFS_WATCH_METRICS")]
    pub metrics: Option<String>,
    /// This watcher's CURVE secret key (made by `dfs keygen`, mode 600); its public key must
    /// be in the broker's --allow-watchers.
    #[arg(long, value_name = "FILE", env = "DFS_WATCH_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,
    /// The broker's public key file (its NAME.pub): with --secret-key, the link uses CURVE.
    #[arg(long, value_name = "FILE", env = "DFS_WATCH_BROKER_KEY")]
    pub broker_key: Option<PathBuf>,
    /// The volume to sync into: the folder's files are stored as NAME/<path>. Without it, the
    /// root volume (names are the bare paths). A volume has one owner (this host and folder, or
    /// this watcher's key); another watcher's volume is refused.
    #[arg(long, value_name = "NAME", env = "DFS_WATCH_VOLUME")]
    pub volume: Option<String>,
    /// Take the volume over from the watcher that owns it (a replaced machine); the broker logs
    /// the takeover.
    #[arg(long, env = "DFS_WATCH_TAKE_OVER")]
    pub take_over: bool,
    /// Reach a broker beyond loopback without keys: no authentication, no encryption.
    #[arg(long, env = "DFS_WATCH_INSECURE", conflicts_with = "secret_key")]
    pub insecure: bool,
}

impl Args {
    /// The debounce as a duration.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    /// The rescan period as a duration (at least one second).
    pub fn rescan_period(&self) -> Duration {
        Duration::from_secs(self.rescan_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn defaults_and_repeated_ignores() {
        let w = Wrap::try_parse_from(["t", "--ignore", "a", "--ignore", "b/*,c"]).unwrap();
        assert_eq!(w.args.ignore, ["a", "b/*,c"]);
        assert_eq!(w.args.debounce_ms, 200);
        assert_eq!(w.args.rescan_secs, 600);
        assert_eq!(w.args.max_in_flight, 1024);
        assert_eq!(w.args.broker, "127.0.0.1:12345");
        assert!(Wrap::try_parse_from(["t", "--max-in-flight", "0"]).is_err());
    }
}
