//! The node's S3 backend (docs/CONTRACT.md §9, `dfs storage --backend s3://BUCKET[/PREFIX]`):
//! the current files are the objects `<class>/<name>` of the bucket, each carrying the
//! metadata that rebuilds the index (`x-amz-meta-dfs-blake3`, `-dfs-modified`,
//! `-dfs-version`), so that any S3 client sees the same tree as `ROOT/<class>/` and a broker
//! that lost its index gets it back from the bucket alone.
//!
//! ```text
//! <prefix>/mp3/…, txt/…, pdf/…, others/…     current files only, with their metadata
//! <prefix>/.dfs/owners.json                  the volume owners (as ROOT/.dfs/owners.json)
//! <prefix>/.dfs/quarantine/<class>/<name>    files set aside by `dfs fsck --repair`
//! <prefix>/.dfs/objects/, .dfs/history/       replaced and deleted versions (`history`)
//! ROOT/.dfs/tmp/                             uploads being received, reads being served
//! ```
//!
//! Every call here blocks on the store, so the node makes them on its sync workers, never on
//! the socket thread. An upload becomes current only once verified (its BLAKE3 checked when
//! the last chunk came, and again on the bytes sent to the store) and acknowledged by the
//! store; S3 replaces an object whole, so a reader sees the old or the new version. A read is
//! first copied from the store into a temporary file, hashed on the way, and served only if
//! it has its recorded hash.

mod history;

use crate::arrival::Arrival;
use crate::bucket::{self, Bucket, BucketError, Meta};
use crate::change::Rename;
use crate::error::StoreError;
use crate::meta::StoredMeta;
use schema::status::ClassUsage;
use schema::{CheckedFile, Class, Entry, Hash, PageBuilder, Routes};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The metadata names (after `x-amz-meta-`) of a current object.
const BLAKE3: &str = "dfs-blake3";
const MODIFIED: &str = "dfs-modified";
const VERSION: &str = "dfs-version";
const SINCE: &str = "dfs-since";

/// The key of the owners record.
const OWNERS: &str = ".dfs/owners.json";

/// The node's bucket, and the folder where reads and renames spool what they fetch.
#[derive(Debug)]
pub struct S3 {
    bucket: Bucket,
    url: String,
    tmp: PathBuf,
    /// How long replaced and deleted versions stay (`--keep-history`; zero: none).
    keep: std::time::Duration,
}

impl From<BucketError> for StoreError {
    fn from(e: BucketError) -> StoreError {
        match e {
            BucketError::BadKey { key, why } => {
                StoreError::Protocol(format!("{key}: not a name the S3 backend can store: {why}"))
            }
            BucketError::Changed { .. } | BucketError::Short { .. } => {
                StoreError::Corrupt(e.to_string())
            }
            // The store is away or refuses (credentials, quota): the sender tries again later.
            e => StoreError::Store(e.to_string()),
        }
    }
}

/// The key of `name` in `class`, or why the S3 backend cannot store that name (its history
/// key, the longest key a name has, must be a valid S3 key too).
pub fn key(class: Class, name: &str) -> Result<String, StoreError> {
    schema::names::check(name)?;
    let key = format!("{class}/{name}");
    match bucket::key_problem(&history::history_key(class, name)) {
        None => Ok(key),
        Some(why) => Err(StoreError::Protocol(format!(
            "{}: the name {why}; the S3 backend cannot store it",
            schema::names::escape(name)
        ))),
    }
}

/// The object metadata that records `meta`.
/// The object metadata that records `meta`, and when it becomes current (now: the store's own
/// `Last-Modified` has whole seconds only, too coarse for `--at`).
fn headers(meta: &StoredMeta) -> Vec<(&'static str, String)> {
    vec![
        (BLAKE3, meta.blake3.to_string()),
        (MODIFIED, meta.modified.to_string()),
        (VERSION, meta.version.to_string()),
        (SINCE, now().to_string()),
    ]
}

/// When the object with metadata `meta` became current (ns): what it records, else the
/// store's time of the object.
fn since_of(meta: &Meta, stored: i64) -> i64 {
    meta.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(SINCE))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(stored)
}

