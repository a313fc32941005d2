//! What the watcher writes to its status file (`crate::status_file` holds the file and its
//! pacing): the report built from the state.

use super::Watcher;
use crate::status_file::{rfc3339, HEARTBEAT, SAMPLE};
use schema::status::{TimedMessage, WatcherReport};
use std::time::{Instant, SystemTime};

impl Watcher {
    /// Records an error for the status file (the log line is the caller's).
    pub(crate) fn note_error(&mut self, message: impl Into<String>) {
        self.report.progress.last_error = Some((SystemTime::now(), message.into()));
    }

    /// Writes the status file if a write is due (see [`StatusFile`]).
    pub(crate) fn write_status(&mut self, now: Instant) {
        let due = self
            .report
            .status_file
            .as_ref()
            .is_some_and(|f| f.may_write(now));
        if due {
            let content = self.status_content(true);
            if let Some(file) = &mut self.report.status_file {
                file.offer(content, now, false);
            }
        }
    }

    /// Writes the status file one last time, saying the watcher stopped.
    pub(crate) fn write_final_status(&mut self) {
        let content = self.status_content(false);
        if let Some(file) = &mut self.report.status_file {
            file.offer(content, Instant::now(), true);
        }
    }

    /// The condition in effect that keeps files from syncing, if any.
    fn current_error(&self) -> Option<String> {
        if !self.link.is_up() {
            return Some(format!("broker {} does not answer", self.link.endpoint()));
        }
        if self.store_outage.is_some() {
            let why = self
                .report
                .progress
                .last_error
                .as_ref()
                .map_or("", |(_, m)| m.as_str());
            return Some(format!(
                "the store behind broker {} refuses changes: {why}",
                self.link.endpoint()
            ));
        }
        None
    }

    /// The status file's content, without `updated_at`.
    fn status_content(&self, running: bool) -> serde_json::Value {
        let held = self.store_outage.as_ref().map_or(0, |o| o.held_count());
        let in_flight_names = self
            .flights
            .iter()
            .flat_map(|(_, f)| f.change.names())
            .take(SAMPLE)
            .map(str::to_string)
            .collect();
        let last_error = self
            .report
            .progress
            .last_error
            .as_ref()
            .map(|(t, m)| TimedMessage {
                time: rfc3339(*t),
                message: m.clone(),
            });
        let report = WatcherReport {
            pid: std::process::id(),
            source: self.root.display().to_string(),
            broker: self.link.endpoint().to_string(),
            running,
            connected: self.link.is_up(),
            error: if running {
                self.current_error()
            } else {
                Some("the watcher stopped".into())
            },
            pending: (self.table.due_count() + held) as u64,
            pending_names: self
                .table
                .due_names(SAMPLE)
                .into_iter()
                .map(str::to_string)
                .collect(),
            in_flight: self.flights.len() as u64,
            in_flight_names,
            refused: self.table.refused_count() as u64,
            files_synced: self.report.progress.files_synced,
            bytes_sent: self.report.progress.bytes_sent,
            last_sync: self.report.progress.last_sync.map(rfc3339),
            last_error,
            heartbeat_secs: HEARTBEAT.as_secs(),
            updated_at: None,
        };
        serde_json::to_value(report).unwrap_or_default()
    }
}
