//! The history of stored names (docs/CONTRACT.md §8): every version that is replaced or deleted
//! is kept on the node for the retention period, outside `ROOT/<class>/`.
//!
//! ```text
//! ROOT/.dfs/objects/<2 hex>/<blake3 hex>     content, once per hash: a hard link to the inode
//!                                            of the version it was kept from (no bytes copied)
//! ROOT/.dfs/history/<class>/<name>.versions  one JSON line per version kept, oldest first
//! ```
//!
//! A version is kept before the change that replaces or removes it (the rename of a new version
//! over it, a delete, a move): its content is linked into the objects, that folder is fsynced,
//! then its record is appended and fsynced. A crash in between leaves at worst an object
//! without a record (removed by the next prune), never a change without its history. Identical
//! content is stored once: a revert, a move or a copy costs no new bytes. Only the node's
//! retention removes a version ([`History::prune`]); no message does.

use crate::error::StoreError;
use crate::meta::StoredMeta;
use disk::atomic::{fsync_dir, fsync_parent};
use schema::{Class, Hash};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Suffix of a name's history file.
const VERSIONS: &str = ".versions";

/// One kept version of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub size: u64,
    #[serde(with = "hex_hash")]
    pub blake3: Hash,
    /// Source modification time, ns since the Unix epoch.
    pub modified: i64,
    /// When it became current under this name (the inode's change time then), ns.
    pub since: i64,
    /// When it stopped being current (replaced, deleted or moved away), ns.
    pub until: i64,
    /// Whether it was deleted or moved away (no version followed at once).
    #[serde(default)]
    pub deleted: bool,
}

impl Version {
    /// The version as `history` reports it, kept in `class`.
    pub fn info(&self, class: Class) -> schema::VersionInfo {
        schema::VersionInfo {
            version: self.version,
            class,
            size: self.size,
            blake3: self.blake3,
            modified: self.modified,
            since: self.since,
            until: Some(self.until),
            deleted: self.deleted,
        }
    }

    /// The version as a listing entry of `name` in `class`.
    pub fn entry(&self, name: String, class: Class) -> schema::Entry {
        schema::Entry {
            name,
            class,
            size: self.size,
            blake3: self.blake3,
            modified: self.modified,
            version: self.version,
        }
    }
}

/// What a prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Versions past the retention period.
    pub versions: u64,
    /// Versions removed before their time to bring the history within its budget, oldest
    /// first, and when the newest of them stopped being current (ns).
    pub over_budget: u64,
    pub over_budget_until: i64,
    /// Bytes kept since the prune before began: their changes may still have been under way
    /// (a kept content counts as the history's alone once its current file is replaced), so
    /// with a budget another prune follows soon.
    pub kept_before: u64,
    /// Objects no kept version refers to any more, and their bytes.
    pub objects: u64,
    pub bytes: u64,
}

/// The node's history: where versions go, and how long they stay. Clones share one lock, so
/// that a prune and the sync workers' keeps never interleave on one file or object.
#[derive(Debug, Clone)]
pub struct History {
    objects: PathBuf,
    log: PathBuf,
    /// How long a replaced or deleted version stays; zero keeps none.
    keep: Duration,
    /// Most bytes the history may hold beyond the current files; `None`: no limit.
    budget: Option<u64>,
    lock: Arc<Mutex<Pruning>>,
}

/// What a running prune must know of the keeps made meanwhile, and what the pruner knows of
/// the history's size.
#[derive(Debug, Default)]
struct Pruning {
    running: bool,
    /// Hashes kept since the prune began: their objects stay.
    kept: HashSet<Hash>,
    /// Bytes the history alone held at the end of the last prune.
    held: u64,
    /// Bytes of the versions kept since (an upper bound: a content kept already costs none).
    added: u64,
}

impl History {
    /// The history under the storage `root`, keeping versions for `keep`.
    pub fn new(root: &Path, keep: Duration) -> History {
        let dfs = root.join(".dfs");
        History {
            objects: dfs.join("objects"),
            log: dfs.join("history"),
            keep,
            budget: None,
            lock: Arc::default(),
        }
    }

    /// The same history, holding at most `budget` bytes beyond the current files.
    pub fn with_budget(mut self, budget: Option<u64>) -> History {
        self.budget = budget;
        self
    }