/// The stored metadata of `name` in `class` from an object's metadata; `None` for an object
/// dfs did not write (no or unreadable dfs metadata).
fn parse(name: &str, class: Class, meta: &Meta) -> Option<StoredMeta> {
    let get = |k: &str| {
        meta.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    };
    let blake3: Hash = get(BLAKE3)?.parse().ok()?;
    let modified: i64 = get(MODIFIED)?.parse().ok()?;
    let version: u64 = get(VERSION)?.parse().ok()?;
    Some(StoredMeta::new(name, class, blake3, modified, version))
}

/// What [`S3::stream`] did with one key.
enum Streamed {
    /// The file was handed over (its read goes on, or it is whole).
    Handed,
    /// No dfs file there.
    Absent,
    /// The current file there has this other version; nothing was read.
    Other(u64),
}

/// The time now, ns since the Unix epoch.
fn now() -> i64 {
    schema::time::to_ns(std::time::SystemTime::now())
}

/// A node cursor (`"<class>/<name>"`), parsed.
fn parse_cursor(after: Option<&str>) -> Result<Option<(Class, &str)>, StoreError> {
    after
        .map(|a| {
            schema::page::parse_node_cursor(a).map_err(|e| {
                StoreError::Protocol(format!(
                    "list cursor {a:?} {e}; a node's cursor is \"<class>/<name>\""
                ))
            })
        })
        .transpose()
}

impl S3 {
    /// The bucket at `url`, spooling into `tmp` (the node's `ROOT/.dfs/tmp`).
    /// keeping replaced and deleted versions for `keep` (zero: none).
    pub fn new(bucket: Bucket, url: &str, tmp: &Path, keep: std::time::Duration) -> S3 {
        S3 {
            bucket,
            url: url.to_string(),
            tmp: tmp.to_path_buf(),
            keep,
        }
    }

    /// The backend as `--backend` named it (for logs and `dfs status`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fails with a clear error unless the bucket answers with these credentials (a listing
    /// of one key).
    pub fn probe(&self) -> Result<(), StoreError> {
        self.bucket.list_after("", None, 1)?;
        Ok(())
    }

    /// What `name` of `class` holds now, if dfs stored it: its size, metadata, and when it
    /// became current.
    fn current(
        &self,
        class: Class,
        name: &str,
    ) -> Result<Option<(u64, StoredMeta, i64)>, StoreError> {
        let key = key(class, name)?;
        Ok(self.bucket.head(&key)?.and_then(|h| {
            let since = since_of(&h.meta, h.stored);
            parse(name, class, &h.meta).map(|meta| (h.size, meta, since))
        }))
    }

    /// Every version of `name` the bucket holds, oldest first: those its history keeps, then
    /// the current one, if any.
    pub fn history(&self, name: &str) -> Result<Vec<schema::VersionInfo>, StoreError> {
        schema::names::check(name)?;
        let mut all = self.kept_report(name)?;
        for class in Class::ALL {
            if let Some((size, m, stored)) = self.current(class, name)? {
                all.push(schema::VersionInfo {
                    version: m.version,
                    class,
                    size,
                    blake3: m.blake3,
                    modified: m.modified,
                    since: stored,
                    until: None,
                    deleted: false,
                });
                break;
            }
        }
        Ok(all)
    }

    /// Makes `data` (verified) the current `meta.name`; returns its version and whether the
    /// store already held that content.
    pub fn commit_bytes(
        &self,
        meta: &StoredMeta,
        data: Vec<u8>,
    ) -> Result<(u64, bool), StoreError> {
        let key = key(meta.class, &meta.name)?;
        if let Some(old) = self.replacing(meta)? {
            return Ok((old, true));
        }
        self.bucket.put(&key, data, &headers(meta))?;
        Ok((meta.version, false))
    }

    /// Makes the first `size` bytes of `file` (verified as they came) the current `meta.name`,
    /// hashing them again on their way to the store; returns its version and whether the store
    /// already held that content.
    pub fn commit_file(
        &self,
        meta: &StoredMeta,
        file: &File,
        size: u64,
    ) -> Result<(u64, bool), StoreError> {
        let key = key(meta.class, &meta.name)?;
        if let Some(old) = self.replacing(meta)? {
            return Ok((old, true));
        }
        self.bucket
            .put_file(&key, file, size, &headers(meta), meta.blake3)?;
        Ok((meta.version, false))
    }

