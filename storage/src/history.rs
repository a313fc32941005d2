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
use std::io::{self, BufRead, Write};
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

/// What a prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Versions past the retention period.
    pub versions: u64,
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
    lock: Arc<Mutex<Pruning>>,
}

/// What a running prune must know of the keeps made meanwhile.
#[derive(Debug, Default)]
struct Pruning {
    running: bool,
    /// Hashes kept since the prune began: their objects stay.
    kept: HashSet<Hash>,
}

impl History {
    /// The history under the storage `root`, keeping versions for `keep`.
    pub fn new(root: &Path, keep: Duration) -> History {
        let dfs = root.join(".dfs");
        History {
            objects: dfs.join("objects"),
            log: dfs.join("history"),
            keep,
            lock: Arc::default(),
        }
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
            for v in self.versions(class, name)? {
                all.push(schema::VersionInfo {
                    version: v.version,
                    class,
                    size: v.size,
                    blake3: v.blake3,
                    modified: v.modified,
                    since: v.since,
                    until: Some(v.until),
                    deleted: v.deleted,
                });
            }
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
        self.locked().running = true;
        let result = self.prune_pass(now);
        let mut state = self.locked();
        state.running = false;
        state.kept.clear();
        result
    }

    fn prune_pass(&self, now: i64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let keep_ns = i64::try_from(self.keep.as_nanos()).unwrap_or(i64::MAX);
        let horizon = now.saturating_sub(keep_ns);
        let mut live: HashSet<Hash> = HashSet::new();
        if self.log.is_dir() {
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
                let (kept, gone): (Vec<Version>, Vec<Version>) =
                    all.into_iter().partition(|v| v.until > horizon);
                live.extend(kept.iter().map(|v| v.blake3));
                if gone.is_empty() {
                    continue;
                }
                pruned.versions += gone.len() as u64;
                rewrite(path, &kept)?;
            }
        }
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
        Ok(pruned)
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
                match history.prune(now) {
                    Ok(p) if p.versions + p.objects > 0 => tracing::info!(
                        "history: removed {} versions older than {} and {} objects ({} bytes)",
                        p.versions,
                        humantime::format_duration(history.keep_for()),
                        p.objects,
                        p.bytes
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("history: pruning failed: {e}"),
                }
                // A short retention (tests, trials) is kept to within about half its length.
                let every = PRUNE_EVERY
                    .min(history.keep_for() / 2)
                    .max(Duration::from_secs(1));
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until {
                    if stop.is_triggered() {
                        return;
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
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let mut out = Vec::new();
    for line in io::BufReader::new(file).lines() {
        let line = line.map_err(|e| StoreError::io("read", path, e))?;
        match serde_json::from_str::<Version>(&line) {
            Ok(v) => out.push(v),
            Err(e) if !line.trim().is_empty() => {
                tracing::warn!(
                    "{}: skipping an unreadable version record: {e}",
                    path.display()
                );
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Replaces the history file at `path` by `kept` (removed when empty), atomically.
fn rewrite(path: &Path, kept: &[Version]) -> Result<(), StoreError> {
    if kept.is_empty() {
        fs::remove_file(path).map_err(|e| StoreError::io("remove", path, e))?;
        return Ok(fsync_parent(path)?);
    }
    let mut text = Vec::new();
    for v in kept {
        text.extend(serde_json::to_vec(v).unwrap_or_default());
        text.push(b'\n');
    }
    let temp = disk::atomic::temp_name(path.parent().unwrap_or(Path::new(".")));
    let mut file = fs::File::create(&temp).map_err(|e| StoreError::io("create", &temp, e))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("write", &temp, e))?;
    fs::rename(&temp, path).map_err(|e| StoreError::io("replace", path, e))?;
    Ok(fsync_parent(path)?)
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
        assert_eq!(h.prune(39 * DAY).unwrap(), Pruned::default());
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
