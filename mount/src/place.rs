//! The mount point: a folder that is not mounted yet, or the stale mount a killed `dfs mount`
//! left behind (its kernel side answers every access with `ENOTCONN`), which is detected,
//! explained and detached before mounting again.

use std::path::{Path, PathBuf};

/// Why the mount point cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("{}: no such folder; create it first", .0.display())]
    Missing(PathBuf),
    #[error("{}: not a folder", .0.display())]
    NotADir(PathBuf),
    #[error("{}: already a mount point ({kind}); unmount it or choose another folder", .path.display())]
    Mounted { path: PathBuf, kind: String },
    #[error(
        "{}: a stale mount of a dfs mount that was killed, and it cannot be detached ({why}); \
         run `fusermount3 -uz {0}` or `umount -l {0}` and start again",
        .path.display()
    )]
    Stale { path: PathBuf, why: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that `dir` can be mounted on, detaching a stale mount left there; returns its
/// absolute path.
pub fn prepare(dir: &Path) -> Result<PathBuf, PlaceError> {
    let abs = std::path::absolute(dir).map_err(|source| PlaceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(PlaceError::NotADir(abs)),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(
                "{}: a stale mount left by a dfs mount that was killed (its folder answers \
                 \"transport endpoint is not connected\"); detaching it",
                abs.display()
            );
            detach(&abs).map_err(|why| PlaceError::Stale {
                path: abs.clone(),
                why,
            })?;
            return prepare(&abs);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PlaceError::Missing(abs)),
        Err(source) => return Err(PlaceError::Io { path: abs, source }),
    }
    let canonical = abs.canonicalize().map_err(|source| PlaceError::Io {
        path: abs.clone(),
        source,
    })?;
    if let Some(kind) = mounted(&canonical) {
        return Err(PlaceError::Mounted {
            path: canonical,
            kind,
        });
    }
    Ok(canonical)
}

/// The file system type mounted at `dir`, if `dir` is a mount point (`/proc/self/mountinfo`).
pub fn mounted(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_str()?;
    info.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = unescape(fields.get(4)?);
        if point != want {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        fields.get(dash + 1).map(|t| t.to_string())
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches the mount at `dir` (lazily: whoever still has a file open there keeps it).
pub fn detach(dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let direct = std::io::Error::last_os_error();
    // Without the right to unmount, the setuid helper of the fuse3 package can.
    match std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(dir)
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "umount: {direct}; fusermount3: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("umount: {direct}; fusermount3: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\"), r"/end\");
    }

    #[test]
    fn a_missing_folder_or_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(prepare(&missing), Err(PlaceError::Missing(_))));
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(prepare(&file), Err(PlaceError::NotADir(_))));
        assert!(prepare(dir.path()).is_ok());
        assert!(mounted(Path::new("/")).is_some());
    }
}
