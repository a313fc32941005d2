//! The content cache: each content read through the mount, by BLAKE3, once it was received
//! whole and matched its hash. Small contents (up to `INLINE_MAX`, which arrive whole in one
//! message) are kept in memory, larger ones in unnamed temporary files in the cache folder,
//! each within its own budget. A content an open file reads is never evicted; the others go
//! least recently used first. A read waits for its content without holding a FUSE thread: its
//! reply is parked on the content and sent when the content is ready or has failed.

use disk::atomic::TempFile;
use fuser::{BackingId, Errno, ReplyData};
use schema::limits::INLINE_MAX;
use schema::{Entry, Hash};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Most bytes of small contents held in memory (fewer when `--cache-size` is smaller).
pub const MEMORY_BUDGET: u64 = 64 << 20;

/// Where a content's bytes are once verified.
pub enum Body {
    /// A small content, whole.
    Memory(Vec<u8>),
    /// A large content, in an unnamed file of the cache folder.
    File(TempFile),
}

impl Body {
    /// Up to `size` bytes at `offset` (fewer at the end of the content).
    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        match self {
            Body::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(v.len());
                let end = start.saturating_add(size as usize).min(v.len());
                Ok(v[start..end].to_vec())
            }
            Body::File(f) => {
                let mut buf = vec![0u8; size as usize];
                let mut filled = 0;
                while filled < buf.len() {
                    match f.file().read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::error!("cannot read the cache file: {e}");
                            return Err(Errno::EIO);
                        }
                    }
                }
                buf.truncate(filled);
                Ok(buf)
            }
        }
    }
}

/// What waits for a content: a read, or an open that hands the kernel the content's file.
enum Waiter {
    Read {
        offset: u64,
        size: u32,
        reply: ReplyData,
    },
    Settled(Settled),
}

/// Called once a content is ready (with its body) or has failed.
pub type Settled = Box<dyn FnOnce(Result<&Body, Failure>) + Send>;

enum State {
    /// Asked for, not yet here: the reads waiting for it.
    Pending(Vec<Waiter>),
    Ready(Body),
    /// The fetch failed; reads get this error until the content is asked for again (only a
    /// read of a file opened later asks again, unless the broker did not answer).
    Failed(Failure),
}

/// Why a content could not be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What reads of it get.
    pub errno: Errno,
    /// Whether a read of an open file asks for it again (the broker did not answer); a
    /// corrupt or vanished content is asked for again only by a later open.
    pub retry: bool,
}

impl Failure {
    /// The broker did not answer (or the cache folder failed): reads fail with `EIO`, and a
    /// read of an open file asks again.
    pub const AGAIN: Failure = Failure {
        errno: Errno::EIO,
        retry: true,
    };
    /// Corrupt content, or a stop: reads fail with `EIO` until a later open asks again.
    pub const FINAL: Failure = Failure {
        errno: Errno::EIO,
        retry: false,
    };
    /// The name is gone from the store: reads fail with `ENOENT`.
    pub const GONE: Failure = Failure {
        errno: Errno::ENOENT,
        retry: false,
    };
}

/// One content, as the cache and the open files share it.
pub struct Content {
    hash: Hash,
    size: u64,
    state: Mutex<State>,
    /// The kernel's handle of the content's file while open files read it directly
    /// (passthrough); every open of it shares one.
    backing: Mutex<Weak<BackingId>>,
}

