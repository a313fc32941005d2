//! The watcher's decisions without a socket: each test drives a [`Watcher`] with the messages a
//! broker would send and the time, and checks what it left in its outbox and its table.

use crate::ignore::Ignores;
use crate::outbox::Out;
use crate::watcher::{Phase, Settings, Watcher};
use schema::limits::{CHUNK_SIZE, INLINE_MAX};
use schema::names::Volume;
use schema::{Class, Entry, ErrorCode, Hash, Message};
use std::path::Path;
use std::time::{Duration, Instant};

const DEBOUNCE: Duration = Duration::from_millis(100);

fn watcher(root: &Path, t0: Instant) -> Watcher {
    let settings = Settings {
        keep_deleted: false,
        debounce: DEBOUNCE,
        rescan_period: Duration::from_secs(600),
        max_in_flight: 16,
    };
    let ignores = Ignores::new(&[], true).unwrap();
    let claim = crate::claim::Claim::new(Volume::root(), "host:/src".into(), false);
    Watcher::new(
        root.to_path_buf(),
        settings,
        ignores,
        claim,
        "tcp://broker:1",
        t0,
    )
}

/// The messages the watcher left for the broker since the last call (pings left out).
fn sent(w: &mut Watcher) -> Vec<(Message, Option<Vec<u8>>)> {
    w.outbox
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Out::Send { msg, data, .. } if !matches!(msg, Message::Ping { .. }) => {
                Some((msg, data))
            }
            _ => None,
        })
        .collect()
}

/// A watcher of `root` whose broker answered and listed `entries`: the start-up is over.
fn running(root: &Path, entries: Vec<Entry>, t0: Instant) -> Watcher {
    let mut w = watcher(root, t0);
    w.tick(t0);
    assert!(
        matches!(w.outbox.messages()[..], [Message::Ping { .. }]),
        "a new watcher pings the broker first: {:?}",
        w.outbox.messages()
    );
    w.outbox.take();
    w.on_broker_message(Message::Pong { id: 1 }, t0);
    w.tick(t0);
    let out = sent(&mut w);
    let [(Message::Claim { id, .. }, None)] = out[..] else {
        panic!("once the broker answers, the watcher claims its volume: {out:?}");
    };
    let claimed = Message::Claimed {
        id,
        volumes: vec!["photos".into()],
    };
    w.on_broker_message(claimed, t0);
    w.tick(t0);
    let out = sent(&mut w);
    let [(
        Message::List {
            id, after: None, ..
        },
        None,
    )] = out[..]
    else {
        panic!("once the broker answers, its listing is asked for: {out:?}");
    };
    w.on_broker_message(
        Message::Listing {
            id,
            entries,
            more: false,
        },
        t0,
    );
    assert!(matches!(w.phase, Phase::Running));
    w
}

fn put_id(msg: &Message) -> u64 {
    match msg {
        Message::Put { id, .. } => *id,
        other => panic!("expected a put, got {other:?}"),
    }
}

#[test]
fn a_new_file_goes_inline_and_its_done_records_it_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("a.txt"), b"hello").unwrap();
    let t0 = Instant::now();
    let mut w = running(&root, Vec::new(), t0);
    w.tick(t0);
    let out = sent(&mut w);
    let [(
        put @ Message::Put {
            name, size, blake3, ..
        },
        Some(data),
    )] = &out[..]
    else {
        panic!("one inline put: {out:?}");
    };
    assert_eq!(
        (name.as_str(), *size, data.as_slice()),
        ("a.txt", 5, &b"hello"[..])
    );
    assert_eq!(*blake3, Some(Hash::of(b"hello")));
    let id = put_id(put);
    assert!(w.table.in_flight("a.txt"));

    w.on_broker_message(
        Message::Done {
            id,
            version: 3,
            unchanged: false,
        },
        t0,
    );
    let stored = w.table.stored("a.txt").expect("stored after its done");
    assert_eq!((stored.size, stored.blake3), (5, Hash::of(b"hello")));
    assert!(!w.table.in_flight("a.txt"));
    // Looked at once more after the debounce, and found in step: nothing is sent again.
    w.tick(t0 + DEBOUNCE * 2);
    assert!(sent(&mut w).is_empty());
}

