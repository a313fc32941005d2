//! Checking what the node holds, for `dfs fsck`: `check` pages re-hash stored files against the
//! hash recorded in their metadata, and `quarantine` sets aside a file whose content no longer
//! matches it. Both run in the sync pool, so hashing never holds up the socket thread.
//!
//! ```text
//! ROOT/.dfs/quarantine/<class>/<name>   files set aside: not served, not listed
//! ```

use crate::error::StoreError;
use crate::layout::Layout;
use crate::list;
use crate::meta::StoredMeta;
use disk::atomic::{create_parents, fsync_dir, fsync_parent, remove_empty_parents};
use schema::{CheckedFile, Class, Hash};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Most files in one `checked` page.
pub const CHECK_PAGE: u32 = 256;

/// A `checked` page stops once its files add up to this many bytes (at least one file), so a
/// page's worth of hashing stays short whatever the file sizes.
pub const CHECK_BYTES: u64 = 64 * 1024 * 1024;

/// The folder holding the files of `class` set aside under `root`.
pub fn quarantine_dir(root: &Path, class: Class) -> PathBuf {
    root.join(".dfs").join("quarantine").join(class.as_str())
}

/// BLAKE3 of the content of the file at `path`, streamed.
fn hash_file(path: &Path) -> io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(hasher.finalize().into())
}

/// Up to `limit` (at most [`CHECK_PAGE`]) stored files after the cursor `after`, in listing
/// order, each with the hash of its content as read now; and whether more follow. The page ends
/// early once [`CHECK_BYTES`] of content were hashed.
pub fn page(
    layout: &Layout,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<CheckedFile>, bool), StoreError> {
    let (entries, mut more) = list::page(layout, after, limit.clamp(1, CHECK_PAGE))?;
    let mut files = Vec::with_capacity(entries.len());
    let mut bytes = 0u64;
    for entry in entries {
        if !files.is_empty() && bytes.saturating_add(entry.size) > CHECK_BYTES {
            more = true;
            break;
        }
        bytes = bytes.saturating_add(entry.size);
        let path = layout.file_path(entry.class, &entry.name)?;
        let (content, reason) = match hash_file(&path) {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(format!("cannot read {}: {e}", path.display()))),
        };
        if content.is_some() && content != Some(entry.blake3) {
            tracing::warn!(
                name = %entry.name,
                class = %entry.class,
                "content no longer matches its recorded hash"
            );
        }
        files.push(CheckedFile {
            entry,
            content,
            reason,
        });
    }
    Ok((files, more))
}

