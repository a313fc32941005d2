//! kill -9 of any role at any moment (docs/CONTRACT.md §4 Atomicity, Durability): nothing acknowledged is
//! lost, nothing partial or foreign is ever visible under a final name on the node, and once
//! every role is back the listing, the node's folders and index.txt equal the source.

use crate::harness::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(300);

fn env_secs(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

/// The bytes of version `version` of `name`: size and content follow from both, so every
/// version's hash is known before it is written.
fn version_bytes(name: &str, version: u64) -> Vec<u8> {
    let h = blake3::hash(format!("{name}#{version}").as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap());
    let len = match x % 10 {
        0 => 0,
        1..=5 => (x >> 8) % 4096,
        6..=8 => (x >> 8) % (1 << 20),
        _ => (x >> 8) % (8 << 20),
    };
    random_bytes(x, len as usize)
}

/// Every version written for each name: name → hashes (registered before the write starts).
type Versions = Arc<Mutex<HashMap<String, HashSet<String>>>>;

/// Polls the node's class folders until `stop`: every file under a final name must be a version
/// written for that name, under the class folder its name routes to. Returns the passes made.
fn check_node(root: std::path::PathBuf, versions: Versions, stop: Arc<AtomicBool>) -> u64 {
    let mut passes = 0;
    // A stored file is replaced by rename, never changed in place: one look per inode.
    let mut seen: HashMap<(String, u64), ()> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        for class in ["mp3", "txt", "pdf", "others"] {
            let dir = root.join(class);
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                let Ok(rd) = fs::read_dir(&d) else { continue };
                for e in rd.flatten() {
                    let p = e.path();
                    let Ok(ft) = e.file_type() else { continue };
                    if ft.is_dir() {
                        stack.push(p);
                        continue;
                    }
                    let name = p.strip_prefix(&dir).unwrap().to_str().unwrap().to_string();
                    // Opened once: the bytes read are those of one inode, whatever renames follow.
                    let Ok(mut f) = fs::File::open(&p) else {
                        continue;
                    };
                    let Ok(meta) = f.metadata() else { continue };
                    if seen.contains_key(&(name.clone(), meta.ino())) {
                        continue;
                    }
                    let mut h = blake3::Hasher::new();
                    std::io::copy(&mut f, &mut h).unwrap();
                    let hash = h.finalize().to_hex().to_string();
                    assert_eq!(
                        class,
                        class_of(&name),
                        "{name} under the wrong class folder"
                    );
                    let known = versions
                        .lock()
                        .unwrap()
                        .get(&name)
                        .is_some_and(|v| v.contains(&hash));
                    assert!(
                        known,
                        "torn or foreign file on the node: {class}/{name} ({} bytes, {hash})",
                        meta.len()
                    );
                    seen.insert((name, meta.ino()), ());
                }
            }
        }
        passes += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    passes
}

/// Checks the history the node kept through the kills: every record names a version written
/// for its name, and its object holds exactly those bytes. Only the last line of a history
/// file may be torn (a kill during its append; the node skips it). Returns the records checked.
fn check_history(root: &std::path::Path, versions: &Versions) -> usize {
    let log = root.join(".dfs/history");
    let versions = versions.lock().unwrap();
    let mut checked = 0;
    for class in ["mp3", "txt", "pdf", "others"] {
        let dir = log.join(class);
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(&dir).unwrap().to_str().unwrap();
                let name = rel.strip_suffix(".versions").expect("a history file");
                // The retention prunes while this reads: a file or an object gone meanwhile is
                // fine as long as its record went first.
                let Ok(text) = fs::read_to_string(&p) else {
                    continue;
                };
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in lines.iter().enumerate() {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                        assert_eq!(i + 1, lines.len(), "{name}: a torn record before the last");
                        continue;
                    };
                    let hex = v["blake3"].as_str().unwrap();
                    assert!(
                        versions.get(name).is_some_and(|s| s.contains(hex)),
                        "{name}: the history kept {hex}, not a version written for it"
                    );
                    let object = root.join(".dfs/objects").join(&hex[..2]).join(hex);
                    let bytes = match fs::read(&object) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            let still = fs::read_to_string(&p)
                                .is_ok_and(|now| now.lines().any(|l| l == *line));
                            assert!(!still, "{name}: object {hex} of a record: {e}");
                            continue;
                        }
                    };
                    assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hex, "{name}");
                    checked += 1;
                }
            }
        }
    }
    checked
}

