//! The sync pool: worker threads that make finished uploads durable (fsync, rename, fsync the
//! folder) while the socket thread keeps serving.
//!
//! fsync takes milliseconds; done on the socket thread it would serialise every upload behind
//! the slowest disk flush. The workers run the fsyncs of different files concurrently and report
//! each result through their own inproc PUSH socket to a PULL that the socket thread polls beside
//! its ROUTERs, so a finished upload wakes the loop at once and its `done` goes out immediately.

use crate::check;
use crate::durable::commit;
use crate::error::StoreError;
use crate::layout::Layout;
use crate::meta::{self, StoredMeta};
use crate::metrics::Metrics;
use anyhow::Context as _;
use daemon::Shutdown;
use disk::atomic::{FolderSyncs, TempFile};
use disk::direct::ContentWriter;
use schema::{Class, Hash, Message};
use std::io::Write as _;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A finished upload for a worker, and the ticket under which its result comes back.
#[derive(Debug)]
pub struct SyncJob {
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
    /// A chunked upload, received and verified: write what the writer holds back, commit.
    Finish {
        temp: TempFile,
        writer: ContentWriter,
        meta: StoredMeta,
        size: u64,
    },
    /// A `check` page: re-hash stored files (or, with `history`, the kept versions) after the
    /// cursor `after`.
    Check {
        after: Option<String>,
        limit: u32,
        history: bool,
    },
    /// A `quarantine`: set aside `name` of `class` if its content changed.
    Quarantine { class: Class, name: String },
    /// A `status`: count what is stored (a walk of the class folders).
    Status(crate::status::Snapshot),
}

/// The running pool. [`SyncPool::stop`] ends it.
pub struct SyncPool {
    tx: Option<mpsc::Sender<SyncJob>>,
    workers: Vec<JoinHandle<()>>,
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
        metrics: &Metrics,
    ) -> anyhow::Result<SyncPool> {
        let (tx, rx) = mpsc::channel::<SyncJob>();
        let rx = Arc::new(Mutex::new(rx));
        // One set of folder fsyncs for all workers, so that they can share them.
        let folders = Arc::new(FolderSyncs::default());
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let push = ctx
                .socket(zmq::PUSH)
                .context("cannot create a sync worker's result socket")?;
            // Results are small and bounded by the number of uploads in flight: never block.
            push.set_sndhwm(0)?;
            push.set_linger(0)?;
            // A signal (the stop, as the node starts) may interrupt the connect: that is no
            // failure, the stop is seen by the loop.
            let connected = loop {
                match push.connect(endpoint) {
                    Err(zmq::Error::EINTR) => continue,
                    other => break other,
                }
            };
            connected.with_context(|| format!("cannot connect a sync worker to {endpoint}"))?;
            let (rx, layout, stop) = (rx.clone(), layout.clone(), stop.clone());
            let (metrics, folders) = (metrics.clone(), folders.clone());
            let handle = std::thread::Builder::new()
                .name(format!("storage-sync-{i}"))
                .spawn(move || worker(&rx, &push, &layout, &stop, &metrics, &folders))
                .context("cannot start a sync worker thread")?;
            workers.push(handle);
        }
        Ok(SyncPool {
            tx: Some(tx),
            workers,
        })
    }

    /// A pool without workers, for tests: the jobs wait in the returned queue.
    #[cfg(test)]
    pub(crate) fn detached() -> (SyncPool, mpsc::Receiver<SyncJob>) {
        let (tx, rx) = mpsc::channel::<SyncJob>();
        let pool = SyncPool {
            tx: Some(tx),
            workers: Vec::new(),
        };
        (pool, rx)
    }

    /// Queues `job`; `false` if the workers are gone (the job is dropped with its temp file).
    pub fn submit(&self, job: SyncJob) -> bool {
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
    }
}

/// One worker: takes jobs until the queue closes.
fn worker(
    rx: &Mutex<mpsc::Receiver<SyncJob>>,
    push: &zmq::Socket,
    layout: &Layout,
    stop: &Shutdown,
    metrics: &Metrics,
    folders: &FolderSyncs,
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
        let reply = perform(layout, job.id, job.work, metrics, folders);
        if let Message::Error { code, .. } = &reply {
            daemon::metrics::count_error(&metrics.errors, daemon::metrics::code_kind(*code));
        }
        let frames = [
            job.ticket.to_le_bytes().to_vec(),
            schema::codec::encode(&reply),
        ];
        if let Err(e) = push.send_multipart(frames, 0) {
            tracing::warn!("a sync worker cannot report a result: {e}");
        }
    }
}

