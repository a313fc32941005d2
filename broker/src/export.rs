//! The text export `myIndex/index.txt`: one line per stored file, sorted by name, rewritten
//! atomically (temporary file beside it, fsync, rename) so a reader never sees half of it.
//!
//! Under load the broker asks for a rewrite after every change; the [`Exporter`] thread
//! coalesces those requests into at most one rewrite a second, off the serving thread.

use crate::error::IndexError;
use crate::index::Index;
use schema::names::{escape, needs_escape};
use schema::time::Rfc3339;
use schema::Entry;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first line of the export: the column names.
pub const HEADER: &str = "# name\tclass\tsize\tblake3\tmodified\tversion";

/// Shortest time between two rewrites while the index keeps changing.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Writes one line of the export and its newline, without allocating for plain names (an export
/// writes a million of them).
fn write_line(out: &mut impl Write, e: &Entry) -> std::io::Result<()> {
    if needs_escape(&e.name) {
        out.write_all(escape(&e.name).as_bytes())?;
    } else {
        out.write_all(e.name.as_bytes())?;
    }
    write!(out, "\t{}\t{}\t", e.class.as_str(), e.size)?;
    out.write_all(&e.blake3.hex_digits())?;
    writeln!(out, "\t{}\t{}", Rfc3339(e.modified), e.version)
}

/// Writes the header and one line per indexed file to `out`; returns how many files and the
/// bytes they hold. Unreadable records are skipped with a warning.
fn write_counted(index: &Index, out: &mut impl Write) -> std::io::Result<(usize, u64)> {
    writeln!(out, "{HEADER}")?;
    let (mut n, mut bytes) = (0, 0u64);
    for entry in index.entries() {
        match entry {
            Ok(e) => {
                write_line(out, &e)?;
                n += 1;
                bytes = bytes.saturating_add(e.size);
            }
            Err(e) => tracing::warn!("index export skips an entry: {e}"),
        }
    }
    Ok((n, bytes))
}

/// How many files the index listed, and their bytes, at the last export: counting a sled tree
/// takes a full scan, which the export makes anyway, so `dfs status` and the metrics read it
/// here instead of scanning again.
#[derive(Debug, Default)]
pub struct Totals {
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Totals {
    /// Files and bytes at the last export.
    pub fn get(&self) -> (u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Sets the files and bytes (from an export known to be current).
    pub fn set(&self, files: usize, bytes: u64) {
        self.files.store(files as u64, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }
}

/// Rewrites `path` from `index` atomically; returns how many files it lists.
pub fn export(index: &Index, path: &Path) -> Result<usize, IndexError> {
    export_counted(index, path).map(|(n, _)| n)
}

/// [`export`], also returning the bytes the listed files hold.
pub fn export_counted(index: &Index, path: &Path) -> Result<(usize, u64), IndexError> {
    let fail = |source| IndexError::Export {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let counted = write_counted(index, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(counted)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(fail)
}

/// A background thread that rewrites the export when asked, at most once a second.
pub struct Exporter {
    tx: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    index: Index,
    path: PathBuf,
    totals: Arc<Totals>,
}

impl Exporter {
    /// Starts the thread; nothing is written until [`Exporter::request`].
    pub fn start(index: Index, path: PathBuf) -> std::io::Result<Exporter> {
        let (tx, rx) = mpsc::channel();
        let totals = Arc::new(Totals::default());
        let (idx, p, t) = (index.clone(), path.clone(), totals.clone());
        let handle = std::thread::Builder::new()
            .name("index-export".into())
            .spawn(move || export_loop(&idx, &p, &t, &rx))?;
        Ok(Exporter {
            tx: Some(tx),
            handle: Some(handle),
            index,
            path,
            totals,
        })
    }

    /// The files and bytes of the last export, updated by the export thread.
    pub fn totals(&self) -> Arc<Totals> {
        self.totals.clone()
    }

    /// Asks for a rewrite soon (coalesced with other requests).
    pub fn request(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }

    /// Stops the thread and writes the export one last time; returns how many files it lists
    /// and their bytes.
    pub fn finish(mut self) -> Result<(usize, u64), IndexError> {
        self.stop();
        export_counted(&self.index, &self.path)
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for requests; rewrites at most once per `MIN_GAP`, and never more than a third of
/// the time, so exporting a very large index cannot hog a core.
fn export_loop(index: &Index, path: &Path, totals: &Totals, rx: &mpsc::Receiver<()>) {
    let mut next_allowed: Option<Instant> = None;
    while rx.recv().is_ok() {
        if let Some(deadline) = next_allowed {
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
        while rx.try_recv().is_ok() {}
        let started = Instant::now();
        match export_counted(index, path) {
            Ok((n, bytes)) => {
                totals.set(n, bytes);
                tracing::debug!("wrote {} ({n} files)", path.display());
            }
            Err(e) => tracing::warn!("{e}"),
        }
        let took = started.elapsed();
        next_allowed = Some(started + MIN_GAP.max(took * 3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use schema::{Class, Hash};

    #[test]
    fn header_then_sorted_escaped_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = Index::open(&dir.path().join("db")).unwrap();
        let h = Hash::of(b"content");
        idx.put(
            "b/z.mp3",
            &Record::stored(Class::Mp3, 7, h, 1_500_000_000, 2),
        )
        .unwrap();
        idx.put("a\tb.txt", &Record::stored(Class::Txt, 0, h, 0, 1))
            .unwrap();
        idx.put("ä.bin", &Record::stored(Class::Others, 3, h, 0, 4))
            .unwrap();
        let out = dir.path().join("myIndex/index.txt");
        assert_eq!(export(&idx, &out).unwrap(), 3);
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            format!("a\\tb.txt\ttxt\t0\t{h}\t1970-01-01T00:00:00.000000000Z\t1")
        );
        assert_eq!(
            lines[2],
            format!("b/z.mp3\tmp3\t7\t{h}\t1970-01-01T00:00:01.500000000Z\t2")
        );
        assert!(lines[3].starts_with("ä.bin\tothers\t3\t"));
        assert_eq!(lines.len(), 4);
        assert!(!dir.path().join("myIndex/index.txt.tmp").exists());
    }

    #[test]
    fn exporter_writes_on_request_and_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = Index::open(&dir.path().join("db")).unwrap();
        let out = dir.path().join("x/index.txt");
        let ex = Exporter::start(idx.clone(), out.clone()).unwrap();
        ex.request();
        let t0 = Instant::now();
        while !out.exists() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("{HEADER}\n")
        );
        idx.put("n", &Record::stored(Class::Others, 9, Hash::of(b"n"), 0, 1))
            .unwrap();
        let totals = ex.totals();
        ex.request();
        let t0 = Instant::now();
        while totals.get() != (1, 9) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(totals.get(), (1, 9), "the export counts files and bytes");
        assert_eq!(ex.finish().unwrap(), (1, 9));
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
    }
}
