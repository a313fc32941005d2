//! The inotify side: a recursive `notify` watcher whose callback forwards events through a
//! bounded channel and wakes the socket thread's poll through an inproc PUSH → PULL pair, and
//! the translation of raw events into what they mean for the sync.

use anyhow::Context as _;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::Arc;

/// Events queued between the notify thread and the socket thread; beyond this the queue is
/// dropped and a full rescan is made instead.
const QUEUE: usize = 16 * 1024;

/// What an event means for the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Look at this path now (written and closed, or removed).
    Now(PathBuf),
    /// Look at this path once it has been quiet for the debounce time.
    Quiet(PathBuf),
    /// This path was removed; names below it (if it was a folder) are gone too.
    Removed(PathBuf),
    /// A folder appeared: scan it for files made before its watch existed.
    NewFolder(PathBuf),
    /// Moved out of this path (the other end may be outside the source).
    MovedOut(PathBuf),
    /// Moved into this path (the other end may be outside the source).
    MovedIn(PathBuf),
    /// Moved from the first path to the second, both inside the source.
    Moved(PathBuf, PathBuf),
    /// Events were lost: compare the whole source again.
    Rescan,
}

/// What `event` means for the sync (often nothing: opens, reads).
pub fn classify(event: &Event) -> Vec<Intent> {
    if event.need_rescan() {
        return vec![Intent::Rescan];
    }
    let each = |f: fn(PathBuf) -> Intent| event.paths.iter().cloned().map(f).collect();
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(Intent::Now),
        EventKind::Access(_) => Vec::new(),
        EventKind::Create(CreateKind::Folder) => each(Intent::NewFolder),
        EventKind::Create(_) => each(Intent::Quiet),
        EventKind::Remove(RemoveKind::File) => each(Intent::Now),
        EventKind::Remove(_) => each(Intent::Removed),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => each(Intent::MovedOut),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => each(Intent::MovedIn),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.as_slice() {
            [from, to] => vec![Intent::Moved(from.clone(), to.clone())],
            _ => each(Intent::Removed),
        },
        EventKind::Modify(ModifyKind::Name(_)) => each(Intent::Removed),
        EventKind::Modify(_) | EventKind::Any => each(Intent::Quiet),
        EventKind::Other => Vec::new(),
    }
}

/// The error for an exhausted inotify watch limit, naming the sysctl and a value to raise it to
/// (524288, or twice the current limit where that is already more).
pub fn watch_limit_message(root: &Path) -> String {
    let current = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (now, raise_to) = match current {
        Some(n) => (format!(" (now {n})"), n.saturating_mul(2).max(524_288)),
        None => (String::new(), 524_288),
    };
    format!(
        "cannot watch every folder under {}: the inotify watch limit{now} is reached; raise it \
         with `sysctl fs.inotify.max_user_watches={raise_to}` (and persist it in /etc/sysctl.d/)",
        root.display()
    )
}

/// The recursive watch of the source folder and the queue of its events.
pub struct Feed {
    /// Kept alive: dropping it stops the watch.
    watcher: RecommendedWatcher,
    /// The watched folder.
    root: PathBuf,
    rx: Receiver<notify::Result<Event>>,
    overflowed: Arc<AtomicBool>,
    /// Readable whenever events are waiting; polled by the socket thread.
    wake: zmq::Socket,
}

/// What [`Feed::drain`] found.
pub struct Drained {
    pub events: Vec<notify::Result<Event>>,
    /// The queue overflowed and events were lost.
    pub overflowed: bool,
}

