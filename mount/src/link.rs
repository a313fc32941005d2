//! The mount's links to the broker's fetch port, each a `fetcher` client on its own thread
//! (a ZeroMQ socket belongs to one thread): the lister, which reads the listing every refresh
//! and builds views of the past on demand, and the fetch workers, which read contents into the
//! cache. Every wait is bounded by `--timeout`, so a broker outage fails reads with `EIO`
//! instead of hanging them, and the links carry on once the broker is back.

use crate::cache::{Body, Cache, Content, Failure};
use crate::tree::Tree;
use daemon::Shutdown;
use disk::atomic::TempFile;
use fetcher::client::Client;
use fetcher::error::FetchError;
use fetcher::list::Tree as Listing;
use fetcher::transfer::Sink;
use net::security::ClientAuth;
use schema::limits::INLINE_MAX;
use schema::{Entry, ErrorCode, Hash, Message};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Fetch workers, each with its own link.
pub const WORKERS: usize = 3;

/// Most small `get`s one worker has in flight at once.
const WINDOW: usize = 64;

/// Most large contents streamed at once (each holds up to a credit window of chunks).
const LARGE_AT_ONCE: usize = 2;

/// Times a content refused as `busy` (the node's reads are all taken) is asked for again.
const BUSY_RETRIES: u32 = 5;

/// How one link reaches the broker.
#[derive(Clone)]
pub struct Endpoint {
    pub endpoint: String,
    pub auth: ClientAuth,
    pub timeout: f64,
    pub stop: Shutdown,
}

impl Endpoint {
    fn connect(&self) -> Result<Client, FetchError> {
        fetcher::client::connect(&self.endpoint, &self.auth, self.timeout, self.stop.clone())
    }
}

/// Says once when the broker stops answering and once when it answers again.
#[derive(Default)]
pub struct Outage(AtomicBool);

impl Outage {
    fn failed(&self, what: &str, e: &FetchError) {
        if !self.0.swap(true, Ordering::Relaxed) {
            warn!("{what}: {e}; reads of files not in the cache fail with EIO until the broker answers");
        }
    }

    fn answered(&self) {
        if self.0.swap(false, Ordering::Relaxed) {
            info!("the broker answers again");
        }
    }
}

/// Lists `at` (the store now, or as it was at an instant) and builds its tree.
fn list(client: &mut Client, at: Option<i64>) -> Result<Tree, FetchError> {
    let mut entries = Vec::new();
    let listing = at.map_or(Listing::Now, Listing::At);
    fetcher::list::pages(client, listing, |page| {
        entries.extend_from_slice(page);
        Ok(())
    })?;
    Ok(Tree::build(entries))
}

/// A request to the lister: the tree as it was at an instant, for a view of the past.
struct PastRequest {
    at: i64,
    reply: mpsc::Sender<Result<Tree, String>>,
}

/// The lister's handle: asks it for views of the past.
#[derive(Clone)]
pub struct Lister {
    requests: mpsc::Sender<PastRequest>,
    timeout: Duration,
}

impl Lister {
    /// Starts the lister thread. It lists `at` (now, or the `--at` instant) at once and then
    /// every `refresh` (or ten times the last listing's duration, when that is longer), handing
    /// each tree to `on_tree`. Returns once the first listing is in, or with its error.
    pub fn start(
        link: Endpoint,
        at: Option<i64>,
        refresh: Duration,
        on_tree: impl Fn(Tree) + Send + 'static,
    ) -> Result<Lister, String> {
        let (requests, asked) = mpsc::channel::<PastRequest>();
        let (first_tx, first_rx) = mpsc::channel::<Result<(), String>>();
        let timeout = Duration::from_secs_f64(link.timeout);
        std::thread::Builder::new()
            .name("mount-list".into())
            .spawn(move || {
                let mut client = match link.connect() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = first_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let started = Instant::now();
                match list(&mut client, at) {
                    Ok(tree) => {
                        on_tree(tree);
                        let _ = first_tx.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = first_tx.send(Err(format!("listing: {e}")));
                        return;
                    }
                }
                let outage = Outage::default();
                let mut every = refresh.max(started.elapsed() * 10);
                let mut next = Instant::now() + every;
                while !link.stop.is_triggered() {
                    let wait = next.saturating_duration_since(Instant::now());
                    match asked.recv_timeout(wait.min(Duration::from_millis(200))) {
                        Ok(req) => {
                            let tree = list(&mut client, Some(req.at)).map_err(|e| e.to_string());
                            let _ = req.reply.send(tree);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(wait.min(Duration::from_millis(200)));
                        }
                    }
                    if Instant::now() < next {
                        continue;
                    }
                    let began = Instant::now();
                    match list(&mut client, at) {
                        Ok(tree) => {
                            outage.answered();
                            debug!(files = tree.files(), took = ?began.elapsed(), "listing refreshed");
                            on_tree(tree);
                            every = refresh.max(began.elapsed() * 10);
                        }
                        Err(FetchError::Interrupted) => return,
                        Err(e) => outage.failed("the listing cannot be refreshed", &e),
                    }
                    next = Instant::now() + every;
                }
            })
            .map_err(|e| format!("cannot start the lister thread: {e}"))?;
        match first_rx.recv() {
            Ok(Ok(())) => Ok(Lister { requests, timeout }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the lister stopped".into()),
        }
    }

    /// The tree as it was at `at` (ns), listed now.
    pub fn past(&self, at: i64) -> Result<Tree, String> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(PastRequest { at, reply })
            .map_err(|_| "the lister stopped".to_string())?;
        // A listing of the past is many pages; each page is bounded by the timeout.
        match answer.recv_timeout(self.timeout * 64) {
            Ok(result) => result,
            Err(_) => Err("no listing within the timeout".into()),
        }
    }
}

