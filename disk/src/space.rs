//! Free and total space of the file system holding a folder, for `dfs status`.

use std::io;
use std::path::Path;

/// `(free, total)` bytes of the file system holding `path` (`statvfs`): free counts what an
/// unprivileged process may still write.
pub fn of(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("the path holds a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((
        (st.f_bavail as u64).saturating_mul(frsize),
        (st.f_blocks as u64).saturating_mul(frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_of_a_folder() {
        let (free, total) = of(Path::new(".")).unwrap();
        assert!(total > 0 && free <= total, "{free} of {total}");
        assert!(of(Path::new("/no/such/folder")).is_err());
    }
}
