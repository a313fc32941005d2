//! Listings from the history on the serve port (docs/CONTRACT.md §8): the tree as it was at an
//! instant (`list` with `at`), and the names deleted since that the history still holds (`list`
//! with `deleted`).
//!
//! Both walk, class by class, the current files (`ROOT/<class>/`) and the history files
//! (`ROOT/.dfs/history/<class>/<name>.versions`) side by side in one name order, so a page
//! holds only its own entries in memory and continues from a node's cursor
//! (`"<class>/<name>"`), as [`crate::list`] does for the present.

use crate::error::StoreError;
use crate::history::{changed_ns, read_versions, History};
use crate::layout::Layout;
use crate::list::{entry_of, Cursor};
use schema::{names, Class, Entry, PageBuilder};
use std::cmp::Ordering;
use std::iter::Peekable;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use walkdir::{DirEntry, WalkDir};

/// Which listing of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Past {
    /// The versions current at this instant (ns since the epoch).
    At(i64),
    /// The names not current now, each as its last kept version.
    Deleted,
}

/// Up to `limit` entries of `past` after the cursor `after`, and whether more follow.
pub fn page(
    layout: &Layout,
    past: Past,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<Entry>, bool), StoreError> {
    let cursor = after.map(Cursor::parse).transpose()?;
    let mut page = PageBuilder::new(limit);
    for class in Class::ALL {
        let bound: &[Vec<u8>] = match &cursor {
            Some(c) if class < c.class => continue,
            Some(c) if class == c.class => &c.parts,
            _ => &[],
        };
        let current_dir = layout.class_dir(class);
        let history_dir = layout.history().class_dir(class);
        let mut current = walk(&current_dir, bound, None).peekable();
        let mut kept = walk(&history_dir, bound, Some(History::SUFFIX)).peekable();
        while let Some((now, then)) = next_name(&mut current, &mut kept) {
            let found = match past {
                Past::At(t) => {
                    let dirs = (current_dir.as_path(), history_dir.as_path());
                    at(class, dirs, now.as_deref(), then.as_deref(), t)
                }
                Past::Deleted if now.is_some() => None,
                Past::Deleted => last_kept(class, &history_dir, then.as_deref()),
            };
            let Some(entry) = found else { continue };
            if !page.fits(&entry) {
                return Ok((page.into_entries(), true));
            }
            page.push(entry);
        }
    }
    Ok((page.into_entries(), false))
}

/// A file found by a walk: its name's components and its path.
type Found = (Vec<Vec<u8>>, PathBuf);

/// The next name of either walk: the path of its current file, of its history file, or both.
fn next_name(
    current: &mut Peekable<impl Iterator<Item = Found>>,
    kept: &mut Peekable<impl Iterator<Item = Found>>,
) -> Option<(Option<PathBuf>, Option<PathBuf>)> {
    let order = match (current.peek(), kept.peek()) {
        (None, None) => return None,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some((a, _)), Some((b, _))) => a.cmp(b),
    };
    Some(match order {
        Ordering::Less => (current.next().map(|f| f.1), None),
        Ordering::Greater => (None, kept.next().map(|f| f.1)),
        Ordering::Equal => (current.next().map(|f| f.1), kept.next().map(|f| f.1)),
    })
}

/// The version of a name current at `t`: the current file if it already was, else the kept
/// version whose time as current spans `t`.
fn at(
    class: Class,
    (current_dir, history_dir): (&Path, &Path),
    now: Option<&Path>,
    then: Option<&Path>,
    t: i64,
) -> Option<Entry> {
    if let Some(path) = now {
        let since = std::fs::symlink_metadata(path).map_or(0, |m| changed_ns(&m));
        if since <= t {
            return entry_of(class, current_dir, path);
        }
    }
    let then = then?;
    let name = kept_name(history_dir, then)?;
    read_kept(then)?
        .into_iter()
        .filter(|v| v.since <= t && t < v.until)
        .max_by_key(|v| v.since)
        .map(|v| v.entry(name, class))
}

/// The last version kept of a name that is no longer current.
fn last_kept(class: Class, history_dir: &Path, then: Option<&Path>) -> Option<Entry> {
    let then = then?;
    let name = kept_name(history_dir, then)?;
    read_kept(then)?
        .into_iter()
        .max_by_key(|v| v.until)
        .map(|v| v.entry(name, class))
}

/// The name a history file below `history_dir` is of.
pub(crate) fn kept_name(history_dir: &Path, path: &Path) -> Option<String> {
    let text = names::from_path(history_dir, path).ok()?;
    text.strip_suffix(History::SUFFIX).map(str::to_string)
}

/// The versions of a history file, or `None` (logged) when it cannot be read.
fn read_kept(path: &Path) -> Option<Vec<crate::history::Version>> {
    match read_versions(path) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), "not listed: {e}");
            None
        }
    }
}

/// The history files of `class` after `bound`, in name order: each name's components and the
/// path of its `<name>.versions`.
pub(crate) fn kept_files<'a>(
    history_dir: &'a Path,
    bound: &'a [Vec<u8>],
) -> impl Iterator<Item = (Vec<Vec<u8>>, PathBuf)> + 'a {
    walk(history_dir, bound, Some(History::SUFFIX))
}

