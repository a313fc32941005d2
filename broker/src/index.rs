//! The index: one sled tree from file name to [`Record`], with the damaged-database recovery
//! path and the paged listing the front ports answer with.

use crate::error::IndexError;
use crate::record::Record;
use schema::{Entry, PageBuilder};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// sled's page cache. It fills only as far as the index is read: a few MiB for a small store.
/// A million entries take about 85 MiB in it; with a smaller cache every listing re-reads and
/// re-parses sled's pages from its file (1.3 s of CPU per million entries instead of 0.3 s).
const CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// The sled tree holding the broker's own bookkeeping.
const META_TREE: &str = "dfs-meta";

/// The sled tree of volume owners: volume name (empty for the root volume) → owner.
const OWNERS_TREE: &str = "dfs-owners";

/// Key of the completion mark in [`META_TREE`].
const COMPLETE_KEY: &str = "complete";

/// Key of the export mark in [`META_TREE`]: present only while the text export lists exactly
/// the index; it holds the export's length, files and bytes (big-endian u64 each). Set after the export written at a clean stop; the first
/// change after that removes it.
const EXPORTED_KEY: &str = "exported";

/// How the database was found when the broker opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// It existed and opened cleanly.
    Existing,
    /// It did not exist; a fresh one was made (to be rebuilt from the node).
    Created,
    /// It could not be opened; the damaged copy was moved to this path and a fresh one made (to
    /// be rebuilt from the node).
    Damaged(PathBuf),
}

impl Opened {
    /// Whether the index must be rebuilt from the storage node.
    pub fn needs_rebuild(&self) -> bool {
        !matches!(self, Opened::Existing)
    }
}

/// The broker's index of stored files.
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    /// Bookkeeping beside the index tree (the completion and export marks).
    meta: sled::Tree,
    /// Who owns each volume.
    owners: sled::Tree,
    path: PathBuf,
    /// Whether the export mark may be present, so that the first change removes it (one
    /// atomic load per change after that).
    export_marked: Arc<AtomicBool>,
}

/// Flushes an [`Index`] from another thread (the database handle is shared).
pub struct IndexSyncer {
    db: sled::Db,
    path: PathBuf,
}

impl IndexSyncer {
    /// Makes every change made before this call durable.
    pub fn flush(&self) -> Result<(), String> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| format!("cannot flush the index {}: {e}", self.path.display()))
    }
}

impl Index {
    /// Opens (or creates) the database at `path`. A database that cannot be opened, or that
    /// lacks the completion mark, is moved aside to `<path>.damaged-<unix-ts>` and replaced by an
    /// empty one. A database locked by another process is an error.
    pub fn open(path: &Path) -> Result<(Index, Opened), IndexError> {
        let existed = path.exists();
        let problem = match open_db(path).and_then(|db| Index::wrap(db, path)) {
            Ok(index) if !existed => return Ok((index, Opened::Created)),
            Ok(index) => match index.is_complete() {
                Ok(true) => return Ok((index, Opened::Existing)),
                Ok(false) => {
                    "it has no completion mark (damaged, or a rebuild was interrupted)".to_string()
                }
                Err(e) => e.to_string(),
            },
            Err(e @ (IndexError::Locked { .. } | IndexError::Inaccessible { .. })) => {
                return Err(e)
            }
            Err(e) => e.to_string(),
        };
        let aside = set_aside(path).map_err(|source| IndexError::Db {
            path: path.to_path_buf(),
            source: source.into(),
        })?;
        tracing::warn!(
            "index database {} is unusable: {problem}; moved it to {} and will rebuild the \
             index from the storage node",
            path.display(),
            aside.display()
        );
        let index = Index::wrap(open_db(path)?, path)?;
        Ok((index, Opened::Damaged(aside)))
    }

