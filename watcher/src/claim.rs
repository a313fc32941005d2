//! The watcher's volume (docs/CONTRACT.md §8): which volume it syncs into, its claim of it on
//! the broker connection, and the mapping between source paths and stored names. A claim the
//! broker refuses (the volume belongs to another owner) stops the watcher; a change refused
//! because the connection holds no claim (the broker restarted, the connection was made again)
//! makes it claim again.

use schema::names::Volume;
use schema::Message;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long after a claim got no answer, or after a change was refused for want of a claim,
/// the watcher claims again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// The first wait before a claim refused for a passing reason (`busy`: the broker rebuilds its
/// index, which at its first start takes milliseconds) is sent again; it doubles up to
/// [`CLAIM_RETRY`].
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(20);

/// The watcher's volume and the state of its claim.
#[derive(Debug)]
pub(crate) struct Claim {
    volume: Volume,
    /// Who claims: this host and the canonical source folder (the broker uses the CURVE key
    /// instead when there is one).
    owner: String,
    take_over: bool,
    /// The id of the claim in flight.
    pending: Option<u64>,
    /// Whether the broker holds the claim on this connection.
    held: bool,
    /// The named volumes the broker knows: a root-volume watcher leaves their folders alone.
    named: HashSet<String>,
    /// Why the broker refused the claim: the watcher stops with this line.
    refused: Option<String>,
    /// No claim is sent before this.
    not_before: Option<Instant>,
    /// The last wait after a claim refused for a passing reason (doubles while refused).
    retry_wait: Option<Duration>,
}

impl Claim {
    /// A claim of `volume` by `owner` (with `take_over`, even of a volume owned by another).
    pub fn new(volume: Volume, owner: String, take_over: bool) -> Claim {
        Claim {
            volume,
            owner,
            take_over,
            pending: None,
            held: false,
            named: HashSet::new(),
            refused: None,
            not_before: None,
            retry_wait: None,
        }
    }

    /// A root-volume claim for tests of other parts.
    #[cfg(test)]
    pub fn root_for_tests() -> Claim {
        Claim::new(Volume::root(), "test:/src".into(), false)
    }