    /// The history budget, if any.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Whether the versions kept since the last prune may have taken the history past its
    /// budget (so the pruner should run now).
    pub fn may_be_over_budget(&self) -> bool {
        let state = self.locked();
        self.budget
            .is_some_and(|b| state.held.saturating_add(state.added) > b)
    }

    /// How long versions are kept.
    pub fn keep_for(&self) -> Duration {
        self.keep
    }

    fn locked(&self) -> MutexGuard<'_, Pruning> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether versions are kept at all.
    pub fn is_on(&self) -> bool {
        !self.keep.is_zero()
    }

    /// Keeps the current file at `path` (stored as `meta.name` in `meta.class`) as a version
    /// that stops being current at `now` (ns); `deleted` says no new version follows it. Done
    /// before the change: when it fails, the change must not happen.
    pub fn keep(
        &self,
        path: &Path,
        meta: &StoredMeta,
        now: i64,
        deleted: bool,
    ) -> Result<(), StoreError> {
        if !self.is_on() {
            return Ok(());
        }
        let mut state = self.locked();
        if state.running {
            state.kept.insert(meta.blake3);
        }
        let info = fs::metadata(path).map_err(|e| StoreError::io("look at", path, e))?;
        state.added = state.added.saturating_add(info.len());
        let since = changed_ns(&info);
        self.link_object(path, &meta.blake3)?;
        let record = Version {
            version: meta.version,
            size: info.len(),
            blake3: meta.blake3,
            modified: meta.modified,
            since,
            until: now,
            deleted,
        };
        self.append(meta.class, &meta.name, &record)
    }

    /// The folder of the history files of `class` (`<name>.versions` below it).
    pub fn class_dir(&self, class: Class) -> PathBuf {
        self.log.join(class.as_str())
    }

    /// The suffix of a name's history file.
    pub const SUFFIX: &'static str = VERSIONS;

    /// The kept versions of `name` in `class`, oldest first. A torn last line (a crash while it
    /// was appended) is skipped.
    pub fn versions(&self, class: Class, name: &str) -> Result<Vec<Version>, StoreError> {
        let path = self.log_path(class, name)?;
        read_versions(&path)
    }

    /// Every version of `name` the node holds, oldest first: those kept in the history of any
    /// class, then the current one (the file at `current`, with its metadata), if any.
    pub fn report(
        &self,
        name: &str,
        current: Option<(&Path, &schema::Entry)>,
    ) -> Result<Vec<schema::VersionInfo>, StoreError> {
        let mut all = Vec::new();
        for class in Class::ALL {
            all.extend(self.versions(class, name)?.iter().map(|v| v.info(class)));
        }
        all.sort_by_key(|v| (v.until, v.version));
        if let Some((path, e)) = current {
            let since = fs::metadata(path).map(|m| changed_ns(&m)).unwrap_or(0);
            all.push(schema::VersionInfo {
                version: e.version,
                class: e.class,
                size: e.size,
                blake3: e.blake3,
                modified: e.modified,
                since,
                until: None,
                deleted: false,
            });
        }
        Ok(all)
    }

    /// The kept version `version` of `name`, from the history of any class.
    pub fn find(&self, name: &str, version: u64) -> Result<Option<(Class, Version)>, StoreError> {
        for class in Class::ALL {
            if let Some(v) = self
                .versions(class, name)?
                .into_iter()
                .rev()
                .find(|v| v.version == version)
            {
                return Ok(Some((class, v)));
            }
        }
        Ok(None)
    }

    /// The objects kept, and the bytes of those only the history holds (an object that is also
    /// a current file, hard-linked, costs nothing more).
    pub fn usage(&self) -> (u64, u64) {
        let (mut objects, mut bytes) = (0, 0);
        if !self.objects.is_dir() {
            return (0, 0);
        }
        for entry in walkdir::WalkDir::new(&self.objects)
            .min_depth(2)
            .max_depth(2)
        {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            objects += 1;
            if meta.nlink() == 1 {
                bytes += meta.len();
            }
        }
        (objects, bytes)
    }

    /// The path of the content with hash `blake3`, if kept.
    pub fn object(&self, blake3: &Hash) -> Option<PathBuf> {
        let path = self.object_path(blake3);
        path.is_file().then_some(path)
    }

