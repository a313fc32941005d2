//! The broker's metrics (`--metrics ADDR`): files and bytes routed to the node and served to
//! fetchers, requests in flight, errors by kind, how long requests take, and the index's size.
//! Counters are atomics updated on the serving thread (bytes per chunk relayed); histograms are
//! observed once per request.

use daemon::metrics::{
    latency_family, registry_for, Counter, ErrorCounter, Gauge, LatencyFamily, Registry,
};

/// Every metric of a broker. Clones share the same values.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Uploads stored on the node and indexed (new content), and their bytes.
    pub files_routed: Counter,
    pub bytes_routed: Counter,
    /// Reads relayed to the end, and the content bytes relayed to fetchers.
    pub files_served: Counter,
    pub bytes_served: Counter,
    /// Requests forwarded to the node and not yet answered.
    pub in_flight: Gauge,
    /// Error replies sent to watchers and fetchers, by kind (the protocol's error code).
    pub errors: ErrorCounter,
    /// Seconds from a request's arrival to the node's final answer, by operation (`op`: put,
    /// delete, rename, get).
    pub request_seconds: LatencyFamily,
    /// Files the index lists, and their bytes (as of the last export of index.txt).
    pub index_entries: Gauge,
    pub index_bytes: Gauge,
    /// Mass-change alarms raised (a volume mostly deleted or rewritten at once).
    pub mass_changes: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            files_routed: Counter::default(),
            bytes_routed: Counter::default(),
            files_served: Counter::default(),
            bytes_served: Counter::default(),
            in_flight: Gauge::default(),
            errors: ErrorCounter::default(),
            request_seconds: latency_family(),
            index_entries: Gauge::default(),
            index_bytes: Gauge::default(),
            mass_changes: Counter::default(),
        }
    }
}

impl Metrics {
    /// A registry exporting these metrics (names `dfs_broker_*`).
    pub fn registry(&self) -> Registry {
        let mut r = registry_for("broker");
        let p = "dfs_broker_";
        let help = "Mass-change alarms: more than half of a volume deleted or rewritten at once";
        r.register(
            format!("{p}mass_change_alarms"),
            help,
            self.mass_changes.clone(),
        );
        let help = "Uploads stored on the node and indexed (new content)";
        r.register(format!("{p}files_routed"), help, self.files_routed.clone());
        let help = "Bytes of the uploads stored and indexed";
        r.register(format!("{p}bytes_routed"), help, self.bytes_routed.clone());
        let help = "Reads relayed to the end";
        r.register(format!("{p}files_served"), help, self.files_served.clone());
        let help = "Content bytes relayed to fetchers";
        r.register(format!("{p}bytes_served"), help, self.bytes_served.clone());
        let help = "Requests forwarded to the storage node and not yet answered";
        r.register(
            format!("{p}requests_in_flight"),
            help,
            self.in_flight.clone(),
        );
        let help = "Error replies sent to watchers and fetchers, by kind";
        r.register(format!("{p}errors"), help, self.errors.clone());
        let help = "Seconds from a request's arrival to the storage node's final answer, by op";
        r.register(
            format!("{p}request_seconds"),
            help,
            self.request_seconds.clone(),
        );
        let help = "Files the index lists (as of the last export of index.txt)";
        r.register(
            format!("{p}index_entries"),
            help,
            self.index_entries.clone(),
        );
        let help = "Bytes of the files the index lists (as of the last export of index.txt)";
        r.register(format!("{p}index_bytes"), help, self.index_bytes.clone());
        r
    }
}
