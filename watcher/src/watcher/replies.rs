//! What the broker's answers do: credit feeds uploads, `done` records what the store now
//! holds, `error` retries or gives up.

use super::Watcher;
use crate::state::Stored;
use crate::transfer::Change;
use schema::{ErrorCode, Message};
use std::time::Instant;

impl Watcher {
    /// Handles one well-formed message from the broker.
    pub fn on_message(&mut self, msg: Message, now: Instant) {
        match msg {
            Message::Pong { .. } => {}
            Message::Ping { id } => {
                self.send(Message::Pong { id }, None);
            }
            Message::Listing { id, entries, more } => self.on_listing(id, entries, more, now),
            Message::Claimed { id, volumes } if self.claim.owns(id) => {
                tracing::info!(
                    "broker {} holds this watcher's claim of {}",
                    self.link.endpoint(),
                    self.claim.volume()
                );
                self.claim.claimed(volumes);
            }
            Message::Credit { id, chunks } => self.on_credit(id, chunks, now),
            Message::Done {
                id,
                version,
                unchanged,
            } => self.on_done(id, version, unchanged, now),
            Message::Error { id, code, message } => self.on_error(id, code, &message, now),
            Message::Meta { id, .. } => {
                tracing::debug!("ignoring a meta (id {id}) from the broker");
            }
            other => {
                tracing::warn!(
                    "broker {} sent a {} message, which a watcher does not take",
                    self.link.endpoint(),
                    other.kind()
                );
                let reply = Message::error(
                    other.id(),
                    ErrorCode::Unexpected,
                    format!("a watcher does not take {} messages", other.kind()),
                );
                self.send(reply, None);
            }
        }
    }

    fn on_credit(&mut self, id: u64, chunks: u32, now: Instant) {
        match self.flights.get_mut(id) {
            Some(flight) => {
                flight.heard = now;
                if let Change::Put(up) = &mut flight.change {
                    up.grant(chunks);
                }
                self.pump_upload(id, now);
            }
            None => {
                // An upload given up (an outage, a torn read): tell the broker to drop it.
                tracing::debug!("credit for unknown upload {id}; aborting it");
                self.send(Message::Abort { id }, None);
            }
        }
    }

    fn on_done(&mut self, id: u64, version: u64, unchanged: bool, now: Instant) {
        let Some(flight) = self.flights.take(id) else {
            tracing::debug!("done for unknown request {id}");
            return;
        };
        // Every name a change touched is looked at once more after it ends if events came
        // while it was in flight: they may have been about a name the table did not know as
        // stored yet (a file renamed, then its folder renamed before the first rename was
        // acknowledged). Without events, the file is as the change found it (a change of the
        // file itself is an event), and a first sync of a quiet tree queues nothing twice.
        let recheck = self
            .flights
            .events_during(&flight)
            .then_some(now + self.settings.debounce);
        self.store_answered(now);
        self.report.progress.last_sync = Some(std::time::SystemTime::now());
        match flight.change {
            Change::Put(up) => {
                self.table.finish(&up.name);
                if let Some(at) = recheck {
                    self.table.mark_by(&up.name, at);
                }
                match up.blake3 {
                    Some(blake3) if up.all_sent() || unchanged => {
                        let stored = Stored {
                            size: up.stamp.size,
                            modified: up.stamp.modified,
                            blake3,
                            racy: crate::state::is_racy(up.stamp.modified),
                        };
                        self.table.set_stored(&up.name, Some(stored));
                        self.table.succeeded(&up.name);
                        if unchanged {
                            tracing::info!(
                                "{} unchanged (version {version})",
                                schema::names::escape(&up.name)
                            );
                        } else {
                            self.report.progress.files_synced += 1;
                            self.report.progress.bytes_sent += up.stamp.size;
                            self.observe_upload(flight.sent, up.stamp.size, up.stamp.modified);
                            tracing::info!(
                                "synced {} ({} bytes, version {version})",
                                schema::names::escape(&up.name),
                                up.stamp.size
                            );
                        }
                    }
                    _ => {
                        tracing::warn!(
                            "broker {} acknowledged {} before all of it was sent; sending it again",
                            self.link.endpoint(),
                            up.name
                        );
                        self.table.mark(&up.name, now);
                    }
                }
            }
            Change::Delete { name } => {
                self.table.finish(&name);
                if let Some(at) = recheck {
                    self.table.mark_by(&name, at);
                }
                self.table.set_stored(&name, None);
                self.table.succeeded(&name);
                self.report.metrics.deletes.inc();
                tracing::info!("deleted {}", schema::names::escape(&name));
            }
            Change::Rename { from, to, stored } => {
                self.table.finish(&from);
                self.table.finish(&to);
                if let Some(at) = recheck {
                    self.table.mark_by(&from, at);
                    self.table.mark_by(&to, at);
                }
                self.table.set_stored(&from, None);
                self.table.set_stored(&to, Some(stored));
                self.table.succeeded(&from);
                self.table.succeeded(&to);
                self.report.metrics.renames.inc();
                tracing::info!(
                    "renamed {} to {} (version {version})",
                    schema::names::escape(&from),
                    schema::names::escape(&to)
                );
            }
        }
    }