/// The files below `dir` after `bound`, in name order. History files (`suffix` given) are
/// ordered by the name they are of, the suffix left out, so both walks share one order.
fn walk<'a>(
    dir: &'a Path,
    bound: &'a [Vec<u8>],
    suffix: Option<&'static str>,
) -> impl Iterator<Item = Found> + 'a {
    let key = move |e: &DirEntry| -> (Vec<u8>, bool) {
        let is_dir = e.file_type().is_dir();
        let name = e.file_name().as_bytes();
        let name = match suffix {
            Some(s) if !is_dir => name.strip_suffix(s.as_bytes()).unwrap_or(name),
            _ => name,
        };
        // A name and a folder of the same name (a file deleted, then a folder made in its
        // place): the file comes first, as its name is a prefix of the folder's names.
        (name.to_vec(), is_dir)
    };
    WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by(move |a, b| key(a).cmp(&key(b)))
        .into_iter()
        .filter_entry(move |e| match name_parts(dir, e, suffix) {
            // A folder on the cursor's path, or after it, may hold later files.
            Some(parts) if e.file_type().is_dir() => {
                parts.as_slice() > bound || bound.starts_with(&parts)
            }
            Some(parts) => parts.as_slice() > bound,
            None => false,
        })
        .filter_map(move |item| match item {
            Ok(e) if e.file_type().is_file() => {
                name_parts(dir, &e, suffix).map(|parts| (parts, e.into_path()))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(folder = %dir.display(), "listing skips an entry: {e}");
                None
            }
        })
}

/// The components of the name `entry` (below `dir`) is of, as bytes: a history file's last
/// without its `suffix`. `None` for a file of the history without the suffix.
fn name_parts(dir: &Path, entry: &DirEntry, suffix: Option<&str>) -> Option<Vec<Vec<u8>>> {
    let rel = entry.path().strip_prefix(dir).ok()?;
    let mut parts: Vec<Vec<u8>> = rel.iter().map(|c| c.as_bytes().to_vec()).collect();
    if let (Some(s), Some(last)) = (suffix, parts.last_mut()) {
        if !entry.file_type().is_dir() {
            *last = last.strip_suffix(s.as_bytes())?.to_vec();
        }
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::StoredMeta;
    use crate::tests::store;
    use std::time::Duration;

    fn ctime(path: &Path) -> i64 {
        changed_ns(&std::fs::metadata(path).unwrap())
    }

    fn now() -> i64 {
        schema::time::to_ns(std::time::SystemTime::now())
    }

    /// Keeps the current `name` of `class` as the node does before replacing or deleting it.
    fn keep(layout: &Layout, class: Class, name: &str, deleted: bool) {
        let path = layout.file_path(class, name).unwrap();
        let meta = StoredMeta::read(&std::fs::File::open(&path).unwrap(), name).unwrap();
        layout.history().keep(&path, &meta, now(), deleted).unwrap();
        if deleted {
            std::fs::remove_file(&path).unwrap();
        }
    }

    /// Every page of `past`, `limit` entries at most each, as (name, content hash).
    fn all(layout: &Layout, past: Past, limit: u32) -> Vec<(String, schema::Hash)> {
        let (mut out, mut after) = (Vec::new(), None);
        loop {
            let (entries, more) = page(layout, past, after.as_deref(), limit).unwrap();
            assert!(entries.len() <= limit as usize);
            out.extend(entries.iter().map(|e| (e.name.clone(), e.blake3)));
            after = entries.last().map(schema::page::node_cursor);
            if !more {
                return out;
            }
        }
    }

    /// Lets the clock move on, so that the instants of two steps differ even with a coarse
    /// file system clock.
    fn tick() {
        std::thread::sleep(Duration::from_millis(15));
    }

    #[test]
    fn the_tree_as_it_was_and_the_names_deleted_since() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::with_history(root.path(), Duration::from_secs(86_400));
        layout.prepare(true).unwrap();
        let h = schema::Hash::of;
        store(&layout, Class::Txt, "a.txt", b"one");
        store(&layout, Class::Txt, "b.txt-1", b"b1");
        store(&layout, Class::Mp3, "m/s.mp3", b"song");
        // A file `d` deleted, then a folder `d/` made in its place.
        store(&layout, Class::Others, "d", b"file d");
        tick();
        let first = ctime(&layout.file_path(Class::Mp3, "m/s.mp3").unwrap()).max(now());
        tick();
        keep(&layout, Class::Txt, "a.txt", false);
        store(&layout, Class::Txt, "a.txt", b"two");
        keep(&layout, Class::Others, "d", true);
        store(&layout, Class::Others, "d/e", b"in d");
        store(&layout, Class::Txt, "b.txt", b"b");
        keep(&layout, Class::Mp3, "m/s.mp3", true);
        tick();
        let second = now();

        let then = vec![
            ("m/s.mp3".to_string(), h(b"song")),
            ("a.txt".to_string(), h(b"one")),
            ("b.txt-1".to_string(), h(b"b1")),
            ("d".to_string(), h(b"file d")),
        ];
        let today = vec![
            ("a.txt".to_string(), h(b"two")),
            ("b.txt".to_string(), h(b"b")),
            ("b.txt-1".to_string(), h(b"b1")),
            ("d/e".to_string(), h(b"in d")),
        ];
        for limit in [1, 2, 5000] {
            assert_eq!(all(&layout, Past::At(first), limit), then, "limit {limit}");
            assert_eq!(
                all(&layout, Past::At(second), limit),
                today,
                "limit {limit}"
            );
            assert_eq!(
                all(&layout, Past::Deleted, limit),
                [
                    ("m/s.mp3".to_string(), h(b"song")),
                    ("d".to_string(), h(b"file d"))
                ],
                "limit {limit}"
            );
        }
        assert_eq!(all(&layout, Past::At(0), 10), []);
        let e = page(&layout, Past::At(first), Some("nope"), 10).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
