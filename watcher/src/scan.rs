//! Walking the source folder (or part of it) to find every file worth syncing.

use crate::ignore::Ignores;
use crate::local::Stamp;
use schema::names::{self, NameError};
use std::path::{Path, PathBuf};
use std::time::Instant;
use walkdir::WalkDir;

/// What a walk found besides the files it reported.
#[derive(Debug, Default)]
pub struct Walked {
    /// Paths whose names break the name rules (not UTF-8, too long…), with why.
    pub bad: Vec<(String, NameError)>,
    /// Folders or files that could not be read, with why.
    pub unreadable: Vec<String>,
}

/// Walks `dir` (the source root `root` or a folder below it) without following symlinks and
/// calls `found` with the name and stamp of every regular file that is not ignored. Ignored
/// folders are not entered.
pub fn walk(
    root: &Path,
    dir: &Path,
    ignores: &Ignores,
    mut found: impl FnMut(String, Stamp),
) -> Walked {
    let mut walked = Walked::default();
    let mut it = WalkDir::new(dir).follow_links(false).into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A folder removed while being walked is not worth a word.
                if e.io_error().map(|io| io.kind()) != Some(std::io::ErrorKind::NotFound) {
                    walked.unreadable.push(e.to_string());
                }
                continue;
            }
        };
        if entry.path() == root {
            continue;
        }
        let ft = entry.file_type();
        if !ft.is_dir() && !ft.is_file() {
            continue;
        }
        let name = match names::from_path(root, entry.path()) {
            Ok(n) => n,
            Err(e) => {
                walked.bad.push((entry.path().display().to_string(), e));
                if ft.is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
        };
        if ignores.is_ignored(&name) {
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if ft.is_file() {
            match entry.metadata() {
                Ok(m) => found(name, Stamp::of(&m)),
                Err(e) => walked.unreadable.push(e.to_string()),
            }
        }
    }
    walked
}

/// When the source folder is walked next, and the other looks that make up for events the
/// kernel did not deliver.
#[derive(Debug)]
pub struct Scans {
    /// When the periodic walk (after a fresh listing) is due.
    pub next_full: Instant,
    /// A walk is wanted as soon as possible (an inotify queue overflow, a watch error).
    pub full_wanted: bool,
    /// Events were lost in the kernel: folders made meanwhile may have no watch yet.
    pub rewatch_wanted: bool,
    /// When an inotify queue overflow was last logged as a warning.
    pub overflow_warned: Option<Instant>,
    /// New folders to scan once more, and when: a file made in a new folder after its first
    /// scan but before its inotify watch existed has no event.
    pub new_folders: Vec<(Instant, PathBuf)>,
}

impl Scans {
    /// Nothing wanted yet; the first walk follows the start-up listing.
    pub fn new(now: Instant) -> Scans {
        Scans {
            next_full: now,
            full_wanted: false,
            rewatch_wanted: false,
            overflow_warned: None,
            new_folders: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_skips_ignored_folders_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("build/x")).unwrap();
        std::fs::write(root.join("top.txt"), b"1").unwrap();
        std::fs::write(root.join("a/b/deep.mp3"), b"22").unwrap();
        std::fs::write(root.join("a/.x.swp"), b"").unwrap();
        std::fs::write(root.join("build/x/o.o"), b"").unwrap();
        std::os::unix::fs::symlink(root.join("top.txt"), root.join("link")).unwrap();
        let ig = Ignores::new(&["build".into()], true).unwrap();
        let mut found = Vec::new();
        let walked = walk(root, root, &ig, |n, s| found.push((n, s.size)));
        found.sort();
        assert_eq!(
            found,
            [("a/b/deep.mp3".to_string(), 2), ("top.txt".to_string(), 1)]
        );
        assert!(walked.bad.is_empty() && walked.unreadable.is_empty());

        let mut below = Vec::new();
        walk(root, &root.join("a"), &ig, |n, _| below.push(n));
        assert_eq!(below, ["a/b/deep.mp3"]);
    }

    #[test]
    fn reports_names_that_break_the_rules() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff"));
        std::fs::write(&bad, b"x").unwrap();
        let ig = Ignores::new(&[], true).unwrap();
        let mut found = 0;
        let walked = walk(dir.path(), dir.path(), &ig, |_, _| found += 1);
        assert_eq!(found, 0);
        assert_eq!(walked.bad.len(), 1);
    }
}