    /// Notes an acknowledged upload of `size` bytes sent at `sent`, of a file last modified at
    /// `modified` (ns since the epoch), in the metrics.
    fn observe_upload(&self, sent: Instant, size: u64, modified: i64) {
        let m = &self.report.metrics;
        m.files_sent.inc();
        m.bytes_sent.inc_by(size);
        m.upload_seconds.observe(sent.elapsed().as_secs_f64());
        if modified >= self.report.started_ns {
            let now = schema::time::to_ns(std::time::SystemTime::now());
            let lag = now.saturating_sub(modified).max(0) as f64 / 1e9;
            m.close_to_durable_seconds.observe(lag);
        }
    }

    fn on_error(&mut self, id: u64, code: ErrorCode, message: &str, now: Instant) {
        daemon::metrics::count_error(
            &self.report.metrics.errors,
            daemon::metrics::code_kind(code),
        );
        if self.listing_refused(id, message, now) {
            return;
        }
        if self.claim.owns(id) {
            if code == ErrorCode::Forbidden {
                tracing::error!(
                    "broker {} refused the claim: {message}",
                    self.link.endpoint()
                );
                self.claim.refuse(message);
            } else {
                // A broker rebuilding its index (at its first start, for milliseconds) says busy.
                let busy = code == ErrorCode::Busy;
                if busy {
                    tracing::info!("broker {}: {message}; claiming again", self.link.endpoint());
                } else {
                    tracing::warn!(
                        "broker {} refused the claim: {message}; will retry",
                        self.link.endpoint()
                    );
                }
                self.claim.retry(now);
            }
            return;
        }
        let Some(flight) = self.flights.take(id) else {
            tracing::debug!("error for unknown request {id}: {code:?}: {message}");
            return;
        };
        let names: Vec<String> = flight
            .change
            .names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        match (&flight.change, code) {
            (Change::Rename { from, to, .. }, _) if !code.is_transient() => {
                // Not stored as we thought (or refused): upload `to`, delete `from` instead.
                tracing::debug!(
                    "rename {from} -> {to} refused ({code:?}: {message}); sending instead"
                );
                for name in &names {
                    self.table.finish(name);
                    self.table.mark(name, now);
                }
            }
            (change, ErrorCode::Forbidden) => {
                // The broker holds no claim on this connection (it restarted, or the
                // connection was made again): claim again, then redo the change.
                tracing::info!("broker {}: {message}; claiming again", self.link.endpoint());
                if let Change::Rename { from, to, .. } = change {
                    self.table.note_rename(from, to);
                }
                self.claim.lost(now);
                for name in &names {
                    self.table.finish(name);
                    self.table.mark(name, now);
                }
            }
            (_, ErrorCode::UnknownTransfer) => {
                tracing::debug!(
                    "broker lost the change of {} ({message}); redoing it",
                    names.join(", ")
                );
                for name in &names {
                    self.table.finish(name);
                    self.table.mark(name, now);
                }
            }
            (change, code) if crate::store::is_store_wide(code) => {
                if let Change::Rename { from, to, .. } = change {
                    self.table.note_rename(from, to);
                }
                for name in &names {
                    self.store_refused(name, code, message, now);
                }
            }
            (_, code) if code.is_transient() => {
                if let Change::Rename { from, to, .. } = &flight.change {
                    self.table.note_rename(from, to);
                }
                for name in &names {
                    let delay = self.table.retry_later(name, now);
                    if delay == crate::state::RETRY_MIN {
                        self.note_error(format!("{name}: {message}"));
                        tracing::warn!("{name}: {message} ({code:?}); will retry");
                    } else {
                        tracing::debug!("{name}: {message} ({code:?}); retry in {delay:?}");
                    }
                }
            }
            (change, code) => {
                let look = match change {
                    Change::Put(up) => Some(up.stamp),
                    _ => None,
                };
                for name in &names {
                    let text = format!("broker {} refused {name}: {message}", self.link.endpoint());
                    tracing::warn!("{text} ({code:?}); not retrying until it changes");
                    self.note_error(text);
                    self.table.refuse(name, look);
                }
            }
        }
    }
}