impl Feed {
    /// Watches `root` recursively. Files created after this returns are seen.
    pub fn start(ctx: &zmq::Context, root: &Path) -> anyhow::Result<Feed> {
        let (wake, push) = net::inproc::pair(ctx, "watcher-wake", zmq::PULL, zmq::PUSH)
            .context("cannot open the wake sockets")?;
        push.set_sndhwm(16)?;

        let (tx, rx) = sync_channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = overflowed.clone();
        let handler = move |res: notify::Result<Event>| {
            match tx.try_send(res) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => flag.store(true, Ordering::SeqCst),
            }
            // A full wake queue means the socket thread is already due to wake.
            let _ = push.send(&b""[..], zmq::DONTWAIT);
        };
        let mut watcher = notify::recommended_watcher(handler)
            .map_err(|e| notify_error(e, root))
            .context("cannot start watching files")?;
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| notify_error(e, root))?;
        Ok(Feed {
            watcher,
            root: root.to_path_buf(),
            rx,
            overflowed,
            wake,
        })
    }

    /// Puts a watch on every folder under the root that has none. The kernel drops events when
    /// its queue overflows, and with them the creation of folders, which `notify` watches only
    /// when it sees them created: without this, files written in such a folder later would be
    /// found by periodic rescans only. Folders already watched keep their watch.
    pub fn rewatch(&mut self) -> anyhow::Result<()> {
        self.watcher
            .watch(&self.root, RecursiveMode::Recursive)
            .map_err(|e| notify_error(e, &self.root))
    }

    /// The socket to poll for readability.
    pub fn wake_socket(&self) -> &zmq::Socket {
        &self.wake
    }

    /// Takes every queued event (and clears the wake socket).
    pub fn drain(&self) -> Drained {
        while self.wake.recv_msg(zmq::DONTWAIT).is_ok() {}
        let events: Vec<_> = self.rx.try_iter().collect();
        let overflowed = self.overflowed.swap(false, Ordering::SeqCst);
        Drained { events, overflowed }
    }
}

/// A notify error as a clear message; the watch limit names its sysctl.
pub fn notify_error(e: notify::Error, root: &Path) -> anyhow::Error {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => anyhow::anyhow!(watch_limit_message(root)),
        _ => anyhow::anyhow!("cannot watch {}: {e}", root.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, Flag, MetadataKind};

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn raw_events_to_intents() {
        let p = |s: &str| PathBuf::from(s);
        let cases = [
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    &["/s/a"],
                ),
                vec![Intent::Now(p("/s/a"))],
            ),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Read)),
                    &["/s/a"],
                ),
                vec![],
            ),
            (
                ev(EventKind::Create(CreateKind::File), &["/s/a"]),
                vec![Intent::Quiet(p("/s/a"))],
            ),
            (
                ev(EventKind::Create(CreateKind::Folder), &["/s/d"]),
                vec![Intent::NewFolder(p("/s/d"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/s/a"],
                ),
                vec![Intent::Quiet(p("/s/a"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                    &["/s/a"],
                ),
                vec![Intent::Quiet(p("/s/a"))],
            ),
            (
                ev(EventKind::Remove(RemoveKind::File), &["/s/a"]),
                vec![Intent::Now(p("/s/a"))],
            ),
            (
                ev(EventKind::Remove(RemoveKind::Folder), &["/s/d"]),
                vec![Intent::Removed(p("/s/d"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                    &["/s/a"],
                ),
                vec![Intent::MovedOut(p("/s/a"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    &["/s/b"],
                ),
                vec![Intent::MovedIn(p("/s/b"))],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/s/a", "/s/b"],
                ),
                vec![Intent::Moved(p("/s/a"), p("/s/b"))],
            ),
            (
                ev(EventKind::Other, &[]).set_flag(Flag::Rescan),
                vec![Intent::Rescan],
            ),
        ];
        for (event, want) in cases {
            assert_eq!(classify(&event), want, "{event:?}");
        }
    }

    #[test]
    fn the_watch_limit_names_the_sysctl() {
        let e = notify_error(
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            Path::new("/src"),
        );
        assert!(e.to_string().contains("fs.inotify.max_user_watches"));
    }

    #[test]
    fn events_wake_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = zmq::Context::new();
        let feed = Feed::start(&ctx, dir.path()).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let readable = feed.wake_socket().poll(zmq::POLLIN, 5000).unwrap();
        assert_eq!(readable, 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let drained = feed.drain();
        let intents: Vec<Intent> = drained
            .events
            .iter()
            .flat_map(|e| e.as_ref().map(classify).unwrap_or_default())
            .collect();
        assert!(
            intents.contains(&Intent::Now(dir.path().join("f"))),
            "{intents:?}"
        );
        assert!(!drained.overflowed);
    }
}
