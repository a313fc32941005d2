//! The source side: how a file looks now, what to do about it given what the store holds, and
//! reading it without ever storing a torn copy.

use schema::Hash;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
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

/// Reads a small file whole (at most `INLINE_MAX` bytes as stamped by `before`) and checks
/// that it did not change while being read.
pub fn read_small(path: &Path, before: &Stamp) -> Result<Vec<u8>, ReadError> {
    let mut file = File::open(path).map_err(ReadError::io(path))?;
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
        assert_eq!(read_small(&path, &st).unwrap(), b"hello");
        assert_eq!(hash_file(&path, &st).unwrap(), Hash::of(b"hello"));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"!").unwrap();
        assert!(matches!(read_small(&path, &st), Err(ReadError::Changed(_))));
        assert!(matches!(hash_file(&path, &st), Err(ReadError::Changed(_))));
        assert_eq!(look(&dir.path().join("nope")).unwrap(), Look::Missing);
        assert_eq!(look(&path.join("under-a-file")).unwrap(), Look::Missing);
        assert_eq!(look(dir.path()).unwrap(), Look::Missing);
    }
}
