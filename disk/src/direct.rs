//! Writing a large received file to disk without the page cache.
//!
//! On the machines dfs was measured on, copying a gigabyte into the page cache and writing it back
//! cost 1.6–2.5 s of kernel CPU; the same gigabyte written with `O_DIRECT` from aligned buffers
//! cost 0.2 s and reached the disk twice as fast (`dd bs=256K conv=fsync`, with and without
//! `oflag=direct`). So the storage node and the fetcher write large files with [`DirectWriter`]:
//! the receiving thread copies each chunk into an aligned block, and a writer thread writes full
//! blocks with `O_DIRECT` while the next ones arrive. The unaligned tail goes through the ordinary
//! descriptor, and the caller's fsync afterwards makes everything durable as before.
//!
//! [`ContentWriter`] picks the way for one file: direct for files of at least [`DIRECT_MIN`]
//! bytes while fewer than [`MAX_DIRECT`] are being written this way in the process (each holds
//! [`BLOCKS`] × [`BLOCK_SIZE`] of memory), buffered with early writeback otherwise, or where the
//! file system refuses `O_DIRECT`.

use crate::writeback::Writeback;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Smallest file written with `O_DIRECT`; smaller ones are cheap enough through the page cache.
pub const DIRECT_MIN: u64 = 8 << 20;
/// Bytes in one aligned block handed to the writer thread.
pub const BLOCK_SIZE: usize = 1 << 20;
/// Blocks per file: one filling, one queued, one being written.
pub const BLOCKS: usize = 3;
/// Most files written with `O_DIRECT` at once in one process (bounds the memory it takes).
pub const MAX_DIRECT: usize = 4;
/// Alignment of offsets, lengths and buffer addresses for `O_DIRECT` (a multiple of any logical
/// block size in use).
const ALIGN: usize = 4096;

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// How one received file reaches the disk: see the module documentation.
#[derive(Debug)]
pub enum ContentWriter {
    /// Through the page cache, with writeback started for each completed stretch.
    Buffered(Writeback),
    /// With `O_DIRECT` from a writer thread.
    Direct(DirectWriter),
    /// Through the page cache, left there: for a file read back soon and never fsynced (an
    /// upload the node sends on to an object store).
    Cached,
}

impl ContentWriter {
    /// The writer for a file of `size` bytes being created at `path`.
    pub fn new(path: &Path, size: u64) -> ContentWriter {
        if size >= DIRECT_MIN {
            if let Some(w) = DirectWriter::open(path) {
                return ContentWriter::Direct(w);
            }
        }
        ContentWriter::Buffered(Writeback::default())
    }

    /// Appends `data` to the file (`file` is the caller's descriptor of it, opened for writing).
    pub fn write(&mut self, file: &File, data: &[u8]) -> io::Result<()> {
        match self {
            ContentWriter::Buffered(wb) => {
                io::Write::write_all(&mut &*file, data)?;
                wb.wrote(file, data.len());
                Ok(())
            }
            ContentWriter::Direct(w) => w.write(data),
            ContentWriter::Cached => io::Write::write_all(&mut &*file, data),
        }
    }

    /// Writes what is still held back; after this the caller's fsync of `file` makes the whole
    /// content durable.
    pub fn finish(self, file: &File) -> io::Result<()> {
        match self {
            ContentWriter::Buffered(_) | ContentWriter::Cached => Ok(()),
            ContentWriter::Direct(w) => w.finish(file),
        }
    }
}

/// An aligned stretch of memory and how much of it is filled.
struct Block {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Block {
        let bytes = vec![0u8; BLOCK_SIZE + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Block {
            bytes,
            start,
            len: 0,
        }
    }