/// Does `work` for request `id`; returns the reply.
fn perform(
    layout: &Layout,
    id: u64,
    work: Work,
    metrics: &Metrics,
    folders: &FolderSyncs,
) -> Message {
    let result = match work {
        Work::Check {
            after,
            limit,
            history,
        } => {
            let page = if history {
                check::kept_page(layout, after.as_deref(), limit)
            } else {
                check::page(layout, after.as_deref(), limit)
            };
            return match page {
                Ok((files, more)) => Message::Checked { id, files, more },
                Err(e) => {
                    tracing::warn!("check failed: {e}");
                    e.reply(id, layout.root())
                }
            };
        }
        Work::Quarantine { class, name } => {
            check::quarantine(layout, class, &name).map(|()| (0, false))
        }
        Work::Status(snapshot) => {
            let node = crate::status::report(layout, snapshot);
            return Message::NodeStatus {
                id,
                node: Box::new(node),
            };
        }
        work => store(layout, work, metrics, folders),
    };
    match result {
        Ok((version, unchanged)) => Message::Done {
            id,
            version,
            unchanged,
        },
        Err(e) => {
            if e.code() != schema::ErrorCode::NotFound {
                tracing::warn!("request {id} failed: {e}");
            }
            e.reply(id, layout.root())
        }
    }
}

/// Makes one finished upload durable; returns its version and whether it was unchanged.
fn store(
    layout: &Layout,
    work: Work,
    metrics: &Metrics,
    folders: &FolderSyncs,
) -> Result<(u64, bool), StoreError> {
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
            let old = meta::stored(&dest, &meta.name);
            if let Some(old) = old.as_ref().filter(|old| old.blake3 == actual) {
                tracing::debug!(name = %meta.name, "unchanged");
                return Ok((old.version, true));
            }
            let temp = layout.new_temp()?;
            temp.file()
                .write_all(&data)
                .map_err(|e| StoreError::io("write", temp.path(), e))?;
            let new = Stored {
                temp,
                size: data.len() as u64,
            };
            finish(layout, new, old, &meta, metrics, folders)
        }
        Work::Finish {
            temp,
            writer,
            meta,
            size,
        } => {
            writer
                .finish(temp.file())
                .map_err(|e| StoreError::io("write", temp.path(), e))?;
            // A second handle outlives the commit, to drop the pages it made clean.
            let cached = temp.file().try_clone().ok();
            let dest = layout.file_path(meta.class, &meta.name)?;
            let old = meta::stored(&dest, &meta.name);
            let stored = finish(layout, Stored { temp, size }, old, &meta, metrics, folders)?;
            if let Some(file) = cached {
                disk::writeback::drop_cached(&file);
            }
            Ok(stored)
        }
        Work::Check { .. } | Work::Quarantine { .. } | Work::Status(_) => {
            Err(StoreError::Protocol("a check is not an upload".into()))
        }
    }
}

/// A new version ready to commit: its temporary file and size.
struct Stored {
    temp: TempFile,
    size: u64,
}

/// Commits `new` as `meta`; `old`, what the name held, is kept in the history first.
fn finish(
    layout: &Layout,
    new: Stored,
    old: Option<StoredMeta>,
    meta: &StoredMeta,
    metrics: &Metrics,
    folders: &FolderSyncs,
) -> Result<(u64, bool), StoreError> {
    let Stored { temp, size } = new;
    let dest = layout.file_path(meta.class, &meta.name)?;
    let started = std::time::Instant::now();
    // The version this one replaces stays in the history (before the rename over it).
    if let Some(old) = old {
        let now = schema::time::to_ns(std::time::SystemTime::now());
        layout.history().keep(&dest, &old, now, false)?;
    }
    commit(temp, meta, &layout.class_dir(meta.class), &dest, folders)?;
    metrics
        .durable_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.files_stored.inc();
    metrics.bytes_stored.inc_by(size);
    tracing::info!(name = %schema::names::escape(&meta.name), class = %meta.class, size, version = meta.version, "stored");
    Ok((meta.version, false))
}

/// The result a worker reported: the job's ticket and the encoded reply header.
pub fn read_result(pull: &zmq::Socket) -> Option<(u64, Vec<u8>)> {
    let frames = pull.recv_multipart(zmq::DONTWAIT).ok()?;
    let [ticket, reply]: [Vec<u8>; 2] = frames.try_into().ok()?;
    let ticket = u64::from_le_bytes(ticket.try_into().ok()?);
    Some((ticket, reply))
}
