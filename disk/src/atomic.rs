//! Making a file durable under its final name, the one way the storage node and the fetcher
//! both do it, and the folder operations around it.
//!
//! The write path follows Garage's `write_block_inner` (deuxfleurs-org/garage,
//! `src/block/manager.rs`): write to a temporary file, fsync it, rename it over the final name,
//! fsync the folder. Each step is there for a crash at the worst moment; see
//! [`TempFile::commit`].
//!
//! Where the file system allows it the temporary file has no name at all (`O_TMPFILE`), and
//! `commit` links it under its final name once it is complete and fsynced. A named temporary
//! file's fsync also writes the folder it was created in (ext4 without a journal syncs the
//! parent of a new entry), one more disk write per file that the unnamed one does not need; and a
//! crash leaves nothing behind to clean.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

/// A failed disk operation: what was being done, to which path, and the system's reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct DiskError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl DiskError {
    /// A failure of `action` on `path`.
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> DiskError {
        DiskError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A file being written before it gets its final name. Dropping it removes the file, so a failed
/// or abandoned write leaves nothing behind; [`TempFile::commit`] disarms it once the file has its
/// final name.
#[derive(Debug)]
pub struct TempFile {
    /// The file, or for an unnamed one the folder it was made in (for messages).
    path: PathBuf,
    file: File,
    armed: bool,
    /// Made with `O_TMPFILE`: `path` is its folder, and `commit` links it into place.
    unnamed: bool,
}

impl TempFile {
    /// Creates `path`, which must not exist yet.
    pub fn create(path: PathBuf) -> Result<TempFile, DiskError> {
        // Read and write: a backend that uploads the file elsewhere reads it back.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| DiskError::new("create the temporary file", &path, e))?;
        Ok(TempFile {
            path,
            file,
            armed: true,
            unnamed: false,
        })
    }

    /// An unnamed temporary file in the folder `dir` (`O_TMPFILE`), or `None` where the file
    /// system or the kernel does not offer them.
    pub fn unnamed(dir: &Path) -> Option<TempFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
            .map_err(|e| tracing::debug!("no O_TMPFILE in {}: {e}", dir.display()))
            .ok()?;
        Some(TempFile {
            path: dir.to_path_buf(),
            file,
            armed: false,
            unnamed: true,
        })
    }

    /// A new temporary file in the folder `dir`: unnamed where the file system allows, else
    /// under a fresh name there (removed again when dropped).
    pub fn in_dir(dir: &Path) -> Result<TempFile, DiskError> {
        match TempFile::unnamed(dir) {
            Some(temp) => Ok(temp),
            None => TempFile::create(temp_name(dir)),
        }
    }

    /// The open file, for writing content.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the file is (for an unnamed one, its folder), for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path that opens this same file again (for an unnamed one, through `/proc/self/fd`).
    pub fn reopen_path(&self) -> PathBuf {
        if self.unnamed {
            fd_path(&self.file)
        } else {
            self.path.clone()
        }
    }
}

/// `/proc/self/fd/N` of `file`.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Gives the unnamed `file` the name `to` (which must not exist); `linkat(2)` through
/// `/proc/self/fd`, the way open(2) documents for `O_TMPFILE`.
fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    let from = CString::new(fd_path(file).into_os_string().into_vec()).map_err(io::Error::other)?;
    let to = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sequence number of the temporary names this process gives.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name in the folder `dir`: `<pid>-<seq>.part`.
pub fn temp_name(dir: &Path) -> PathBuf {
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{seq:08}.part", std::process::id()))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), "cannot remove a temporary file: {e}");
                }
            }
        }
    }
}

