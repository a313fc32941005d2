//! The one place that knows, for every name, what the store holds, when the name is due for a
//! look, and whether a change of it is in flight.
//!
//! Everything that can make a file need syncing (the start-up scan, an event, a retry, a
//! rescan) only marks its name due; the loop takes due names from here and reconciles them.

use crate::local::Stamp;
use schema::Hash;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::{Duration, Instant};

/// What the store holds for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    /// Source modification time, ns since the epoch.
    pub modified: i64,
    pub blake3: Hash,
    /// The file was modified shortly before this was recorded. File systems stamp mtimes with a
    /// coarse clock (a kernel tick), so a same-size rewrite right after could carry the very
    /// same mtime: an equal size and mtime then prove nothing, and the content is compared.
    pub racy: bool,
}

/// How recent an mtime must be, when recorded, for size and mtime alone not to be trusted later
/// (far above a kernel tick, and above the time from reading a file to its acknowledgement).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Whether an mtime of `modified` (ns since the epoch) is racy if recorded now.
pub fn is_racy(modified: i64) -> bool {
    schema::time::to_ns(std::time::SystemTime::now()).saturating_sub(modified) < RACY_WINDOW_NS
}

/// First retry delay after a transient error; it doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay after transient errors.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// The next delay of a doubling backoff between `min` and `max`.
pub fn next_backoff(current: Option<Duration>, min: Duration, max: Duration) -> Duration {
    match current {
        None => min,
        Some(d) => (d * 2).clamp(min, max),
    }
}

/// A stored name's entry: what the store holds, and the last sweep that saw the name.
#[derive(Debug, Clone, Copy)]
struct Kept {
    stored: Stored,
    seen: u32,
}

/// The state of a name whose change is in flight, retried or refused (a name only due for a
/// look is in `Names::due` alone). Only the names with something going on have one, so a quiet
/// tree of a million files costs only its [`Kept`] entries (docs/ARCHITECTURE.md, "The
/// watcher's memory").
#[derive(Debug, Default)]
struct Active {
    /// The request id of the change in flight.
    in_flight: Option<u64>,
    /// Marked while in flight: due again at this time once the change ends.
    again: Option<Instant>,
    /// Current retry delay after transient errors.
    retry: Option<Duration>,
    /// A permanent refusal for the file as it looked then; not retried until it changes.
    /// Boxed: refusals are rare, and the entry stays small for the names that are only due.
    failed: Option<Box<Option<Stamp>>>,
}

impl Active {
    fn is_empty(&self) -> bool {
        self.retry.is_none()
            && self.in_flight.is_none()
            && self.again.is_none()
            && self.failed.is_none()
    }
}

/// The table of names: what the store holds for each, the names being worked on, and the queue
/// of due names in time order.
#[derive(Debug, Default)]
pub struct Names {
    stored: BTreeMap<Box<str>, Kept>,
    active: BTreeMap<Box<str>, Active>,
    /// When each due name is due (each also a key of `queue`). Ordered maps rather than hash
    /// maps: when every name of a first sync is due at once, a hash table's doubling would
    /// cost twice the entries.
    due: BTreeMap<Box<str>, Instant>,
    queue: BTreeSet<(Instant, Box<str>)>,
    /// Renames seen in the source, `to` → `from`, tried when `to` is reconciled.
    renames: HashMap<String, String>,
    /// The `from` sides of `renames`, which are not deleted while the rename is pending.
    rename_sources: HashMap<String, String>,
    /// The stored names being worked on (due, or with an `active` entry), by (size, modified): the
    /// candidates for a file whose rename event was lost (moved into a folder not watched yet),
    /// whose old name an event or a walk has marked due. Only those, so that a quiet tree
    /// costs no second copy of every name.
    by_look: BTreeSet<(u64, i64, Box<str>)>,
    /// How many names hold a permanent refusal (`Active::failed`).
    refused: usize,
    /// The current sweep (a walk of the source, or a listing of the store): stored names it
    /// saw carry it in `Kept::seen`, so that the ones it missed are found without a set of
    /// every name seen.
    sweep: u32,
    /// The number of stored names when `stored` was last rebuilt with full nodes.
    compacted: usize,
}

