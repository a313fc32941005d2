//! The mass-change alarm (docs/CONTRACT.md §8): a folder rewritten in place all at once (the
//! shape of a ransomware attack) makes the broker warn and `dfs status` exit 1; copying in many
//! new files does not.

use crate::harness::*;
use std::fs;
use std::time::Duration;

fn status(c: &Cluster) -> std::process::Output {
    let addr = c.broker_addr();
    run_bounded(
        c.dir.path(),
        &["status", "--broker", &addr, "--timeout", "20"],
        Duration::from_secs(60),
    )
}

#[test]
fn a_folder_rewritten_at_once_raises_the_alarm_and_new_files_do_not() {
    let c = Cluster::start();
    // 1,000 new files: a big copy, not an attack.
    for i in 0..1000 {
        fs::write(
            c.source.join(format!("doc{i:04}.txt")),
            format!("report {i}"),
        )
        .unwrap();
    }
    wait_until("1,000 files stored", Duration::from_secs(120), || {
        c.listing().len() == 1000
    });
    let calm = status(&c);
    assert_eq!(
        calm.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&calm.stderr)
    );

    // Every file "encrypted" in place, then a ransom note.
    for i in 0..600 {
        fs::write(
            c.source.join(format!("doc{i:04}.txt")),
            format!("xx{i}xx encrypted"),
        )
        .unwrap();
    }
    fs::write(c.source.join("READ_ME.txt"), "pay up").unwrap();
    // The watcher sends them in its own order: wait until every rewrite is stored.
    let encrypted: Vec<(String, String)> = (0..600)
        .map(|i| {
            let hash = blake3::hash(format!("xx{i}xx encrypted").as_bytes());
            (format!("doc{i:04}.txt"), hash.to_hex().to_string())
        })
        .collect();
    wait_until("the rewrites are stored", Duration::from_secs(120), || {
        let listed = c.listing();
        encrypted
            .iter()
            .all(|(name, hash)| listed.get(name).is_some_and(|l| &l.blake3 == hash))
    });
    let alarmed = status(&c);
    let err = String::from_utf8_lossy(&alarmed.stderr);
    assert_eq!(alarmed.status.code(), Some(1), "{err}");
    assert!(err.contains("mass change in the root volume"), "{err}");
    let log = c.broker.as_ref().unwrap().log_text();
    let warnings = log.lines().filter(|l| l.contains("mass change:")).count();
    assert_eq!(warnings, 1, "warned once: {log}");
}
