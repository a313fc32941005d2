//! Listings kept for browsing and search: the store now (listed again when older than
//! [`NOW_AGE`]) and the store at the instants people picked (kept [`PAST_AGE`]). A listing is
//! sorted by name, so a folder is one contiguous run of it and paging is a binary search.

use fetcher::client::Client;
use fetcher::error::FetchError;
use fetcher::list::Tree;
use fetcher::select::Pattern;
use schema::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old the listing of now may be when a page is served.
pub const NOW_AGE: Duration = Duration::from_secs(3);

/// How long a listing of an instant is kept unused.
pub const PAST_AGE: Duration = Duration::from_secs(600);

/// Listings of instants kept at once.
const MAX_PAST: usize = 8;

/// Every stored file of one listing, by name.
pub struct Listing {
    entries: Vec<Entry>,
}

/// One row of a folder: a sub-folder, or a file.
pub enum Row<'a> {
    Dir {
        name: &'a str,
        path: String,
        files: usize,
    },
    File(&'a Entry),
}

impl Listing {
    fn new(mut entries: Vec<Entry>) -> Listing {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Listing { entries }
    }

    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The files under `folder` (`""` or `a/b/`), in name order.
    pub fn under(&self, folder: &str) -> &[Entry] {
        let start = self.entries.partition_point(|e| e.name.as_str() < folder);
        let len = self.entries[start..].partition_point(|e| e.name.starts_with(folder));
        &self.entries[start..start + len]
    }

    /// Whether `folder` (`a/b/`) holds any file.
    pub fn is_folder(&self, folder: &str) -> bool {
        folder.is_empty() || !self.under(folder).is_empty()
    }

    /// The rows of `folder` (`""` or ending in `/`) after the stored name `after` (a page's
    /// cursor), at most `limit`, and the cursor of the next page when more follow: the last
    /// stored name the page covered.
    pub fn rows(
        &self,
        folder: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Row<'_>>, Option<String>) {
        let all = self.under(folder);
        let mut i = after.map_or(0, |a| all.partition_point(|e| e.name.as_str() <= a));
        let mut rows = Vec::new();
        while i < all.len() {
            if rows.len() == limit {
                return (rows, Some(all[i - 1].name.clone()));
            }
            let rest = &all[i].name[folder.len()..];
            match rest.split_once('/') {
                Some((dir, _)) => {
                    let path = format!("{folder}{dir}/");
                    // Every name with this prefix sorts before `<prefix>0` (`/` + 1).
                    let end = format!("{folder}{dir}0");
                    let j = i + all[i..].partition_point(|e| e.name.as_str() < end.as_str());
                    rows.push(Row::Dir {
                        name: dir,
                        path,
                        files: j - i,
                    });
                    i = j;
                }
                None => {
                    rows.push(Row::File(&all[i]));
                    i += 1;
                }
            }
        }
        (rows, None)
    }

    /// The files whose name matches `query` (a glob when it holds `*`, `?`, `[` or `{`, else
    /// a case-insensitive part of the name) after the name `after`, at most `limit`, and the
    /// last name when more follow. A malformed glob is an error.
    pub fn search(
        &self,
        query: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<&Entry>, Option<String>), String> {
        let start = after.map_or(0, |a| {
            self.entries.partition_point(|e| e.name.as_str() <= a)
        });
        let matcher: Box<dyn Fn(&str) -> bool> = if fetcher::select::is_pattern(query) {
            let p = Pattern::new(query).map_err(|e| e.to_string())?;
            Box::new(move |name| p.matches(name))
        } else {
            let needle = query.to_lowercase();
            Box::new(move |name| name.to_lowercase().contains(&needle))
        };
        let mut found = Vec::new();
        for e in &self.entries[start..] {
            if matcher(&e.name) {
                if found.len() == limit {
                    let last = found.last().map(|e: &&Entry| e.name.clone());
                    return Ok((found, last));
                }
                found.push(e);
            }
        }
        Ok((found, None))
    }
}

/// The listings of now and of past instants, shared by the workers.
#[derive(Default)]
pub struct Snapshots {
    now: Mutex<Option<(Instant, Arc<Listing>)>>,
    past: Mutex<HashMap<i64, (Instant, Arc<Listing>)>>,
}

