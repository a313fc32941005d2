//! The changes in flight: each sent to the broker and not answered yet, by request id, with
//! the bounds on how many may be out at once.

use crate::transfer::{Change, InFlight, Outgoing};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Most bytes of small files sent inline and not yet acknowledged: with many changes in flight,
/// small files keep the node's fsyncs overlapping, but their content sits in the queues of
/// every hop until written, so it is bounded in bytes as well as in changes.
pub const MAX_INLINE_IN_FLIGHT: u64 = 16 << 20;

/// The changes in flight and what they hold.
#[derive(Debug)]
pub struct Flights {
    by_id: HashMap<u64, InFlight>,
    /// Most changes in flight at once (`--max-in-flight`).
    max: usize,
    /// Bytes of the inline uploads in flight (see [`MAX_INLINE_IN_FLIGHT`]).
    inline_bytes: u64,
    /// Ids of the growing uploads started (some may have ended since), so that the loop looks at
    /// those only, not at every change in flight.
    growing: HashSet<u64>,
    /// Events from the source folder so far, to tell whether any came while a change was in
    /// flight (see [`InFlight::events_before`]).
    source_events: u64,
}

impl Flights {
    /// No change in flight; at most `max` at once.
    pub fn new(max: usize) -> Flights {
        Flights {
            by_id: HashMap::new(),
            max,
            inline_bytes: 0,
            growing: HashSet::new(),
            source_events: 0,
        }
    }

    /// Whether another change may go out: fewer than `max` changes, and fewer than
    /// [`MAX_INLINE_IN_FLIGHT`] bytes of inline content, are in flight.
    pub fn has_room(&self) -> bool {
        self.by_id.len() < self.max && self.inline_bytes < MAX_INLINE_IN_FLIGHT
    }

    /// Records change `id`, sent at `now` with `inline` bytes of content in its first message.
    pub fn add(&mut self, id: u64, change: Change, inline: u64, now: Instant) {
        let growing = matches!(&change, Change::Put(up) if up.is_open());
        if growing {
            self.growing.insert(id);
        }
        self.inline_bytes += inline;
        let flight = InFlight {
            change,
            heard: now,
            sent: now,
            events_before: self.source_events,
        };
        self.by_id.insert(id, flight);
    }

    /// Counts an event from the source folder.
    pub fn source_event(&mut self) {
        self.source_events += 1;
    }

    /// Whether events came from the source folder while `flight` was in flight.
    pub fn events_during(&self, flight: &InFlight) -> bool {
        self.source_events != flight.events_before
    }

    /// Removes change `id`.
    pub fn take(&mut self, id: u64) -> Option<InFlight> {
        let flight = self.by_id.remove(&id)?;
        if let Change::Put(up) = &flight.change {
            if !up.is_chunked() {
                self.inline_bytes = self.inline_bytes.saturating_sub(up.stamp.size);
            }
        }
        Some(flight)
    }

    /// Removes every change (an outage).
    pub fn take_all(&mut self) -> Vec<InFlight> {
        self.inline_bytes = 0;
        self.growing.clear();
        self.by_id.drain().map(|(_, f)| f).collect()
    }

    /// Change `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut InFlight> {
        self.by_id.get_mut(&id)
    }

    /// The upload `id`, if it is one in flight.
    pub fn upload(&self, id: u64) -> Option<&Outgoing> {
        match self.by_id.get(&id) {
            Some(InFlight {
                change: Change::Put(up),
                ..
            }) => Some(up),
            _ => None,
        }
    }

    /// The upload `id`, if it is one in flight, to change.
    pub fn upload_mut(&mut self, id: u64) -> Option<&mut Outgoing> {
        match self.by_id.get_mut(&id) {
            Some(InFlight {
                change: Change::Put(up),
                ..
            }) => Some(up),
            _ => None,
        }
    }

    /// Notes that the broker said something about change `id` at `now`.
    pub fn heard(&mut self, id: u64, now: Instant) {
        if let Some(f) = self.by_id.get_mut(&id) {
            f.heard = now;
        }
    }

    /// How many changes are in flight.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no change is in flight.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every change in flight.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &InFlight)> {
        self.by_id.iter().map(|(id, f)| (*id, f))
    }

    /// Whether some change has had no word from the broker for longer than `limit`.
    pub fn any_silent(&self, now: Instant, limit: Duration) -> bool {
        self.by_id
            .values()
            .any(|f| now.duration_since(f.heard) > limit)
    }

    /// The changes with no word from the broker for longer than `limit`.
    pub fn silent(&self, now: Instant, limit: Duration) -> Vec<u64> {
        self.iter()
            .filter(|(_, f)| now.duration_since(f.heard) > limit)
            .map(|(id, _)| id)
            .collect()
    }

    /// The chunked uploads not wholly sent yet (abandoned at a stop).
    pub fn unfinished_chunked(&self) -> Vec<u64> {
        self.iter()
            .filter(|(_, f)| matches!(&f.change, Change::Put(u) if u.is_chunked() && !u.all_sent()))
            .map(|(id, _)| id)
            .collect()
    }

    /// The growing uploads still open that wait for their file to grow; forgets those that
    /// ended.
    pub fn starved_growing(&mut self) -> Vec<u64> {
        let by_id = &self.by_id;
        let open = |id: &u64| match by_id.get(id) {
            Some(InFlight {
                change: Change::Put(up),
                ..
            }) => up.is_open(),
            _ => false,
        };
        self.growing.retain(open);
        let mut ids: Vec<u64> = self
            .growing
            .iter()
            .copied()
            .filter(|id| self.upload(*id).is_some_and(Outgoing::is_starved))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether a growing upload waits for its file to grow.
    pub fn any_starved(&self) -> bool {
        self.growing
            .iter()
            .any(|id| self.upload(*id).is_some_and(Outgoing::is_starved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::Stamp;
    use schema::Hash;

    fn inline(name: &str, size: u64) -> Change {
        let stamp = Stamp {
            size,
            modified: 1,
            changed: 1,
        };
        Change::Put(Box::new(Outgoing::inline(
            name.into(),
            stamp,
            Hash::of(b"x"),
        )))
    }

    #[test]
    fn room_is_bounded_by_count_and_by_inline_bytes() {
        let t = Instant::now();
        let mut f = Flights::new(2);
        assert!(f.has_room());
        f.add(1, inline("a", 10), 10, t);
        f.add(2, Change::Delete { name: "b".into() }, 0, t);
        assert!(!f.has_room(), "two changes of two");
        assert!(f.take(2).is_some());
        assert!(f.has_room());

        let mut f = Flights::new(1000);
        f.add(
            1,
            inline("big", MAX_INLINE_IN_FLIGHT),
            MAX_INLINE_IN_FLIGHT,
            t,
        );
        assert!(!f.has_room(), "the inline bytes are used up");
        f.take(1);
        assert!(f.has_room(), "and given back when answered");
        f.add(2, inline("c", 5), 5, t);
        assert_eq!(f.take_all().len(), 1);
        assert!(f.is_empty() && f.has_room());
    }

    #[test]
    fn silence_is_per_change_and_ends_with_a_word() {
        let t = Instant::now();
        let mut f = Flights::new(10);
        f.add(1, Change::Delete { name: "a".into() }, 0, t);
        f.add(2, Change::Delete { name: "b".into() }, 0, t);
        let later = t + Duration::from_secs(11);
        f.heard(2, later);
        assert!(f.any_silent(later, Duration::from_secs(10)));
        assert_eq!(f.silent(later, Duration::from_secs(10)), [1]);
    }
}
