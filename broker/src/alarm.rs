//! The mass-change alarm (docs/CONTRACT.md §8): when more than half of a volume's names, and at
//! least [`MIN_NAMES`], are deleted, rewritten or moved away within [`WINDOW`], someone should
//! look: a ransomware attack on a watched folder looks exactly like this. The broker logs a
//! warning naming the volume, counts it in a metric, and `dfs status` reports it (exit 1) for
//! [`HOLD`] after the last such change.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// The span of time the changes are counted over.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Fewest changed names that raise the alarm.
pub const MIN_NAMES: usize = 100;
/// How long a raised alarm stays in `dfs status` after the last change that fed it.
pub const HOLD: Duration = Duration::from_secs(24 * 3600);
/// How long a count of a volume's names is reused.
const COUNT_FOR: Duration = Duration::from_secs(10);

/// One volume's recent changes.
#[derive(Debug, Default)]
struct Recent {
    /// Changed names in order of their first change in the window, with when.
    order: VecDeque<(Instant, String)>,
    /// Changed name → whether it is gone (deleted or moved away) rather than rewritten.
    names: HashMap<String, bool>,
    /// The volume's name count, and when it was taken.
    count: Option<(Instant, u64)>,
    /// The alarm, once raised: when it was first raised, and the last change that fed it.
    raised: Option<(SystemTime, Instant, usize)>,
}

/// The recent changes of every volume, and the alarms raised.
#[derive(Debug, Default)]
pub struct MassChange {
    volumes: HashMap<String, Recent>,
}

impl MassChange {
    /// A stored name of `volume` (empty: the root volume) was deleted or moved away (`gone`),
    /// or rewritten, at `now`. `count` says how many names the volume holds now; it is asked
    /// only once enough names changed, and at most every few seconds. Returns the warning to
    /// log when this change raises the alarm.
    pub fn changed(
        &mut self,
        volume: &str,
        name: &str,
        gone: bool,
        now: Instant,
        count: impl FnOnce() -> u64,
    ) -> Option<String> {
        let recent = self.volumes.entry(volume.to_string()).or_default();
        while let Some((at, old)) = recent.order.front() {
            if now.duration_since(*at) <= WINDOW {
                break;
            }
            recent.names.remove(old);
            recent.order.pop_front();
        }
        match recent.names.get_mut(name) {
            Some(was_gone) => *was_gone |= gone,
            None => {
                recent.names.insert(name.to_string(), gone);
                recent.order.push_back((now, name.to_string()));
            }
        }
        let changed = recent.names.len();
        if changed < MIN_NAMES {
            return None;
        }
        let names = match recent.count {
            Some((at, n)) if now.duration_since(at) < COUNT_FOR => n,
            _ => {
                let n = count();
                recent.count = Some((now, n));
                n
            }
        };
        // The volume as it was before the window: what it holds now and what left it.
        let gone_names = recent.names.values().filter(|g| **g).count() as u64;
        let before = names + gone_names;
        if (changed as u64) * 2 <= before {
            return None;
        }
        let first = recent.raised.is_none();
        let since = recent.raised.map_or(SystemTime::now(), |(t, _, _)| t);
        recent.raised = Some((since, now, changed));
        first.then(|| {
            format!(
                "{}: {changed} of its {before} names deleted, rewritten or moved within {} \
                 minutes; if this was not you, restore the volume with dfs fetch --at",
                volume_label(volume),
                WINDOW.as_secs() / 60
            )
        })
    }

    /// The alarms in effect at `now`, one line each, for `dfs status`.
    pub fn alarms(&self, now: Instant) -> Vec<String> {
        let mut lines: Vec<String> = self
            .volumes
            .iter()
            .filter_map(|(volume, r)| {
                let (since, last, changed) = r.raised?;
                (now.duration_since(last) <= HOLD).then(|| {
                    format!(
                        "mass change in {}: {changed} names deleted, rewritten or moved within \
                         {} minutes, first at {}",
                        volume_label(volume),
                        WINDOW.as_secs() / 60,
                        humantime::format_rfc3339_seconds(since)
                    )
                })
            })
            .collect();
        lines.sort();
        lines
    }
}

fn volume_label(volume: &str) -> String {
    if volume.is_empty() {
        "the root volume".to_string()
    } else {
        format!("volume {volume}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_a_volume_changed_at_once_raises_the_alarm_once() {
        let mut m = MassChange::default();
        let t0 = Instant::now();
        // 300 names; 150 rewritten is half, not more: no alarm.
        for i in 0..150 {
            let raised = m.changed("photos", &format!("photos/{i}"), false, t0, || 300);
            assert!(raised.is_none());
        }
        assert!(m.alarms(t0).is_empty());
        // One more rewrite passes half; a second pass over the same names adds nothing.
        let raised = m.changed("photos", "photos/150", false, t0, || 300);
        assert!(raised.is_some_and(|w| w.contains("volume photos") && w.contains("151 of its 300")));
        assert!(m.changed("photos", "photos/0", false, t0, || 300).is_none());
        assert_eq!(m.alarms(t0).len(), 1);
        assert!(m.alarms(t0 + HOLD + Duration::from_secs(1)).is_empty());
        // Another volume is not affected.
        assert!(!m.alarms(t0)[0].contains("root volume"));
    }

    #[test]
    fn deletions_count_against_the_volume_as_it_was_and_old_changes_expire() {
        let mut m = MassChange::default();
        let t0 = Instant::now();
        // 200 names, 120 deleted: 80 remain, and 120 of 200 is more than half.
        let mut raised = None;
        for i in 0..120 {
            raised = raised.or(m.changed("", &format!("f{i}"), true, t0, || 80));
        }
        assert!(raised.is_some_and(|w| w.contains("the root volume")));
        // Changes spread over more than the window never add up.
        let mut slow = MassChange::default();
        for i in 0..300u64 {
            let at = t0 + Duration::from_secs(i * 5);
            assert!(slow
                .changed("", &format!("f{i}"), false, at, || 300)
                .is_none());
        }
    }

    #[test]
    fn fewer_than_the_minimum_never_alarm() {
        let mut m = MassChange::default();
        let t0 = Instant::now();
        for i in 0..(MIN_NAMES - 1) {
            assert!(m.changed("", &format!("f{i}"), true, t0, || 0).is_none());
        }
    }
}