#[test]
fn a_listed_file_in_step_is_not_sent_and_one_gone_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("same.txt"), b"same").unwrap();
    let meta = std::fs::metadata(root.join("same.txt")).unwrap();
    let entry = |name: &str| Entry {
        name: name.into(),
        class: Class::Txt,
        size: 4,
        blake3: Hash::of(b"same"),
        modified: crate::local::Stamp::of(&meta).modified,
        version: 1,
    };
    let t0 = Instant::now();
    let mut w = running(&root, vec![entry("same.txt"), entry("gone.txt")], t0);
    w.tick(t0);
    let out = sent(&mut w);
    let [(Message::Delete { name, .. }, None)] = &out[..] else {
        panic!("only the name gone from the folder is changed: {out:?}");
    };
    assert_eq!(name, "gone.txt");
}

#[test]
fn a_large_file_sends_chunks_only_under_credit_with_the_hash_last() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let size = 2 * CHUNK_SIZE + 10;
    assert!(size as u64 > INLINE_MAX);
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &content).unwrap();
    let t0 = Instant::now();
    let mut w = running(&root, Vec::new(), t0);
    w.tick(t0);
    let out = sent(&mut w);
    let [(put @ Message::Put { size: s, .. }, None)] = &out[..] else {
        panic!("a put without content: {out:?}");
    };
    assert_eq!(*s, size as u64);
    let id = put_id(put);

    w.on_broker_message(Message::Credit { id, chunks: 2 }, t0);
    let out = sent(&mut w);
    assert_eq!(out.len(), 2, "two chunks for two credits");
    for (i, (msg, data)) in out.iter().enumerate() {
        let Message::Chunk { offset, blake3, .. } = msg else {
            panic!("expected a chunk, got {msg:?}");
        };
        assert_eq!(*offset, (i * CHUNK_SIZE) as u64);
        assert_eq!(data.as_ref().map(Vec::len), Some(CHUNK_SIZE));
        assert_eq!(*blake3, None, "only the last chunk carries the hash");
    }
    w.on_broker_message(Message::Credit { id, chunks: 5 }, t0);
    let out = sent(&mut w);
    let [(Message::Chunk { offset, blake3, .. }, Some(data))] = &out[..] else {
        panic!("the last chunk, once: {out:?}");
    };
    assert_eq!((*offset, data.len()), ((2 * CHUNK_SIZE) as u64, 10));
    assert_eq!(*blake3, Some(Hash::of(&content)));
}

/// A running watcher whose folder holds `a.txt`, with the inline put of it sent: the folder
/// (keep it), the watcher, the put and when.
fn one_put_sent() -> (tempfile::TempDir, Watcher, Message, Instant) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("a.txt"), b"hello").unwrap();
    let t0 = Instant::now();
    let mut w = running(&root, Vec::new(), t0);
    w.tick(t0);
    let mut out = sent(&mut w);
    assert_eq!(out.len(), 1, "one put: {out:?}");
    (dir, w, out.remove(0).0, t0)
}

/// Whether `out` is exactly one inline put of `a.txt`.
fn is_put_of_a(out: &[(Message, Option<Vec<u8>>)]) -> bool {
    matches!(out, [(Message::Put { name, .. }, Some(_))] if name == "a.txt")
}

#[test]
fn a_failed_send_starts_an_outage_that_puts_the_change_back() {
    let (_dir, mut w, put, t0) = one_put_sent();
    w.send_failed(&put, zmq::Error::EAGAIN, t0);
    assert!(!w.link.is_up());
    assert!(w.flights.is_empty(), "nothing is in flight in an outage");
    assert!(!w.table.in_flight("a.txt"));
    // While down only pings go out; once the broker answers, the watcher claims its volume
    // again (the connection may be a new one), then the file goes again.
    let t1 = t0 + Duration::from_secs(1);
    w.tick(t1);
    assert!(sent(&mut w).is_empty());
    w.on_broker_message(Message::Pong { id: 99 }, t1);
    w.tick(t1);
    let out = sent(&mut w);
    let [(Message::Claim { id, .. }, None)] = out[..] else {
        panic!("claims again first: {out:?}");
    };
    w.on_broker_message(
        Message::Claimed {
            id,
            volumes: vec![],
        },
        t1,
    );
    w.tick(t1);
    let out = sent(&mut w);
    assert!(is_put_of_a(&out), "{out:?}");
}