    /// Copies as much of `data` as fits; returns how much.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(BLOCK_SIZE - self.len);
        let at = self.start + self.len;
        self.bytes[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    /// A block without memory, standing in after the last real one was handed over.
    fn new_empty() -> Block {
        Block {
            bytes: Vec::new(),
            start: 0,
            len: 0,
        }
    }
}

/// Writes one file's content with `O_DIRECT` through a writer thread; see the module
/// documentation. Dropped without [`DirectWriter::finish`], it stops once the queued blocks are
/// written (the caller removes the file).
pub struct DirectWriter {
    to_disk: Option<SyncSender<Block>>,
    free: Receiver<Block>,
    spare: Vec<Block>,
    current: Block,
    /// Bytes handed to the writer thread: the offset of `current`.
    sent: u64,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter")
            .field("sent", &self.sent)
            .field("held", &self.current.len)
            .finish()
    }
}

/// A slot of the process-wide budget of direct writers, given back when the writer thread ends.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        ACTIVE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_DIRECT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DirectWriter {
    /// A direct writer for the file at `path` (already created, empty), or `None` when the budget
    /// is used up or the file cannot be opened with `O_DIRECT` here.
    pub fn open(path: &Path) -> Option<DirectWriter> {
        let slot = Slot::take()?;
        let file = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(
                    "{}: no O_DIRECT here ({e}); writing through the page cache",
                    path.display()
                );
                return None;
            }
        };
        let (to_disk, queue) = mpsc::sync_channel::<Block>(BLOCKS - 1);
        let (give_back, free) = mpsc::channel::<Block>();
        let thread = std::thread::Builder::new()
            .name("direct-writer".into())
            .spawn(move || {
                let _slot = slot;
                write_blocks(&file, &queue, &give_back)
            })
            .ok()?;
        Some(DirectWriter {
            to_disk: Some(to_disk),
            free,
            spare: (0..BLOCKS - 1).map(|_| Block::new()).collect(),
            current: Block::new(),
            sent: 0,
            thread: Some(thread),
        })
    }

    /// Appends `data`.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.current.fill(data);
            data = &data[n..];
            if self.current.len == BLOCK_SIZE {
                self.hand_over()?;
            }
        }
        Ok(())
    }

    /// Sends the full current block to the writer thread and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        let next = match self.spare.pop() {
            Some(b) => b,
            None => match self.free.recv() {
                Ok(mut b) => {
                    b.len = 0;
                    b
                }
                Err(_) => return Err(self.thread_error()),
            },
        };
        let full = std::mem::replace(&mut self.current, next);
        self.sent += full.len as u64;
        let sent = match &self.to_disk {
            Some(tx) => tx.send(full).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.thread_error())
        }
    }

    /// Writes the rest: the aligned part of the current block through the thread, then the
    /// unaligned tail through `file` once every direct write has completed.
    pub fn finish(mut self, file: &File) -> io::Result<()> {
        let tail_len = self.current.len % ALIGN;
        let aligned = self.current.len - tail_len;
        let tail = self.current.data()[aligned..].to_vec();
        if aligned > 0 {
            self.current.len = aligned;
            let block = std::mem::replace(&mut self.current, Block::new_empty());
            self.sent += aligned as u64;
            if let Some(tx) = &self.to_disk {
                if tx.send(block).is_err() {
                    return Err(self.thread_error());
                }
            }
        }
        self.join()?;
        if !tail.is_empty() {
            file.write_all_at(&tail, self.sent)?;
        }
        Ok(())
    }

    /// Closes the queue and waits for the writer thread: its error, if it had one.
    fn join(&mut self) -> io::Result<()> {
        self.to_disk = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the direct writer thread panicked")),
            None => Ok(()),
        }
    }

    /// Why the writer thread stopped early.
    fn thread_error(&mut self) -> io::Error {
        self.join()
            .err()
            .unwrap_or_else(|| io::Error::other("the direct writer thread stopped"))
    }
}

/// The writer thread: writes each block at the next offset and gives it back. A file system that
/// takes `O_DIRECT` at open but refuses the write (`EINVAL`) gets the rest through the page cache.
fn write_blocks(
    file: &File,
    queue: &Receiver<Block>,
    give_back: &mpsc::Sender<Block>,
) -> io::Result<()> {
    let mut offset = 0u64;
    let mut direct = true;
    for block in queue {
        let data = block.data();
        match file.write_all_at(data, offset) {
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("O_DIRECT write refused ({e}); writing through the page cache");
                clear_direct(file)?;
                direct = false;
                file.write_all_at(data, offset)?;
            }
            r => r?,
        }
        offset += data.len() as u64;
        if give_back.send(block).is_err() {
            break;
        }
    }
    Ok(())
}

/// Turns `O_DIRECT` off on `file`'s open description.
fn clear_direct(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor that `file` keeps open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Writes `content` in pieces of `piece` bytes through a writer for it, fsyncs, reads back.
    fn roundtrip(content: &[u8], piece: usize) -> (bool, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let mut w = ContentWriter::new(&path, content.len() as u64);
        let direct = matches!(w, ContentWriter::Direct(_));
        for p in content.chunks(piece) {
            w.write(&file, p).unwrap();
        }
        w.finish(&file).unwrap();
        file.sync_all().unwrap();
        (direct, std::fs::read(&path).unwrap())
    }

    #[test]
    fn large_files_come_out_byte_for_byte_whatever_the_piece_size() {
        for (size, piece) in [
            (DIRECT_MIN as usize, 256 << 10),
            (DIRECT_MIN as usize + 1, 256 << 10),
            (DIRECT_MIN as usize + 4095, 1000),
            (3 * BLOCK_SIZE + DIRECT_MIN as usize + 12345, 3 << 20),
        ] {
            let content = pattern(size);
            let (_, back) = roundtrip(&content, piece);
            assert_eq!(back.len(), content.len(), "size {size}");
            assert!(
                back == content,
                "size {size}, pieces of {piece}: content differs"
            );
        }
    }

    #[test]
    fn small_files_go_through_the_page_cache() {
        let content = pattern(100_000);
        let (direct, back) = roundtrip(&content, 4096);
        assert!(!direct);
        assert_eq!(back, content);
    }

    #[test]
    fn the_budget_bounds_direct_writers_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = Vec::new();
        for i in 0..MAX_DIRECT + 2 {
            let path = dir.path().join(format!("f{i}"));
            File::create(&path).unwrap();
            if let Some(w) = DirectWriter::open(&path) {
                held.push((path, w));
            }
        }
        // Other tests may hold slots at the same time; never more than the budget.
        assert!(held.len() <= MAX_DIRECT);
        assert!(ACTIVE.load(Ordering::Acquire) <= MAX_DIRECT);
        let had = held.len();
        for (path, w) in held {
            let file = File::options().write(true).open(&path).unwrap();
            w.finish(&file).unwrap();
        }
        if had > 0 {
            // A finished writer's thread has ended and given its slot back.
            let path = dir.path().join("again");
            File::create(&path).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while DirectWriter::open(&path).is_none() {
                assert!(std::time::Instant::now() < deadline, "no slot came back");
                std::thread::yield_now();
            }
        }
    }
}