    /// Removes the versions that stopped being current more than the retention period before
    /// `now` (ns), then every object no kept version refers to.
    pub fn prune(&self, now: i64) -> Result<Pruned, StoreError> {
        let kept_before = {
            let mut state = self.locked();
            state.running = true;
            std::mem::take(&mut state.added)
        };
        let result = self.prune_pass(now).map(|mut p| {
            p.kept_before = kept_before;
            p
        });
        let mut state = self.locked();
        state.running = false;
        state.kept.clear();
        if result.is_ok() {
            state.held = self.usage().1;
        }
        result
    }

    fn prune_pass(&self, now: i64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let keep_ns = i64::try_from(self.keep.as_nanos()).unwrap_or(i64::MAX);
        let horizon = now.saturating_sub(keep_ns);
        let mut records = self.expire(horizon, &mut pruned)?;
        if let Some(budget) = self.budget {
            self.trim_to(budget, &mut records, &mut pruned)?;
        }
        let live: HashSet<Hash> = records.into_iter().map(|(_, h)| h).collect();
        self.sweep_objects(&live, &mut pruned)?;
        Ok(pruned)
    }

    /// Every history file, with a closure given its path and records under the lock; the
    /// closure returns the records to keep (the file is rewritten when they differ).
    fn each_file(&self, mut f: impl FnMut(&[Version]) -> Vec<Version>) -> Result<u64, StoreError> {
        let mut removed = 0;
        if !self.log.is_dir() {
            return Ok(0);
        }
        for entry in walkdir::WalkDir::new(&self.log) {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&self.log).to_path_buf();
                StoreError::io("walk", &path, e.into())
            })?;
            let path = entry.path();
            if !entry.file_type().is_file() || !path.to_string_lossy().ends_with(VERSIONS) {
                continue;
            }
            let _file = self.locked();
            let all = read_versions(path)?;
            let kept = f(&all);
            if kept.len() != all.len() {
                removed += (all.len() - kept.len()) as u64;
                rewrite(path, &kept)?;
            }
        }
        Ok(removed)
    }

    /// Removes the records that stopped being current before `horizon`.
    /// Returns when each record left stopped being current, and its content's hash.
    fn expire(&self, horizon: i64, pruned: &mut Pruned) -> Result<Vec<(i64, Hash)>, StoreError> {
        let mut records = Vec::new();
        pruned.versions += self.each_file(|all| {
            let kept: Vec<Version> = all.iter().filter(|v| v.until > horizon).cloned().collect();
            records.extend(kept.iter().map(|v| (v.until, v.blake3)));
            kept
        })?;
        Ok(records)
    }

    /// Removes the oldest records (by when they stopped being current) until the bytes held by
    /// the history alone are within `budget`. A content is freed when its last record goes and
    /// no current file shares its inode.
    /// `records` are those left after the retention (when each stopped being current, and its
    /// hash); the ones removed here leave it too.
    fn trim_to(
        &self,
        budget: u64,
        records: &mut Vec<(i64, Hash)>,
        pruned: &mut Pruned,
    ) -> Result<(), StoreError> {
        let mut refs: std::collections::HashMap<Hash, usize> = Default::default();
        for (_, hash) in records.iter() {
            *refs.entry(*hash).or_default() += 1;
        }
        // Objects of no record (expired just now) go in the sweep anyway: not counted.
        let only_history = self.history_only_objects();
        let mut held: u64 = only_history
            .iter()
            .filter(|(h, _)| refs.contains_key(*h))
            .map(|(_, size)| size)
            .sum();
        if held <= budget {
            return Ok(());
        }
        records.sort_by_key(|r| r.0);
        // The records removed are all those that stopped being current up to a cut-off.
        let mut cut = None;
        for (until, hash) in records.iter() {
            if held <= budget {
                break;
            }
            let n = refs.entry(*hash).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                held = held.saturating_sub(only_history.get(hash).copied().unwrap_or(0));
            }
            cut = Some(*until);
        }
        let Some(cut) = cut else { return Ok(()) };
        pruned.over_budget +=
            self.each_file(|all| all.iter().filter(|v| v.until > cut).cloned().collect())?;
        pruned.over_budget_until = cut;
        records.retain(|(until, _)| *until > cut);
        Ok(())
    }

    /// The objects no current file shares (one link), with their sizes.
    fn history_only_objects(&self) -> std::collections::HashMap<Hash, u64> {
        let mut out = std::collections::HashMap::new();
        if !self.objects.is_dir() {
            return out;
        }
        for entry in walkdir::WalkDir::new(&self.objects)
            .min_depth(2)
            .max_depth(2)
        {
            let Ok(entry) = entry else { continue };
            let Ok(hash) = entry.file_name().to_string_lossy().parse::<Hash>() else {
                continue;
            };
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() && meta.nlink() == 1 {
                    out.insert(hash, meta.len());
                }
            }
        }
        out
    }

    /// Removes every object no record refers to (`live`: the hashes of the records left), nor
    /// a keep made during this prune.
    fn sweep_objects(&self, live: &HashSet<Hash>, pruned: &mut Pruned) -> Result<(), StoreError> {
        if self.objects.is_dir() {
            for entry in walkdir::WalkDir::new(&self.objects)
                .min_depth(2)
                .max_depth(2)
            {
                let Ok(entry) = entry else { continue };
                let name = entry.file_name().to_string_lossy();
                let Ok(hash) = name.parse::<Hash>() else {
                    continue;
                };
                let state = self.locked();
                if live.contains(&hash) || state.kept.contains(&hash) {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path())
                    .map_err(|e| StoreError::io("remove", entry.path(), e))?;
                pruned.objects += 1;
                pruned.bytes += size;
            }
        }
        Ok(())
    }

    fn object_path(&self, blake3: &Hash) -> PathBuf {
        let hex = blake3.to_string();
        self.objects.join(&hex[..2]).join(hex)
    }

    fn log_path(&self, class: Class, name: &str) -> Result<PathBuf, StoreError> {
        let dir = self.log.join(class.as_str());
        let path = schema::names::to_path(&dir, name)?;
        let mut os = path.into_os_string();
        os.push(VERSIONS);
        Ok(PathBuf::from(os))
    }

    /// Links `path` into the objects as `blake3`, unless that content is kept already.
    fn link_object(&self, path: &Path, blake3: &Hash) -> Result<(), StoreError> {
        let object = self.object_path(blake3);
        if object.is_file() {
            return Ok(());
        }
        let dir = object.parent().unwrap_or(&self.objects);
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
            fsync_parent(dir)?;
            fsync_parent(&self.objects)?;
        }
        match fs::hard_link(path, &object) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io("keep a version as", &object, e)),
        }
        fsync_dir(dir)?;
        Ok(())
    }

    /// Appends `record` to the history of `name` and makes it durable.
    fn append(&self, class: Class, name: &str, record: &Version) -> Result<(), StoreError> {
        let path = self.log_path(class, name)?;
        let dir = path.parent().unwrap_or(&self.log).to_path_buf();
        let created_dir = !dir.is_dir();
        if created_dir {
            fs::create_dir_all(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
        }
        let existed = path.exists();
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io("open", &path, e))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| StoreError::io("append to", &path, e))?;
        if !existed {
            fsync_dir(&dir)?;
        }
        if created_dir {
            // Every folder created up to the history root, so that the file is found after a
            // crash.
            let mut d = dir.as_path();
            while let Some(up) = d.parent() {
                fsync_dir(up)?;
                if up == self.log || !up.starts_with(&self.log) {
                    break;
                }
                d = up;
            }
        }
        Ok(())
    }
}