impl Snapshots {
    /// The listing of now (`at` is `None`) or of the instant `at` (ns), listed through
    /// `client` unless a recent one is kept.
    pub fn get(&self, client: &mut Client, at: Option<i64>) -> Result<Arc<Listing>, FetchError> {
        match at {
            None => {
                if let Some((when, l)) = &*lock(&self.now) {
                    if when.elapsed() < NOW_AGE {
                        return Ok(l.clone());
                    }
                }
                let l = Arc::new(list(client, Tree::Now)?);
                *lock(&self.now) = Some((Instant::now(), l.clone()));
                Ok(l)
            }
            Some(t) => {
                if let Some((when, l)) = lock(&self.past).get_mut(&t) {
                    *when = Instant::now();
                    return Ok(l.clone());
                }
                let l = Arc::new(list(client, Tree::At(t))?);
                let mut past = lock(&self.past);
                past.retain(|_, (when, _)| when.elapsed() < PAST_AGE);
                while past.len() >= MAX_PAST {
                    let oldest = past.iter().min_by_key(|(_, (w, _))| *w).map(|(k, _)| *k);
                    match oldest {
                        Some(k) => past.remove(&k),
                        None => break,
                    };
                }
                past.insert(t, (Instant::now(), l.clone()));
                Ok(l)
            }
        }
    }
}

/// A folder's path as listings use it: `""` for the root, else ending in `/`.
pub fn folder_path(name: &str) -> String {
    if name.is_empty() || name.ends_with('/') {
        name.to_string()
    } else {
        format!("{name}/")
    }
}

/// `m` locked, whether or not a holder panicked (the data is plain state, always whole).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn list(client: &mut Client, tree: Tree) -> Result<Listing, FetchError> {
    let mut entries = Vec::new();
    fetcher::list::pages(client, tree, |page| {
        entries.extend_from_slice(page);
        Ok(())
    })?;
    Ok(Listing::new(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Hash};

    fn listing(names: &[&str]) -> Listing {
        Listing::new(
            names
                .iter()
                .map(|n| Entry {
                    name: n.to_string(),
                    class: Class::Others,
                    size: n.len() as u64,
                    blake3: Hash::of(n.as_bytes()),
                    modified: 0,
                    version: 1,
                })
                .collect(),
        )
    }

    fn show(rows: &[Row<'_>]) -> Vec<String> {
        rows.iter()
            .map(|r| match r {
                Row::Dir { name, files, .. } => format!("{name}/ ({files})"),
                Row::File(e) => e.name.clone(),
            })
            .collect()
    }

    #[test]
    fn a_folder_shows_its_files_and_sub_folders_once() {
        let l = listing(&["a/x.txt", "a/b/1", "a/b/2", "a/b!", "a/c", "ab", "z"]);
        let (rows, more) = l.rows("a/", None, 10);
        assert_eq!(show(&rows), ["a/b!", "b/ (2)", "a/c", "a/x.txt"]);
        assert!(more.is_none());
        let (rows, _) = l.rows("", None, 10);
        assert_eq!(show(&rows), ["a/ (5)", "ab", "z"]);
        assert!(l.is_folder("a/b/") && !l.is_folder("a/q/"));
        assert_eq!(l.under("a/b/").len(), 2);
    }

    #[test]
    fn pages_of_a_folder_continue_after_the_last_row() {
        let mut names: Vec<String> = (0..25).map(|i| format!("d/f{i:03}")).collect();
        names.push("d/sub/one".into());
        names.push("d/sub/two".into());
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let l = listing(&refs);
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (rows, more) = l.rows("d/", after.as_deref(), 10);
            seen.extend(show(&rows));
            match more {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        assert_eq!(seen.len(), 26, "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("sub/ (2)"));
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(dedup, seen);
    }

    #[test]
    fn search_by_part_of_the_name_or_by_glob() {
        let l = listing(&[
            "Music/A.mp3",
            "music/b.MP3",
            "docs/x.pdf",
            "docs/deep/y.pdf",
        ]);
        let (hits, _) = l.search("mp3", None, 10).unwrap();
        assert_eq!(hits.len(), 2);
        let (hits, _) = l.search("docs/*.pdf", None, 10).unwrap();
        assert_eq!(
            hits.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["docs/x.pdf"]
        );
        let (hits, more) = l.search("**/*.pdf", None, 1).unwrap();
        assert_eq!((hits.len(), more.as_deref()), (1, Some("docs/deep/y.pdf")));
        let (hits, more) = l.search("**/*.pdf", more.as_deref(), 1).unwrap();
        assert_eq!((hits[0].name.as_str(), more), ("docs/x.pdf", None));
        assert!(l.search("[", None, 1).is_err());
    }
}