/// The versions the history keeps, name by name after the cursor `after` (every kept version
/// of a name in one page), up to `limit` names (at most [`CHECK_PAGE`]), each with the hash of
/// its object as read now (`None`, with the reason, when the object is gone or unreadable); and
/// whether more follow. A content shared by several versions is hashed once per page.
pub fn kept_page(
    layout: &Layout,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<CheckedFile>, bool), StoreError> {
    let cursor = after.map(list::Cursor::parse).transpose()?;
    let limit = limit.clamp(1, CHECK_PAGE) as usize;
    let history = layout.history();
    let mut files = Vec::new();
    let (mut names, mut bytes) = (0usize, 0u64);
    let mut hashed: std::collections::HashMap<Hash, Result<Hash, String>> = Default::default();
    for class in Class::ALL {
        let bound: &[Vec<u8>] = match &cursor {
            Some(c) if class < c.class => continue,
            Some(c) if class == c.class => &c.parts,
            _ => &[],
        };
        let dir = history.class_dir(class);
        for (_, path) in crate::past::kept_files(&dir, bound) {
            if names >= limit || bytes > CHECK_BYTES {
                return Ok((files, true));
            }
            let Some(name) = crate::past::kept_name(&dir, &path) else {
                continue;
            };
            names += 1;
            for v in crate::history::read_versions(&path)? {
                let content = hashed.entry(v.blake3).or_insert_with(|| {
                    let Some(object) = history.object(&v.blake3) else {
                        return Err("its content is gone from the history's objects".into());
                    };
                    bytes = bytes.saturating_add(v.size);
                    hash_file(&object).map_err(|e| format!("cannot read {}: {e}", object.display()))
                });
                let (content, reason) = match content {
                    Ok(h) => (Some(*h), None),
                    Err(why) => (None, Some(why.clone())),
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

/// Moves the stored `name` of `class` to `ROOT/.dfs/quarantine/<class>/<name>` if its content no
/// longer matches the hash recorded for it. A file whose content matches stays where it is
/// (`NotFound`: there is nothing to set aside), so a good version stored since the check is
/// never moved.
pub fn quarantine(layout: &Layout, class: Class, name: &str) -> Result<(), StoreError> {
    let src = layout.file_path(class, name)?;
    let not_found = |why: &str| StoreError::NotFound(format!("{name}: {why}; nothing set aside"));
    let file = match File::open(&src) {
        Ok(f) if f.metadata().map(|m| m.is_file()).unwrap_or(false) => f,
        Ok(_) => return Err(not_found("not stored on this node")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_found("not stored on this node"))
        }
        Err(e) => return Err(StoreError::io("open", &src, e)),
    };
    let recorded = StoredMeta::read(&file, name).ok().map(|m| m.blake3);
    let content = hash_file(&src).map_err(|e| StoreError::io("read", &src, e))?;
    if recorded == Some(content) {
        return Err(not_found("its content matches its recorded hash"));
    }
    let dir = quarantine_dir(layout.root(), class);
    fs::create_dir_all(&dir).map_err(|e| StoreError::io("create the folder", &dir, e))?;
    let dest = schema::names::to_path(&dir, name)?;
    create_parents(&dir, &dest)?;
    fs::rename(&src, &dest).map_err(|e| StoreError::io("move aside to", &dest, e))?;
    // Both folders changed: fsync each so that the move survives a crash.
    fsync_parent(&dest)?;
    if let Some(from) = src.parent() {
        fsync_dir(from)?;
    }
    remove_empty_parents(&layout.class_dir(class), &src);
    tracing::warn!(
        name,
        %class,
        to = %dest.display(),
        "set aside a file whose content no longer matches its recorded hash"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::store;

    #[test]
    fn pages_rehash_and_quarantine_moves_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let _lock = layout.prepare(true).unwrap();
        store(&layout, Class::Txt, "a.txt", b"alpha");
        let bad = store(&layout, Class::Txt, "d/b.txt", b"bravo");
        store(&layout, Class::Others, "c", b"charlie");
        fs::write(&bad, b"BRAVO").unwrap();

        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (files, more) = page(&layout, after.as_deref(), 1).unwrap();
            assert_eq!(files.len(), 1);
            after = Some(list::cursor_after(&files[0].entry));
            all.extend(files);
            if !more {
                break;
            }
        }
        let intact: Vec<(&str, bool)> = all
            .iter()
            .map(|f| (f.entry.name.as_str(), f.is_intact()))
            .collect();
        assert_eq!(intact, [("a.txt", true), ("d/b.txt", false), ("c", true)]);
        assert_eq!(all[1].content, Some(Hash::of(b"BRAVO")));

        let err = quarantine(&layout, Class::Txt, "a.txt").unwrap_err();
        assert!(err.to_string().contains("matches"), "{err}");
        assert!(layout.file_path(Class::Txt, "a.txt").unwrap().exists());
        quarantine(&layout, Class::Txt, "d/b.txt").unwrap();
        assert!(!bad.exists());
        assert!(!dir.path().join("txt/d").exists(), "empty folder left");
        let aside = quarantine_dir(dir.path(), Class::Txt).join("d/b.txt");
        assert_eq!(fs::read(aside).unwrap(), b"BRAVO");
        assert!(quarantine(&layout, Class::Txt, "d/b.txt").is_err());
        let (files, _) = page(&layout, None, 10).unwrap();
        assert_eq!(files.len(), 2, "a quarantined file is not listed");
    }
}
