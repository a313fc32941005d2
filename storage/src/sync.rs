//! The sync pool: worker threads that make finished uploads durable (fsync, rename, fsync the
//! folder) while the socket thread keeps serving.
//!
//! fsync takes milliseconds; done on the socket thread it would serialise every upload behind
//! the slowest disk flush. The workers run the fsyncs of different files concurrently and report
//! each result through their own inproc PUSH socket to a PULL that the socket thread polls beside
//! its ROUTERs, so a finished upload wakes the loop at once and its `done` goes out immediately.

use crate::check;
use crate::durable::{commit_unsynced, fsync_dir, TempFile};
use crate::error::StoreError;
use crate::layout::Layout;
use crate::meta::{self, StoredMeta};
use anyhow::Context as _;
use schema::daemon::Shutdown;
use schema::{Class, Hash, Message};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A finished upload for a worker, and the ticket under which its result comes back.
#[derive(Debug)]
pub struct Job {
    /// Chosen by the socket thread to find the requester again.
    pub ticket: u64,
    /// The request id of the `put`, echoed in the reply.
    pub id: u64,
    /// What to do.
    pub work: Work,
}

/// What a worker does: make a finished upload durable, or one of the checks of `dfs fsck`,
/// which read whole files and so stay off the socket thread too.
#[derive(Debug)]
pub enum Work {
    /// A small file whose whole content came with its `put`: verify, write, commit.
    Inline { meta: StoredMeta, data: Vec<u8> },
    /// A chunked upload, written and verified: commit.
    Finish {
        temp: TempFile,
        meta: StoredMeta,
        size: u64,
    },
    /// A `check` page: re-hash stored files after the cursor `after`.
    Check { after: Option<String>, limit: u32 },
    /// A `quarantine`: set aside `name` of `class` if its content changed.
    Quarantine { class: Class, name: String },
}

/// The running pool. [`SyncPool::stop`] ends it.
pub struct SyncPool {
    tx: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    folders: Arc<FolderSync>,
    folder_thread: Option<JoinHandle<()>>,
}

/// Renamed uploads waiting for the fsync of their folder, by folder. One thread fsyncs each
/// folder once for everything renamed into it before that fsync started, then reports all of
/// them: a burst of small files into one folder costs one folder fsync per round, not one each.
#[derive(Default)]
struct FolderSync {
    state: Mutex<FolderBatch>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct FolderBatch {
    pending: std::collections::HashMap<std::path::PathBuf, Vec<(u64, u64, Message)>>,
    closed: bool,
}

impl FolderSync {
    /// Holds `reply` (to request `id`, under `ticket`) until `folder` has been fsynced.
    fn add(&self, folder: std::path::PathBuf, ticket: u64, id: u64, reply: Message) {
        if let Ok(mut b) = self.state.lock() {
            b.pending
                .entry(folder)
                .or_default()
                .push((ticket, id, reply));
        }
        self.wake.notify_one();
    }

    fn close(&self) {
        if let Ok(mut b) = self.state.lock() {
            b.closed = true;
        }
        self.wake.notify_all();
    }

    /// The folder thread: fsync each folder with waiting uploads, then report them.
    fn run(&self, push: &zmq::Socket, layout: &Layout) {
        loop {
            let batch = {
                let Ok(mut b) = self.state.lock() else { return };
                while b.pending.is_empty() && !b.closed {
                    b = match self.wake.wait(b) {
                        Ok(b) => b,
                        Err(_) => return,
                    };
                }
                if b.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut b.pending)
            };
            for (folder, waiting) in batch {
                let synced = fsync_dir(&folder);
                for (ticket, id, reply) in waiting {
                    let reply = match &synced {
                        Ok(()) => reply,
                        Err(e) => {
                            tracing::warn!("upload failed: {e}");
                            e.reply(id, layout.root())
                        }
                    };
                    report(push, ticket, &reply);
                }
            }
        }
    }
}

/// Sends the result of job `ticket` to the socket thread.
fn report(push: &zmq::Socket, ticket: u64, reply: &Message) {
    let frames = [ticket.to_le_bytes().to_vec(), schema::codec::encode(reply)];
    if let Err(e) = push.send_multipart(frames, 0) {
        tracing::warn!("a sync worker cannot report a result: {e}");
    }
}