    /// Before `meta` replaces what its name holds: the version stored if it already has
    /// `meta`'s content (nothing to do), else `None` once the version it replaces, if any, is
    /// kept in the history.
    fn replacing(&self, meta: &StoredMeta) -> Result<Option<u64>, StoreError> {
        match self.current(meta.class, &meta.name)? {
            Some((_, old, _)) if old.blake3 == meta.blake3 => Ok(Some(old.version)),
            Some((size, old, since)) => {
                self.keep(&old, size, (since, now()), false)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Copies the object `key` from the store into an unnamed temporary file, hashing it on
    /// the way: the file, its size, the dfs metadata it carries (of `name` in `class`) and the
    /// hash of its bytes; `None` when there is no such object.
    #[allow(clippy::type_complexity)]
    fn copy_out(
        &self,
        key: &str,
        name: &str,
        class: Class,
    ) -> Result<Option<(File, u64, Option<StoredMeta>, Hash)>, StoreError> {
        let temp = disk::atomic::TempFile::in_dir(&self.tmp)?;
        let file = temp
            .file()
            .try_clone()
            .map_err(|e| StoreError::io("open", temp.path(), e))?;
        let mut hasher = blake3::Hasher::new();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
        let mut recorded = None;
        let got = self.bucket.get_into(
            key,
            |_, m| {
                recorded = parse(name, class, m);
                Ok(())
            },
            |piece| {
                hasher.update(piece);
                out.write_all(piece)
                    .map_err(|e| BucketError::Read(key.to_string(), e))
            },
        )?;
        let Some((size, _)) = got else {
            return Ok(None);
        };
        out.flush()
            .map_err(|e| StoreError::io("write", temp.path(), e))?;
        drop(out);
        Ok(Some((file, size, recorded, Hash::from(hasher.finalize()))))
    }

    /// Copies the current `name` (in `class`, or the first class holding it) from the store
    /// into an unnamed temporary file, hashing it on the way; returns the file and its entry,
    /// or `Corrupt` when the bytes do not hash to the recorded BLAKE3 (never served).
    pub fn spool(&self, name: &str, class: Option<Class>) -> Result<(File, Entry), StoreError> {
        let classes = match class {
            Some(c) => vec![c],
            None => Class::ALL.to_vec(),
        };
        for class in classes {
            let key = key(class, name)?;
            // An object without dfs metadata was put there by some other client: not a file.
            let Some((file, size, Some(meta), actual)) = self.copy_out(&key, name, class)? else {
                continue;
            };
            if actual != meta.blake3 {
                return Err(crate::read::changed(name, meta.blake3, actual));
            }
            return Ok((file, meta.entry(size)));
        }
        Err(StoreError::NotFound(format!(
            "{name}: not stored in {}",
            self.url
        )))
    }

    /// Reads version `version` of `name` (the current one when it has that version or none is
    /// asked for, in `class` or the first class holding it; else the kept one) from the store
    /// into an unnamed temporary file, and hands the file over with its entry through `hand`:
    /// a file of at most `INLINE_MAX` bytes once it is whole and verified, a larger one as soon
    /// as its entry is known, with the [`Arrival`] the copy then advances (`nudge` is called as
    /// bytes come; a copy that fails, or whose bytes do not hash to the entry's BLAKE3, is marked
    /// failed there). Errors before the file is handed over are returned.
    pub fn read_into(
        &self,
        (name, class, version): (&str, Option<Class>, Option<u64>),
        hand: &mut dyn FnMut(File, Entry, Option<Arc<Arrival>>),
        nudge: &dyn Fn(),
    ) -> Result<(), StoreError> {
        let classes = match class {
            Some(c) => vec![c],
            None => Class::ALL.to_vec(),
        };
        let mut current = None;
        for class in classes {
            let key = key(class, name)?;
            match self.stream(&key, (name, class), None, version, hand, nudge)? {
                Streamed::Handed => return Ok(()),
                Streamed::Other(v) => current = Some(v),
                Streamed::Absent => {}
            }
        }
        let Some(wanted) = version else {
            return Err(StoreError::NotFound(format!(
                "{name}: not stored in {}",
                self.url
            )));
        };
        let gone = || {
            StoreError::NotFound(format!(
                "{name}: version {wanted} is not kept on this node{}",
                if current.is_some() {
                    ""
                } else {
                    " (nor any current one)"
                }
            ))
        };
        let Some((class, v)) = self.find(name, wanted)? else {
            return Err(gone());
        };
        let entry = v.entry(name.to_string(), class);
        match self.stream(
            &self.kept_object(&v),
            (name, class),
            Some(entry),
            None,
            hand,
            nudge,
        )? {
            Streamed::Handed => Ok(()),
            _ => Err(gone()),
        }
    }

    /// Copies the object `key` (of `name` in `class`) into a temporary file and hands it over
    /// (see [`S3::read_into`]). Its entry is `expected` (a kept version) or what its metadata
    /// records (the current one; then, when `version` is asked for and it is another, nothing is
    /// read and its version is returned).
    fn stream(
        &self,
        key: &str,
        (name, class): (&str, Class),
        expected: Option<Entry>,
        version: Option<u64>,
        hand: &mut dyn FnMut(File, Entry, Option<Arc<Arrival>>),
        nudge: &dyn Fn(),
    ) -> Result<Streamed, StoreError> {
        use std::cell::RefCell;
        use std::os::unix::fs::FileExt as _;
        let temp = disk::atomic::TempFile::in_dir(&self.tmp)?;
        let file = temp
            .file()
            .try_clone()
            .map_err(|e| StoreError::io("open", temp.path(), e))?;
        // What the start of the response said: the entry, and the arrival once handed over.
        let state: RefCell<Option<(Entry, Option<Arc<Arrival>>)>> = RefCell::new(None);
        // Why the start declined the object: not a dfs file, or another version than asked.
        let mut declined: Option<Streamed> = None;
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        let mut since_nudge = 0u64;
        let decline = || BucketError::Read(key.to_string(), std::io::Error::other("declined"));
        let got = self.bucket.get_into(
            key,
            |size, m| {
                let entry = match &expected {
                    Some(e) => e.clone(),
                    None => match parse(name, class, m) {
                        Some(meta) => meta.entry(size),
                        // Put there by another client: not a dfs file.
                        None => {
                            declined = Some(Streamed::Absent);
                            return Err(decline());
                        }
                    },
                };
                if version.is_some_and(|v| v != entry.version) && expected.is_none() {
                    declined = Some(Streamed::Other(entry.version));
                    return Err(decline());
                }
                let arrival = (size > schema::limits::INLINE_MAX).then(Arc::<Arrival>::default);
                if let Some(a) = &arrival {
                    let handed = file
                        .try_clone()
                        .map_err(|e| BucketError::Read(key.into(), e))?;
                    hand(handed, entry.clone(), Some(a.clone()));
                }
                *state.borrow_mut() = Some((entry, arrival));
                Ok(())
            },
            |piece| {
                file.write_all_at(piece, written)
                    .map_err(|e| BucketError::Read(key.to_string(), e))?;
                hasher.update(piece);
                written += piece.len() as u64;
                since_nudge += piece.len() as u64;
                if let Some((_, Some(a))) = &*state.borrow() {
                    a.add(piece.len() as u64);
                    if since_nudge >= 1 << 20 {
                        since_nudge = 0;
                        nudge();
                    }
                }
                Ok(())
            },
        );
        let state = state.into_inner();
        let arrival = state.as_ref().and_then(|(_, a)| a.clone());
        let failed = |why: String, a: &Arrival| {
            tracing::warn!("read of {name} from {} failed: {why}", self.url);
            a.fail(why);
            nudge();
            Ok(Streamed::Handed)
        };
        match got {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(Streamed::Absent),
            Err(e) => {
                if let Some(d) = declined {
                    return Ok(d);
                }
                return match &arrival {
                    Some(a) => failed(e.to_string(), a),
                    None => Err(e.into()),
                };
            }
        }
        let Some((entry, _)) = state else {
            return Ok(Streamed::Absent);
        };
        let actual = Hash::from(hasher.finalize());
        if actual != entry.blake3 {
            let e = crate::read::changed(name, entry.blake3, actual);
            return match &arrival {
                Some(a) => failed(e.to_string(), a),
                None => Err(e),
            };
        }
        match arrival {
            Some(_) => nudge(),
            None => hand(file, entry, None),
        }
        Ok(Streamed::Handed)
    }

    /// Removes `name` from `class`, if stored; the deleted version stays in the history.
    pub fn delete(&self, class: Class, name: &str) -> Result<(), StoreError> {
        let key = key(class, name)?;
        let Some((size, old, since)) = self.current(class, name)? else {
            // Nothing dfs stored there (an object of another client is left alone).
            return Ok(());
        };
        self.keep(&old, size, (since, now()), true)?;
        self.bucket.delete(&key)?;
        tracing::info!(name = %schema::names::escape(name), %class, "deleted");
        Ok(())
    }

    /// Moves the stored `from` to `to` with new metadata (the store cannot change an object's
    /// metadata in place, so the content is copied through the node, verified); returns the
    /// version of `to`.
    pub fn rename(&self, r: &Rename) -> Result<u64, StoreError> {
        let to_class = r
            .to_class
            .unwrap_or_else(|| Routes::default().class_of(r.to));
        let to_key = key(to_class, r.to)?;
        let from_key = key(r.class, r.from)?;
        let not_found = |why: String| StoreError::NotFound(format!("{}: {why}", r.from));
        let (file, entry) = match self.spool(r.from, Some(r.class)) {
            Ok(found) => found,
            Err(e) if e.code() == schema::ErrorCode::NotFound => {
                return Err(not_found("not stored on this node".into()))
            }
            Err(e) => return Err(e),
        };
        if entry.blake3 != r.blake3 {
            return Err(not_found(format!(
                "stored with hash {}, not {}",
                entry.blake3, r.blake3
            )));
        }
        let version = match r.version {
            Some(v) => v,
            None if to_key == from_key => entry.version,
            None => self
                .current(to_class, r.to)?
                .map_or(1, |(_, m, _)| m.version + 1),
        };
        let new = StoredMeta::new(r.to, to_class, entry.blake3, entry.modified, version);
        if to_key != from_key {
            // History: `from` stops being current (moved away), and a version `to` had is
            // replaced.
            let now = now();
            if let Some((size, old, since)) = self.current(r.class, r.from)? {
                self.keep(&old, size, (since, now), true)?;
            }
            if let Some((size, replaced, since)) = self.current(to_class, r.to)? {
                self.keep(&replaced, size, (since, now), false)?;
            }
        }
        self.bucket
            .put_file(&to_key, &file, entry.size, &headers(&new), entry.blake3)?;
        if to_key != from_key {
            self.bucket.delete(&from_key)?;
        }
        tracing::info!(
            from = %schema::names::escape(r.from),
            to = %schema::names::escape(r.to),
            %to_class,
            version,
            "renamed"
        );
        Ok(version)
    }

    /// Up to `limit` entries after the node cursor `after` (classes in `Class::ALL` order,
    /// names in key order within a class), and whether more follow. Objects without dfs
    /// metadata are not listed.
    pub fn list_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        let cursor = parse_cursor(after)?;
        let mut page = PageBuilder::new(limit);
        let want = limit.clamp(1, schema::limits::MAX_LIST_PAGE) as usize;
        for class in Class::ALL {
            let mut from = match cursor {
                Some((c, _)) if class < c => continue,
                Some((c, name)) if class == c => Some(key(c, name)?),
                _ => None,
            };
            loop {
                let keys = self
                    .bucket
                    .list_after(&format!("{class}/"), from.as_deref(), want)?;
                let Some((last, _)) = keys.last() else { break };
                from = Some(last.clone());
                let full = keys.len() == want;
                let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
                let heads = self.bucket.head_many(&names)?;
                for (k, head) in names.iter().zip(heads) {
                    let name = &k[class.as_str().len() + 1..];
                    let entry =
                        head.and_then(|h| parse(name, class, &h.meta).map(|m| m.entry(h.size)));
                    let Some(meta) = entry else {
                        continue;
                    };
                    if !page.fits(&meta) {
                        return Ok((page.into_entries(), true));
                    }
                    page.push(meta);
                }
                if !full {
                    break;
                }
            }
        }
        Ok((page.into_entries(), false))
    }

    /// Up to `limit` stored files after `after`, each with the hash of its content as read
    /// from the store now, and whether more follow (`dfs fsck`). The page ends early once
    /// [`crate::check::CHECK_BYTES`] were read.
    pub fn check_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<CheckedFile>, bool), StoreError> {
        let (entries, mut more) =
            self.list_page(after, limit.clamp(1, crate::check::CHECK_PAGE))?;
        let mut files = Vec::with_capacity(entries.len());
        let mut bytes = 0u64;
        for entry in entries {
            if !files.is_empty() && bytes.saturating_add(entry.size) > crate::check::CHECK_BYTES {
                more = true;
                break;
            }
            bytes = bytes.saturating_add(entry.size);
            let key = key(entry.class, &entry.name)?;
            let mut hasher = blake3::Hasher::new();
            let read = self.bucket.get_into(
                &key,
                |_, _| Ok(()),
                |piece| {
                    hasher.update(piece);
                    Ok(())
                },
            );
            let (content, reason) = match read {
                Ok(Some(_)) => (Some(Hash::from(hasher.finalize())), None),
                Ok(None) => (None, Some(format!("{key} is gone from {}", self.url))),
                Err(e) => (None, Some(format!("cannot read {key}: {e}"))),
            };
            if content.is_some() && content != Some(entry.blake3) {
                tracing::warn!(name = %entry.name, class = %entry.class, "content no longer matches its recorded hash");
            }
            files.push(CheckedFile {
                entry,
                content,
                reason,
            });
        }
        Ok((files, more))
    }

    /// Sets aside `name` of `class` (to `.dfs/quarantine/<class>/<name>`) if its content no
    /// longer matches its recorded hash; `NotFound` when it does (or is gone).
    pub fn quarantine(&self, class: Class, name: &str) -> Result<(), StoreError> {
        let key = key(class, name)?;
        let not_found =
            |why: &str| StoreError::NotFound(format!("{name}: {why}; nothing set aside"));
        let mut hasher = blake3::Hasher::new();
        let mut recorded = None;
        let got = self.bucket.get_into(
            &key,
            |_, m| {
                recorded = parse(name, class, m).map(|m| m.blake3);
                Ok(())
            },
            |piece| {
                hasher.update(piece);
                Ok(())
            },
        )?;
        if got.is_none() {
            return Err(not_found("not stored on this node"));
        }
        if recorded == Some(Hash::from(hasher.finalize())) {
            return Err(not_found("its content matches its recorded hash"));
        }
        let aside = format!(".dfs/quarantine/{key}");
        self.bucket.copy(&key, &aside)?;
        self.bucket.delete(&key)?;
        tracing::warn!(name, %class, to = %aside, "set aside an object whose content no longer matches its recorded hash");
        Ok(())
    }

    /// Every volume recorded, with its owner.
    pub fn owners(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let Some((text, _)) = self.bucket.get(OWNERS)? else {
            return Ok(BTreeMap::new());
        };
        serde_json::from_slice(&text).map_err(|e| {
            StoreError::Protocol(format!(
                "{OWNERS} in {} is not a JSON object of volume owners: {e}",
                self.url
            ))
        })
    }

    /// Records that `owner` owns `volume` (nothing is written when it already does).
    pub fn set_owner(&self, volume: &str, owner: &str) -> Result<(), StoreError> {
        let mut all = self.owners()?;
        if !crate::owners::admit(&mut all, volume, owner)? {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&all).unwrap_or_default();
        self.bucket.put(OWNERS, text, &[])?;
        Ok(())
    }

    /// Files and bytes stored in each class.
    pub fn usage(&self) -> Result<Vec<ClassUsage>, StoreError> {
        Class::ALL
            .iter()
            .map(|&class| {
                let all = self.bucket.list(&format!("{class}/"))?;
                Ok(ClassUsage {
                    class,
                    files: all.len() as u64,
                    bytes: all.iter().map(|(_, s)| s).sum(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_foreign_objects_are_not_files() {
        let meta = StoredMeta::new("a/b.txt", Class::Txt, Hash::of(b"x"), -5, 7);
        let pairs: Meta = headers(&meta)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(parse("a/b.txt", Class::Txt, &pairs), Some(meta));
        assert_eq!(parse("a/b.txt", Class::Txt, &Vec::new()), None);
        let upper: Meta = pairs
            .iter()
            .map(|(k, v)| (k.to_uppercase(), v.clone()))
            .collect();
        assert!(parse("a/b.txt", Class::Txt, &upper).is_some());
    }

    #[test]
    fn names_an_s3_key_cannot_carry_are_refused_with_why() {
        assert_eq!(key(Class::Txt, "a/b [1].txt").unwrap(), "txt/a/b [1].txt");
        let e = key(Class::Txt, "a\tb.txt").unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        assert!(key(Class::Txt, "../x").is_err());
    }
}