    /// The volume.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// Whether the broker holds the claim on this connection.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Why the claim was refused, if it was.
    pub fn refusal(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Whether a claim is to be sent now.
    pub fn is_due(&self, now: Instant) -> bool {
        !self.held
            && self.pending.is_none()
            && self.refused.is_none()
            && self.not_before.is_none_or(|t| now >= t)
    }

    /// The claim to send now as request `id`, if one is due.
    pub fn request(&mut self, id: u64, now: Instant) -> Option<Message> {
        if !self.is_due(now) {
            return None;
        }
        self.pending = Some(id);
        Some(Message::Claim {
            id,
            volume: self.volume.name().to_string(),
            owner: self.owner.clone(),
            take_over: self.take_over,
        })
    }

    /// Whether `id` is the claim in flight.
    pub fn owns(&self, id: u64) -> bool {
        self.pending == Some(id)
    }

    /// The broker holds the claim; `volumes` are the named volumes it knows.
    pub fn claimed(&mut self, volumes: Vec<String>) {
        self.pending = None;
        self.held = true;
        self.named = volumes.into_iter().collect();
        self.retry_wait = None;
        // Once taken over, the volume is this watcher's: a later claim only reclaims it.
        self.take_over = false;
    }

    /// The broker refused the claim for good (`forbidden`) with `why`.
    pub fn refuse(&mut self, why: &str) {
        self.pending = None;
        self.refused = Some(why.to_string());
    }

    /// The claim in flight was refused for a reason that may pass: claim again a little later.
    pub fn retry(&mut self, now: Instant) {
        self.pending = None;
        let wait = self
            .retry_wait
            .map_or(CLAIM_RETRY_FIRST, |w| (w * 2).min(CLAIM_RETRY));
        self.retry_wait = Some(wait);
        self.not_before = Some(now + wait);
    }

    /// The connection went away (the broker forgets its claim with it): claim again once it is
    /// back.
    pub fn disconnected(&mut self) {
        self.pending = None;
        self.held = false;
    }

    /// A change was refused because the broker holds no claim on this connection (a broker
    /// restart, a connection made again): claim again a little later.
    pub fn lost(&mut self, now: Instant) {
        self.disconnected();
        self.not_before = Some(now + CLAIM_RETRY);
    }

    /// The stored name of the source path `local`.
    pub fn stored(&self, local: &str) -> String {
        self.volume.stored(local)
    }

    /// The source path of a stored name, if it is in this watcher's volume.
    pub fn local<'a>(&self, stored: &'a str) -> Option<&'a str> {
        self.volume.local(stored, |v| self.named.contains(v))
    }

    /// Whether the source path `local` is left alone: in the root volume, a name in the folder
    /// of a named volume.
    pub fn leaves_alone(&self, local: &str) -> bool {
        self.volume.is_root() && self.local(local).is_none()
    }

    /// The same message with its names turned into stored names (`put`, `delete`, `rename`).
    pub fn outgoing(&self, mut msg: Message) -> Message {
        if self.volume.is_root() {
            return msg;
        }
        match &mut msg {
            Message::Put { name, .. } | Message::Delete { name, .. } => *name = self.stored(name),
            Message::Rename { from, to, .. } => {
                *from = self.stored(from);
                *to = self.stored(to);
            }
            _ => {}
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Hash;

    #[test]
    fn a_named_volume_maps_names_and_claims_again_when_lost() {
        let mut c = Claim::new(Volume::named("photos").unwrap(), "h:/p".into(), true);
        let Some(Message::Claim {
            id: 1,
            volume,
            take_over: true,
            ..
        }) = c.request(1, Instant::now())
        else {
            panic!("expected a claim");
        };
        assert_eq!(volume, "photos");
        assert!(
            c.request(2, Instant::now()).is_none(),
            "one claim in flight"
        );
        assert!(c.owns(1));
        c.claimed(vec!["photos".into()]);
        assert!(c.is_held());
        let put = Message::Delete {
            id: 3,
            name: "a/b.jpg".into(),
        };
        assert_eq!(
            c.outgoing(put),
            Message::Delete {
                id: 3,
                name: "photos/a/b.jpg".into()
            }
        );
        let rename = Message::Rename {
            id: 4,
            from: "x".into(),
            to: "y".into(),
            blake3: Hash::of(b""),
            to_class: None,
            version: None,
        };
        let Message::Rename { from, to, .. } = c.outgoing(rename) else {
            panic!()
        };
        assert_eq!((from.as_str(), to.as_str()), ("photos/x", "photos/y"));
        assert_eq!(c.local("photos/a.jpg"), Some("a.jpg"));
        assert_eq!(c.local("a.jpg"), None);
        let t0 = Instant::now();
        c.lost(t0);
        assert!(c.request(5, t0).is_none(), "not at once");
        let Some(Message::Claim { take_over, .. }) = c.request(5, t0 + CLAIM_RETRY) else {
            panic!("claims again")
        };
        assert!(!take_over, "a volume taken over is only reclaimed");
        c.refuse("volume photos is owned by someone else");
        assert!(c.request(6, t0 + CLAIM_RETRY * 2).is_none());
        assert!(c.refusal().is_some());
    }

    #[test]
    fn a_busy_broker_is_asked_again_soon_then_less_often() {
        let mut c = Claim::new(Volume::root(), "h:/s".into(), false);
        let t0 = Instant::now();
        assert!(c.request(1, t0).is_some());
        // Refused as busy: again after 20 ms, then 40 ms, ... at most CLAIM_RETRY apart.
        c.retry(t0);
        assert!(c.request(2, t0 + CLAIM_RETRY_FIRST / 2).is_none());
        assert!(c.request(2, t0 + CLAIM_RETRY_FIRST).is_some());
        let t1 = t0 + CLAIM_RETRY_FIRST;
        c.retry(t1);
        assert!(c.request(3, t1 + CLAIM_RETRY_FIRST).is_none());
        assert!(c.request(3, t1 + CLAIM_RETRY_FIRST * 2).is_some());
        for id in 4..20 {
            c.retry(t1);
            assert!(
                c.request(id, t1 + CLAIM_RETRY).is_some(),
                "never more than CLAIM_RETRY"
            );
        }
        // Once held, the next refusal starts from the short wait again.
        c.claimed(vec![]);
        c.disconnected();
        let t2 = t1 + CLAIM_RETRY;
        assert!(c.request(30, t2).is_some());
        c.retry(t2);
        assert!(c.request(31, t2 + CLAIM_RETRY_FIRST).is_some());
    }

    #[test]
    fn the_root_volume_leaves_named_folders_alone() {
        let mut c = Claim::new(Volume::root(), "h:/r".into(), false);
        c.request(1, Instant::now());
        c.claimed(vec!["photos".into()]);
        assert!(c.leaves_alone("photos/a.jpg"));
        assert!(!c.leaves_alone("photos"));
        assert!(!c.leaves_alone("docs/a.txt"));
        assert_eq!(c.local("docs/a.txt"), Some("docs/a.txt"));
        assert_eq!(c.local("photos/a.jpg"), None);
    }
}