/// Starts the writer thread: until `stop`, rewrites one of a few dozen names (nested folders,
/// every class) in place every 10–200 ms, registering each version before writing it.
fn start_writer(
    c: &Cluster,
    versions: &Versions,
    stop: &Arc<AtomicBool>,
    written: &Arc<AtomicU64>,
    seed: u64,
) -> std::thread::JoinHandle<()> {
    let names: Vec<String> = (0..36)
        .map(|i| {
            let dir = ["", "a/", "a/b/", "c/d/e/"][i % 4];
            let ext = ["txt", "mp3", "pdf", "bin", "TXT", ""][i % 6];
            if ext.is_empty() {
                format!("{dir}n{i}")
            } else {
                format!("{dir}n{i}.{ext}")
            }
        })
        .collect();
    let (source, versions, stop, written) = (
        c.source.clone(),
        versions.clone(),
        stop.clone(),
        written.clone(),
    );
    let mut rng = Rng::new(seed ^ 0x5eed);
    std::thread::spawn(move || {
        let mut next_version: BTreeMap<&str, u64> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            let name = &names[rng.range(0, names.len() as u64) as usize];
            let v = next_version.entry(name).or_insert(0);
            *v += 1;
            let bytes = version_bytes(name, *v);
            versions
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_default()
                .insert(blake3::hash(&bytes).to_hex().to_string());
            let p = source.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            // In place, as most programs write: truncate, then write.
            fs::write(&p, &bytes).unwrap();
            written.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(rng.range(10, 200)));
        }
    })
}

/// Starts the checker thread.
fn start_checker(
    c: &Cluster,
    versions: &Versions,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let (root, versions, stop) = (c.root.clone(), versions.clone(), stop.clone());
    std::thread::spawn(move || check_node(root, versions, stop))
}

#[test]
fn kill_loop_loses_nothing_and_tears_nothing() {
    let seed = seed();
    println!("kill loop seed {seed} (DFS_SEED={seed} replays it)");
    let length = env_secs("DFS_KILL_LOOP_SECS", 60);
    let mut c = Cluster::start();
    let versions: Versions = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));

    let writer = start_writer(&c, &versions, &stop, &written, seed);
    let checker = start_checker(&c, &versions, &stop);

    let mut rng = Rng::new(seed);
    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    let t0 = Instant::now();
    while t0.elapsed() < length {
        std::thread::sleep(Duration::from_millis(rng.range(2000, 5000)));
        let role = Role::ALL[rng.range(0, 3) as usize];
        c.kill9(role);
        c.restart(role);
        *kills
            .entry(["watcher", "broker", "storage"][role as usize])
            .or_default() += 1;
        assert!(
            !checker.is_finished(),
            "the checker failed (see its panic above)"
        );
    }
    // Every role stays up; the writer stops, and the store catches up.
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let check_stop = Arc::new(AtomicBool::new(false));
    let passes = checker
        .join()
        .expect("the node held a torn or foreign file");
    let final_checker = start_checker(&c, &versions, &check_stop);
    c.wait_all_agree(SYNC);
    check_stop.store(true, Ordering::SeqCst);
    let final_passes = final_checker
        .join()
        .expect("the node held a torn or foreign file");
    let kept = check_history(&c.root, &versions);
    println!(
        "kill loop: seed {seed}, {:?}, kills {kills:?}, {} versions written, {} checker passes, \
         {kept} kept versions whole",
        t0.elapsed(),
        written.load(Ordering::SeqCst),
        passes + final_passes
    );
    assert!(
        kept > 0,
        "the history kept the versions replaced during the loop"
    );
    assert!(
        kills.values().sum::<u32>() >= 3,
        "the loop killed something"
    );
    for role in Role::ALL {
        assert!(c.proc_of(role).is_running(), "{role:?} still up at the end");
    }
}