impl TempFile {
    /// Makes the complete, verified file the file at `dest` (below the folder `within`, whose
    /// missing sub-folders are created), with the modification time `modified`, durably: once
    /// this returns `Ok`, a crash can neither lose the file nor show a partial one under `dest`.
    /// The folder fsync may be shared with other commits into the same folder through `folders`.
    /// Whatever else must be durable with the content (an extended attribute) is set on
    /// [`file`](TempFile::file) before.
    pub fn commit(
        mut self,
        modified: SystemTime,
        within: &Path,
        dest: &Path,
        folders: &FolderSyncs,
    ) -> Result<(), DiskError> {
        let tpath = self.path.clone();
        // The modification time (like `rsync -a`) is set before the fsync so that it is durable
        // together with the content.
        self.file
            .set_modified(modified)
            .map_err(|e| DiskError::new("set the modification time of", &tpath, e))?;
        // fsync the content before the rename: without it the file system may persist the
        // rename before the data, and a crash would leave an empty or torn file under the final
        // name.
        self.file
            .sync_all()
            .map_err(|e| DiskError::new("fsync", &tpath, e))?;
        // rename is atomic: a reader sees the previous version or this one, never a mix. A
        // folder made on the way may be removed by a concurrent delete of its last file; try
        // again then. An unnamed file is linked under the final name, which is as atomic; over
        // an existing version it is linked beside its folder first and renamed over it.
        let mut attempts = 0;
        loop {
            create_parents(within, dest)?;
            let placed = if self.unnamed {
                link_unnamed(&self.file, dest).or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => replace_with_unnamed(&self, dest),
                    _ => Err(e),
                })
            } else {
                fs::rename(&tpath, dest)
            };
            match placed {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
                Err(e) => return Err(DiskError::new("rename the finished file to", dest, e)),
            }
        }
        self.armed = false;
        // fsync the folder: the rename is a change of the folder, and only this makes the new
        // name durable before anyone is told the file is there.
        match dest.parent() {
            Some(dir) => folders.sync(dir),
            None => Ok(()),
        }
    }
}

/// Folder fsyncs shared between threads that commit files into the same folders (group
/// commit). A folder fsync persists every entry changed before it started, so a thread whose
/// rename came before a folder fsync started can wait for that fsync instead of making its own:
/// under many concurrent uploads into one folder, one fsync serves a batch of them, and each
/// file is still acknowledged only after a folder fsync that began after its rename.
#[derive(Debug, Default)]
pub struct FolderSyncs {
    groups: Mutex<HashMap<PathBuf, Arc<Group>>>,
    /// Folder fsyncs made (for tests and curiosity: fewer than the commits under load).
    fsyncs: AtomicU64,
}

/// The fsyncs of one folder.
#[derive(Debug, Default)]
struct Group {
    state: Mutex<GroupState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Tickets handed out: one per change waiting to be persisted.
    tickets: u64,
    /// Every ticket up to this one is persisted.
    done: u64,
    /// A folder fsync is under way.
    busy: bool,
}

impl FolderSyncs {
    /// Returns once a fsync of `dir` that started after this call began has succeeded (made by
    /// this thread or another); the error of a failed fsync made by this thread otherwise.
    pub fn sync(&self, dir: &Path) -> Result<(), DiskError> {
        let group = {
            let mut groups = lock(&self.groups);
            groups.entry(dir.to_path_buf()).or_default().clone()
        };
        let result = group.sync(|| {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            fsync_dir(dir)
        });
        let mut groups = lock(&self.groups);
        // Only the map and this thread hold it: nobody waits on this folder, forget it.
        if Arc::strong_count(&group) == 2 {
            groups.remove(dir);
        }
        result
    }

