//! Churn (docs/CONTRACT.md §4 Changes, Missed events): thousands of random operations in the source while
//! the watcher runs. Once it is quiet the listing, the source, the node's folders and index.txt
//! agree; renames of unchanged files move names without sending their bytes again.

use crate::harness::*;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(300);

/// A random member of `set`, if it has any.
fn pick<'a>(rng: &mut Rng, set: &'a BTreeSet<String>) -> Option<&'a String> {
    (!set.is_empty()).then(|| set.iter().nth(rng.below(set.len())).unwrap())
}

/// The source folder as the test thinks it is: files (relative names) only; folders are the
/// parents of files (empty folders hold nothing to store).
struct Churn {
    root: std::path::PathBuf,
    files: BTreeSet<String>,
    rng: Rng,
    fresh: u64,
}

impl Churn {
    fn fresh(&mut self, prefix: &str) -> String {
        self.fresh += 1;
        format!("{prefix}{}", self.fresh)
    }

    fn fresh_file(&mut self) -> String {
        let ext = ["txt", "mp3", "pdf", "bin", "md"][self.rng.below(5)];
        let stem = self.fresh("f");
        format!("{stem}.{ext}")
    }

    /// A folder: an existing one, or a new path up to three deep.
    fn some_dir(&mut self) -> String {
        if self.rng.below(3) > 0 {
            if let Some(d) = self.dirs().into_iter().nth(self.rng.below(8)) {
                return d;
            }
        }
        let depth = 1 + self.rng.below(3);
        (0..depth)
            .map(|_| self.fresh("d"))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn dirs(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for f in &self.files {
            let mut p = f.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                out.insert(parent.to_string());
                p = parent;
            }
        }
        let mut v: Vec<String> = out.into_iter().collect();
        // Shuffle a little so `nth` picks vary.
        if !v.is_empty() {
            let k = self.fresh as usize % v.len();
            v.rotate_left(k);
        }
        v
    }

    fn content(&mut self) -> Vec<u8> {
        let len = match self.rng.below(20) {
            0 => 0,
            1 => self.rng.below(3 << 20),
            _ => self.rng.below(20_000),
        };
        random_bytes(self.rng.next(), len)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.root.join(name)
    }

    fn create(&mut self) {
        let dir = self.some_dir();
        let name = format!("{dir}/{}", self.fresh_file());
        fs::create_dir_all(self.path(&dir)).unwrap();
        let bytes = self.content();
        fs::write(self.path(&name), bytes).unwrap();
        self.files.insert(name);
    }

    fn overwrite(&mut self) {
        let Some(name) = pick(&mut self.rng, &self.files).cloned() else {
            return;
        };
        let bytes = self.content();
        fs::write(self.path(&name), bytes).unwrap();
    }

    fn append(&mut self) {
        let Some(name) = pick(&mut self.rng, &self.files).cloned() else {
            return;
        };
        let bytes = random_bytes(self.rng.next(), 1 + self.rng.below(5000));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.path(&name))
            .unwrap();
        f.write_all(&bytes).unwrap();
    }

    fn rename_file(&mut self) {
        let Some(from) = pick(&mut self.rng, &self.files).cloned() else {
            return;
        };
        self.rename_file_from(from);
    }

    /// Renames `from` to a fresh name in an existing or a new folder; returns the new name.
    fn rename_file_from(&mut self, from: String) -> String {
        let dir = self.some_dir();
        let to = format!("{dir}/{}", self.fresh_file());
        fs::create_dir_all(self.path(&dir)).unwrap();
        fs::rename(self.path(&from), self.path(&to)).unwrap();
        self.files.remove(&from);
        self.files.insert(to.clone());
        to
    }

    fn rename_dir(&mut self) {
        let dirs = self.dirs();
        if dirs.is_empty() {
            return;
        }
        let from = dirs[self.rng.below(dirs.len())].clone();
        let to = match from.rsplit_once('/') {
            Some((parent, _)) => format!("{parent}/{}", self.fresh("r")),
            None => self.fresh("r"),
        };
        fs::rename(self.path(&from), self.path(&to)).unwrap();
        let prefix = format!("{from}/");
        let moved: Vec<String> = self
            .files
            .iter()
            .filter(|f| f.starts_with(&prefix))
            .cloned()
            .collect();
        for f in moved {
            self.files.remove(&f);
            self.files.insert(format!("{to}/{}", &f[prefix.len()..]));
        }
    }

    fn delete_dir(&mut self) {
        let dirs = self.dirs();
        if dirs.is_empty() {
            return;
        }
        let dir = dirs[self.rng.below(dirs.len())].clone();
        fs::remove_dir_all(self.path(&dir)).unwrap();
        let prefix = format!("{dir}/");
        self.files.retain(|f| !f.starts_with(&prefix));
    }

    fn delete_file(&mut self) {
        let Some(name) = pick(&mut self.rng, &self.files).cloned() else {
            return;
        };
        fs::remove_file(self.path(&name)).unwrap();
        self.files.remove(&name);
    }
}

