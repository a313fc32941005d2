//! The watcher's metrics (`--metrics ADDR`): files and bytes sent, deletes and renames, the
//! queue, the link, errors by kind, and how long uploads take. Counters are atomics updated on
//! the socket thread; histograms are observed once per acknowledged upload.

use daemon::metrics::{
    latency_histogram, registry_for, Counter, ErrorCounter, Gauge, Histogram, Registry,
};

/// Every metric of a watcher. Clones share the same values.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Uploads acknowledged as durable (new content; unchanged files are not counted), and their
    /// bytes.
    pub files_sent: Counter,
    pub bytes_sent: Counter,
    /// Deletes and renames acknowledged.
    pub deletes: Counter,
    pub renames: Counter,
    /// Names waiting for a look, and changes sent and not yet acknowledged.
    pub pending: Gauge,
    pub in_flight: Gauge,
    /// 1 while the broker answers, else 0.
    pub connected: Gauge,
    /// Errors by kind: the broker's error codes, `unreachable` for broker outages, `local` for
    /// files that cannot be read or named.
    pub errors: ErrorCounter,
    /// Seconds from sending a file's `put` to its durable acknowledgement.
    pub upload_seconds: Histogram,
    /// Seconds from a file's last modification (its close) to its durable acknowledgement, for
    /// files changed while the watcher runs: the lag of the sync as a user sees it.
    pub close_to_durable_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            files_sent: Counter::default(),
            bytes_sent: Counter::default(),
            deletes: Counter::default(),
            renames: Counter::default(),
            pending: Gauge::default(),
            in_flight: Gauge::default(),
            connected: Gauge::default(),
            errors: ErrorCounter::default(),
            upload_seconds: latency_histogram(),
            close_to_durable_seconds: latency_histogram(),
        }
    }
}

impl Metrics {
    /// A registry exporting these metrics (names `dfs_watch_*`).
    pub fn registry(&self) -> Registry {
        let mut r = registry_for("watch");
        let p = "dfs_watch_";
        let help = "Uploads acknowledged as durable (new content)";
        r.register(format!("{p}files_sent"), help, self.files_sent.clone());
        let help = "Bytes of the uploads acknowledged as durable";
        r.register(format!("{p}bytes_sent"), help, self.bytes_sent.clone());
        let help = "Deletes acknowledged";
        r.register(format!("{p}files_deleted"), help, self.deletes.clone());
        let help = "Renames acknowledged";
        r.register(format!("{p}files_renamed"), help, self.renames.clone());
        let help = "Names waiting for a look";
        r.register(format!("{p}pending"), help, self.pending.clone());
        let help = "Changes sent and not yet acknowledged";
        r.register(format!("{p}in_flight"), help, self.in_flight.clone());
        let help = "1 while the broker answers, else 0";
        r.register(format!("{p}connected"), help, self.connected.clone());
        let help = "Errors by kind";
        r.register(format!("{p}errors"), help, self.errors.clone());
        let help = "Seconds from sending a file's put to its durable acknowledgement";
        r.register(
            format!("{p}upload_seconds"),
            help,
            self.upload_seconds.clone(),
        );
        let help = "Seconds from a file's last modification to its durable acknowledgement";
        let m = self.close_to_durable_seconds.clone();
        r.register(format!("{p}close_to_durable_seconds"), help, m);
        r
    }
}
