//! Undoing an attack (docs/CONTRACT.md §8): a folder encrypted in place (every file rewritten,
//! half of them renamed, some deleted, a ransom note added) comes back exactly as it was with
//! one `dfs fetch --at`; running it again rewrites nothing, and after damage to the restored
//! tree it mends only what is missing or wrong.

use crate::harness::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

const SYNC: Duration = Duration::from_secs(120);

/// Name → inode of every file below `dir`: a file rewritten gets a new inode (the fetcher
/// renames a temporary file into place), a file left alone keeps its own.
fn inodes(dir: &Path) -> BTreeMap<String, u64> {
    tree_hashes(dir)
        .into_keys()
        .map(|n| {
            let ino = fs::metadata(dir.join(&n)).unwrap().ino();
            (n, ino)
        })
        .collect()
}

#[test]
fn a_folder_encrypted_in_place_is_restored_as_it_was_by_fetch_at() {
    let c = Cluster::start();
    // A folder of every class, nested, with an empty file; and a file outside it.
    for i in 0..40usize {
        let ext = ["txt", "mp3", "pdf", "doc"][i % 4];
        let dir = ["docs", "docs/a", "docs/a/b"][i % 3];
        let len = if i == 7 { 0 } else { 100 + i * 997 % 200_000 };
        let path = c.source.join(format!("{dir}/f{i}.{ext}"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(i as u64, len)).unwrap();
    }
    fs::write(c.source.join("outside.txt"), b"not in the folder").unwrap();
    c.wait_all_agree(SYNC);
    let before: BTreeMap<String, String> = tree_hashes(&c.source)
        .into_iter()
        .filter(|(n, _)| n.starts_with("docs/"))
        .collect();
    assert_eq!(before.len(), 40);
    // Not a wait for anything: the kernel stamps ctimes with a coarse clock (a few ms), so the
    // instant is taken clear of the last version's start and of the attack's first change.
    std::thread::sleep(Duration::from_millis(50));
    let instant = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(50));

    // The attack: every file rewritten in place; half then renamed to .locked, some deleted.
    for (i, name) in before.keys().enumerate() {
        let path = c.source.join(name);
        let mut bytes = fs::read(&path).unwrap();
        bytes.iter_mut().for_each(|b| *b ^= 0x5a);
        bytes.extend_from_slice(b"LOCKED");
        fs::write(&path, &bytes).unwrap();
        match i % 4 {
            0 | 1 => fs::rename(&path, c.source.join(format!("{name}.locked"))).unwrap(),
            2 if i % 8 == 2 => fs::remove_file(&path).unwrap(),
            _ => {}
        }
    }
    fs::write(c.source.join("docs/README_RANSOM.txt"), b"pay up").unwrap();
    c.wait_all_agree(SYNC);
    let now = c.listing();
    assert!(
        before
            .iter()
            .all(|(n, h)| now.get(n).is_none_or(|l| l.blake3 != *h)),
        "the attack reached the store: no file of before is current now"
    );

    // The listing of the past shows the folder as it was, ransom note and .locked files absent.
    let listed = c.fetch(&["--at", &instant, "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let then: BTreeMap<String, String> = parse_listing(&listed.stdout)
        .into_iter()
        .map(|(n, l)| (n, l.blake3))
        .collect();
    let mut expected = before.clone();
    expected.insert(
        "outside.txt".into(),
        blake3::hash(b"not in the folder").to_hex().to_string(),
    );
    assert_eq!(then, expected, "the listing as of {instant}");

    // Restore the folder as it was into a target: exactly the files of then, with their bytes.
    let target = c.dir.path().join("restored");
    let target_s = target.to_str().unwrap();
    let restore = || {
        let out = c.fetch(&["--at", &instant, "--target", target_s, "docs/**"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    restore();
    assert_eq!(tree_hashes(&target), before, "the restored folder");

    // Run again over the complete target: nothing is rewritten.
    let first = inodes(&target);
    restore();
    assert_eq!(inodes(&target), first, "a second run rewrote files");
    assert_eq!(tree_hashes(&target), before);

    // Damage: one file gone, one with other bytes of the same size, one cut short. Only those
    // are fetched again.
    let names: Vec<&String> = before.keys().filter(|n| !n.ends_with("f7.pdf")).collect();
    let (gone, changed, cut) = (names[0], names[1], names[2]);
    fs::remove_file(target.join(gone)).unwrap();
    let mut bytes = fs::read(target.join(changed)).unwrap();
    bytes[0] ^= 1;
    fs::write(target.join(changed), &bytes).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(target.join(cut))
        .unwrap();
    f.set_len(1).unwrap();
    drop(f);
    restore();
    assert_eq!(tree_hashes(&target), before, "the mended folder");
    let mended = inodes(&target);
    for (name, ino) in &first {
        if [gone, changed, cut].contains(&name) {
            continue;
        }
        assert_eq!(
            mended[name], *ino,
            "{name} was rewritten although it was whole"
        );
    }

    // The history knows what went: the renamed and deleted names, with their last version.
    let out = run_bounded(
        c.dir.path(),
        &[
            "history",
            "--broker",
            &c.broker_addr(),
            "--deleted",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["state"], "deleted", "{l}");
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    let gone_from_source: Vec<&String> = before
        .keys()
        .filter(|n| !c.source.join(n).exists())
        .collect();
    assert_eq!(deleted.len(), gone_from_source.len(), "{deleted:?}");
    assert!(
        gone_from_source.iter().all(|n| deleted.contains(n)),
        "{deleted:?}"
    );
}
