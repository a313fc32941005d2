//! The history on the S3 backend (docs/CONTRACT.md §8 and §9): every replaced, deleted or
//! moved-away version stays in the bucket for the retention period, outside the class tree.
//!
//! ```text
//! <prefix>/.dfs/objects/<blake3 hex>          the content of kept versions, once per hash
//! <prefix>/.dfs/history/<class>/<name>        the versions of a name: one JSON record a line,
//!                                             as in ROOT/.dfs/history/<class>/<name>.versions
//! ```
//!
//! Keeping a version copies the current object to its content's key inside the store (no
//! bytes pass through the node) before the change, then rewrites the name's record; when
//! either fails the change does not happen. The history key of a name sorts exactly like its
//! current key, so a listing of the past walks both in one order, a page at a time. The prune
//! removes the records past the retention, then the objects no record refers to that are older
//! than the prune's start by a margin (a version being kept by this or another node copies its
//! object before it writes its record, and a copy renews the object's time).

use super::{key, S3};
use crate::error::StoreError;
use crate::history::{encode_versions, parse_versions, Pruned, Version};
use crate::meta::StoredMeta;
use crate::past::Past;
use schema::{CheckedFile, Class, Entry, Hash, PageBuilder};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The key prefix of the kept contents.
const OBJECTS: &str = ".dfs/objects/";

/// The key prefix of the history records of `class`.
fn history_dir(class: Class) -> String {
    format!(".dfs/history/{class}/")
}

/// The key of the records of `name` in `class`.
pub(super) fn history_key(class: Class, name: &str) -> String {
    format!(".dfs/history/{class}/{name}")
}

/// The key of the kept content with hash `h`.
fn object_key(h: &Hash) -> String {
    format!("{OBJECTS}{h}")
}

/// How much older than the prune's start an unreferenced object must be to go: longer than
/// any keep takes between copying its object and writing its record.
const PRUNE_MARGIN: Duration = Duration::from_secs(600);