/// One content to fetch: the entry it was listed with (name, version, size, BLAKE3).
struct Job {
    entry: Entry,
    content: Arc<Content>,
    busy: u32,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    large_running: usize,
}

/// The fetch workers and their queue: reads first, prefetches after.
pub struct Fetcher {
    queue: Mutex<Queue>,
    ready: Condvar,
    cache: Arc<Cache>,
    dir: PathBuf,
    stop: Shutdown,
    outage: Outage,
}

impl Fetcher {
    /// Starts [`WORKERS`] fetch workers on `link`, writing large contents into `dir`.
    pub fn start(link: &Endpoint, cache: Arc<Cache>, dir: PathBuf) -> Arc<Fetcher> {
        let fetcher = Arc::new(Fetcher {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            cache,
            dir,
            stop: link.stop.clone(),
            outage: Outage::default(),
        });
        for n in 0..WORKERS {
            let (f, link) = (fetcher.clone(), link.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("mount-fetch-{n}"))
                .spawn(move || f.work(link));
            if let Err(e) = spawned {
                error!("cannot start a fetch worker: {e}");
            }
        }
        fetcher
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches `content` of `entry` before anything queued (a read waits for it).
    pub fn demand(&self, entry: &Entry, content: Arc<Content>) {
        self.queue().jobs.push_front(Job {
            entry: entry.clone(),
            content,
            busy: 0,
        });
        self.ready.notify_one();
    }

    /// Fetches `content` of `entry` after everything queued (a read is likely soon).
    pub fn prefetch(&self, entry: &Entry, content: Arc<Content>) {
        self.queue().jobs.push_back(Job {
            entry: entry.clone(),
            content,
            busy: 0,
        });
        self.ready.notify_one();
    }

    /// Waits for work: a run of small contents, or one large one when fewer than
    /// [`LARGE_AT_ONCE`] are streaming. `None` once the mount stops.
    fn take(&self) -> Option<Vec<Job>> {
        let mut q = self.queue();
        loop {
            if self.stop.is_triggered() {
                return None;
            }
            let large_ok = q.large_running < LARGE_AT_ONCE;
            if let Some(i) = q
                .jobs
                .iter()
                .position(|j| j.entry.size <= INLINE_MAX || large_ok)
            {
                let first = q.jobs.remove(i).expect("the position is in the queue");
                if first.entry.size > INLINE_MAX {
                    q.large_running += 1;
                    return Some(vec![first]);
                }
                let mut batch = vec![first];
                while batch.len() < WINDOW {
                    match q.jobs.iter().position(|j| j.entry.size <= INLINE_MAX) {
                        Some(i) => batch.push(q.jobs.remove(i).expect("in the queue")),
                        None => break,
                    }
                }
                return Some(batch);
            }
            q = self
                .ready
                .wait_timeout(q, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn work(self: Arc<Fetcher>, link: Endpoint) {
        let mut client: Option<Client> = None;
        while let Some(batch) = self.take() {
            let large = batch.len() == 1 && batch[0].entry.size > INLINE_MAX;
            if client.is_none() {
                match link.connect() {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        self.outage.failed("cannot reach the broker", &e);
                        let failure = Failure::AGAIN;
                        for job in batch {
                            self.settle(&job, Err(failure));
                        }
                        if large {
                            self.queue().large_running -= 1;
                        }
                        continue;
                    }
                }
            }
            let c = client.as_mut().expect("connected above");
            if large {
                let job = batch.into_iter().next().expect("one job");
                let result = self.fetch_large(c, &job);
                self.queue().large_running -= 1;
                self.ready.notify_all();
                self.settle(&job, result);
            } else {
                self.fetch_small(c, batch);
            }
        }
    }

    /// Ends a job: the content is ready or failed, and the cache counts or forgets it.
    fn settle(&self, job: &Job, result: Result<Body, Failure>) {
        job.content.finish(result);
        self.cache.settled(&job.content);
    }

    /// Tells why a content cannot be read, and what a read of it gets: `EIO` for a corrupt
    /// content or a broker that does not answer, `ENOENT` for a name gone from the store.
    fn failure(&self, entry: &Entry, e: &FetchError) -> Failure {
        match e {
            FetchError::Integrity
            | FetchError::Remote {
                code: ErrorCode::Integrity,
                ..
            } => {
                error!(
                    "{} (version {}): {e}; reads of it fail with EIO",
                    entry.name, entry.version
                );
                Failure::FINAL
            }
            FetchError::Remote {
                code: ErrorCode::NotFound,
                ..
            } => {
                debug!(name = %entry.name, "gone from the store: {e}");
                Failure::GONE
            }
            FetchError::Interrupted => Failure::FINAL,
            e if e.is_link_failure() => {
                self.outage.failed(&entry.name, e);
                Failure::AGAIN
            }
            e => {
                warn!("{}: {e}", entry.name);
                Failure::AGAIN
            }
        }
    }

    /// Reads small contents, all `get`s in flight at once; each arrives whole in its `meta`.
    fn fetch_small(&self, client: &mut Client, batch: Vec<Job>) {
        let mut waiting: HashMap<u64, Job> = HashMap::with_capacity(batch.len());
        for job in batch {
            let id = client.new_id();
            let sent = client.send(&Message::Get {
                id,
                name: job.entry.name.clone(),
                class: None,
                version: Some(job.entry.version),
                sender: None,
            });
            match sent {
                Ok(()) => {
                    waiting.insert(id, job);
                }
                Err(e) => {
                    let errno = self.failure(&job.entry, &e.into());
                    self.settle(&job, Err(errno));
                }
            }
        }
        while !waiting.is_empty() {
            let (id, reply) = match client.reply_of(&|id| waiting.contains_key(&id)) {
                Ok(answer) => answer,
                Err(e) => {
                    let e: FetchError = e.into();
                    for (_, job) in waiting.drain() {
                        let errno = self.failure(&job.entry, &e);
                        self.settle(&job, Err(errno));
                    }
                    return;
                }
            };
            let job = waiting
                .remove(&id)
                .expect("only waited-for ids are answered");
            let result = match reply {
                Ok(reply) => match reply.msg {
                    Message::Meta { entry, .. } => {
                        let data = reply.data.as_deref().unwrap_or_default();
                        if entry.blake3 != job.entry.blake3
                            || data.len() as u64 != job.entry.size
                            || Hash::of(data) != job.entry.blake3
                        {
                            Err(FetchError::Integrity)
                        } else {
                            Ok(Body::Memory(data.to_vec()))
                        }
                    }
                    other => Err(FetchError::Protocol(format!(
                        "expected meta in answer to get, got {}",
                        other.kind()
                    ))),
                },
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(body) => {
                    self.outage.answered();
                    self.settle(&job, Ok(body));
                }
                Err(FetchError::Remote {
                    code: ErrorCode::Busy,
                    ..
                }) if job.busy < BUSY_RETRIES => {
                    let mut job = job;
                    job.busy += 1;
                    self.queue().jobs.push_back(job);
                }
                Err(e) => {
                    let errno = self.failure(&job.entry, &e);
                    self.settle(&job, Err(errno));
                }
            }
        }
    }

    /// Streams a large content under credit into an unnamed file of the cache folder, hashed
    /// on the way; it is ready only once it matched its BLAKE3.
    fn fetch_large(&self, client: &mut Client, job: &Job) -> Result<Body, Failure> {
        let fail = |e: FetchError| self.failure(&job.entry, &e);
        let began = Instant::now();
        let started = fetcher::transfer::request(client, &job.entry.name, Some(job.entry.version))
            .map_err(fail)?;
        if started.entry.blake3 != job.entry.blake3 || started.entry.size != job.entry.size {
            started.abandon(client);
            return Err(fail(FetchError::Integrity));
        }
        let local = Failure::AGAIN;
        let temp = TempFile::in_dir(&self.dir).map_err(|e| {
            error!(
                "cannot make a file in the cache folder {}: {e}",
                self.dir.display()
            );
            local
        })?;
        let mut sink = FileSink {
            out: std::io::BufWriter::with_capacity(1 << 20, temp.file()),
        };
        started.receive(client, &mut sink).map_err(fail)?;
        sink.out.flush().map_err(|e| {
            error!(
                "cannot write to the cache folder {}: {e}",
                self.dir.display()
            );
            local
        })?;
        drop(sink);
        self.outage.answered();
        debug!(name = %job.entry.name, size = job.entry.size, took = ?began.elapsed(), "in the cache");
        Ok(Body::File(temp))
    }
}

/// Writes a content into its cache file.
struct FileSink<'a> {
    out: std::io::BufWriter<&'a std::fs::File>,
}

impl Sink for FileSink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.out
            .write_all(bytes)
            .map_err(|source| FetchError::Write {
                path: PathBuf::from("the cache folder"),
                source,
            })
    }
}