/// SIGKILL of each role while a 300 MiB file is about half transferred; after the restart the
/// file arrives whole, and nothing partial was ever visible under its final name.
#[test]
fn kill_each_role_mid_way_through_a_large_file() {
    const BIG: usize = 300 << 20;
    let mut c = Cluster::start();
    let versions: Versions = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let checker = start_checker(&c, &versions, &stop);
    let name = "video/huge.bin";
    for (round, role) in Role::ALL.into_iter().enumerate() {
        // The hash is computed while writing; register it before the node can have it.
        let path = c.source.join(name);
        let seed = 1000 + round as u64;
        let mut h = blake3::Hasher::new();
        for i in 0..(BIG >> 20) as u64 {
            h.update(&random_bytes(seed + i, 1 << 20));
        }
        let hash = h.finalize().to_hex().to_string();
        versions
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .insert(hash.clone());
        // The file is written on a thread while this one watches the node: the watcher may
        // send a large file while it is being written (it follows it), so the half-way point can
        // come before the write ends, and the transfer may be done soon after.
        let at = std::thread::scope(|scope| {
            let writer = scope.spawn(|| write_big_file(&path, seed, BIG));
            wait_until(&format!("{name} about half transferred"), SYNC, || {
                c.node_tmp_bytes() >= (BIG / 2) as u64
            });
            let at = c.node_tmp_bytes();
            c.kill9(role);
            assert_eq!(writer.join().expect("the writer thread failed"), hash);
            at
        });
        println!("killed {role:?} with {at} bytes of {BIG} on the node");
        c.restart(role);
        c.wait_all_agree(SYNC);
        assert_eq!(file_hash(&c.root.join("others").join(name)), hash);
        assert!(!checker.is_finished(), "the checker failed");
    }
    stop.store(true, Ordering::SeqCst);
    let passes = checker
        .join()
        .expect("the node held a torn or foreign file");
    println!("large-file kills: 3 rounds, {passes} checker passes");
}

/// Files below `dir`, recursively.
fn files_below(dir: &std::path::Path) -> usize {
    tree_hashes(dir).len()
}

/// kill -9 of the storage node while its retention prunes (a retention of 1 s: it prunes every
/// second while versions are being replaced): every record left is whole, and once the writes
/// stop the retention empties the history, objects included, the current files untouched.
#[test]
fn kill_storage_while_the_history_is_pruned() {
    let seed = seed();
    println!("prune kill seed {seed} (DFS_SEED={seed} replays it)");
    let mut c = Cluster::start_with_storage_args(&["--keep-history", "1s"]);
    let versions: Versions = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = start_writer(&c, &versions, &stop, &written, seed);
    let mut rng = Rng::new(seed);
    let t0 = Instant::now();
    let mut kills = 0;
    while t0.elapsed() < env_secs("DFS_PRUNE_KILL_SECS", 12) {
        std::thread::sleep(Duration::from_millis(rng.range(1000, 3000)));
        c.kill9(Role::Storage);
        c.restart(Role::Storage);
        kills += 1;
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    c.wait_all_agree(SYNC);
    let kept = check_history(&c.root, &versions);
    let dfs = c.root.join(".dfs");
    wait_until(
        "the retention empties the history after the kills",
        Duration::from_secs(60),
        || files_below(&dfs.join("history")) == 0 && files_below(&dfs.join("objects")) == 0,
    );
    c.wait_all_agree(SYNC);
    println!(
        "prune kills: {kills}, {} versions written, {kept} records whole at the end of the writes",
        written.load(Ordering::SeqCst)
    );
    assert!(kills >= 3, "the loop killed the node");
}