    /// Folder fsyncs made so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

impl Group {
    /// Takes a ticket, then either finds it covered by a finished fsync, waits for the one under
    /// way to finish (it may not cover the ticket: it can have started before), or runs `fsync`
    /// itself for every ticket handed out so far. A failed fsync covers nobody: each waiter then
    /// tries on its own.
    fn sync<E>(&self, fsync: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut st = lock(&self.state);
        st.tickets += 1;
        let mine = st.tickets;
        loop {
            if st.done >= mine {
                return Ok(());
            }
            if st.busy {
                st = self
                    .changed
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            st.busy = true;
            let upto = st.tickets;
            drop(st);
            let result = fsync();
            st = lock(&self.state);
            st.busy = false;
            if result.is_ok() {
                st.done = st.done.max(upto);
            }
            self.changed.notify_all();
            result?;
        }
    }
}

/// Locks `m`, going on with the data of a thread that panicked while holding it (the counters
/// stay consistent: each update is a single assignment).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Puts the unnamed `temp` over the existing `dest`: links it under a fresh name in its own
/// folder, then renames that over `dest`.
fn replace_with_unnamed(temp: &TempFile, dest: &Path) -> io::Result<()> {
    let named = temp_name(&temp.path);
    link_unnamed(&temp.file, &named)?;
    fs::rename(&named, dest).inspect_err(|_| {
        let _ = fs::remove_file(&named);
    })
}

/// fsyncs the folder `dir` (persists the entries created, renamed or removed in it).
pub fn fsync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DiskError::new("fsync the folder", dir, e))
}

/// Replaces the small file at `path` by `bytes` durably and atomically: a reader or a crash
/// sees the old content or the new, never a mix (temporary file, fsync, rename, folder fsync).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    use std::io::Write as _;
    let temp = temp_name(path.parent().unwrap_or(Path::new(".")));
    let written = File::create(&temp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(DiskError::new("write", &temp, e));
    }
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        DiskError::new("replace", path, e)
    })?;
    fsync_parent(path)
}

/// fsyncs the folder holding `path`.
pub fn fsync_parent(path: &Path) -> Result<(), DiskError> {
    match path.parent() {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}

/// Creates the missing folders between `class_dir` and the file `dest`, fsyncing the parent of
/// each folder it creates so that the new folder survives a crash.
pub fn create_parents(class_dir: &Path, dest: &Path) -> Result<(), DiskError> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    let Ok(rel) = parent.strip_prefix(class_dir) else {
        return Err(DiskError::new(
            "create the folder",
            parent,
            io::Error::new(io::ErrorKind::InvalidInput, "outside the class folder"),
        ));
    };
    let mut dir = class_dir.to_path_buf();
    for part in rel.components() {
        let up = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => fsync_dir(&up)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(DiskError::new("create the folder", &dir, e)),
        }
    }
    Ok(())
}