#[test]
fn a_change_refused_for_want_of_a_claim_claims_again_and_a_refused_claim_stops() {
    let (_dir, mut w, put, t0) = one_put_sent();
    let refusal = Message::error(put_id(&put), ErrorCode::Forbidden, "claim first");
    w.on_broker_message(refusal, t0);
    w.tick(t0);
    assert!(sent(&mut w).is_empty(), "not at once");
    let t1 = t0 + Duration::from_secs(1);
    w.tick(t1);
    let out = sent(&mut w);
    let [(Message::Claim { id, .. }, None)] = out[..] else {
        panic!("claims again: {out:?}");
    };
    let owned = "the root volume is owned by host:/elsewhere";
    w.on_broker_message(Message::error(id, ErrorCode::Forbidden, owned), t1);
    assert_eq!(
        w.claim.refusal(),
        Some(owned),
        "the watcher stops with this line"
    );
    w.tick(t1 + Duration::from_secs(5));
    assert!(sent(&mut w).is_empty(), "nothing is sent once refused");
}

#[test]
fn a_named_volume_lists_and_sends_only_its_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("a.jpg"), b"new").unwrap();
    let t0 = Instant::now();
    let mut w = watcher(&root, t0);
    w.claim = crate::claim::Claim::new(
        schema::names::Volume::named("photos").unwrap(),
        "h:/p".into(),
        false,
    );
    w.tick(t0);
    w.outbox.take();
    w.on_broker_message(Message::Pong { id: 1 }, t0);
    w.tick(t0);
    let out = sent(&mut w);
    let [(Message::Claim { id, ref volume, .. }, None)] = out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(volume, "photos");
    let claimed = Message::Claimed {
        id,
        volumes: vec!["photos".into()],
    };
    w.on_broker_message(claimed, t0);
    w.tick(t0);
    let out = sent(&mut w);
    let [(Message::List { id, .. }, None)] = out[..] else {
        panic!("{out:?}");
    };
    let entry = |name: &str| Entry {
        name: name.into(),
        class: Class::Others,
        size: 3,
        blake3: Hash::of(b"old"),
        modified: 1,
        version: 1,
    };
    // Another volume's name and a root name are none of this watcher's business.
    let entries = vec![entry("b.jpg"), entry("photos/gone.jpg"), entry("zzz/c.jpg")];
    w.on_broker_message(
        Message::Listing {
            id,
            entries,
            more: false,
        },
        t0,
    );
    assert!(matches!(w.phase, Phase::Running));
    let later = t0 + Duration::from_secs(1);
    w.tick(later);
    let out = sent(&mut w);
    let mut names: Vec<String> = out
        .iter()
        .map(|(m, _)| match m {
            Message::Put { name, .. } | Message::Delete { name, .. } => name.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    names.sort();
    assert_eq!(names, ["photos/a.jpg", "photos/gone.jpg"], "{out:?}");
}

#[test]
fn a_store_wide_refusal_holds_the_name_until_a_probe() {
    let (_dir, mut w, put, t0) = one_put_sent();
    let id = put_id(&put);
    let refusal = Message::error(id, ErrorCode::Unavailable, "node down");
    w.on_broker_message(refusal, t0);
    assert!(w.store_outage.as_ref().is_some_and(|o| o.held_count() == 1));
    w.tick(t0);
    assert!(sent(&mut w).is_empty(), "held, not retried at once");
    let probe = w
        .store_outage
        .as_ref()
        .and_then(|o| o.next_probe())
        .unwrap();
    w.tick(probe);
    w.tick(probe);
    let out = sent(&mut w);
    assert!(
        is_put_of_a(&out),
        "the probe lets the held name through: {out:?}"
    );
}

#[test]
fn a_refusal_for_the_file_itself_is_not_retried_until_it_changes() {
    let (_dir, mut w, put, t0) = one_put_sent();
    let id = put_id(&put);
    w.on_broker_message(Message::error(id, ErrorCode::BadName, "no"), t0);
    w.table.mark("a.txt", t0);
    w.tick(t0 + Duration::from_secs(60));
    assert!(sent(&mut w).is_empty(), "refused names wait for a change");
}
