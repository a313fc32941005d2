//! Walking the source folder (the schedule is `crate::scan::Scans`): full scans and the
//! walk of one folder into the table.

use super::Watcher;
use crate::scan::walk;
use std::path::Path;
use std::time::Instant;

impl Watcher {
    /// Walks the whole source: every file that differs from the store is due now, and so is
    /// every stored name gone from the source.
    pub fn full_scan(&mut self, now: Instant) {
        self.scans.full_wanted = false;
        self.scans.next_full = now + self.settings.rescan_period;
        if !self.root.is_dir() {
            // An unmounted or removed source must not read as "every file deleted".
            let what = format!("the source folder {} is gone", self.root.display());
            if self.report.first_warning(what.clone()) {
                tracing::warn!("{what}; not syncing until it is back");
            }
            return;
        }
        let started = Instant::now();
        // Every stored name the walk finds is marked seen; the others are gone from the source.
        self.table.begin_sweep();
        let root = self.root.clone();
        let files = self.scan_into(&root, now, true);
        let mut gone = 0usize;
        if !self.settings.keep_deleted {
            for name in self.table.unseen() {
                if !self.ignores.is_ignored(&name) {
                    self.table.mark_by(&name, now);
                    gone += 1;
                }
            }
        }
        tracing::info!(
            "compared {files} files in {} with the store in {:.2?}: {} to sync, {gone} gone",
            self.root.display(),
            started.elapsed(),
            self.table.due_count(),
        );
    }

    /// Walks `dir` and marks due (at `at`) every file that differs from the store; with
    /// `sweep`, marks every stored name found as seen by the current sweep. Returns how many
    /// files it found.
    pub fn scan_into(&mut self, dir: &Path, at: Instant, sweep: bool) -> usize {
        let table = &mut self.table;
        let mut files = 0usize;
        let walked = walk(&self.root, dir, &self.ignores, |name, stamp| {
            files += 1;
            let differs = !matches!(
                table.stored(&name),
                Some(s) if s.size == stamp.size && s.modified == stamp.modified
            );
            if differs {
                table.mark_by(&name, at);
            }
            if sweep {
                table.saw(&name);
            }
        });
        for (path, why) in walked.bad {
            if self.report.first_warning(path.clone()) {
                tracing::warn!("not syncing {path}: {why}");
                self.note_error(format!("not syncing {path}: {why}"));
                daemon::metrics::count_error(&self.report.metrics.errors, "local");
            }
        }
        for what in walked.unreadable {
            if self.report.first_warning(what.clone()) {
                tracing::warn!("cannot read {what}");
                self.note_error(format!("cannot read {what}"));
                daemon::metrics::count_error(&self.report.metrics.errors, "local");
            }
        }
        files
    }
}