/// When the inode was last changed (its ctime), ns: when a stored file became current under
/// its name.
pub(crate) fn changed_ns(meta: &fs::Metadata) -> i64 {
    meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec()
}

/// Says what a prune removed, if anything.
fn log_pruned(history: &History, p: &Pruned) {
    if p.over_budget > 0 {
        tracing::warn!(
            "history: over its budget of {}: removed {} versions before their time, oldest \
             first (the newest of them stopped being current {})",
            bytesize::ByteSize(history.budget().unwrap_or(0)),
            p.over_budget,
            schema::time::rfc3339(p.over_budget_until.max(0)),
        );
    }
    if p.versions + p.objects > 0 {
        tracing::info!(
            "history: removed {} versions older than {} and {} objects ({} bytes)",
            p.versions,
            humantime::format_duration(history.keep_for()),
            p.objects,
            p.bytes
        );
    }
}

/// How often the retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the thread that prunes `history` at start and every [`PRUNE_EVERY`] until `stop`.
pub fn start_pruner(
    history: History,
    stop: daemon::Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("storage-prune".into())
        .spawn(move || {
            if !history.is_on() {
                return;
            }
            loop {
                let now = schema::time::to_ns(std::time::SystemTime::now());
                let last_kept_before = match history.prune(now) {
                    Ok(p) => {
                        log_pruned(&history, &p);
                        p.kept_before
                    }
                    Err(e) => {
                        tracing::warn!("history: pruning failed: {e}");
                        0
                    }
                };
                // A short retention (tests, trials) is kept to within about half its length;
                // with a budget, a prune that began while changes were under way is followed
                // by another soon, which sees them done.
                let mut every = PRUNE_EVERY
                    .min(history.keep_for() / 2)
                    .max(Duration::from_secs(1));
                if history.budget().is_some() && last_kept_before > 0 {
                    every = Duration::from_secs(1);
                }
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until {
                    if stop.is_triggered() {
                        return;
                    }
                    if history.may_be_over_budget() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(daemon::POLL_MS as u64));
                }
            }
        })
}

