//! What the watcher tells people about itself: the progress behind its status file, the status
//! file, the `--metrics` counters, and the paths already warned about (each is warned once).

use crate::metrics::Metrics;
use crate::status_file::{Progress, StatusFile};
use std::collections::HashSet;

/// The watcher's reporting state, apart from the state that decides what to sync.
pub(crate) struct Reporting {
    /// What was synced and the last error, for the status file.
    pub progress: Progress,
    /// The status file (`--status-file`), if asked for.
    pub status_file: Option<StatusFile>,
    /// Counters and histograms for `--metrics`.
    pub metrics: Metrics,
    /// About when the watcher started (ns since the epoch, a second early): later
    /// modifications feed the close-to-durable histogram.
    pub started_ns: i64,
    /// Paths already warned about (bad names, unreadable files), so each is warned once.
    warned: HashSet<String>,
}

impl Reporting {
    /// Fresh progress and metrics, no status file.
    pub fn new() -> Reporting {
        Reporting {
            progress: Progress::default(),
            status_file: None,
            metrics: Metrics::default(),
            // File systems stamp mtimes with a coarse clock; a second of slack keeps files
            // closed as the watcher starts among the ones whose sync lag is measured.
            started_ns: schema::time::to_ns(std::time::SystemTime::now()) - 1_000_000_000,
            warned: HashSet::new(),
        }
    }

    /// Whether `what` is to be warned about now: true the first time only.
    pub fn first_warning(&mut self, what: impl Into<String>) -> bool {
        self.warned.insert(what.into())
    }
}