    /// Opens an existing, complete database without repairing anything (for `dfs index
    /// export`).
    pub fn open_existing(path: &Path) -> Result<Index, IndexError> {
        if !path.is_dir() {
            return Err(IndexError::Db {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no index database here (check --data)",
                )
                .into(),
            });
        }
        let index = Index::wrap(open_db(path)?, path)?;
        if !index.is_complete()? {
            return Err(IndexError::Incomplete {
                path: path.to_path_buf(),
            });
        }
        Ok(index)
    }

    fn wrap(db: sled::Db, path: &Path) -> Result<Index, IndexError> {
        let meta = db.open_tree(META_TREE).map_err(|source| IndexError::Db {
            path: path.to_path_buf(),
            source,
        })?;
        let owners = db.open_tree(OWNERS_TREE).map_err(|source| IndexError::Db {
            path: path.to_path_buf(),
            source,
        })?;
        let export_marked = meta
            .contains_key(EXPORTED_KEY)
            .map_err(|source| IndexError::Db {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Index {
            db,
            meta,
            owners,
            path: path.to_path_buf(),
            export_marked: Arc::new(AtomicBool::new(export_marked)),
        })
    }

    /// The files and bytes the text export at `export` lists, when it lists exactly this index:
    /// it was written at the last clean stop, nothing changed since, and the file is still there
    /// with the length it had.
    pub fn current_export(&self, export: &Path) -> Option<(u64, u64)> {
        let mark = self.meta.get(EXPORTED_KEY).ok()??;
        let field = |i: usize| {
            mark.get(8 * i..8 * i + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
        };
        let (len, files, bytes) = (field(0)?, field(1)?, field(2)?);
        std::fs::metadata(export)
            .is_ok_and(|m| m.is_file() && m.len() == len)
            .then_some((files, bytes))
    }

    /// Records (durably) that the export at `export`, listing `files` files of `bytes` bytes,
    /// lists exactly the index. Only for a caller that makes no change between writing the
    /// export and this call.
    pub fn mark_exported(&self, export: &Path, files: u64, bytes: u64) -> Result<(), IndexError> {
        let len = std::fs::metadata(export)
            .map_err(|source| IndexError::Export {
                path: export.to_path_buf(),
                source,
            })?
            .len();
        let mut mark = Vec::with_capacity(24);
        for v in [len, files, bytes] {
            mark.extend_from_slice(&v.to_be_bytes());
        }
        self.meta
            .insert(EXPORTED_KEY, mark)
            .map_err(self.db_err())?;
        self.export_marked.store(true, Ordering::SeqCst);
        self.flush()
    }

    /// Removes the export mark before the first change after it was set. It reaches the disk
    /// no later than the change: sled keeps one log, in order, for every tree.
    fn changing(&self) -> Result<(), IndexError> {
        // A plain load on the hot path; the swap only while the mark is there.
        if self.export_marked.load(Ordering::Relaxed)
            && self.export_marked.swap(false, Ordering::SeqCst)
        {
            self.meta.remove(EXPORTED_KEY).map_err(self.db_err())?;
        }
        Ok(())
    }

    /// Whether the index is known complete: it was built by uploads from the start, or a
    /// rebuild from the node finished. A database that opens but lacks this mark lost its
    /// content (sled truncates what it cannot read).
    pub fn is_complete(&self) -> Result<bool, IndexError> {
        Ok(self
            .meta
            .get(COMPLETE_KEY)
            .map_err(self.db_err())?
            .is_some())
    }

    /// Records (durably) that the index is complete.
    pub fn mark_complete(&self) -> Result<(), IndexError> {
        self.meta
            .insert(COMPLETE_KEY, &[1u8][..])
            .map_err(self.db_err())?;
        self.flush()
    }

    fn db_err(&self) -> impl Fn(sled::Error) -> IndexError + '_ {
        move |source| IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// The record of `name`, if indexed.
    pub fn get(&self, name: &str) -> Result<Option<Record>, IndexError> {
        match self.db.get(name.as_bytes()).map_err(self.db_err())? {
            Some(v) => Record::decode(name.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets the record of `name`.
    pub fn put(&self, name: &str, rec: &Record) -> Result<(), IndexError> {
        self.changing()?;
        self.db
            .insert(name.as_bytes(), rec.encode())
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Sets the record of `name` unless it has one; says whether it was inserted.
    pub fn put_if_absent(&self, name: &str, rec: &Record) -> Result<bool, IndexError> {
        self.changing()?;
        let swapped = self
            .db
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(rec.encode()))
            .map_err(self.db_err())?;
        Ok(swapped.is_ok())
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) -> Result<(), IndexError> {
        self.changing()?;
        self.db.remove(name.as_bytes()).map_err(self.db_err())?;
        Ok(())
    }

    /// Removes `from` and sets `to` in one atomic batch.
    pub fn rename(&self, from: &str, to: &str, rec: &Record) -> Result<(), IndexError> {
        self.changing()?;
        let mut batch = sled::Batch::default();
        batch.remove(from.as_bytes());
        batch.insert(to.as_bytes(), rec.encode());
        self.db.apply_batch(batch).map_err(self.db_err())
    }

    /// Every volume with an owner, and its owner (the root volume's name is empty).
    pub fn owners(&self) -> Result<Vec<(String, String)>, IndexError> {
        let mut all = Vec::new();
        for item in self.owners.iter() {
            let (k, v) = item.map_err(self.db_err())?;
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            all.push((text(&k), text(&v)));
        }
        Ok(all)
    }

    /// Records `owner` as the owner of `volume` (durable with the next flush).
    pub fn set_owner(&self, volume: &str, owner: &str) -> Result<(), IndexError> {
        self.owners
            .insert(volume.as_bytes(), owner.as_bytes())
            .map_err(self.db_err())?;
        Ok(())
    }

    /// How many indexed names start with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> u64 {
        self.db.scan_prefix(prefix.as_bytes()).keys().count() as u64
    }

    /// Whether any indexed name starts with `prefix`.
    pub fn has_names_under(&self, prefix: &str) -> Result<bool, IndexError> {
        match self.db.scan_prefix(prefix.as_bytes()).next() {
            Some(item) => item.map(|_| true).map_err(self.db_err()),
            None => Ok(false),
        }
    }

    /// A handle that flushes this index from another thread.
    pub fn syncer(&self) -> IndexSyncer {
        IndexSyncer {
            db: self.db.clone(),
            path: self.path.clone(),
        }
    }

    /// Makes every change so far durable.
    pub fn flush(&self) -> Result<(), IndexError> {
        // One log serves every tree of the database: this flushes the mark too.
        self.db.flush().map_err(self.db_err())?;
        Ok(())
    }

    /// The page of entries after the name `after`, in name order, sized by the protocol's one
    /// page rule ([`PageBuilder`]: at most `limit` entries, capped, and within the listing
    /// budget), and whether more follow. Unreadable records are skipped with a warning.
    pub fn page(&self, after: Option<&str>, limit: u32) -> Result<(Vec<Entry>, bool), IndexError> {
        let start = match after {
            Some(a) => Bound::Excluded(a.as_bytes()),
            None => Bound::Unbounded,
        };
        let mut iter = self.db.range::<&[u8], _>((start, Bound::Unbounded));
        let mut page = PageBuilder::new(limit);
        for item in iter.by_ref() {
            let (k, v) = item.map_err(self.db_err())?;
            let entry = match decode_entry(&k, &v) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("skipping an index entry: {e}");
                    continue;
                }
            };
            if !page.fits(&entry) {
                return Ok((page.into_entries(), true));
            }
            page.push(entry);
        }
        Ok((page.into_entries(), false))
    }

    /// Every entry in name order (unreadable records come back as errors).
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, IndexError>> + '_ {
        self.db.iter().map(move |item| {
            let (k, v) = item.map_err(self.db_err())?;
            decode_entry(&k, &v)
        })
    }

    /// Number of indexed names.
    pub fn len(&self) -> usize {
        self.db.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, IndexError> {
    let name = std::str::from_utf8(key).map_err(|_| IndexError::BadRecord {
        name: String::from_utf8_lossy(key).into_owned(),
        reason: "the name is not UTF-8".into(),
    })?;
    Ok(Record::decode(key, value)?.entry(name.to_string()))
}

/// Opens sled at `path`, turning a held lock into [`IndexError::Locked`] and a panic inside sled
/// (some corruptions) into an error.
fn open_db(path: &Path) -> Result<sled::Db, IndexError> {
    let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()))
        .unwrap_or_else(|_| {
            Err(sled::Error::Unsupported(
                "the database library panicked while opening it".into(),
            ))
        });
    opened.map_err(|source| match &source {
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            IndexError::Locked {
                path: path.to_path_buf(),
            }
        }
        sled::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            IndexError::Inaccessible {
                path: path.to_path_buf(),
                source: std::io::Error::new(e.kind(), e.to_string()),
            }
        }
        _ => IndexError::Db {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Moves `path` to `<path>.damaged-<unix-ts>` (with a counter if that exists) and returns where.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.damaged-{ts}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Hash};

    fn rec(version: u64) -> Record {
        Record::stored(
            Class::Others,
            version,
            Hash::of(&version.to_le_bytes()),
            0,
            version,
        )
    }

    #[test]
    fn fresh_db_is_marked_for_rebuild_and_reopens_as_existing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let (idx, opened) = Index::open(&path).unwrap();
        assert_eq!(opened, Opened::Created);
        assert!(opened.needs_rebuild());
        idx.put("a", &rec(1)).unwrap();
        idx.mark_complete().unwrap();
        drop(idx);
        let (idx, opened) = Index::open(&path).unwrap();
        assert_eq!(opened, Opened::Existing);
        assert_eq!(idx.get("a").unwrap(), Some(rec(1)));
    }

    #[test]
    fn garbage_db_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        std::fs::write(&path, b"this is not a sled database").unwrap();
        let (idx, opened) = Index::open(&path).unwrap();
        let Opened::Damaged(aside) = opened else {
            panic!("expected the damaged path, got {opened:?}");
        };
        assert!(aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("index.db.damaged-"));
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            b"this is not a sled database"
        );
        assert!(idx.is_empty());
        idx.put("x", &rec(1)).unwrap();
        idx.flush().unwrap();
    }

    #[test]
    fn a_db_that_opens_without_its_mark_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let (idx, _) = Index::open(&path).unwrap();
        idx.put("a", &rec(1)).unwrap();
        idx.mark_complete().unwrap();
        drop(idx);
        // sled reads garbage in its log as the end of the log: it opens, empty.
        let log = path.join("db");
        let len = std::fs::metadata(&log).unwrap().len() as usize;
        std::fs::write(&log, vec![0x5au8; len]).unwrap();
        let (idx, opened) = Index::open(&path).unwrap();
        assert!(matches!(opened, Opened::Damaged(_)), "{opened:?}");
        assert!(idx.is_empty());
        assert!(!idx.is_complete().unwrap());
        assert!(matches!(
            Index::open_existing(&dir.path().join("none")),
            Err(IndexError::Db { .. })
        ));
    }

    #[test]
    fn a_locked_db_is_an_error_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let (held, _) = Index::open(&path).unwrap();
        held.mark_complete().unwrap();
        let err = Index::open_existing(&path).err().unwrap();
        assert!(matches!(err, IndexError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("broker running"));
        let err = Index::open(&path).err().unwrap();
        assert!(matches!(err, IndexError::Locked { .. }), "{err}");
        assert!(path.exists());
    }

    #[test]
    fn pages_in_name_order_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = Index::open(&dir.path().join("db")).unwrap();
        for i in 0..25u64 {
            idx.put(&format!("f{i:03}"), &rec(i + 1)).unwrap();
        }
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let (entries, more) = idx.page(after.as_deref(), 10).unwrap();
            pages += 1;
            names.extend(entries.iter().map(|e| e.name.clone()));
            after = entries.last().map(|e| e.name.clone());
            if !more {
                break;
            }
        }
        assert_eq!(pages, 3);
        let want: Vec<_> = (0..25).map(|i| format!("f{i:03}")).collect();
        assert_eq!(names, want);
        let (one, more) = idx.page(None, 0).unwrap();
        assert_eq!(one.len(), 1, "a limit of 0 counts as 1, as on the node");
        assert!(more);
        let (last, more) = idx.page(Some("f019"), 5).unwrap();
        assert_eq!(last.len(), 5);
        assert!(!more);
        assert_eq!(last[0].version, 21);
    }

    #[test]
    fn the_export_mark_lasts_until_the_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let export = dir.path().join("index.txt");
        {
            let (idx, _) = Index::open(&db).unwrap();
            idx.mark_complete().unwrap();
            idx.put("a", &rec(1)).unwrap();
            assert_eq!(idx.current_export(&export), None, "no export yet");
            std::fs::write(&export, "a\n").unwrap();
            idx.mark_exported(&export, 1, 5).unwrap();
            assert_eq!(idx.current_export(&export), Some((1, 5)));
        }
        // Survives a reopen; a file of another length is not the export that was marked.
        let (idx, _) = Index::open(&db).unwrap();
        assert_eq!(idx.current_export(&export), Some((1, 5)));
        std::fs::write(&export, "a\nb\n").unwrap();
        assert_eq!(idx.current_export(&export), None);
        std::fs::write(&export, "a\n").unwrap();
        assert_eq!(idx.current_export(&export), Some((1, 5)));
        // Any change removes the mark, durably.
        idx.remove("zz").unwrap();
        assert_eq!(idx.current_export(&export), None);
        idx.flush().unwrap();
        drop(idx);
        let (idx, _) = Index::open(&db).unwrap();
        assert_eq!(idx.current_export(&export), None);
        for change in [
            &(|i: &Index| i.put("b", &rec(2)).unwrap()) as &dyn Fn(&Index),
            &|i: &Index| {
                i.put_if_absent("c", &rec(3)).unwrap();
            },
            &|i: &Index| i.rename("b", "d", &rec(2)).unwrap(),
        ] {
            idx.mark_exported(&export, 1, 5).unwrap();
            assert_eq!(idx.current_export(&export), Some((1, 5)));
            change(&idx);
            assert_eq!(idx.current_export(&export), None);
        }
    }

    #[test]
    fn rename_and_put_if_absent() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = Index::open(&dir.path().join("db")).unwrap();
        idx.put("a", &rec(1)).unwrap();
        idx.rename("a", "b", &rec(2)).unwrap();
        assert_eq!(idx.get("a").unwrap(), None);
        assert_eq!(idx.get("b").unwrap(), Some(rec(2)));
        assert!(!idx.put_if_absent("b", &rec(9)).unwrap());
        assert!(idx.put_if_absent("c", &rec(9)).unwrap());
        assert_eq!(idx.get("b").unwrap(), Some(rec(2)));
        idx.remove("b").unwrap();
        assert_eq!(idx.len(), 1);
    }
}
