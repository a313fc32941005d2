//! The sync pool: worker threads that make finished uploads durable (fsync, rename, fsync the
//! folder) while the socket thread keeps serving.
//!
//! fsync takes milliseconds; done on the socket thread it would serialise every upload behind
//! the slowest disk flush. The workers run the fsyncs of different files concurrently and report
//! each result through their own inproc PUSH socket to a PULL that the socket thread polls beside
//! its ROUTERs, so a finished upload wakes the loop at once and its `done` goes out immediately.

use crate::arrival::Arrival;
use crate::change;
use crate::check;
use crate::durable::commit;
use crate::error::StoreError;
use crate::layout::Layout;
use crate::meta::{self, StoredMeta};
use crate::metrics::Metrics;
use crate::s3::S3;
use anyhow::Context as _;
use daemon::Shutdown;
use disk::atomic::{FolderSyncs, TempFile};
use disk::direct::ContentWriter;
use schema::{Class, Entry, Hash, Message};
use std::collections::HashMap;
use std::fs::File;
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
    Inline {
        meta: StoredMeta,
        data: Vec<u8>,
    },
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
    Quarantine {
        class: Class,
        name: String,
    },
    /// A `status`: count what is stored (a walk of the class folders).
    Status(crate::status::Snapshot),
    /// A `get` on the S3 backend: copy the object into a temporary file, verified, for the
    /// reads component to serve (see [`SyncPool::take_spooled`]).
    Spool {
        name: String,
        class: Option<Class>,
        version: Option<u64>,
    },
    /// A `delete`, a `rename`, a `list`, a `history`, an `owners` or a `set_owner` on the S3
    /// backend (each a round trip to the store, so off the socket thread).
    Delete {
        class: Class,
        name: String,
    },
    Rename(RenameJob),
    List {
        after: Option<String>,
        limit: u32,
        /// A listing of the past (`at` or `deleted`) rather than of the present.
        past: Option<crate::past::Past>,
    },
    History {
        name: String,
    },
    Owners,
    SetOwner {
        volume: String,
        owner: String,
    },
}

/// The fields of a `rename`, owned (see [`change::Rename`]).
#[derive(Debug)]
pub struct RenameJob {
    pub class: Class,
    pub from: String,
    pub to: String,
    pub blake3: Hash,
    pub to_class: Option<Class>,
    pub version: Option<u64>,
}

impl RenameJob {
    fn borrowed(&self) -> change::Rename<'_> {
        change::Rename {
            class: self.class,
            from: &self.from,
            to: &self.to,
            blake3: self.blake3,
            to_class: self.to_class,
            version: self.version,
        }
    }
}

/// A read copied from the S3 backend for the socket thread to serve: the file, its entry and,
/// while the copy goes on, how much of it has arrived.
pub type Spool = (File, Entry, Option<Arc<Arrival>>);

/// Reads copied from the S3 backend, by ticket, until the socket thread takes them.
pub type Spooled = Arc<Mutex<HashMap<u64, Spool>>>;

/// The ticket of a worker's nudge: bytes arrived for a read being served while it is copied
/// (see [`crate::arrival`]); no job has it.
pub const NUDGE: u64 = u64::MAX;

/// The running pool. [`SyncPool::stop`] ends it.
pub struct SyncPool {
    tx: Option<mpsc::Sender<SyncJob>>,
    workers: Vec<JoinHandle<()>>,
    spooled: Spooled,
}

