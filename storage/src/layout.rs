//! Where things live under the node's root, and the start-up checks of that root.
//!
//! ```text
//! ROOT/mp3/…, ROOT/txt/…, ROOT/pdf/…, ROOT/others/…   complete, final files only
//! ROOT/.dfs/tmp/                                      uploads in progress (emptied at start)
//! ROOT/.dfs/lock                                      held (flock) while a node serves ROOT
//! ROOT/.dfs/objects/, ROOT/.dfs/history/               replaced and deleted versions (`history`)
//! ```

use crate::error::StoreError;
use crate::history::History;
use anyhow::{bail, Context as _};
use disk::atomic::TempFile;
use schema::names::{self, NameError};
use schema::Class;
use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The folders of one storage root: the node's local-folder backend. The components
/// (`upload::Uploads`, `read::Reads`, the sync pool, listings, deletes and
/// renames) reach the stored bytes through it, so it is the seam where an object-store backend
/// (S3) would go later; today there is only this one, and no trait in front of it.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    tmp: PathBuf,
    history: History,
}

/// How long replaced and deleted versions stay by default (`--keep-history`).
pub const DEFAULT_KEEP_HISTORY: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

impl Layout {
    /// The layout of `root` (nothing is created), keeping history for the default period.
    pub fn new(root: &Path) -> Layout {
        Layout::with_history(root, DEFAULT_KEEP_HISTORY)
    }

    /// The layout of `root`, keeping replaced and deleted versions for `keep` (zero: none).
    pub fn with_history(root: &Path, keep: std::time::Duration) -> Layout {
        Layout {
            root: root.to_path_buf(),
            tmp: root.join(".dfs").join("tmp"),
            history: History::new(root, keep),
        }
    }

    /// The same layout, its history holding at most `budget` bytes beyond the current files.
    pub fn with_history_budget(mut self, budget: Option<u64>) -> Layout {
        self.history = self.history.with_budget(budget);
        self
    }

    /// Where replaced and deleted versions are kept.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder holding the files of `class`.
    pub fn class_dir(&self, class: Class) -> PathBuf {
        self.root.join(class.as_str())
    }

    /// The final path of `name` in `class`, after checking the name.
    pub fn file_path(&self, class: Class, name: &str) -> Result<PathBuf, NameError> {
        names::to_path(&self.class_dir(class), name)
    }

    /// Opens the stored file `name` of `class`: the open file and its path, or `None` when there
    /// is no regular file of that name.
    pub fn open_file(
        &self,
        class: Class,
        name: &str,
    ) -> Result<Option<(File, PathBuf)>, StoreError> {
        let path = self.file_path(class, name)?;
        match File::open(&path) {
            Ok(f) => match f.metadata() {
                Ok(m) if m.is_file() => Ok(Some((f, path))),
                Ok(_) => Ok(None),
                Err(e) => Err(StoreError::io("read the metadata of", &path, e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(StoreError::io("open", &path, e)),
        }
    }

    /// A new, empty temporary file in `ROOT/.dfs/tmp`, removed again when dropped: unnamed where
    /// the file system allows (see `disk::atomic`).
    pub fn new_temp(&self) -> Result<TempFile, StoreError> {
        Ok(TempFile::in_dir(&self.tmp)?)
    }

    /// Makes the root ready to serve: creates the class folders and `.dfs/tmp`, takes the lock
    /// (one node per root), empties `.dfs/tmp` of an earlier run's leftovers and, when the files
    /// are kept here (`files`; not with an S3 backend), checks that the filesystem keeps user
    /// extended attributes. Returns the lock, held while it lives.
    pub fn prepare(&self, files: bool) -> anyhow::Result<File> {
        for class in Class::ALL {
            let dir = self.class_dir(class);
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the class folder {}", dir.display()))?;
        }
        fs::create_dir_all(&self.tmp).with_context(|| {
            format!("cannot create the temporary folder {}", self.tmp.display())
        })?;
        let lock = self.lock()?;
        let removed = self.clean_tmp()?;
        if removed > 0 {
            tracing::info!(
                removed,
                folder = %self.tmp.display(),
                "removed leftovers of interrupted uploads"
            );
        }
        if files {
            self.probe_xattrs()?;
        }
        Ok(lock)
    }

    /// Takes an exclusive advisory lock on `ROOT/.dfs/lock`, so that two nodes never share a root
    /// (each would delete the other's uploads in progress).
    fn lock(&self) -> anyhow::Result<File> {
        let path = self.root.join(".dfs").join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "another dfs storage node is already serving {} (it holds {}); stop it or \
                     choose another --root",
                    self.root.display(),
                    path.display()
                );
            }
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(file)
    }

    /// Removes everything in `.dfs/tmp`; returns how many entries it removed.
    fn clean_tmp(&self) -> anyhow::Result<usize> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.tmp)
            .with_context(|| format!("cannot read {}", self.tmp.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", self.tmp.display()))?;
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let result = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.with_context(|| format!("cannot remove the leftover {}", path.display()))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Fails with a clear error when the filesystem of the root does not keep user extended
    /// attributes, where the node keeps each file's metadata.
    fn probe_xattrs(&self) -> anyhow::Result<()> {
        let probe = self.root.join(".dfs").join("xattr-probe");
        File::create(&probe).with_context(|| format!("cannot create {}", probe.display()))?;
        let value = b"probe";
        let result = xattr::set(&probe, "user.dfs.probe", value)
            .and_then(|()| xattr::get(&probe, "user.dfs.probe"));
        let _ = fs::remove_file(&probe);
        match result {
            Ok(Some(v)) if v == value => Ok(()),
            Ok(_) => bail!(
                "the filesystem of {} did not keep a user extended attribute; dfs keeps file \
                 metadata there: choose a root on ext4, xfs or btrfs (mounted with user_xattr)",
                self.root.display()
            ),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "the filesystem of {} does not support user extended attributes, where dfs \
                     keeps file metadata: choose a root on ext4, xfs or btrfs (mounted with \
                     user_xattr)",
                    self.root.display()
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_folders_cleans_tmp_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let lock = layout.prepare(true).unwrap();
        for c in ["mp3", "txt", "pdf", "others"] {
            assert!(dir.path().join(c).is_dir());
        }
        // A second node on the same root is refused while the first holds the lock.
        let err = layout.prepare(true).unwrap_err();
        assert!(format!("{err:#}").contains("already serving"), "{err:#}");
        drop(lock);

        fs::write(dir.path().join(".dfs/tmp/leftover.part"), b"x").unwrap();
        fs::create_dir(dir.path().join(".dfs/tmp/odd")).unwrap();
        let _lock = layout.prepare(true).unwrap();
        assert_eq!(
            fs::read_dir(dir.path().join(".dfs/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn paths_stay_under_the_class_folder() {
        let layout = Layout::new(Path::new("/srv/node"));
        assert_eq!(
            layout.file_path(Class::Mp3, "music/a.mp3").unwrap(),
            Path::new("/srv/node/mp3/music/a.mp3")
        );
        assert!(layout.file_path(Class::Txt, "../x").is_err());
        assert!(layout.file_path(Class::Txt, "/etc/passwd").is_err());
    }
}
