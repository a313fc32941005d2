//! Early writeback for large files written in pieces.
//!
//! A file received over the network is written chunk by chunk and fsynced at the end. Left
//! alone, the kernel keeps the pages dirty and the final fsync writes the whole file while the
//! sender waits. Asking for writeback of each completed stretch as soon as it is written lets the
//! disk work while the network does, so the fsync at the end only waits for the tail. Durability
//! is unchanged: the fsync still comes before the file is renamed into place and acknowledged.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Stretch of a file handed to writeback at a time.
pub const WRITEBACK_STEP: u64 = 8 << 20;

/// Counts the bytes appended to one file and starts writeback of every completed
/// [`WRITEBACK_STEP`].
#[derive(Debug, Default)]
pub struct Writeback {
    written: u64,
}

impl Writeback {
    /// Records that `n` more bytes were appended to `file`.
    pub fn wrote(&mut self, file: &File, n: usize) {
        let before = self.written / WRITEBACK_STEP;
        self.written += n as u64;
        let after = self.written / WRITEBACK_STEP;
        if after > before {
            let start = before * WRITEBACK_STEP;
            start_writeback(file, start, (after - before) * WRITEBACK_STEP);
        }
    }
}

/// Starts writing `len` bytes of `file` at `offset` back to disk without waiting for them
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`). It is a hint: a failure only means the
/// final fsync does all the work, so it is logged at debug level and otherwise ignored.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is valid for the life of `file`; the call only reads its arguments.
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::debug!(
            "early writeback not started: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writeback_of_completed_steps_leaves_the_content_intact() {
        let dir = std::env::temp_dir().join(format!("dfs-writeback-{}", std::process::id()));
        let mut f = File::create(&dir).unwrap();
        let mut wb = Writeback::default();
        let block = vec![7u8; 3 << 20];
        for _ in 0..6 {
            f.write_all(&block).unwrap();
            wb.wrote(&f, block.len());
        }
        assert_eq!(wb.written, 18 << 20);
        f.sync_all().unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().len(), 18 << 20);
        std::fs::remove_file(&dir).unwrap();
    }
}
