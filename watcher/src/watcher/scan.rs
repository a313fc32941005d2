//! Walking the source folder (the schedule is `crate::scan::Scans`): full scans and the
//! walk of one folder into the table.

use super::Watcher;
use crate::scan::walk;
use std::collections::HashSet;
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
        let mut seen = HashSet::new();
        let root = self.root.clone();
        self.scan_into(&root, now, Some(&mut seen));
        let mut gone = 0usize;
        if !self.settings.keep_deleted {
            for name in self.table.stored_names() {
                if !seen.contains(&name) && !self.ignores.is_ignored(&name) {
                    self.table.mark_by(&name, now);
                    gone += 1;
                }
            }
        }
        tracing::debug!(
            "scanned {} files in {:?} ({gone} stored names gone)",
            seen.len(),
            started.elapsed()
        );
    }

    /// Walks `dir` and marks due (at `at`) every file that differs from the store.
    pub fn scan_into(&mut self, dir: &Path, at: Instant, mut seen: Option<&mut HashSet<String>>) {
        let table = &mut self.table;
        let walked = walk(&self.root, dir, &self.ignores, |name, stamp| {
            let differs = !matches!(
                table.stored(&name),
                Some(s) if s.size == stamp.size && s.modified == stamp.modified
            );
            if differs {
                table.mark_by(&name, at);
            }
            if let Some(seen) = seen.as_deref_mut() {
                seen.insert(name);
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
    }
}