fn ops() -> usize {
    std::env::var("DFS_CHURN_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

#[test]
fn churn_ends_with_everything_in_agreement_and_renames_send_no_bytes() {
    let seed = seed();
    println!("churn seed {seed} (DFS_SEED={seed} replays it)");
    let c = Cluster::start();
    let mut ch = Churn {
        root: c.source.clone(),
        files: BTreeSet::new(),
        rng: Rng::new(seed),
        fresh: 0,
    };
    let n = ops();
    let mut counts = [0usize; 7];
    let t0 = Instant::now();
    for i in 0..n {
        let op = if ch.files.len() < 20 {
            0
        } else {
            ch.rng.below(16)
        };
        let kind = match op {
            0..=4 => 0,
            5..=6 => 1,
            7..=8 => 2,
            9..=10 => 3,
            11 => 4,
            12 => 5,
            _ => 6,
        };
        // Deleting whole folders empties the tree fast: not too often.
        let kind = if kind == 5 && ch.files.len() < 60 {
            0
        } else {
            kind
        };
        match kind {
            0 => ch.create(),
            1 => ch.overwrite(),
            2 => ch.append(),
            3 => ch.rename_file(),
            4 => ch.rename_dir(),
            5 => ch.delete_dir(),
            _ => ch.delete_file(),
        }
        counts[kind] += 1;
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!(
        "churn: {n} operations in {:?}: create {}, overwrite {}, append {}, rename file {}, \
         rename folder {}, delete folder {}, delete file {}; {} files at the end",
        t0.elapsed(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        counts[5],
        counts[6],
        ch.files.len()
    );
    assert_eq!(
        tree_hashes(&c.source).into_keys().collect::<BTreeSet<_>>(),
        ch.files,
        "the test's model of the source"
    );
    c.wait_all_agree(SYNC);

    // Renames only, of files that are stored and unchanged: no content bytes go out. Each
    // file is renamed once (into an existing or a new folder), then folders are renamed one
    // after another.
    let log_at = c.watch.as_ref().unwrap().log_text().len();
    let files: Vec<String> = ch.files.iter().cloned().collect();
    let mut renames = 0;
    for (i, from) in files.into_iter().enumerate() {
        if i % 2 == 0 {
            ch.rename_file_from(from);
            renames += 1;
        }
    }
    c.wait_all_agree(SYNC);
    // One folder rename at a time: a folder renamed while a folder inside it is being renamed
    // (within milliseconds) may still fall back to an upload, which is correct but sends bytes.
    for _ in 0..10 {
        ch.rename_dir();
        renames += 1;
        c.wait_all_agree(SYNC);
    }
    let log = c.watch.as_ref().unwrap().log_text();
    let tail = &log[log_at..];
    let resent: Vec<&str> = tail
        .lines()
        .filter(|l| l.contains("synced ") || l.contains(" unchanged "))
        .collect();
    println!(
        "rename phase: {renames} renames, {} rename lines, {} content bytes sent",
        tail.lines().filter(|l| l.contains("renamed ")).count(),
        synced_bytes(tail)
    );
    assert_eq!(synced_bytes(tail), 0, "renames sent content bytes");
    assert!(resent.is_empty(), "renames re-sent files: {resent:#?}");
}
