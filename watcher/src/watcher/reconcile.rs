//! reconcile(name): look at the file now, compare with what the store holds, and start the
//! change that brings the store in step (an upload, a delete or a rename), or none.

use super::Watcher;
use crate::decide::{decide, Decision};
use crate::local::{self, hash_file, look, read_small, Look, ReadError, Stamp};
use crate::state::Stored;
use crate::transfer::{Change, Next, Outgoing};
use schema::limits::INLINE_MAX;
use schema::{names, Hash, Message};
use std::path::PathBuf;
use std::time::Instant;

impl Watcher {
    /// Decides what `name` needs and starts it.
    pub fn reconcile(&mut self, name: &str, now: Instant) {
        if self.table.in_flight(name) {
            self.table.mark(name, now);
            return;
        }
        if self.ignores.is_ignored(name) {
            return;
        }
        if self.claim.leaves_alone(name) {
            if self
                .report
                .first_warning(name.split('/').next().unwrap_or(name).to_string())
            {
                let folder = name.split('/').next().unwrap_or(name);
                tracing::warn!(
                    "not syncing {folder}/: it is the folder of volume {folder}, which another \
                     watcher owns"
                );
            }
            self.table.set_stored(name, None);
            return;
        }
        let path = match names::to_path(&self.root, name) {
            Ok(p) => p,
            Err(e) => {
                if self.report.first_warning(name.to_string()) {
                    tracing::warn!("not syncing {name:?}: {e}");
                    self.note_error(format!("not syncing {name:?}: {e}"));
                    daemon::metrics::count_error(&self.report.metrics.errors, "local");
                }
                return;
            }
        };
        let now_look = match look(&path) {
            Ok(l) => l,
            Err(e) => {
                self.cannot_read(name, &format!("cannot stat {}: {e}", path.display()), now);
                return;
            }
        };
        let stamp = match now_look {
            Look::File(s) => Some(s),
            Look::Missing => {
                self.follow.writing.remove(name);
                None
            }
        };
        if self.table.refused(name, stamp.as_ref()) {
            return;
        }
        // The source of a rename in the source folder: its target settles it.
        if stamp.is_none() && self.table.rename_target(name).is_some() {
            return;
        }
        if let Some(from) = self.table.take_rename(name) {
            if self.table.in_flight(&from) {
                // What the store holds for `from` is settled when its change ends (a rename
                // into `from`, or its upload): wait for that rather than send the bytes again.
                self.table.note_rename(&from, name);
                self.table.mark(name, now + self.settings.debounce);
                return;
            }
            if self.try_rename(&from, name, stamp.as_ref(), now) {
                return;
            }
            self.table.mark(&from, now);
        }
        let stored = self.table.stored(name);
        match decide(stored.as_ref(), &now_look, self.settings.keep_deleted) {
            Decision::Nothing => {}
            Decision::Forget => self.table.set_stored(name, None),
            Decision::Delete => {
                let id = self.next_id();
                let msg = Message::Delete {
                    id,
                    name: name.to_string(),
                };
                let change = Change::Delete {
                    name: name.to_string(),
                };
                self.start_change(id, change, msg, None, now);
            }
            Decision::Compare => {
                if let (Some(stamp), Some(stored)) = (stamp, stored) {
                    self.compare(name, path, stamp, stored, now);
                }
            }
            Decision::Outgoing => {
                if let Some(stamp) = stamp {
                    if stored.is_none() && self.moved_from_elsewhere(name, &path, &stamp, now) {
                        return;
                    }
                    self.upload(name, path, stamp, None, now);
                }
            }
        }
    }

    /// A file found open for writing: looked at again after the debounce, and sent then if
    /// closed or found as now.
    fn still_writing(&mut self, name: &str, stamp: Stamp, now: Instant) {
        tracing::debug!("{name} is open for writing; will look again");
        self.follow.writing.insert(name.to_string(), Some(stamp));
        self.table.mark(name, now + self.settings.debounce);
    }

    /// A file that could not be read: warn once, try again with backoff.
    fn cannot_read(&mut self, name: &str, why: &str, now: Instant) {
        if self.report.first_warning(name.to_string()) {
            tracing::warn!("{why}; will retry");
            self.note_error(why);
            daemon::metrics::count_error(&self.report.metrics.errors, "local");
        } else {
            tracing::debug!("{why}; will retry");
        }
        self.table.retry_later(name, now);
    }

