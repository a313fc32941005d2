//! Where retrieved content lands: a temporary file beside the destination, renamed to
//! `TARGET/<name>` only once the content matched its hash, or standard output for `-o -`.
//!
//! Nothing is ever written outside the target folder: names are checked with the shared name
//! rules, and no folder below the target is followed through a symbolic link.

use crate::error::{stdout_error, FetchError};
use crate::transfer::Sink;
use disk::direct::ContentWriter;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of the temporary files the fetcher writes in a destination folder.
pub const TEMP_PREFIX: &str = ".dfs-tmp-";

/// Longest file name most file systems take (bytes).
const NAME_MAX: usize = 255;

/// Whether `dest` already holds exactly the content of `entry` (a regular file of its size and
/// BLAKE3): such a file is left alone, so that running an interrupted restore again resumes it.
pub(crate) fn already_there(dest: &Path, entry: &schema::Entry) -> bool {
    already_there_with(dest, entry, &mut Vec::new())
}

/// [`already_there`], reading through `buf` (kept by the caller across files: a fresh zeroed
/// buffer per file costs more than hashing a small one).
fn already_there_with(dest: &Path, entry: &schema::Entry, buf: &mut Vec<u8>) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without following a symbolic link (ELOOP) and without waiting for a writer (a
    // FIFO in its place), then looked at through the open file: four system calls for a small
    // file (open, fstat, read, close), which is most of the cost of a run over a complete
    // target.
    let Ok(mut file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dest)
    else {
        return false;
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() == entry.size => {}
        _ => return false,
    }
    if buf.len() < READ_BUF {
        buf.resize(READ_BUF, 0);
    }
    let mut hasher = blake3::Hasher::new();
    // The listed size bytes, then the end of the file: a file that grew since it was looked at
    // holds something else. The last read is skipped when a short read already showed the end.
    let mut left = entry.size;
    loop {
        let want = buf.len().min(
            usize::try_from(left)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) if n as u64 > left => return false,
            Ok(n) => {
                hasher.update(&buf[..n]);
                left -= n as u64;
                if n < want {
                    // A short read of a regular file: its end (or a writer racing us, which
                    // the hash then tells).
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    left == 0 && schema::Hash::from(hasher.finalize()) == entry.blake3
}

/// The read size when hashing a file already in the target.
const READ_BUF: usize = 256 * 1024;

/// Finds which listed files a target already holds with the listed size and BLAKE3 (see
/// [`already_there`]), on a few threads, while the listing is still coming: each page's
/// entries are handed over as they arrive, so the local hashing overlaps the round trips of
/// the next pages. A restore run again over a complete target then asks the broker for nothing.
pub(crate) struct InTarget {
    to_workers: Vec<std::sync::mpsc::Sender<Vec<schema::Entry>>>,
    workers: Vec<std::thread::JoinHandle<Vec<String>>>,
    next: usize,
}

impl InTarget {
    /// Starts the threads that look into `target`.
    pub(crate) fn start(target: &Path) -> InTarget {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
        let mut to_workers = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..threads {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<schema::Entry>>();
            let target = target.to_path_buf();
            workers.push(std::thread::spawn(move || {
                // One read buffer per thread: a fresh zeroed one per file costs more than
                // hashing a small file.
                let mut buf = Vec::new();
                let mut there = Vec::new();
                for batch in rx {
                    for e in batch {
                        if schema::names::to_path(&target, &e.name)
                            .is_ok_and(|dest| already_there_with(&dest, &e, &mut buf))
                        {
                            there.push(e.name);
                        }
                    }
                }
                there
            }));
            to_workers.push(tx);
        }
        InTarget {
            to_workers,
            workers,
            next: 0,
        }
    }

    /// Hands `entries` to the threads, spread over them in batches.
    pub(crate) fn check(&mut self, entries: &[schema::Entry]) {
        let per = entries.len().div_ceil(self.to_workers.len()).max(1);
        for part in entries.chunks(per) {
            let n = self.to_workers.len();
            // A thread gone (it panicked) leaves its files to be fetched: never wrong.
            let _ = self.to_workers[self.next % n].send(part.to_vec());
            self.next += 1;
        }
    }

    /// Waits for the threads: the names whose file the target already holds as listed.
    pub(crate) fn finish(self) -> std::collections::HashSet<String> {
        drop(self.to_workers);
        self.workers
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    }
}

/// Makes sure the folders of `name` exist below `target` (creating them as needed) and returns
/// the destination path. Refuses a component below the target that is a symbolic link or not a
/// folder, so a link inside the target cannot lead a write elsewhere.
pub(crate) fn destination(target: &Path, name: &str) -> Result<PathBuf, FetchError> {
    let dest = schema::names::to_path(target, name)?;
    fs::create_dir_all(target).map_err(|source| FetchError::Write {
        path: target.to_path_buf(),
        source,
    })?;
    let mut dir = target.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(FetchError::UnsafePath {
                    path: dir,
                    what: "a symbolic link",
                })
            }
            Ok(m) if !m.is_dir() => {
                return Err(FetchError::UnsafePath {
                    path: dir,
                    what: "not a folder",
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|source| FetchError::Write {
                    path: dir.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(FetchError::Write { path: dir, source }),
        }
    }
    Ok(dest)
}

/// A temporary file in the destination's folder, removed when dropped unless it was committed
/// to the destination with [`TempFile::persist`].
pub(crate) struct TempFile {
    /// The file and its drop guard; the same durable write as the storage node's.
    temp: disk::atomic::TempFile,
    /// Puts the content on disk while the rest arrives (directly, for large files); taken by
    /// [`TempFile::persist`].
    writer: Option<ContentWriter>,
}

impl TempFile {
    /// Creates `.dfs-tmp-<pid>-<n>-<basename>` next to `dest`, for `size` bytes.
    pub fn beside(dest: &Path, size: u64) -> Result<TempFile, FetchError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = dest
            .file_name()
            .and_then(|b| b.to_str())
            .unwrap_or_default();
        let prefix = format!("{TEMP_PREFIX}{}-{n}-", std::process::id());
        let name = format!("{prefix}{}", truncate(base, NAME_MAX - prefix.len()));
        let temp = disk::atomic::TempFile::create(dest.with_file_name(name))?;
        let writer = Some(ContentWriter::new(temp.path(), size));
        Ok(TempFile { temp, writer })
    }

    /// Flushes the content to disk and makes the file `dest` (below `target`) with the
    /// modification time `modified` (ns since the epoch), durably: temporary file, fsync,
    /// rename, fsync the folder, so `dest` is never seen partial and survives a crash once this
    /// returns. Commits running at once into one folder share its fsync through `folders`.
    pub fn persist(
        mut self,
        modified: i64,
        (target, dest): (&Path, &Path),
        folders: &disk::atomic::FolderSyncs,
    ) -> Result<(), FetchError> {
        if let Some(writer) = self.writer.take() {
            writer
                .finish(self.temp.file())
                .map_err(|source| FetchError::Write {
                    path: self.temp.path().to_path_buf(),
                    source,
                })?;
        }
        self.temp
            .commit(schema::time::from_ns(modified), target, dest, folders)?;
        Ok(())
    }
}

impl Sink for TempFile {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        let written = match &mut self.writer {
            Some(writer) => writer.write(self.temp.file(), bytes),
            None => Err(std::io::Error::other("the file was already finished")),
        };
        written.map_err(|source| FetchError::Write {
            path: self.temp.path().to_path_buf(),
            source,
        })
    }
}

/// The first at most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Standard output (or any writer) as a sink for `-o -`.
pub(crate) struct WriterSink<'a>(pub &'a mut dyn Write);

impl Sink for WriterSink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.0.write_all(bytes).map_err(stdout_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fit_in_a_component() {
        let dir = tempfile::tempdir().unwrap();
        let long = "é".repeat(127); // 254 bytes
        let dest = dir.path().join(&long);
        let t = TempFile::beside(&dest, 0).unwrap();
        let name = t
            .temp
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(name.starts_with(TEMP_PREFIX));
        assert!(name.len() <= NAME_MAX);
        drop(t);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_large_file_lands_whole_and_an_abandoned_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let size = disk::direct::DIRECT_MIN as usize + 5000;
        let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let dest = dir.path().join("big.bin");
        let mut t = TempFile::beside(&dest, size as u64).unwrap();
        for piece in content.chunks(256 << 10) {
            t.write_all(piece).unwrap();
        }
        let folders = Default::default();
        t.persist(1_000_000_000, (dir.path(), &dest), &folders)
            .unwrap();
        assert!(fs::read(&dest).unwrap() == content);

        let other = dir.path().join("other.bin");
        let mut t = TempFile::beside(&other, size as u64).unwrap();
        t.write_all(&content[..3 << 20]).unwrap();
        drop(t);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["big.bin"]);
    }

    #[test]
    fn refuses_to_write_through_a_link_below_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&target).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();
        assert!(matches!(
            destination(&target, "link/x.txt"),
            Err(FetchError::UnsafePath { .. })
        ));
        assert_eq!(
            destination(&target, "a/b/c.txt").unwrap(),
            target.join("a/b/c.txt")
        );
        assert!(target.join("a/b").is_dir());
        assert!(matches!(
            destination(&target, "../x"),
            Err(FetchError::BadName(_))
        ));
    }
}
