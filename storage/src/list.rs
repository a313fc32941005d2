//! Listings on the serve port: every stored file, class by class in `Class::ALL` order, and
//! within a class in walk order (siblings sorted by name bytes, depth first). The cursor is
//! `"<class>/<name>"` of the last entry of the previous page.
//!
//! A page never holds more than its entries in memory: each class folder is walked afresh,
//! folders that sort wholly before the cursor are skipped without being read, and files up to the
//! cursor are passed over.

use crate::error::StoreError;
use crate::layout::Layout;
use crate::meta::StoredMeta;
use schema::{names, Class, Entry, PageBuilder};
use std::fs::File;
use std::path::Path;
use walkdir::{DirEntry, WalkDir};

/// A position in the listing order: a class and the components of a name in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) class: Class,
    pub(crate) parts: Vec<Vec<u8>>,
}

impl Cursor {
    /// Parses `"<class>/<name>"`.
    pub(crate) fn parse(after: &str) -> Result<Cursor, StoreError> {
        let bad = |why: &str| {
            StoreError::Protocol(format!(
                "list cursor {after:?} {why}; a node's cursor is \"<class>/<name>\""
            ))
        };
        let (class, name) =
            schema::page::parse_node_cursor(after).map_err(|e| bad(&e.to_string()))?;
        let parts = name.split('/').map(|p| p.as_bytes().to_vec()).collect();
        Ok(Cursor { class, parts })
    }
}

/// The components of `path` below `dir`, as bytes.
fn parts(dir: &Path, path: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt as _;
    path.strip_prefix(dir)
        .map(|rel| rel.iter().map(|c| c.as_bytes().to_vec()).collect())
        .unwrap_or_default()
}

/// Whether the walk should visit `entry` (a file after the cursor, or a folder that may hold one).
fn after_cursor(dir: &Path, entry: &DirEntry, bound: &[Vec<u8>]) -> bool {
    if entry.depth() == 0 {
        return true;
    }
    let p = parts(dir, entry.path());
    if entry.file_type().is_dir() {
        // A folder on the cursor's path, or after it, may hold later files.
        p.as_slice() > bound || bound.starts_with(&p)
    } else {
        p.as_slice() > bound
    }
}

/// The entry of the stored file at `path`, or `None` (logged) when it cannot be listed.
pub(crate) fn entry_of(class: Class, dir: &Path, path: &Path) -> Option<Entry> {
    let name = match names::from_path(dir, path) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(path = %path.display(), "not listed: {e}");
            return None;
        }
    };
    let read = File::open(path).map_err(|e| e.to_string()).and_then(|f| {
        let meta = StoredMeta::read(&f, &name).map_err(|e| e.to_string())?;
        let size = f.metadata().map_err(|e| e.to_string())?.len();
        Ok(meta.entry(size))
    });
    match read {
        Ok(mut entry) => {
            entry.name = name;
            entry.class = class;
            Some(entry)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "not listed: {e}");
            None
        }
    }
}

/// Up to `limit` entries after the cursor `after` (a page as [`PageBuilder`] bounds it), and
/// whether more follow.
pub fn page(
    layout: &Layout,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<Entry>, bool), StoreError> {
    let cursor = after.map(Cursor::parse).transpose()?;
    let mut entries = PageBuilder::new(limit);
    for class in Class::ALL {
        let bound: &[Vec<u8>] = match &cursor {
            Some(c) if class < c.class => continue,
            Some(c) if class == c.class => &c.parts,
            _ => &[],
        };
        let dir = layout.class_dir(class);
        let walk = WalkDir::new(&dir)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| after_cursor(&dir, e, bound));
        for item in walk {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    tracing::warn!(folder = %dir.display(), "listing skips an entry: {e}");
                    continue;
                }
            };
            if !item.file_type().is_file() {
                continue;
            }
            let Some(entry) = entry_of(class, &dir, item.path()) else {
                continue;
            };
            if !entries.fits(&entry) {
                return Ok((entries.into_entries(), true));
            }
            entries.push(entry);
        }
    }
    Ok((entries.into_entries(), false))
}

/// The cursor that continues a listing after `entry`.
pub fn cursor_after(entry: &Entry) -> String {
    schema::page::node_cursor(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::store;

    fn all_pages(layout: &Layout, limit: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (entries, more) = page(layout, after.as_deref(), limit).unwrap();
            assert!(entries.len() <= limit as usize);
            out.extend(entries.iter().map(cursor_after));
            after = entries.last().map(cursor_after);
            if !more {
                return out;
            }
        }
    }

    #[test]
    fn pages_through_classes_and_nested_folders_in_walk_order() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let _lock = layout.prepare(true).unwrap();
        let files = [
            (Class::Others, "z"),
            (Class::Mp3, "b/x.mp3"),
            (Class::Mp3, "a.mp3"),
            (Class::Mp3, "a/b/c.mp3"),
            (Class::Mp3, "a/a.mp3"),
            (Class::Pdf, "p.pdf"),
            (Class::Mp3, "a.b/c.mp3"),
            (Class::Others, "a/b/c/d"),
        ];
        for (c, n) in files {
            store(&layout, c, n, n.as_bytes());
        }
        // A file without metadata is skipped, not fatal.
        std::fs::write(dir.path().join("txt/bare.txt"), b"x").unwrap();
        let expected = [
            "mp3/a/a.mp3",
            "mp3/a/b/c.mp3",
            "mp3/a.b/c.mp3",
            "mp3/a.mp3",
            "mp3/b/x.mp3",
            "pdf/p.pdf",
            "others/a/b/c/d",
            "others/z",
        ];
        for limit in [1, 2, 3, 5, 100] {
            assert_eq!(all_pages(&layout, limit), expected, "limit {limit}");
        }
        // A cursor naming a file that is gone still continues in order.
        let (entries, _) = page(&layout, Some("mp3/a/b/zz.mp3"), 2).unwrap();
        let got: Vec<String> = entries.iter().map(cursor_after).collect();
        assert_eq!(got, ["mp3/a.b/c.mp3", "mp3/a.mp3"]);
        let (entries, more) = page(&layout, Some("others/z"), 10).unwrap();
        assert!(entries.is_empty() && !more);
        assert!(page(&layout, Some("nonsense"), 10).is_err());
        assert!(page(&layout, Some("mp3/../x"), 10).is_err());
    }
}