impl SyncPool {
    /// Starts `threads` workers that report to the PULL socket bound at `endpoint` in `ctx`.
    /// After `stop` triggers, workers drop the jobs still queued (their temp files go with them).
    pub fn start(
        ctx: &zmq::Context,
        endpoint: &str,
        layout: Arc<Layout>,
        threads: usize,
        stop: Shutdown,
    ) -> anyhow::Result<SyncPool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let result_socket = |what: &str| -> anyhow::Result<zmq::Socket> {
            let push = ctx
                .socket(zmq::PUSH)
                .with_context(|| format!("cannot create the result socket of {what}"))?;
            // Results are small and bounded by the number of uploads in flight: never block.
            push.set_sndhwm(0)?;
            push.set_linger(0)?;
            push.connect(endpoint)
                .with_context(|| format!("cannot connect {what} to {endpoint}"))?;
            Ok(push)
        };
        let folders = Arc::new(FolderSync::default());
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let push = result_socket("a sync worker")?;
            let (rx, layout, stop, folders) =
                (rx.clone(), layout.clone(), stop.clone(), folders.clone());
            let handle = std::thread::Builder::new()
                .name(format!("storage-sync-{i}"))
                .spawn(move || worker(&rx, &push, &layout, &stop, &folders))
                .context("cannot start a sync worker thread")?;
            workers.push(handle);
        }
        let push = result_socket("the folder sync thread")?;
        let (f, l) = (folders.clone(), layout.clone());
        let folder_thread = std::thread::Builder::new()
            .name("storage-folder-sync".into())
            .spawn(move || f.run(&push, &l))
            .context("cannot start the folder sync thread")?;
        Ok(SyncPool {
            tx: Some(tx),
            workers,
            folders,
            folder_thread: Some(folder_thread),
        })
    }

    /// Queues `job`; `false` if the workers are gone (the job is dropped with its temp file).
    pub fn submit(&self, job: Job) -> bool {
        match &self.tx {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// Closes the queue and waits for the workers to finish.
    pub fn stop(mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                tracing::warn!("a sync worker panicked");
            }
        }
        self.folders.close();
        if let Some(t) = self.folder_thread.take() {
            if t.join().is_err() {
                tracing::warn!("the folder sync thread panicked");
            }
        }
    }
}

/// One worker: takes jobs until the queue closes.
fn worker(
    rx: &Mutex<mpsc::Receiver<Job>>,
    push: &zmq::Socket,
    layout: &Layout,
    stop: &Shutdown,
    folders: &FolderSync,
) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if stop.is_triggered() {
            tracing::debug!(ticket = job.ticket, "stopping: upload abandoned");
            continue;
        }
        match perform(layout, job.id, job.work) {
            (reply, Some(folder)) => folders.add(folder, job.ticket, job.id, reply),
            (reply, None) => report(push, job.ticket, &reply),
        }
    }
}

/// Does `work` for request `id`; returns the reply and, for an upload renamed into place, the
/// folder whose fsync must come before the reply goes out.
fn perform(layout: &Layout, id: u64, work: Work) -> (Message, Option<PathBuf>) {
    let result = match work {
        Work::Check { after, limit } => {
            let reply = match check::page(layout, after.as_deref(), limit) {
                Ok((files, more)) => Message::Checked { id, files, more },
                Err(e) => {
                    tracing::warn!("check failed: {e}");
                    e.reply(id, layout.root())
                }
            };
            return (reply, None);
        }
        Work::Quarantine { class, name } => {
            check::quarantine(layout, class, &name).map(|()| (0, false, None))
        }
        work => store(layout, work),
    };
    match result {
        Ok((version, unchanged, folder)) => (
            Message::Done {
                id,
                version,
                unchanged,
            },
            folder,
        ),
        Err(e) => {
            if e.code() != schema::ErrorCode::NotFound {
                tracing::warn!("request {id} failed: {e}");
            }
            (e.reply(id, layout.root()), None)
        }
    }
}

/// What an upload came to: its version, whether it was unchanged, and the folder to fsync.
type Outcome = (u64, bool, Option<PathBuf>);

/// Makes one finished upload durable but for its folder's fsync.
fn store(layout: &Layout, work: Work) -> Result<Outcome, StoreError> {
    match work {
        Work::Inline { meta, data } => {
            let actual = Hash::of(&data);
            if actual != meta.blake3 {
                return Err(StoreError::Integrity {
                    name: meta.name,
                    expected: meta.blake3,
                    actual,
                });
            }
            let dest = layout.file_path(meta.class, &meta.name)?;
            if let Some(old) = meta::stored(&dest).filter(|old| old.blake3 == actual) {
                tracing::debug!(name = %meta.name, "unchanged");
                return Ok((old.version, true, None));
            }
            let temp = layout.new_temp()?;
            temp.file()
                .write_all(&data)
                .map_err(|e| StoreError::io("write", temp.path(), e))?;
            finish(layout, temp, &meta, data.len() as u64)
        }
        Work::Finish { temp, meta, size } => finish(layout, temp, &meta, size),
        Work::Check { .. } | Work::Quarantine { .. } => {
            Err(StoreError::Protocol("a check is not an upload".into()))
        }
    }
}

fn finish(
    layout: &Layout,
    temp: TempFile,
    meta: &StoredMeta,
    size: u64,
) -> Result<Outcome, StoreError> {
    let dest = layout.file_path(meta.class, &meta.name)?;
    commit_unsynced(temp, meta, &layout.class_dir(meta.class), &dest)?;
    tracing::info!(name = %schema::names::escape(&meta.name), class = %meta.class, size, version = meta.version, "stored");
    let folder = dest.parent().map(Path::to_path_buf);
    Ok((meta.version, false, folder))
}

/// The result a worker reported: the job's ticket and the encoded reply header.
pub fn read_result(pull: &zmq::Socket) -> Option<(u64, Vec<u8>)> {
    let frames = pull.recv_multipart(zmq::DONTWAIT).ok()?;
    let [ticket, reply]: [Vec<u8>; 2] = frames.try_into().ok()?;
    let ticket = u64::from_le_bytes(ticket.try_into().ok()?);
    Some((ticket, reply))
}
