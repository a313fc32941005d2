//! The node's metrics (`--metrics ADDR`): what it stored and served, what is open, errors by
//! kind, and how long making an upload durable takes. Counters are atomics updated where the
//! work happens (bytes per chunk sent); the histogram is observed once per stored file.

use daemon::metrics::{
    latency_histogram, registry_for, Counter, ErrorCounter, Gauge, Histogram, Registry,
};

/// Every metric of a storage node. Clones share the same values.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Uploads made durable (new content; unchanged ones are not counted) and their bytes.
    pub files_stored: Counter,
    pub bytes_stored: Counter,
    /// Reads served to the end, and the content bytes sent.
    pub files_served: Counter,
    pub bytes_served: Counter,
    /// Uploads and reads open now.
    pub uploads: Gauge,
    pub reads: Gauge,
    /// Error replies sent, by kind (the protocol's error code).
    pub errors: ErrorCounter,
    /// Seconds to make a finished upload durable: fsync, rename, fsync of the folder.
    pub durable_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            files_stored: Counter::default(),
            bytes_stored: Counter::default(),
            files_served: Counter::default(),
            bytes_served: Counter::default(),
            uploads: Gauge::default(),
            reads: Gauge::default(),
            errors: ErrorCounter::default(),
            durable_seconds: latency_histogram(),
        }
    }
}

impl Metrics {
    /// A registry exporting these metrics (names `dfs_storage_*`).
    pub fn registry(&self) -> Registry {
        let mut r = registry_for("storage");
        let p = "dfs_storage_";
        r.register(
            format!("{p}files_stored"),
            "Uploads made durable (new content)",
            self.files_stored.clone(),
        );
        r.register(
            format!("{p}bytes_stored"),
            "Bytes of the uploads made durable",
            self.bytes_stored.clone(),
        );
        r.register(
            format!("{p}files_served"),
            "Reads served to the end",
            self.files_served.clone(),
        );
        r.register(
            format!("{p}bytes_served"),
            "Content bytes sent to readers",
            self.bytes_served.clone(),
        );
        r.register(
            format!("{p}uploads_in_flight"),
            "Uploads open now",
            self.uploads.clone(),
        );
        r.register(
            format!("{p}reads_in_flight"),
            "Reads open now",
            self.reads.clone(),
        );
        r.register(
            format!("{p}errors"),
            "Error replies sent, by kind",
            self.errors.clone(),
        );
        r.register(
            format!("{p}durable_seconds"),
            "Seconds to make a finished upload durable (fsync, rename, fsync of the folder)",
            self.durable_seconds.clone(),
        );
        r
    }
}