/// `map` rebuilt with full nodes. `append` of two non-empty maps builds one new tree from both
/// sorted sequences, freeing the old nodes as it goes: no second copy of the entries, unlike
/// collecting them first (`FromIterator` sorts a `Vec` of every entry).
fn rebuilt<K: Ord, V>(mut map: BTreeMap<K, V>) -> BTreeMap<K, V> {
    let Some((k, v)) = map.pop_last() else {
        return map;
    };
    let mut out = BTreeMap::from([(k, v)]);
    out.append(&mut map);
    out
}

impl Names {
    /// An empty table.
    pub fn new() -> Names {
        Names::default()
    }

    /// What the store holds for `name`.
    pub fn stored(&self, name: &str) -> Option<Stored> {
        self.stored.get(name).map(|k| k.stored)
    }

    /// Records what the store holds for `name` (`None`: nothing). A name recorded as stored
    /// counts as seen by the current sweep.
    pub fn set_stored(&mut self, name: &str, stored: Option<Stored>) {
        self.unindex_look(name);
        match stored {
            Some(s) => {
                let kept = Kept {
                    stored: s,
                    seen: self.sweep,
                };
                match self.stored.get_mut(name) {
                    Some(k) => *k = kept,
                    None => {
                        self.stored.insert(Box::from(name), kept);
                        self.compact();
                    }
                }
            }
            None => {
                self.stored.remove(name);
            }
        }
        self.index_look(name);
    }

    /// Whether `name` is being worked on: due, in flight, retried or refused.
    fn worked_on(&self, name: &str) -> bool {
        self.due.contains_key(name) || self.active.contains_key(name)
    }

    /// Adds `name` to `by_look` if it is stored and being worked on.
    fn index_look(&mut self, name: &str) {
        if let (Some(k), true) = (self.stored.get(name), self.worked_on(name)) {
            let s = k.stored;
            self.by_look.insert((s.size, s.modified, Box::from(name)));
        }
    }

    /// Takes `name` out of `by_look`.
    fn unindex_look(&mut self, name: &str) {
        if let Some(k) = self.stored.get(name) {
            let s = k.stored;
            self.by_look.remove(&(s.size, s.modified, Box::from(name)));
        }
    }

    /// Stored names whose stored size and modification time are `size` and `modified`.
    pub fn stored_like(&self, size: u64, modified: i64) -> Vec<String> {
        self.by_look
            .range((size, modified, Box::from(""))..)
            .take_while(|(s, m, _)| (*s, *m) == (size, modified))
            .map(|(_, _, name)| name.to_string())
            .collect()
    }

    /// Starts a sweep: from now on [`Names::saw`] and [`Names::set_stored`] mark the names
    /// it sees, and [`Names::unseen`] gives the stored names it did not.
    pub fn begin_sweep(&mut self) {
        self.sweep = self.sweep.wrapping_add(1);
    }

    /// The current sweep saw `name`.
    pub fn saw(&mut self, name: &str) {
        if let Some(k) = self.stored.get_mut(name) {
            k.seen = self.sweep;
        }
    }