    /// A read that failed: the file changed (look again after the debounce), vanished (look
    /// again now) or cannot be read (retry with backoff).
    fn read_failed(&mut self, name: &str, e: ReadError, now: Instant) {
        match e {
            ReadError::Changed(_) | ReadError::Writing(_) => {
                tracing::debug!("{e}; will look again");
                self.table.mark(name, now + self.settings.debounce);
            }
            ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                self.table.mark(name, now);
            }
            ReadError::Io { .. } => self.cannot_read(name, &e.to_string(), now),
        }
    }

    /// The file has the stored size but another mtime: hash it; the same content only updates
    /// the remembered mtime (no new version), other content is uploaded.
    fn compare(&mut self, name: &str, path: PathBuf, stamp: Stamp, stored: Stored, now: Instant) {
        if stamp.size <= INLINE_MAX {
            // Small files are read whole anyway; the upload compares the hash.
            return self.upload(name, path, stamp, None, now);
        }
        match hash_file(&path, &stamp) {
            Ok(hash) if hash == stored.blake3 => {
                tracing::debug!("{name} rewritten with the same content");
                self.table.rewritten_unchanged(name, stored, &stamp);
            }
            Ok(hash) => self.upload(name, path, stamp, Some(hash), now),
            Err(e) => self.read_failed(name, e, now),
        }
    }

    /// Sends the file: inline when small (read whole, checked unchanged), else a `put` whose
    /// chunks follow as credit comes. A file open for writing waits for its close, or for a
    /// look a debounce later that finds it as this one did (a writer that never closes).
    fn upload(
        &mut self,
        name: &str,
        path: PathBuf,
        stamp: Stamp,
        known: Option<Hash>,
        now: Instant,
    ) {
        let found_quiet = self.follow.writing.get(name) == Some(&Some(stamp));
        if stamp.size > INLINE_MAX {
            if let Some(seen) = self.follow.writing.get_mut(name) {
                if *seen != Some(stamp) {
                    // Written and not closed yet, and not found like this a debounce ago: still
                    // being written (`cp` writes a whole file in one copy_file_range, with no
                    // event between its creation and its close). Sending it now would be torn
                    // and sent again; look again after the debounce. It goes once closed, or
                    // once a look finds it as the one before (a writer that never closes).
                    *seen = Some(stamp);
                    return self.table.mark(name, now + self.settings.debounce);
                }
            }
            self.follow.writing.remove(name);
        }
        let id = self.next_id();
        if stamp.size <= INLINE_MAX {
            let data = match read_small(&path, &stamp, found_quiet) {
                Ok(d) => d,
                Err(ReadError::Writing(_)) => return self.still_writing(name, stamp, now),
                Err(e) => return self.read_failed(name, e, now),
            };
            let hash = Hash::of(&data);
            if let Some(stored) = self.table.stored(name) {
                if stored.size == stamp.size && stored.blake3 == hash {
                    self.table.rewritten_unchanged(name, stored, &stamp);
                    return;
                }
            }
            let up = Outgoing::inline(name.to_string(), stamp, hash);
            let msg = up.put(id);
            self.start_change(id, Change::Put(Box::new(up)), msg, Some(data), now);
            return;
        }
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let e = ReadError::Io {
                    path: path.display().to_string(),
                    source: e,
                };
                return self.read_failed(name, e, now);
            }
        };
        if !found_quiet && local::open_for_writing(&file) == Some(true) {
            return self.still_writing(name, stamp, now);
        }
        match file.metadata() {
            Ok(m) if local::Stamp::of(&m) == stamp => {}
            Ok(_) => return self.table.mark(name, now + self.settings.debounce),
            Err(e) => {
                return self.cannot_read(name, &format!("cannot stat {}: {e}", path.display()), now)
            }
        }
        let up = Outgoing::chunked(name.to_string(), stamp, file, known);
        let msg = up.put(id);
        self.start_change(id, Change::Put(Box::new(up)), msg, None, now);
    }

    /// A new name whose rename event was lost (a file moved into a folder whose watch did not
    /// exist yet): if a stored name with the same size and modification time is gone from the
    /// source and its hash matches the file's, the file is that one moved, and is renamed in
    /// the store instead of sent again. Returns whether a rename went out.
    fn moved_from_elsewhere(
        &mut self,
        to: &str,
        path: &std::path::Path,
        stamp: &Stamp,
        now: Instant,
    ) -> bool {
        let candidates: Vec<String> = self
            .table
            .stored_like(stamp.size, stamp.modified)
            .into_iter()
            .filter(|from| from != to && !self.table.in_flight(from))
            .filter(|from| self.table.rename_target(from).is_none())
            .filter(|from| {
                names::to_path(&self.root, from)
                    .map(|p| matches!(look(&p), Ok(Look::Missing)))
                    .unwrap_or(false)
            })
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let hash = match hash_file(path, stamp) {
            Ok(h) => h,
            Err(_) => return false,
        };
        for from in candidates {
            if self.table.stored(&from).is_some_and(|s| s.blake3 == hash) {
                tracing::debug!("{to} is {from} moved (its rename event was lost)");
                return self.try_rename(&from, to, Some(stamp), now);
            }
        }
        false
    }

    /// Sends `rename {from, to}` if `to` is `from` moved unchanged (same size and mtime as
    /// stored for `from`, and `from` gone from the source). Returns whether it did.
    fn try_rename(&mut self, from: &str, to: &str, stamp: Option<&Stamp>, now: Instant) -> bool {
        let (Some(stamp), Some(stored)) = (stamp, self.table.stored(from)) else {
            return false;
        };
        if self.settings.keep_deleted
            || self.table.in_flight(from)
            || stored.size != stamp.size
            || stored.modified != stamp.modified
        {
            return false;
        }
        let from_gone = names::to_path(&self.root, from)
            .map(|p| matches!(look(&p), Ok(Look::Missing)))
            .unwrap_or(false);
        if !from_gone {
            return false;
        }
        let id = self.next_id();
        let msg = Message::Rename {
            id,
            from: from.to_string(),
            to: to.to_string(),
            blake3: stored.blake3,
            to_class: None,
            version: None,
        };
        let change = Change::Rename {
            from: from.to_string(),
            to: to.to_string(),
            stored,
        };
        self.start_change(id, change, msg, None, now);
        true
    }

    /// Sends the first message of a change and records it in flight. If the send fails the
    /// outage starts and puts the change's names back as due.
    pub(crate) fn start_change(
        &mut self,
        id: u64,
        change: Change,
        msg: Message,
        data: Option<Vec<u8>>,
        now: Instant,
    ) {
        let inline = data.as_ref().map_or(0, |d| d.len() as u64);
        tracing::debug!("sending {} of {}", msg.kind(), change.names().join(" -> "));
        self.send(msg, data);
        for name in change.names() {
            self.table.start(name, id);
        }
        self.flights.add(id, change, inline, now);
    }

    /// Sends as many chunks of upload `id` as its credit allows; a torn read aborts it.
    pub fn pump_upload(&mut self, id: u64, now: Instant) {
        loop {
            let next = match self.flights.upload_mut(id) {
                Some(up) => up.next(id, now),
                None => return,
            };
            match next {
                Next::Wait => return,
                Next::Chunk(msg, data) => {
                    let last = matches!(
                        msg,
                        Message::Chunk {
                            blake3: Some(_),
                            ..
                        }
                    );
                    self.send(msg, Some(data));
                    if last {
                        self.flights.heard(id, now);
                    }
                }
                Next::Torn(why) => return self.tear(id, &why.to_string(), now),
            }
        }
    }

    /// Aborts upload `id`, whose file changed while it was being read (`why`); the file is
    /// looked at again after the debounce.
    pub(crate) fn tear(&mut self, id: u64, why: &str, now: Instant) {
        self.send(Message::Abort { id }, None);
        if let Some(flight) = self.flights.take(id) {
            if let Change::Put(up) = &flight.change {
                tracing::info!(
                    "{} changed while being sent ({why}); will send it again",
                    up.name
                );
                self.table.finish(&up.name);
                self.table.mark(&up.name, now + self.settings.debounce);
            }
        }
    }
}