/// How often the retention runs at most (a short retention runs about twice per period).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl S3 {
    /// Keeps the current `old` of `class` (of `size` bytes, current since `since`) as a version
    /// that stops being current at `until`; `deleted` says no version follows it. Done before
    /// the change, which must not happen when this fails.
    pub(super) fn keep(
        &self,
        old: &StoredMeta,
        size: u64,
        (since, until): (i64, i64),
        deleted: bool,
    ) -> Result<(), StoreError> {
        if self.keep.is_zero() {
            return Ok(());
        }
        let current = key(old.class, &old.name)?;
        // Copied even when an object of that hash exists: the copy renews its time, which
        // keeps a prune running now from taking it before the record below names it.
        self.bucket.copy(&current, &object_key(&old.blake3))?;
        let record = Version {
            version: old.version,
            size,
            blake3: old.blake3,
            modified: old.modified,
            since,
            until,
            deleted,
        };
        let mut all = self.versions(old.class, &old.name)?;
        all.push(record);
        self.bucket.put(
            &history_key(old.class, &old.name),
            encode_versions(&all),
            &[],
        )?;
        Ok(())
    }

    /// The kept versions of `name` in `class`, oldest first.
    pub(super) fn versions(&self, class: Class, name: &str) -> Result<Vec<Version>, StoreError> {
        let hk = history_key(class, name);
        Ok(match self.bucket.get(&hk)? {
            Some((text, _)) => parse_versions(&text, &hk),
            None => Vec::new(),
        })
    }

    /// The kept version `version` of `name`, from the history of any class.
    pub(super) fn find(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<(Class, Version)>, StoreError> {
        for class in Class::ALL {
            if let Some(v) = self
                .versions(class, name)?
                .into_iter()
                .find(|v| v.version == version)
            {
                return Ok(Some((class, v)));
            }
        }
        Ok(None)
    }

    /// Every version of `name` kept in the history of any class, as `history` reports them.
    pub(super) fn kept_report(&self, name: &str) -> Result<Vec<schema::VersionInfo>, StoreError> {
        let mut all = Vec::new();
        for class in Class::ALL {
            all.extend(self.versions(class, name)?.iter().map(|v| v.info(class)));
        }
        all.sort_by_key(|v| (v.until, v.version));
        Ok(all)
    }

    /// Contents the history keeps and their bytes (every one is the history's alone: a kept
    /// content is a copy in the bucket, not shared with a current object).
    pub fn history_usage(&self) -> Result<(u64, u64), StoreError> {
        let all = self.bucket.list(OBJECTS)?;
        Ok((all.len() as u64, all.iter().map(|(_, size)| size).sum()))
    }

    /// The key of the content of kept version `v`.
    pub(super) fn kept_object(&self, v: &Version) -> String {
        object_key(&v.blake3)
    }

    /// Up to `limit` entries of `past` after the node cursor `after`: the current objects and
    /// the history records of each class walked side by side in key order, one page at a time.
    pub fn past_page(
        &self,
        past: Past,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        let cursor = super::parse_cursor(after)?;
        let mut page = PageBuilder::new(limit);
        let want = limit.clamp(1, schema::limits::MAX_LIST_PAGE) as usize;
        for class in Class::ALL {
            let mut from = match cursor {
                Some((c, _)) if class < c => continue,
                Some((c, name)) if class == c => Some(name.to_string()),
                _ => None,
            };
            loop {
                // The next names of either tree after `from`.
                let current_dir = format!("{class}/");
                let kept_dir = history_dir(class);
                let now = self.names_after(&current_dir, from.as_deref(), want)?;
                let then = self.names_after(&kept_dir, from.as_deref(), want)?;
                if now.is_empty() && then.is_empty() {
                    break;
                }
                // Only names up to the smaller of the two last names are complete in both.
                let last = match (now.last(), then.last()) {
                    (Some(a), Some(b)) if now.len() == want && then.len() == want => a.min(b),
                    (Some(a), _) if now.len() == want => a,
                    (_, Some(b)) if then.len() == want => b,
                    (a, b) => a.max(b).unwrap(),
                }
                .clone();
                let names = merge(&now, &then, &last);
                for (name, is_now, is_then) in &names {
                    let found = match past {
                        Past::At(t) => self.at(class, name, *is_now, *is_then, t)?,
                        Past::Deleted if *is_now => None,
                        Past::Deleted => self
                            .versions(class, name)?
                            .into_iter()
                            .max_by_key(|v| v.until)
                            .map(|v| v.entry(name.clone(), class)),
                    };
                    let Some(entry) = found else { continue };
                    if !page.fits(&entry) {
                        return Ok((page.into_entries(), true));
                    }
                    page.push(entry);
                }
                let complete = now.len() < want && then.len() < want;
                from = Some(last);
                if complete {
                    break;
                }
            }
        }
        Ok((page.into_entries(), false))
    }

    /// Up to `max` names below the key prefix `dir` after `after` (a name), in key order.
    fn names_after(
        &self,
        dir: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        let after = after.map(|a| format!("{dir}{a}"));
        Ok(self
            .bucket
            .list_after(dir, after.as_deref(), max)?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(dir).map(str::to_string))
            .collect())
    }

    /// The version of `name` current at `t`: the current object if it already was, else the
    /// kept version whose time as current spans `t`.
    fn at(
        &self,
        class: Class,
        name: &str,
        is_now: bool,
        is_then: bool,
        t: i64,
    ) -> Result<Option<Entry>, StoreError> {
        if is_now {
            if let Some((size, meta, stored)) = self.current(class, name)? {
                if stored <= t {
                    return Ok(Some(meta.entry(size)));
                }
            }
        }
        if !is_then {
            return Ok(None);
        }
        Ok(self
            .versions(class, name)?
            .into_iter()
            .filter(|v| v.since <= t && t < v.until)
            .max_by_key(|v| v.since)
            .map(|v| v.entry(name.to_string(), class)))
    }

    /// The versions the history keeps, name by name after the node cursor `after` (every kept
    /// version of a name in one page), up to `limit` names, each with the hash of its object
    /// as read from the store now (`None`, with the reason, when it is gone or unreadable); and
    /// whether more follow (`dfs fsck`). A content shared by versions is read once a page.
    pub fn kept_check_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<CheckedFile>, bool), StoreError> {
        let cursor = super::parse_cursor(after)?;
        let limit = limit.clamp(1, crate::check::CHECK_PAGE) as usize;
        let mut files = Vec::new();
        let (mut names, mut bytes) = (0usize, 0u64);
        let mut hashed: HashMap<Hash, Result<Hash, String>> = HashMap::new();
        for class in Class::ALL {
            let from = match cursor {
                Some((c, _)) if class < c => continue,
                Some((c, name)) if class == c => Some(name),
                _ => None,
            };
            let dir = history_dir(class);
            for name in self.names_after(&dir, from, limit + 1)? {
                if names >= limit || bytes > crate::check::CHECK_BYTES {
                    return Ok((files, true));
                }
                names += 1;
                for v in self.versions(class, &name)? {
                    let content = match hashed.get(&v.blake3) {
                        Some(c) => c.clone(),
                        None => {
                            bytes = bytes.saturating_add(v.size);
                            let c = self.hash_object(&object_key(&v.blake3));
                            hashed.insert(v.blake3, c.clone());
                            c
                        }
                    };
                    let (content, reason) = match content {
                        Ok(h) => (Some(h), None),
                        Err(why) => (None, Some(why)),
                    };
                    files.push(CheckedFile {
                        entry: v.entry(name.clone(), class),
                        content,
                        reason,
                    });
                }
            }
        }
        Ok((files, false))
    }

    /// The BLAKE3 of the object `key` as read now, or why it cannot be read.
    fn hash_object(&self, key: &str) -> Result<Hash, String> {
        let mut hasher = blake3::Hasher::new();
        match self.bucket.get_into(
            key,
            |_, _| Ok(()),
            |piece| {
                hasher.update(piece);
                Ok(())
            },
        ) {
            Ok(Some(_)) => Ok(Hash::from(hasher.finalize())),
            Ok(None) => Err(format!("its content {key} is gone from the bucket")),
            Err(e) => Err(format!("cannot read {key}: {e}")),
        }
    }

    /// Removes the versions that stopped being current more than the retention before `now`
    /// (ns), then the contents no record refers to.
    pub fn prune(&self, now: i64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let keep_ns = i64::try_from(self.keep.as_nanos()).unwrap_or(i64::MAX);
        let mut referenced = HashSet::new();
        let records = self.bucket.list(".dfs/history/")?;
        for (hk, _) in records {
            let Some((text, _)) = self.bucket.get(&hk)? else {
                continue;
            };
            let all = parse_versions(&text, &hk);
            let before = all.len();
            let kept: Vec<Version> = all
                .into_iter()
                .filter(|v| v.until.saturating_add(keep_ns) > now)
                .collect();
            pruned.versions += (before - kept.len()) as u64;
            referenced.extend(kept.iter().map(|v| v.blake3));
            if kept.len() == before {
                continue;
            }
            if kept.is_empty() {
                self.bucket.delete(&hk)?;
            } else {
                self.bucket.put(&hk, encode_versions(&kept), &[])?;
            }
        }
        // A short retention (tests, trials) takes its objects soon after their records.
        let margin = i64::try_from(PRUNE_MARGIN.min(self.keep).as_nanos()).unwrap_or(i64::MAX);
        for (ok, _) in self.bucket.list(OBJECTS)? {
            let Some(hash) = ok
                .strip_prefix(OBJECTS)
                .and_then(|h| h.parse::<Hash>().ok())
            else {
                continue;
            };
            if referenced.contains(&hash) {
                continue;
            }
            match self.bucket.head(&ok)? {
                Some(h) if h.stored < now.saturating_sub(margin) => {
                    self.bucket.delete(&ok)?;
                    pruned.objects += 1;
                    pruned.bytes += h.size;
                }
                _ => {}
            }
        }
        Ok(pruned)
    }

    /// Runs the retention at start and then every [`PRUNE_EVERY`] (a short retention about
    /// twice per period) until `stop`.
    pub fn start_pruner(
        self: std::sync::Arc<Self>,
        stop: daemon::Shutdown,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("storage-prune".into())
            .spawn(move || {
                if self.keep.is_zero() {
                    return;
                }
                let every = PRUNE_EVERY.min(self.keep / 2).max(Duration::from_secs(1));
                loop {
                    let now = schema::time::to_ns(std::time::SystemTime::now());
                    match self.prune(now) {
                        Ok(p) if p.versions > 0 || p.objects > 0 => tracing::info!(
                            versions = p.versions,
                            objects = p.objects,
                            bytes = p.bytes,
                            "history: removed what the retention no longer keeps"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("history: pruning the bucket failed: {e}"),
                    }
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
}

/// The names of two sorted lists up to and including `last`, each with whether it is in the
/// first (current) and in the second (kept), in order.
fn merge(now: &[String], then: &[String], last: &str) -> Vec<(String, bool, bool)> {
    let (mut a, mut b) = (
        now.iter().filter(|n| n.as_str() <= last).peekable(),
        then.iter().filter(|n| n.as_str() <= last).peekable(),
    );
    let mut out = Vec::new();
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(y),
        };
        match order {
            Ordering::Less => out.push((a.next().unwrap().clone(), true, false)),
            Ordering::Greater => out.push((b.next().unwrap().clone(), false, true)),
            Ordering::Equal => {
                b.next();
                out.push((a.next().unwrap().clone(), true, true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_walks_both_lists_in_order_up_to_the_last_name() {
        let now: Vec<String> = ["a", "c", "d"].map(String::from).to_vec();
        let then: Vec<String> = ["b", "c", "e"].map(String::from).to_vec();
        assert_eq!(
            merge(&now, &then, "d"),
            vec![
                ("a".into(), true, false),
                ("b".into(), false, true),
                ("c".into(), true, true),
                ("d".into(), true, false),
            ]
        );
    }
}