    /// The stored names the current sweep did not see, in order.
    pub fn unseen(&self) -> Vec<String> {
        self.stored
            .iter()
            .filter(|(_, k)| k.seen != self.sweep)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Rebuilds `stored` with full nodes once it has grown by a quarter since the last
    /// rebuild. Names inserted one by one (a listing in order, a first walk) leave the nodes of
    /// a B-tree half to two thirds full; rebuilt from the sorted entries they are full, which
    /// takes a third off the table's memory (docs/ARCHITECTURE.md, "The watcher's memory"). A
    /// rebuild moves every entry once, and the quarter's growth between two rebuilds makes that
    /// a few moves per inserted name in all.
    fn compact(&mut self) {
        let n = self.stored.len();
        if n < 1024 || n <= self.compacted + self.compacted / 4 {
            return;
        }
        self.stored = rebuilt(std::mem::take(&mut self.stored));
        self.compacted = n;
    }

    /// Every stored name below folder `dir` (`dir/...`).
    pub fn stored_under(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.stored
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(n, _)| n.starts_with(&prefix))
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Number of names with something stored.
    pub fn stored_count(&self) -> usize {
        self.stored.len()
    }

    fn entry(&mut self, name: &str) -> &mut Active {
        if !self.active.contains_key(name) {
            self.active.insert(Box::from(name), Active::default());
            self.index_look(name);
        }
        self.active.get_mut(name).expect("just inserted")
    }

    /// `name` was rewritten with the content the store holds: remember its new mtime (no new
    /// version is sent), and whether that mtime is still racy.
    pub fn rewritten_unchanged(&mut self, name: &str, stored: Stored, now: &Stamp) {
        let stored = Stored {
            modified: now.modified,
            racy: is_racy(now.modified),
            ..stored
        };
        self.set_stored(name, Some(stored));
    }

    /// Drops the state of `name` if nothing is left to remember.
    fn tidy(&mut self, name: &str) {
        if self.active.get(name).is_some_and(Active::is_empty) {
            self.active.remove(name);
            if !self.due.contains_key(name) {
                self.unindex_look(name);
            }
        }
    }

    /// Marks `name` due at `at`, replacing an earlier mark (a new event restarts the debounce).
    /// While a change of the name is in flight, it is due again once that change ends.
    pub fn mark(&mut self, name: &str, at: Instant) {
        if let Some(st) = self.active.get_mut(name) {
            if st.in_flight.is_some() {
                st.again = Some(at);
                return;
            }
        }
        match self.due.get_mut(name) {
            Some(due) => {
                let old = std::mem::replace(due, at);
                self.queue.remove(&(old, Box::from(name)));
            }
            None => {
                self.due.insert(Box::from(name), at);
                self.index_look(name);
            }
        }
        self.queue.insert((at, Box::from(name)));
    }

    /// Marks `name` due at `at` unless it is due earlier already.
    pub fn mark_by(&mut self, name: &str, at: Instant) {
        let due = match self.active.get(name) {
            Some(st) if st.in_flight.is_some() => st.again,
            _ => self.due.get(name).copied(),
        };
        if due.is_some_and(|d| d <= at) {
            return;
        }
        self.mark(name, at);
    }

    /// The earliest due time, if any name is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// Takes the first name due at or before `now` off the queue.
    pub fn pop_due(&mut self, now: Instant) -> Option<String> {
        let (at, _) = self.queue.first()?;
        if *at > now {
            return None;
        }
        let (_, name) = self.queue.pop_first()?;
        self.due.remove(&name);
        if !self.active.contains_key(&name) {
            self.unindex_look(&name);
        }
        Some(name.into_string())
    }

    /// Whether a change of `name` is in flight.
    pub fn in_flight(&self, name: &str) -> bool {
        self.flight_of(name).is_some()
    }

    /// The id of the change of `name` in flight, if any.
    pub fn flight_of(&self, name: &str) -> Option<u64> {
        self.active.get(name).and_then(|s| s.in_flight)
    }

    /// Records that change `id` of `name` is in flight; a due mark waits until it ends.
    pub fn start(&mut self, name: &str, id: u64) {
        let due = self.due.remove(name);
        let st = self.entry(name);
        st.in_flight = Some(id);
        if let Some(due) = due {
            st.again = Some(due);
            self.queue.remove(&(due, Box::from(name)));
        }
    }

    /// The change of `name` ended; if the name was marked meanwhile it is due again.
    pub fn finish(&mut self, name: &str) {
        let Some(st) = self.active.get_mut(name) else {
            return;
        };
        st.in_flight = None;
        if let Some(at) = st.again.take() {
            self.mark(name, at);
        }
        self.tidy(name);
    }

    /// The change of `name` succeeded: retries start over and a refusal is forgotten.
    pub fn succeeded(&mut self, name: &str) {
        if let Some(st) = self.active.get_mut(name) {
            st.retry = None;
            if st.failed.take().is_some() {
                self.refused -= 1;
            }
        }
        self.tidy(name);
    }

    /// The change of `name` failed for a while: it ends and the name is due again after the
    /// next backoff delay (100 ms doubling to 30 s). Returns that delay.
    pub fn retry_later(&mut self, name: &str, now: Instant) -> Duration {
        let st = self.entry(name);
        let delay = next_backoff(st.retry, RETRY_MIN, RETRY_MAX);
        st.retry = Some(delay);
        st.in_flight = None;
        let at = now + delay;
        let at = st.again.take().map_or(at, |a| a.max(at));
        self.mark(name, at);
        delay
    }

    /// The change of `name` was refused for good while the file looked like `look`; it is not
    /// tried again until the file changes.
    pub fn refuse(&mut self, name: &str, look: Option<Stamp>) {
        if self.entry(name).failed.replace(Box::new(look)).is_none() {
            self.refused += 1;
        }
        self.finish(name);
    }

    /// How many names the broker refused for good (until their file changes).
    pub fn refused_count(&self) -> usize {
        self.refused
    }

    /// How many names are due for a look (now or later).
    pub fn due_count(&self) -> usize {
        self.queue.len()
    }

    /// The first `n` names due, in due order.
    pub fn due_names(&self, n: usize) -> Vec<&str> {
        self.queue.iter().take(n).map(|(_, name)| &**name).collect()
    }

    /// Whether `name` was refused for good while the file looked exactly like `look`.
    pub fn refused(&self, name: &str, look: Option<&Stamp>) -> bool {
        self.active
            .get(name)
            .and_then(|s| s.failed.as_deref())
            .is_some_and(|f| f.as_ref() == look)
    }

    /// Remembers that `from` was renamed to `to` in the source. When `from` is itself the
    /// target of a pending rename (a file renamed twice before the first was sent), the chain
    /// collapses: the original name is renamed straight to `to`.
    pub fn note_rename(&mut self, from: &str, to: &str) {
        let from = self.take_rename(from).unwrap_or_else(|| from.to_string());
        let from = from.as_str();
        if let Some(old) = self.renames.insert(to.to_string(), from.to_string()) {
            self.rename_sources.remove(&old);
        }
        self.rename_sources.insert(from.to_string(), to.to_string());
    }

    /// Takes the pending rename whose target is `to`, giving its source.
    pub fn take_rename(&mut self, to: &str) -> Option<String> {
        let from = self.renames.remove(to)?;
        self.rename_sources.remove(&from);
        Some(from)
    }

    /// Names below folder `dir` whose bytes the store holds or will hold: stored, in flight,
    /// or the target of a pending rename.
    pub fn known_under(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        let mut out: BTreeSet<String> = self.stored_under(dir).into_iter().collect();
        out.extend(
            self.active
                .iter()
                .filter(|(n, s)| n.starts_with(&prefix) && s.in_flight.is_some())
                .map(|(n, _)| n.to_string()),
        );
        out.extend(
            self.renames
                .keys()
                .filter(|n| n.starts_with(&prefix))
                .cloned(),
        );
        out.into_iter().collect()
    }

    /// Whether `name` is the target of a pending rename.
    pub fn is_rename_target(&self, name: &str) -> bool {
        self.renames.contains_key(name)
    }

    /// The pending rename target of `from`, if `from` was renamed.
    pub fn rename_target(&self, from: &str) -> Option<&str> {
        self.rename_sources.get(from).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(size: u64) -> Stored {
        Stored {
            racy: false,
            size,
            modified: 5,
            blake3: Hash::of(b"x"),
        }
    }

    #[test]
    fn due_names_come_out_in_time_order_and_marks_reset() {
        let mut t = Names::new();
        let now = Instant::now();
        t.mark("b", now + Duration::from_millis(10));
        t.mark("a", now + Duration::from_millis(20));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.next_due(), Some(now + Duration::from_millis(10)));
        // a new event restarts the debounce of b
        t.mark("b", now + Duration::from_millis(30));
        assert_eq!(
            t.pop_due(now + Duration::from_millis(25)).as_deref(),
            Some("a")
        );
        assert_eq!(t.pop_due(now + Duration::from_millis(25)), None);
        assert_eq!(
            t.pop_due(now + Duration::from_millis(30)).as_deref(),
            Some("b")
        );
        assert_eq!(t.next_due(), None);
        // mark_by never delays
        t.mark("c", now);
        t.mark_by("c", now + Duration::from_secs(1));
        assert_eq!(t.next_due(), Some(now));
    }

    #[test]
    fn one_change_per_name_in_flight() {
        let mut t = Names::new();
        let now = Instant::now();
        t.mark("a", now);
        assert_eq!(t.pop_due(now).as_deref(), Some("a"));
        t.start("a", 7);
        assert!(t.in_flight("a"));
        // an event while in flight does not make it due now…
        t.mark("a", now);
        assert_eq!(t.pop_due(now), None);
        // …but once the change ends
        t.finish("a");
        assert!(!t.in_flight("a"));
        assert_eq!(t.pop_due(now).as_deref(), Some("a"));
        // without a mark meanwhile, nothing is due after the end
        t.start("a", 8);
        t.finish("a");
        assert_eq!(t.pop_due(now + Duration::from_secs(1)), None);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_on_success() {
        let mut t = Names::new();
        let now = Instant::now();
        let mut delays = Vec::new();
        for id in 0..12 {
            t.start("a", id);
            delays.push(t.retry_later("a", now));
            assert_eq!(t.pop_due(now), None, "not due before the delay");
            assert_eq!(t.pop_due(now + RETRY_MAX).as_deref(), Some("a"));
        }
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[2], Duration::from_millis(400));
        assert_eq!(*delays.last().unwrap(), RETRY_MAX);
        t.succeeded("a");
        t.start("a", 99);
        assert_eq!(t.retry_later("a", now), RETRY_MIN);
        assert_eq!(
            next_backoff(
                Some(Duration::from_secs(4)),
                RETRY_MIN,
                Duration::from_secs(5)
            ),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn stored_names_and_prefixes() {
        let mut t = Names::new();
        let now = Instant::now();
        for n in ["d/a", "d/b", "d/e/f", "d0", "dx/a", "e"] {
            t.set_stored(n, Some(stored(1)));
        }
        assert_eq!(t.stored_under("d"), ["d/a", "d/b", "d/e/f"]);
        assert_eq!(t.stored_count(), 6);
        // Only the names being worked on are candidates for a lost rename.
        assert!(t.stored_like(1, 5).is_empty());
        for n in ["d/a", "d/b", "d/e/f", "d0", "dx/a"] {
            t.mark(n, now);
        }
        t.mark("e", now);
        assert_eq!(t.stored_like(1, 5).len(), 6);
        t.set_stored("d/a", None);
        assert_eq!(t.stored("d/a"), None);
        assert_eq!(t.stored_like(1, 5).len(), 5);
        t.set_stored("e", Some(stored(2)));
        assert_eq!(t.stored_like(2, 5), ["e"]);
        assert_eq!(t.stored_like(1, 5).len(), 4);
        t.set_stored("e", Some(stored(1)));
        assert_eq!(t.stored("d/b"), Some(stored(1)));
        assert_eq!(t.stored_count(), 5);
        // Looks next to each other in order do not mix.
        let at = |modified| Stored {
            modified,
            ..stored(1)
        };
        t.set_stored("early", Some(at(4)));
        t.set_stored("late", Some(at(6)));
        t.mark("early", now);
        t.mark("late", now);
        assert_eq!(t.stored_like(1, 4), ["early"]);
        assert_eq!(t.stored_like(1, 6), ["late"]);
        assert_eq!(t.stored_like(1, 5), ["d/b", "d/e/f", "d0", "dx/a", "e"]);
        assert!(t.stored_like(0, 5).is_empty() && t.stored_like(1, 7).is_empty());
        // A name no longer worked on leaves the candidates.
        while t.pop_due(now).is_some() {}
        assert!(t.stored_like(1, 5).is_empty() && t.stored_like(1, 4).is_empty());
    }

    #[test]
    fn a_name_only_due_has_no_working_state_and_none_is_left_behind() {
        let mut t = Names::new();
        let now = Instant::now();
        t.set_stored("a", Some(stored(1)));
        t.mark("a", now);
        t.mark("b", now);
        assert!(t.active.is_empty(), "due alone is the queue and `due`");
        assert_eq!(
            t.stored_like(1, 5),
            ["a"],
            "a due stored name is a rename candidate"
        );
        t.start("b", 7);
        t.mark("b", now);
        assert_eq!(t.due_count(), 1, "b waits for its change to end");
        assert_eq!(t.pop_due(now).as_deref(), Some("a"));
        assert!(t.stored_like(1, 5).is_empty());
        t.finish("b");
        assert_eq!(
            t.pop_due(now).as_deref(),
            Some("b"),
            "due again once its change ended"
        );
        assert!(t.active.is_empty() && t.due.is_empty() && t.by_look.is_empty());
    }

    #[test]
    fn a_sweep_finds_the_stored_names_it_did_not_see() {
        let mut t = Names::new();
        for n in ["a", "b", "c"] {
            t.set_stored(n, Some(stored(1)));
        }
        t.begin_sweep();
        t.saw("a");
        // Recorded while the sweep runs (a listing page, an acknowledgement): seen.
        t.set_stored("c", Some(stored(2)));
        t.saw("not stored");
        assert_eq!(t.unseen(), ["b"]);
        t.begin_sweep();
        assert_eq!(t.unseen(), ["a", "b", "c"]);
    }

    #[test]
    fn compacting_keeps_every_entry_and_index() {
        let mut t = Names::new();
        for i in 0..5000 {
            t.set_stored(&format!("d/{i:05}"), Some(stored(i)));
        }
        t.mark("d/00001", Instant::now());
        t.mark("d/00077", Instant::now());
        t.compacted = 0;
        t.compact();
        assert_eq!(t.compacted, 5000);
        assert_eq!(t.stored_count(), 5000);
        assert_eq!(t.stored("d/01234"), Some(stored(1234)));
        assert_eq!(t.stored_like(77, 5), ["d/00077"]);
        assert_eq!(t.stored_under("d").len(), 5000);
        assert_eq!(t.due_names(5), ["d/00001", "d/00077"]);
        t.set_stored("d/00077", None);
        assert!(t.stored_like(77, 5).is_empty());
    }

    #[test]
    fn refusals_hold_until_the_file_changes() {
        let mut t = Names::new();
        let look = Stamp {
            size: 1,
            modified: 2,
            changed: 3,
        };
        t.start("a", 1);
        t.refuse("a", Some(look));
        assert!(t.refused("a", Some(&look)));
        let other = Stamp { size: 2, ..look };
        assert!(!t.refused("a", Some(&other)));
        assert!(!t.refused("a", None));
        assert_eq!(t.refused_count(), 1);
        t.refuse("a", Some(other));
        assert_eq!(t.refused_count(), 1, "refused once, however often");
        t.succeeded("a");
        assert!(!t.refused("a", Some(&look)));
        assert_eq!(t.refused_count(), 0);
    }

    #[test]
    fn pending_renames() {
        let mut t = Names::new();
        t.note_rename("a", "b");
        assert_eq!(t.rename_target("a"), Some("b"));
        assert_eq!(t.take_rename("b").as_deref(), Some("a"));
        assert_eq!(t.rename_target("a"), None);
        assert_eq!(t.take_rename("b"), None);
        // renamed twice before anything was sent: one rename from the original name
        t.note_rename("a", "b");
        t.note_rename("b", "c");
        assert_eq!(t.rename_target("a"), Some("c"));
        assert_eq!(t.rename_target("b"), None);
        assert!(!t.is_rename_target("b") && t.is_rename_target("c"));
        assert_eq!(t.take_rename("c").as_deref(), Some("a"));
    }
}
