//! The source side: how a file looks now, what to do about it given what the store holds, and
//! reading it without ever storing a torn copy.

use schema::Hash;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// How a regular file looks: enough to tell that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub modified: i64,
    /// Status change time (ctime), ns since the epoch: moves on every write, even one that
    /// restores the old mtime.
    pub changed: i64,
}

impl Stamp {
    /// The stamp of `meta`.
    pub fn of(meta: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Stamp {
            size: meta.len(),
            modified: ns(meta.mtime(), meta.mtime_nsec()),
            changed: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What is at a name's path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Nothing (or nothing we sync: a folder, a symlink, a device…).
    Missing,
    /// A regular file.
    File(Stamp),
}

/// Looks at `path` without following symlinks.
pub fn look(path: &Path) -> io::Result<Look> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Look::File(Stamp::of(&m))),
        Ok(_) => Ok(Look::Missing),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Look::Missing)
        }
        Err(e) => Err(e),
    }
}

/// A read that saw the file change under it (or come up short): try again later.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0} changed while it was being read")]
    Changed(String),
    #[error("{0} is open for writing")]
    Writing(String),
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
}

impl ReadError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
        move |source| ReadError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Reads exactly `buf.len()` bytes unless the file ends first; returns how many were read.
pub fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads up to `len` bytes (fewer only at the end of the file) into a new buffer, without
/// zeroing it first: a 1 GiB upload reads 4,096 such chunks.
pub fn read_up_to(file: &mut File, len: usize) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut data)?;
    Ok(data)
}

/// Whether some process holds `file` open for writing, as the kernel tells it: a read lease
/// (`fcntl(F_SETLEASE, F_RDLCK)`) is refused with `EAGAIN` exactly then. The lease is given back
/// at once. `None` where the kernel cannot tell: a file system without leases, or a file of
/// another user for a watcher without `CAP_LEASE`.
///
/// This closes the gap between a writer's `open(O_TRUNC)` and its first `write`, or between two
/// of its writes: a file found in that instant is not a version its writer made, and a look
/// taken after `before` that finds the file closed means what `before` saw was complete.
pub fn open_for_writing(file: &File) -> Option<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this `File` owns, with integer arguments only.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } == 0 {
        // SAFETY: as above. Closing the descriptor would give the lease back too.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return Some(false);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

/// The signal a lease holder gets when another process opens its file for writing (SIGIO,
/// whose default action ends the process) is ignored: [`open_for_writing`] holds a lease for
/// an instant only, and a writer that opens in that instant waits until it is given back.
pub fn ignore_lease_breaks() {
    // SAFETY: sets the disposition of one signal to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
}

/// Reads a small file whole (at most `INLINE_MAX` bytes as stamped by `before`) and checks
/// that it did not change while being read. Unless `even_if_open` (a file found unchanged by
/// two looks a debounce apart, whose writer never closes it), a file open for writing is not
/// read: [`ReadError::Writing`].
pub fn read_small(path: &Path, before: &Stamp, even_if_open: bool) -> Result<Vec<u8>, ReadError> {
    let mut file = File::open(path).map_err(ReadError::io(path))?;
    if !even_if_open && open_for_writing(&file) == Some(true) {
        return Err(ReadError::Writing(path.display().to_string()));
    }
    let data = read_up_to(&mut file, usize::try_from(before.size).unwrap_or(0))
        .map_err(ReadError::io(path))?;
    let mut probe = [0u8; 1];
    let extra = read_full(&mut file, &mut probe).map_err(ReadError::io(path))?;
    let after = file.metadata().map_err(ReadError::io(path))?;
    if data.len() as u64 != before.size || extra != 0 || Stamp::of(&after) != *before {
        return Err(ReadError::Changed(path.display().to_string()));
    }
    Ok(data)
}

/// Hashes a file of any size in `CHUNK_SIZE` reads (memory stays bounded), checking that it
/// still looks like `before` afterwards.
pub fn hash_file(path: &Path, before: &Stamp) -> Result<Hash, ReadError> {
    let mut file = File::open(path).map_err(ReadError::io(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; schema::limits::CHUNK_SIZE];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf).map_err(ReadError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let after = file.metadata().map_err(ReadError::io(path))?;
    if total != before.size || Stamp::of(&after) != *before {
        return Err(ReadError::Changed(path.display().to_string()));
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_and_hashes_detect_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let Look::File(st) = look(&path).unwrap() else {
            panic!("not a file")
        };
        assert_eq!(read_small(&path, &st, false).unwrap(), b"hello");
        assert_eq!(hash_file(&path, &st).unwrap(), Hash::of(b"hello"));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"!").unwrap();
        assert!(matches!(
            read_small(&path, &st, true),
            Err(ReadError::Changed(_))
        ));
        assert!(matches!(hash_file(&path, &st), Err(ReadError::Changed(_))));
        assert_eq!(look(&dir.path().join("nope")).unwrap(), Look::Missing);
        assert_eq!(look(&path.join("under-a-file")).unwrap(), Look::Missing);
        assert_eq!(look(dir.path()).unwrap(), Look::Missing);
    }

    #[test]
    fn a_file_open_for_writing_is_not_read_until_closed_or_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"version one").unwrap();
        // A writer between its open(O_TRUNC) and its first write: the file is empty for now.
        let f = std::fs::File::create(&path).unwrap();
        let Look::File(st) = look(&path).unwrap() else {
            panic!("not a file")
        };
        assert_eq!(st.size, 0);
        if open_for_writing(&std::fs::File::open(&path).unwrap()).is_none() {
            eprintln!("skipped: this file system does not tell open files (no leases)");
            return;
        }
        let e = read_small(&path, &st, false).unwrap_err();
        assert!(matches!(e, ReadError::Writing(_)), "{e}");
        assert!(e.to_string().ends_with("f is open for writing"), "{e}");
        assert_eq!(read_small(&path, &st, true).unwrap(), b"");
        drop(f);
        assert_eq!(
            open_for_writing(&std::fs::File::open(&path).unwrap()),
            Some(false)
        );
        assert_eq!(read_small(&path, &st, false).unwrap(), b"");
    }
}