impl SyncPool {
    /// Starts `threads` workers that report to the PULL socket bound at `endpoint` in `ctx`.
    /// After `stop` triggers, workers drop the jobs still queued (their temp files go with them).
    pub fn start(
        ctx: &zmq::Context,
        endpoint: &str,
        backend: Backend,
        threads: usize,
        stop: Shutdown,
        metrics: &Metrics,
    ) -> anyhow::Result<SyncPool> {
        let spooled = Spooled::default();
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
            let (rx, backend, stop) = (rx.clone(), backend.clone(), stop.clone());
            let (metrics, folders, spooled) = (metrics.clone(), folders.clone(), spooled.clone());
            let handle = std::thread::Builder::new()
                .name(format!("storage-sync-{i}"))
                .spawn(move || {
                    let ctx = Ctx {
                        backend: &backend,
                        metrics: &metrics,
                        folders: &folders,
                        spooled: &spooled,
                        push: &push,
                    };
                    worker(&rx, &stop, &ctx)
                })
                .context("cannot start a sync worker thread")?;
            workers.push(handle);
        }
        Ok(SyncPool {
            tx: Some(tx),
            workers,
            spooled,
        })
    }

    /// A pool without workers, for tests: the jobs wait in the returned queue.
    #[cfg(test)]
    pub(crate) fn detached() -> (SyncPool, mpsc::Receiver<SyncJob>) {
        let (tx, rx) = mpsc::channel::<SyncJob>();
        let pool = SyncPool {
            tx: Some(tx),
            workers: Vec::new(),
            spooled: Spooled::default(),
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

    /// The read a `Spool` job with `ticket` copied from the store, once its result came.
    pub fn take_spooled(&self, ticket: u64) -> Option<Spool> {
        self.spooled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ticket)
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

/// Where the node keeps its files: the local folders of its root, or an S3 bucket (with the
/// root's temporary folder beside it).
#[derive(Debug, Clone)]
pub struct Backend {
    pub layout: Arc<Layout>,
    pub s3: Option<Arc<S3>>,
}

/// What a worker works with.
struct Ctx<'a> {
    backend: &'a Backend,
    metrics: &'a Metrics,
    folders: &'a FolderSyncs,
    spooled: &'a Spooled,
    push: &'a zmq::Socket,
}

impl Ctx<'_> {
    /// Sends the reply of job `ticket` to the socket thread.
    fn report(&self, ticket: u64, reply: &Message) {
        if let Message::Error { code, .. } = reply {
            daemon::metrics::count_error(&self.metrics.errors, daemon::metrics::code_kind(*code));
        }
        let frames = [ticket.to_le_bytes().to_vec(), schema::codec::encode(reply)];
        if let Err(e) = self.push.send_multipart(frames, 0) {
            tracing::warn!("a sync worker cannot report a result: {e}");
        }
    }

    /// Tells the socket thread that more of a read being copied has arrived.
    fn nudge(&self) {
        let frames = [NUDGE.to_le_bytes().to_vec(), Vec::new()];
        if let Err(e) = self.push.send_multipart(frames, 0) {
            tracing::debug!("a sync worker cannot nudge the socket thread: {e}");
        }
    }
}

/// One worker: takes jobs until the queue closes.
fn worker(rx: &Mutex<mpsc::Receiver<SyncJob>>, stop: &Shutdown, ctx: &Ctx) {
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
        let reply = match &ctx.backend.s3 {
            Some(s3) => perform_s3(s3, job.ticket, job.id, job.work, ctx),
            None => Some(perform(&ctx.backend.layout, job.id, job.work, ctx)),
        };
        // None: the job reported its reply itself, early (a read served while it is copied).
        if let Some(reply) = reply {
            ctx.report(job.ticket, &reply);
        }
    }
}

/// The reply to a `done`-answered request: `Done` with the version, or the error.
fn done(id: u64, result: Result<(u64, bool), StoreError>, root: &std::path::Path) -> Message {
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
            e.reply(id, root)
        }
    }
}

/// The reply to a request answered by `reply` unless it failed.
fn answer<T>(
    id: u64,
    result: Result<T, StoreError>,
    root: &std::path::Path,
    reply: impl FnOnce(T) -> Message,
) -> Message {
    match result {
        Ok(v) => reply(v),
        Err(e) => {
            if e.code() != schema::ErrorCode::NotFound && e.code() != schema::ErrorCode::BadName {
                tracing::warn!("request {id} failed: {e}");
            }
            e.reply(id, root)
        }
    }
}

/// Does `work` for request `id` (job `ticket`) on the S3 backend; returns the reply.
/// `None` when the job reported its reply itself (a read handed to the socket thread while it
/// is still copied from the store).
fn perform_s3(s3: &S3, ticket: u64, id: u64, work: Work, ctx: &Ctx) -> Option<Message> {
    // A read: handed over early (see `crate::arrival`), or answered with its error.
    let Work::Spool {
        name,
        class,
        version,
    } = work
    else {
        return Some(reply_s3(s3, id, work, ctx));
    };
    let mut hand = |file: File, entry: Entry, arrival: Option<Arc<Arrival>>| {
        ctx.spooled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ticket, (file, entry.clone(), arrival));
        ctx.report(ticket, &Message::Meta { id, entry });
    };
    match s3.read_into((&name, class, version), &mut hand, &|| ctx.nudge()) {
        Ok(()) => None,
        Err(e) => {
            if e.code() != schema::ErrorCode::NotFound && e.code() != schema::ErrorCode::BadName {
                tracing::warn!("read of {name} failed: {e}");
            }
            Some(e.reply(id, ctx.backend.layout.root()))
        }
    }
}