impl Content {
    fn new(hash: Hash, size: u64, state: State) -> Content {
        Content {
            hash,
            size,
            state: Mutex::new(state),
            backing: Mutex::new(Weak::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The content's BLAKE3.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Whether its fetch failed.
    pub fn failed(&self) -> bool {
        matches!(*self.state(), State::Failed(_))
    }

    /// Whether its fetch failed in a way a read of an open file asks again for.
    pub fn retry(&self) -> bool {
        matches!(*self.state(), State::Failed(f) if f.retry)
    }

    fn ready(&self) -> bool {
        matches!(*self.state(), State::Ready(_))
    }

    /// Answers a read of `size` bytes at `offset`: now when the content is here, else when it
    /// arrives or fails.
    pub fn read(&self, offset: u64, size: u32, reply: ReplyData) {
        let mut state = self.state();
        match &mut *state {
            State::Pending(waiting) => waiting.push(Waiter::Read {
                offset,
                size,
                reply,
            }),
            State::Ready(body) => answer(body, offset, size, reply),
            State::Failed(f) => reply.error(f.errno),
        }
    }

    /// Ends the fetch: the content is `body` (verified), or the fetch failed. Answers every
    /// waiting read.
    pub fn finish(&self, result: Result<Body, Failure>) {
        let mut state = self.state();
        let gone = State::Failed(Failure::AGAIN);
        let waiting = match std::mem::replace(&mut *state, gone) {
            State::Pending(w) => w,
            other => {
                *state = other;
                return;
            }
        };
        *state = match result {
            Ok(body) => State::Ready(body),
            Err(f) => State::Failed(f),
        };
        for w in waiting {
            settle(&state, w);
        }
    }

    /// Calls `then` once the content is ready or has failed (now, if it has).
    pub fn when_settled(&self, then: Settled) {
        let mut state = self.state();
        match &mut *state {
            State::Pending(waiting) => waiting.push(Waiter::Settled(then)),
            settled => settle(settled, Waiter::Settled(then)),
        }
    }

    /// The kernel's handle of this content's file for passthrough: the one open files share,
    /// or a new one made by `open` from a read-only descriptor of the file.
    pub fn backing(
        &self,
        body: &Body,
        open: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut slot = self.backing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = slot.upgrade() {
            return Ok(id);
        }
        let Body::File(temp) = body else {
            return Err(std::io::Error::other("a small content has no file"));
        };
        // The kernel gets a read-only descriptor of the unnamed file, never the writable one.
        use std::os::fd::AsRawFd;
        let readonly = std::fs::File::open(format!("/proc/self/fd/{}", temp.file().as_raw_fd()))?;
        let id = Arc::new(open(&readonly)?);
        *slot = Arc::downgrade(&id);
        Ok(id)
    }
}

fn settle(state: &State, w: Waiter) {
    match (state, w) {
        (
            State::Ready(body),
            Waiter::Read {
                offset,
                size,
                reply,
            },
        ) => answer(body, offset, size, reply),
        (State::Failed(f), Waiter::Read { reply, .. }) => reply.error(f.errno),
        (State::Ready(body), Waiter::Settled(then)) => then(Ok(body)),
        (State::Failed(f), Waiter::Settled(then)) => then(Err(*f)),
        (State::Pending(_), _) => unreachable!("only a settled state answers"),
    }
}

fn answer(body: &Body, offset: u64, size: u32, reply: ReplyData) {
    match body.read(offset, size) {
        Ok(bytes) => reply.data(&bytes),
        Err(errno) => reply.error(errno),
    }
}

/// A content of the cache and when it was last asked for.
struct Slot {
    content: Arc<Content>,
    used: u64,
    /// Counted in the budgets (it became ready).
    counted: bool,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Hash, Slot>,
    memory: u64,
    disk: u64,
    clock: u64,
}

/// Every content read through the mount, within the memory and disk budgets.
pub struct Cache {
    inner: Mutex<Inner>,
    memory_budget: u64,
    disk_budget: u64,
}

/// How a content was found.
pub enum Found {
    /// In the cache (ready, or already being fetched).
    Cached(Arc<Content>),
    /// New: the caller must have it fetched.
    New(Arc<Content>),
}

impl Cache {
    /// A cache of at most `size` bytes of closed files' contents on disk, and at most
    /// [`MEMORY_BUDGET`] (or `size`, when smaller) of small contents in memory.
    pub fn new(size: u64) -> Cache {
        Cache {
            inner: Mutex::new(Inner::default()),
            memory_budget: MEMORY_BUDGET.min(size),
            disk_budget: size,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The content of `entry`: the cached one, or a new pending one (asked for again when an
    /// earlier fetch of it failed). An empty file needs no fetch.
    pub fn obtain(&self, entry: &Entry) -> Found {
        let mut inner = self.inner();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(slot) = inner.slots.get_mut(&entry.blake3) {
            if !slot.content.failed() {
                slot.used = now;
                return Found::Cached(slot.content.clone());
            }
        }
        let empty = entry.size == 0 && entry.blake3 == Hash::of(&[]);
        let state = if empty {
            State::Ready(Body::Memory(Vec::new()))
        } else {
            State::Pending(Vec::new())
        };
        let content = Arc::new(Content::new(entry.blake3, entry.size, state));
        inner.slots.insert(
            entry.blake3,
            Slot {
                content: content.clone(),
                used: now,
                counted: false,
            },
        );
        if empty {
            Found::Cached(content)
        } else {
            Found::New(content)
        }
    }

    /// Whether `hash` is cached (ready or on its way).
    pub fn has(&self, hash: &Hash) -> bool {
        self.inner()
            .slots
            .get(hash)
            .is_some_and(|s| !s.content.failed())
    }

    /// Notes that `content`'s fetch ended: counts it in its budget, or forgets it when it
    /// failed; then evicts what is beyond the budgets.
    pub fn settled(&self, content: &Arc<Content>) {
        let mut inner = self.inner();
        let hash = content.hash();
        let Some(slot) = inner.slots.get_mut(&hash) else {
            return;
        };
        if !Arc::ptr_eq(&slot.content, content) {
            return;
        }
        if content.failed() {
            inner.slots.remove(&hash);
            return;
        }
        if !slot.counted && content.ready() {
            slot.counted = true;
            if content.size <= INLINE_MAX {
                inner.memory += content.size;
            } else {
                inner.disk += content.size;
            }
        }
        self.evict(&mut inner);
    }

    /// Evicts what is beyond the budgets now (a file was closed: its content may go).
    pub fn trim(&self) {
        let mut inner = self.inner();
        self.evict(&mut inner);
    }

    /// Drops the least recently used contents that no open file reads until both budgets hold.
    /// Runs only when one is exceeded, and then goes down to 90 % of it, so its cost is shared.
    fn evict(&self, inner: &mut Inner) {
        if inner.memory <= self.memory_budget && inner.disk <= self.disk_budget {
            return;
        }
        let mut idle: Vec<(u64, Hash, u64)> = inner
            .slots
            .iter()
            .filter(|(_, s)| s.counted && Arc::strong_count(&s.content) == 1)
            .map(|(h, s)| (s.used, *h, s.content.size))
            .collect();
        idle.sort_unstable();
        let (memory_goal, disk_goal) = (self.memory_budget / 10 * 9, self.disk_budget / 10 * 9);
        for (_, hash, size) in idle {
            let small = size <= INLINE_MAX;
            let over = if small {
                inner.memory > memory_goal
            } else {
                inner.disk > disk_goal
            };
            if !over {
                continue;
            }
            inner.slots.remove(&hash);
            if small {
                inner.memory -= size;
            } else {
                inner.disk -= size;
            }
        }
    }

    /// Bytes held: (small contents in memory, large contents on disk).
    #[cfg(test)]
    pub fn held(&self) -> (u64, u64) {
        let inner = self.inner();
        (inner.memory, inner.disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Class;

    fn entry(bytes: &[u8]) -> Entry {
        Entry {
            name: "n".into(),
            class: Class::Others,
            size: bytes.len() as u64,
            blake3: Hash::of(bytes),
            modified: 0,
            version: 1,
        }
    }

    fn fill(cache: &Cache, bytes: &[u8]) -> Arc<Content> {
        match cache.obtain(&entry(bytes)) {
            Found::New(c) => {
                c.finish(Ok(Body::Memory(bytes.to_vec())));
                cache.settled(&c);
                c
            }
            Found::Cached(_) => panic!("{} bytes were cached already", bytes.len()),
        }
    }

    #[test]
    fn a_content_is_fetched_once_and_shared() {
        let cache = Cache::new(1 << 20);
        let one = fill(&cache, b"hello");
        assert!(
            matches!(cache.obtain(&entry(b"hello")), Found::Cached(c) if Arc::ptr_eq(&c, &one))
        );
        assert_eq!(cache.held(), (5, 0));
        assert!(matches!(cache.obtain(&entry(b"")), Found::Cached(_)));
    }

    #[test]
    fn a_failed_fetch_is_asked_for_again() {
        let cache = Cache::new(1 << 20);
        let Found::New(c) = cache.obtain(&entry(b"x")) else {
            panic!("new content expected")
        };
        c.finish(Err(Failure::FINAL));
        cache.settled(&c);
        assert!(c.failed());
        assert!(!cache.has(&Hash::of(b"x")));
        assert!(matches!(cache.obtain(&entry(b"x")), Found::New(_)));
    }

    #[test]
    fn the_least_recently_used_idle_content_goes_first() {
        // A memory budget of 100 bytes: four 30-byte contents do not fit.
        let cache = Cache::new(100);
        let a = vec![1u8; 30];
        let b = vec![2u8; 30];
        let c = vec![3u8; 30];
        let d = vec![4u8; 30];
        let held_a = fill(&cache, &a);
        drop(fill(&cache, &b));
        drop(fill(&cache, &c));
        // `a` is open (held), `b` the oldest idle one: it goes.
        drop(fill(&cache, &d));
        assert!(cache.has(&Hash::of(&a)), "an open content is never evicted");
        assert!(!cache.has(&Hash::of(&b)));
        assert!(cache.has(&Hash::of(&d)));
        assert!(cache.held().0 <= 100);
        drop(held_a);
    }

    #[test]
    fn a_content_closed_beyond_the_budget_goes_at_once() {
        let cache = Cache::new(50);
        let open = fill(&cache, &[7u8; 60]);
        assert!(
            cache.has(&Hash::of(&[7u8; 60])),
            "kept while open, beyond the budget"
        );
        drop(open);
        cache.trim();
        assert!(!cache.has(&Hash::of(&[7u8; 60])));
        assert_eq!(cache.held(), (0, 0));
    }
}