/// A hash in a record as its hex text (readable with `jq`, and what `b3sum` prints).
mod hex_hash {
    use schema::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(h)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The records of one history file; a torn or unreadable line is skipped with a warning.
pub(crate) fn read_versions(path: &Path) -> Result<Vec<Version>, StoreError> {
    match fs::read(path) {
        Ok(text) => Ok(parse_versions(&text, &path.display().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io("read", path, e)),
    }
}

/// The records of a history file's text (one JSON object a line); a torn or unreadable line is
/// skipped with a warning naming `what`.
pub(crate) fn parse_versions(text: &[u8], what: &str) -> Vec<Version> {
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        match serde_json::from_slice::<Version>(line) {
            Ok(v) => out.push(v),
            Err(e) if !line.trim_ascii().is_empty() => {
                tracing::warn!("{what}: skipping an unreadable version record: {e}");
            }
            Err(_) => {}
        }
    }
    out
}

/// The text of a history file holding `kept`.
pub(crate) fn encode_versions(kept: &[Version]) -> Vec<u8> {
    let mut text = Vec::new();
    for v in kept {
        text.extend(serde_json::to_vec(v).unwrap_or_default());
        text.push(b'\n');
    }
    text
}

/// Replaces the history file at `path` by `kept` (removed when empty), atomically.
fn rewrite(path: &Path, kept: &[Version]) -> Result<(), StoreError> {
    if kept.is_empty() {
        fs::remove_file(path).map_err(|e| StoreError::io("remove", path, e))?;
        return Ok(fsync_parent(path)?);
    }
    Ok(disk::atomic::replace_file(path, &encode_versions(kept))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    fn stored(dir: &Path, name: &str, content: &[u8], version: u64) -> (PathBuf, StoredMeta) {
        // As the node does: a new inode renamed over the old name, never a write in place.
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let temp = dir.join(".new");
        fs::write(&temp, content).unwrap();
        fs::rename(&temp, &path).unwrap();
        let meta = StoredMeta::new(name, Class::Txt, Hash::of(content), 7, version);
        (path, meta)
    }

    #[test]
    fn kept_versions_share_content_and_survive_until_their_time() {
        let root = tempfile::tempdir().unwrap();
        let h = History::new(root.path(), Duration::from_secs(30 * 86_400));
        let cur = root.path().join("txt");
        // v1 replaced, v2 replaced, v3 (the same bytes as v1) deleted.
        let (p, m1) = stored(&cur, "a/b.txt", b"one", 1);
        h.keep(&p, &m1, 10 * DAY, false).unwrap();
        let (p, m2) = stored(&cur, "a/b.txt", b"two", 2);
        h.keep(&p, &m2, 11 * DAY, false).unwrap();
        let (p, m3) = stored(&cur, "a/b.txt", b"one", 3);
        h.keep(&p, &m3, 12 * DAY, true).unwrap();
        fs::remove_file(&p).unwrap();

        let versions = h.versions(Class::Txt, "a/b.txt").unwrap();
        let summary: Vec<(u64, i64, bool)> = versions
            .iter()
            .map(|v| (v.version, v.until, v.deleted))
            .collect();
        assert_eq!(
            summary,
            [
                (1, 10 * DAY, false),
                (2, 11 * DAY, false),
                (3, 12 * DAY, true)
            ]
        );
        assert_eq!(versions[0].size, 3);
        // Identical content is stored once, and readable after the current file is gone.
        let one = h.object(&Hash::of(b"one")).unwrap();
        assert_eq!(fs::read(&one).unwrap(), b"one");
        assert_eq!(
            fs::read(h.object(&Hash::of(b"two")).unwrap()).unwrap(),
            b"two"
        );
        let objects = walkdir::WalkDir::new(root.path().join(".dfs/objects"))
            .into_iter()
            .filter(|e| e.as_ref().unwrap().file_type().is_file())
            .count();
        assert_eq!(objects, 2);

        // Nothing is due before 30 days; then the oldest go first, with their objects.
        let nothing = Pruned {
            kept_before: 9,
            ..Pruned::default()
        };
        assert_eq!(
            h.prune(39 * DAY).unwrap(),
            nothing,
            "the 9 bytes kept are counted"
        );
        let pruned = h.prune(41 * DAY + 1).unwrap();
        assert_eq!((pruned.versions, pruned.objects), (2, 1), "{pruned:?}");
        assert!(h.object(&Hash::of(b"two")).is_none());
        assert!(
            h.object(&Hash::of(b"one")).is_some(),
            "v3 still refers to it"
        );
        let left: Vec<u64> = h
            .versions(Class::Txt, "a/b.txt")
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(left, [3]);
        let pruned = h.prune(43 * DAY).unwrap();
        assert_eq!((pruned.versions, pruned.objects), (1, 1));
        assert!(h.versions(Class::Txt, "a/b.txt").unwrap().is_empty());
    }

    #[test]
    fn over_its_budget_the_history_loses_its_oldest_versions_first() {
        let root = tempfile::tempdir().unwrap();
        let h = History::new(root.path(), Duration::from_secs(30 * 86_400)).with_budget(Some(250));
        let cur = root.path().join("txt");
        // Four versions of 100 bytes replaced in turn: 400 bytes held by the history alone.
        for (i, day) in [1, 2, 3, 4].into_iter().enumerate() {
            let content = vec![b'a' + i as u8; 100];
            let (p, m) = stored(&cur, "f.txt", &content, i as u64 + 1);
            h.keep(&p, &m, day * DAY, false).unwrap();
        }
        let (last, _) = stored(&cur, "f.txt", &[b'z'; 100], 5);
        assert!(h.may_be_over_budget(), "400 bytes kept against 250");
        let pruned = h.prune(5 * DAY).unwrap();
        assert_eq!((pruned.versions, pruned.over_budget), (0, 2), "{pruned:?}");
        assert_eq!(pruned.over_budget_until, 2 * DAY);
        let left: Vec<u64> = h
            .versions(Class::Txt, "f.txt")
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(left, [3, 4], "the oldest went first");
        assert_eq!(h.usage(), (2, 200));
        assert!(h.object(&Hash::of(&[b'a'; 100])).is_none());
        assert!(!h.may_be_over_budget());
        assert_eq!(
            fs::read(&last).unwrap(),
            [b'z'; 100],
            "the current file stays"
        );
        // Within the budget nothing more goes.
        assert_eq!(h.prune(5 * DAY).unwrap(), Pruned::default());
    }

    #[test]
    fn a_torn_record_is_skipped_and_no_history_keeps_nothing() {
        let root = tempfile::tempdir().unwrap();
        let h = History::new(root.path(), Duration::from_secs(3600));
        let (p, m) = stored(&root.path().join("txt"), "x.txt", b"x", 1);
        h.keep(&p, &m, 5, false).unwrap();
        let log = h.log_path(Class::Txt, "x.txt").unwrap();
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"version\":2,\"si").unwrap();
        assert_eq!(h.versions(Class::Txt, "x.txt").unwrap().len(), 1);

        let off = History::new(root.path(), Duration::ZERO);
        let (p, m) = stored(&root.path().join("txt"), "y.txt", b"y", 1);
        off.keep(&p, &m, 5, false).unwrap();
        assert!(off.versions(Class::Txt, "y.txt").unwrap().is_empty());
    }
}
