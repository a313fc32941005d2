//! What the socket thread does with each inotify event: mark names due (now, or after the
//! debounce), scan new folders, note renames.

use super::Watcher;
use crate::events::{classify, notify_error, Intent};
use schema::names::{self, NameError};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a name moved out waits, beyond two debounces, for the other half of its rename
/// before it is looked at.
const MOVED_OUT_GRACE: Duration = Duration::from_millis(100);
/// How long a name moved in waits for the rename event that pairs it with its source.
const MOVED_IN_GRACE: Duration = Duration::from_millis(20);
/// Shortest time between two warnings about inotify queue overflows.
const OVERFLOW_WARN_EVERY: Duration = Duration::from_secs(60);

impl Watcher {
    /// Handles one event (or watch error) from notify.
    pub fn on_event(&mut self, event: notify::Result<notify::Event>, now: Instant) {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                let message = format!("{:#}", notify_error(e, &self.root));
                if self.report.first_warning(message.clone()) {
                    tracing::error!("{message}; changes there are found by rescans only");
                }
                self.scans.full_wanted = true;
                return;
            }
        };
        tracing::trace!("event {event:?}");
        self.flights.source_event();
        for intent in classify(&event) {
            self.apply(intent, now);
        }
    }

    /// The name of `path` below the source, or None (the root itself, outside, a bad name:
    /// warned once, or an ignored name).
    fn name_of(&mut self, path: &Path) -> Option<String> {
        if path == self.root {
            return None;
        }
        match names::from_path(&self.root, path) {
            Ok(name) if self.ignores.is_ignored(&name) => None,
            Ok(name) => Some(name),
            Err(NameError::Outside(..)) => None,
            Err(e) => {
                if self.report.first_warning(path.display().to_string()) {
                    tracing::warn!("not syncing {}: {e}", path.display());
                }
                None
            }
        }
    }

    /// Marks `name` and every stored name below it due at `at`.
    fn mark_tree(&mut self, name: &str, at: Instant) {
        self.table.mark(name, at);
        for below in self.table.stored_under(name) {
            self.table.mark(&below, at);
        }
    }

    fn apply(&mut self, intent: Intent, now: Instant) {
        let debounce = self.settings.debounce;
        match intent {
            Intent::Rescan => {
                self.scans.rewatch_wanted = true;
                self.scans.full_wanted = true;
                // A burst overflows the queue many times over: say it once a minute at most.
                let quiet = self
                    .scans
                    .overflow_warned
                    .is_some_and(|t| now.duration_since(t) < OVERFLOW_WARN_EVERY);
                if quiet {
                    tracing::debug!("inotify event queue overflowed again");
                } else {
                    self.scans.overflow_warned = Some(now);
                    tracing::warn!(
                        "the kernel's inotify event queue overflowed and events were lost \
                         (raise fs.inotify.max_queued_events if this repeats); rescanning {}",
                        self.root.display()
                    );
                }
            }
            Intent::Now(p) => {
                if let Some(n) = self.name_of(&p) {
                    self.follow.writing.remove(&n);
                    self.table.mark(&n, now);
                    self.writer_closed(&n, now);
                }
            }
            Intent::Quiet(p) => {
                if let Some(n) = self.name_of(&p) {
                    self.table.mark(&n, now + debounce);
                    self.may_follow(&n, now);
                    self.follow.writing.insert(n, None);
                }
            }
            Intent::Removed(p) => {
                if let Some(n) = self.name_of(&p) {
                    self.writer_gone(&n, now);
                    self.mark_tree(&n, now);
                }
            }
            Intent::NewFolder(p) => {
                if self.name_of(&p).is_some() {
                    self.scan_into(&p, now + debounce, false);
                    // notify adds the new folder's watch as it reports the folder: a file made
                    // there in between has no event, so the folder is looked at once more.
                    self.scans.new_folders.push((now + debounce, p));
                }
            }
            Intent::MovedOut(p) => {
                if let Some(n) = self.name_of(&p) {
                    self.writer_gone(&n, now);
                    self.follow.writing.remove(&n);
                    // It may have moved into a folder made just before, whose watch did not
                    // exist yet: that folder's second look comes one debounce after it was
                    // made, and what it finds is due one debounce later. The old name waits
                    // until after that, so the file is recognised as moved, not sent again.
                    self.mark_tree(&n, now + 2 * debounce + MOVED_OUT_GRACE);
                }
            }
            Intent::MovedIn(p) => {
                if let Some(n) = self.name_of(&p) {
                    if p.is_dir() {
                        self.scan_into(&p, now + MOVED_IN_GRACE, false);
                    } else {
                        self.table.mark(&n, now + MOVED_IN_GRACE);
                    }
                }
            }
            Intent::Moved(from, to) => self.moved(&from, &to, now),
        }
    }

    /// `from` was renamed to `to` inside the source: note a rename for every stored name it
    /// covers (tried when the new name is reconciled), and look at both sides now.
    fn moved(&mut self, from: &Path, to: &Path, now: Instant) {
        let (nf, nt) = (self.name_of(from), self.name_of(to));
        // A folder may have moved on again before this event is read: what is known below the
        // old name says it was one.
        let is_dir = to.is_dir()
            || nf
                .as_ref()
                .is_some_and(|n| !self.table.known_under(n).is_empty());
        if let (Some(nf), Some(nt)) = (&nf, &nt) {
            if is_dir {
                for old in self.table.known_under(nf) {
                    let new = format!("{nt}{}", &old[nf.len()..]);
                    if names::check(&new).is_ok() && !self.ignores.is_ignored(&new) {
                        self.table.note_rename(&old, &new);
                        self.table.mark(&new, now);
                    }
                    self.table.mark(&old, now);
                }
            } else if self.table.stored(nf).is_some()
                || self.table.in_flight(nf)
                || self.table.is_rename_target(nf)
            {
                self.table.note_rename(nf, nt);
            }
        }
        if let Some(nf) = &nf {
            self.mark_tree(nf, now);
        }
        if let Some(nt) = &nt {
            if is_dir {
                self.scan_into(to, now, false);
            } else {
                self.table.mark(nt, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ignore::Ignores;
    use crate::state::Stored;
    use crate::watcher::{Settings, Watcher};
    use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};
    use notify::Event;
    use schema::Hash;
    use std::time::{Duration, Instant};

    /// A file moved into a folder made just before, found only at the folder's second look
    /// (its move-in event is lost: the folder had no watch yet), is looked at before its old
    /// name: then it is recognised as the stored file moved and renamed in the store, not
    /// sent again after the old name was deleted.
    #[test]
    fn a_file_found_at_a_new_folders_second_look_comes_before_its_old_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("old")).unwrap();
        std::fs::write(root.join("old/f.txt"), b"moved content").unwrap();
        let look = crate::local::look(&root.join("old/f.txt")).unwrap();
        let crate::local::Look::File(stamp) = look else {
            panic!("no file")
        };

        let debounce = Duration::from_millis(200);
        let settings = Settings {
            keep_deleted: false,
            debounce,
            rescan_period: Duration::from_secs(600),
            max_in_flight: 16,
        };
        let ignores = Ignores::new(&[], true).unwrap();
        let t0 = Instant::now();
        let mut w = Watcher::new(
            root.clone(),
            settings,
            ignores,
            crate::claim::Claim::root_for_tests(),
            "x",
            t0,
        );
        w.table.set_stored(
            "old/f.txt",
            Some(Stored {
                size: stamp.size,
                modified: stamp.modified,
                blake3: Hash::of(b"moved content"),
                racy: false,
            }),
        );

        // The folder is made and seen empty; the file moves in before the folder's watch exists.
        std::fs::create_dir(root.join("new")).unwrap();
        let made = Event::new(EventKind::Create(CreateKind::Folder)).add_path(root.join("new"));
        w.on_event(Ok(made), t0);
        std::fs::rename(root.join("old/f.txt"), root.join("new/f.txt")).unwrap();
        let out = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::From)))
            .add_path(root.join("old/f.txt"));
        w.on_event(Ok(out), t0);
        w.rescan_new_folders(t0 + debounce);

        let later = t0 + Duration::from_secs(60);
        let order: Vec<String> = std::iter::from_fn(|| w.table.pop_due(later)).collect();
        assert_eq!(order, ["new/f.txt", "old/f.txt"]);
    }
}