/// Does `work` (anything but a read) for request `id` on the S3 backend; returns the reply.
fn reply_s3(s3: &S3, id: u64, work: Work, ctx: &Ctx) -> Message {
    let root = ctx.backend.layout.root();
    let started = std::time::Instant::now();
    match work {
        Work::Inline { meta, data } => {
            let actual = Hash::of(&data);
            if actual != meta.blake3 {
                let e = StoreError::Integrity {
                    name: meta.name,
                    expected: meta.blake3,
                    actual,
                };
                return done(id, Err(e), root);
            }
            let size = data.len() as u64;
            let r = s3.commit_bytes(&meta, data);
            stored(&meta, size, &r, started, ctx.metrics);
            done(id, r, root)
        }
        Work::Finish {
            temp,
            writer,
            meta,
            size,
        } => {
            let r = writer
                .finish(temp.file())
                .map_err(|e| StoreError::io("write", temp.path(), e))
                .and_then(|()| s3.commit_file(&meta, temp.file(), size));
            stored(&meta, size, &r, started, ctx.metrics);
            done(id, r, root)
        }
        Work::Spool { .. } => Message::error(
            id,
            schema::ErrorCode::Io,
            "a read is not answered here".to_string(),
        ),
        Work::Delete { class, name } => {
            done(id, s3.delete(class, &name).map(|()| (0, false)), root)
        }
        Work::Rename(r) => done(id, s3.rename(&r.borrowed()).map(|v| (v, false)), root),
        Work::List { after, limit, past } => {
            let page = match past {
                None => s3.list_page(after.as_deref(), limit),
                Some(p) => s3.past_page(p, after.as_deref(), limit),
            };
            answer(id, page, root, |(entries, more)| Message::Listing {
                id,
                entries,
                more,
            })
        }
        Work::History { name } => {
            let r = s3.history(&name);
            answer(id, r, root, |versions| Message::Versions {
                id,
                name,
                versions,
            })
        }
        Work::Owners => answer(id, s3.owners(), root, |owners| Message::Owned {
            id,
            owners,
        }),
        Work::SetOwner { volume, owner } => {
            done(id, s3.set_owner(&volume, &owner).map(|()| (0, false)), root)
        }
        Work::Check {
            after,
            limit,
            history,
        } => {
            let page = if history {
                s3.kept_check_page(after.as_deref(), limit)
            } else {
                s3.check_page(after.as_deref(), limit)
            };
            answer(id, page, root, |(files, more)| Message::Checked {
                id,
                files,
                more,
            })
        }
        Work::Quarantine { class, name } => {
            done(id, s3.quarantine(class, &name).map(|()| (0, false)), root)
        }
        Work::Status(snapshot) => {
            let node = crate::status::report(&ctx.backend.layout, Some(s3), snapshot);
            Message::NodeStatus {
                id,
                node: Box::new(node),
            }
        }
    }
}

/// Counts and logs a stored upload.
fn stored(
    meta: &StoredMeta,
    size: u64,
    r: &Result<(u64, bool), StoreError>,
    started: std::time::Instant,
    metrics: &Metrics,
) {
    if let Ok((_, false)) = r {
        metrics
            .durable_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.files_stored.inc();
        metrics.bytes_stored.inc_by(size);
        tracing::info!(name = %schema::names::escape(&meta.name), class = %meta.class, size, version = meta.version, "stored");
    }
}

/// Does `work` for request `id` on the local folders; returns the reply. (Reads, deletes,
/// renames, listings and owners are answered by the socket thread on a local root.)
fn perform(layout: &Layout, id: u64, work: Work, ctx: &Ctx) -> Message {
    let (metrics, folders) = (ctx.metrics, ctx.folders);
    let root = layout.root();
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
            let node = crate::status::report(layout, None, snapshot);
            return Message::NodeStatus {
                id,
                node: Box::new(node),
            };
        }
        work => store(layout, work, metrics, folders),
    };
    done(id, result, root)
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
            // The same content sent again in chunks (its hash known only now): nothing changes,
            // as for an inline one.
            if let Some(old) = old.as_ref().filter(|old| old.blake3 == meta.blake3) {
                tracing::debug!(name = %meta.name, "unchanged");
                return Ok((old.version, true));
            }
            let stored = finish(layout, Stored { temp, size }, old, &meta, metrics, folders)?;
            if let Some(file) = cached {
                disk::writeback::drop_cached(&file);
            }
            Ok(stored)
        }
        _ => Err(StoreError::Protocol("not an upload".into())),
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