/// Removes the folders between `class_dir` and the removed file `path` that are now empty,
/// deepest first, and fsyncs the folder that lost each of them.
pub fn remove_empty_parents(class_dir: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == class_dir || !d.starts_with(class_dir) {
            break;
        }
        // remove_dir fails on a folder that still holds something: that ends the climb.
        if fs::remove_dir(d).is_err() {
            break;
        }
        if let Err(e) = fsync_parent(d) {
            tracing::debug!("{e}");
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const T: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn an_unnamed_temp_lands_new_and_over_an_old_version_leaving_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, class_dir) = (dir.path().join("tmp"), dir.path().join("txt"));
        fs::create_dir(&tmp).unwrap();
        fs::create_dir(&class_dir).unwrap();
        let Some(temp) = TempFile::unnamed(&tmp) else {
            eprintln!("no O_TMPFILE on this file system: nothing to check");
            return;
        };
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "an unnamed file has no entry"
        );
        let dest = class_dir.join("d/new.txt");
        let mut first = Some(temp);
        for (i, content) in [&b"first"[..], b"second version"].into_iter().enumerate() {
            let temp = first
                .take()
                .unwrap_or_else(|| TempFile::unnamed(&tmp).unwrap());
            temp.file().write_all(content).unwrap();
            let modified = T + std::time::Duration::from_secs(i as u64 + 1);
            temp.commit(modified, &class_dir, &dest, &FolderSyncs::default())
                .unwrap();
            assert_eq!(fs::read(&dest).unwrap(), content);
            assert_eq!(fs::metadata(&dest).unwrap().modified().unwrap(), modified);
            assert_eq!(
                fs::read_dir(&tmp).unwrap().count(),
                0,
                "nothing left in tmp"
            );
        }
        // A temp dropped before its commit leaves no trace either.
        let temp = TempFile::unnamed(&tmp).unwrap();
        temp.file().write_all(b"abandoned").unwrap();
        drop(temp);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(fs::read_dir(class_dir.join("d")).unwrap().count(), 1);
    }

    /// Three commits into one folder: the first one's fsync is under way when the other two
    /// rename, so it cannot cover them; it finishes with `first`, and then one fsync serves both.
    fn three_commits(first: Result<(), &'static str>) -> (Vec<Result<(), &'static str>>, u64) {
        use std::sync::mpsc;
        use std::time::{Duration, Instant};
        let group = Group::default();
        let calls = AtomicU64::new(0);
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let fsync = || {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                started_tx.send(()).unwrap();
                lock(&release_rx).recv().unwrap();
                return first;
            }
            Ok(())
        };
        let results = std::thread::scope(|s| {
            let a = s.spawn(|| group.sync(fsync));
            started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            let b = s.spawn(|| group.sync(fsync));
            let c = s.spawn(|| group.sync(fsync));
            let deadline = Instant::now() + Duration::from_secs(5);
            while lock(&group.state).tickets < 3 {
                assert!(
                    Instant::now() < deadline,
                    "the later commits never took a ticket"
                );
                std::thread::yield_now();
            }
            release_tx.send(()).unwrap();
            [a, b, c].map(|t| t.join().unwrap()).to_vec()
        });
        (results, calls.load(Ordering::SeqCst))
    }

    #[test]
    fn one_folder_fsync_serves_the_commits_renamed_before_it_started() {
        let (results, calls) = three_commits(Ok(()));
        assert_eq!(results, [Ok(()), Ok(()), Ok(())]);
        assert_eq!(
            calls, 2,
            "the first commit's fsync, then one for the other two"
        );
    }

    #[test]
    fn a_failed_folder_fsync_covers_nobody() {
        let (results, calls) = three_commits(Err("disk gone"));
        assert_eq!(results, [Err("disk gone"), Ok(()), Ok(())]);
        assert_eq!(calls, 2);
    }

    #[test]
    fn commits_from_many_threads_into_one_folder_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, class_dir) = (dir.path().join("tmp"), dir.path().join("txt"));
        fs::create_dir(&tmp).unwrap();
        fs::create_dir(&class_dir).unwrap();
        let folders = FolderSyncs::default();
        std::thread::scope(|s| {
            for t in 0..16 {
                let (tmp, class_dir, folders) = (&tmp, &class_dir, &folders);
                s.spawn(move || {
                    for i in 0..20 {
                        let name = format!("f{t}-{i}.txt");
                        let temp = TempFile::create(tmp.join(&name)).unwrap();
                        temp.file().write_all(name.as_bytes()).unwrap();
                        temp.commit(T, class_dir, &class_dir.join(&name), folders)
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(fs::read_dir(&class_dir).unwrap().count(), 320);
        for t in 0..16 {
            for i in 0..20 {
                let name = format!("f{t}-{i}.txt");
                assert_eq!(fs::read(class_dir.join(&name)).unwrap(), name.as_bytes());
            }
        }
        assert!(folders.fsyncs() >= 1 && folders.fsyncs() <= 320);
        assert!(
            lock(&folders.groups).is_empty(),
            "idle folders are forgotten"
        );
    }

    #[test]
    fn a_dropped_temp_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.part");
        let temp = TempFile::create(path.clone()).unwrap();
        assert!(path.exists());
        assert!(TempFile::create(path.clone()).is_err());
        drop(temp);
        assert!(!path.exists());
    }
}
