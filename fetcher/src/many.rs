//! Retrieving many files at once (a restore): up to [`WINDOW`] `get`s in flight on the one
//! link, each small file's content (inline in its `meta`) checked against its hash and written
//! to a temporary file beside its destination, and the durable commits (fsync, rename, folder
//! fsync, shared by the files of one folder) made by a pool of [`COMMITTERS`] threads while the
//! next replies arrive. Nothing is weaker than a one-at-a-time retrieval: each file is renamed
//! into place only once its content matched its BLAKE3 and was fsynced, and counts as retrieved
//! only once its folder was fsynced after the rename.
//!
//! A file already in the target with the right size and BLAKE3 is left alone. A file larger
//! than `INLINE_MAX` is handed back (its read abandoned after the `meta`) for the one-at-a-time
//! path, which streams it under credit; so is a name refused as `busy`.

use crate::client::Client;
use crate::error::FetchError;
use crate::save::{self, TempFile};
use crate::transfer::Sink;
use disk::atomic::FolderSyncs;
use schema::limits::INLINE_MAX;
use schema::{Class, ErrorCode, Hash, Message};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

/// Most `get`s in flight at once.
pub const WINDOW: usize = 64;

/// Threads making retrieved files durable.
pub const COMMITTERS: usize = 32;

/// Most files received and not yet durable (each holds an open temporary file).
const MAX_UNCOMMITTED: usize = 256;

/// What became of one name.
pub(crate) enum Outcome {
    /// Retrieved and durable, or already in the target.
    Done,
    /// To be read on its own, after the others: larger than `INLINE_MAX`, or refused as busy
    /// (the store was full of reads; asked again one at a time, it may not be).
    Later,
    Failed(FetchError),
}

impl From<Result<(), FetchError>> for Outcome {
    fn from(result: Result<(), FetchError>) -> Outcome {
        result.map_or_else(Outcome::Failed, |()| Outcome::Done)
    }
}

/// One durable commit for a committer thread: which name, its temporary file, where it goes.
struct Commit {
    index: usize,
    temp: TempFile,
    modified: i64,
    dest: PathBuf,
}

/// Retrieves `wanted` (name, version or the current one) into `target`, of `class` when given.
/// Returns the outcome of each name in order, and the reason and exit code of the link failure
/// that ended the run early, if any: the first name in flight then fails with it, the others
/// without an answer are `Failed` with `NotTried`.
pub(crate) fn save_all(
    client: &mut Client,
    target: &Path,
    wanted: &[(String, Option<u64>)],
    class: Option<Class>,
) -> (Vec<Outcome>, Option<(String, u8)>) {
    let mut outcomes: Vec<Option<Outcome>> = (0..wanted.len()).map(|_| None).collect();
    let folders = FolderSyncs::default();
    let (jobs_tx, jobs_rx) = mpsc::channel::<Commit>();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<(), FetchError>)>();
    let jobs_rx = Mutex::new(jobs_rx);
    let mut broken = None;
    std::thread::scope(|scope| {
        for _ in 0..COMMITTERS.min(wanted.len()) {
            let (jobs, done, folders) = (&jobs_rx, done_tx.clone(), &folders);
            scope.spawn(move || loop {
                let job = match jobs.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(c) = job else { return };
                let result = c.temp.persist(c.modified, (target, &c.dest), folders);
                if done.send((c.index, result)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut run = Run {
            client,
            target,
            class,
            in_flight: HashMap::new(),
            uncommitted: 0,
        };
        broken = run
            .go(wanted, &mut outcomes, &jobs_tx, &done_rx)
            .map(|e| (e, run.in_flight.values().min().copied()));
        drop(jobs_tx);
        // Every commit handed out ends before the scope does.
        for (index, result) in done_rx.iter() {
            outcomes[index] = Some(result.into());
        }
    });
    let reason = broken.map(|(e, first): (FetchError, Option<usize>)| {
        let reason = (e.to_string(), e.exit_code());
        if let Some(i) = first {
            outcomes[i] = Some(Outcome::Failed(e));
        }
        reason
    });
    let outcomes = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                let (reason, code) = reason.clone().unwrap_or(("not tried".into(), 1));
                Outcome::Failed(FetchError::NotTried { reason, code })
            })
        })
        .collect();
    (outcomes, reason)
}

/// The state of one run on the link.
struct Run<'a> {
    client: &'a mut Client,
    target: &'a Path,
    class: Option<Class>,
    /// Request id → the index of its name.
    in_flight: HashMap<u64, usize>,
    /// Files handed to the committers and not yet reported back.
    uncommitted: usize,
}

impl Run<'_> {
    /// Sends the `get`s and takes their answers until every name has one; returns the link
    /// failure that stopped it, if any.
    fn go(
        &mut self,
        wanted: &[(String, Option<u64>)],
        outcomes: &mut [Option<Outcome>],
        jobs: &mpsc::Sender<Commit>,
        done: &mpsc::Receiver<(usize, Result<(), FetchError>)>,
    ) -> Option<FetchError> {
        let mut next = 0;
        loop {
            while self.in_flight.len() < WINDOW
                && next < wanted.len()
                && self.uncommitted < MAX_UNCOMMITTED
            {
                let (name, version) = &wanted[next];
                let id = self.client.new_id();
                let get = Message::Get {
                    id,
                    name: name.clone(),
                    class: None,
                    version: *version,
                    sender: None,
                };
                if let Err(e) = self.client.send(&get) {
                    return Some(e.into());
                }
                self.in_flight.insert(id, next);
                next += 1;
            }
            for (index, result) in done.try_iter() {
                self.uncommitted -= 1;
                outcomes[index] = Some(result.into());
            }
            if self.in_flight.is_empty() {
                if next >= wanted.len() {
                    return None;
                }
                // Too many files wait for their commit: wait for one.
                if let Ok((index, result)) = done.recv() {
                    self.uncommitted -= 1;
                    outcomes[index] = Some(result.into());
                }
                continue;
            }
            let in_flight = &self.in_flight;
            let (id, reply) = match self.client.reply_of(&|id| in_flight.contains_key(&id)) {
                Ok(r) => r,
                Err(e) => return Some(e.into()),
            };
            let Some(index) = self.in_flight.remove(&id) else {
                continue;
            };
            let name = &wanted[index].0;
            match self.take(id, name, reply.map_err(FetchError::from)) {
                Ok(Some((temp, modified, dest))) => {
                    let commit = Commit {
                        index,
                        temp,
                        modified,
                        dest,
                    };
                    if jobs.send(commit).is_err() {
                        outcomes[index] = Some(Outcome::Failed(FetchError::Protocol(
                            "the commit threads stopped".into(),
                        )));
                    } else {
                        self.uncommitted += 1;
                    }
                }
                Ok(None) => outcomes[index] = Some(Outcome::Done),
                Err(Taken::Large)
                | Err(Taken::Failed(FetchError::Remote {
                    code: ErrorCode::Busy,
                    ..
                })) => outcomes[index] = Some(Outcome::Later),
                Err(Taken::Failed(e)) => outcomes[index] = Some(Outcome::Failed(e)),
            }
        }
    }

    /// Takes the answer to the `get` `id` of `name`: a temporary file holding the verified
    /// content to commit, or `None` when the target already has it.
    fn take(
        &mut self,
        id: u64,
        name: &str,
        reply: Result<net::client::Reply, FetchError>,
    ) -> Result<Option<(TempFile, i64, PathBuf)>, Taken> {
        let reply = reply.map_err(Taken::Failed)?;
        let Message::Meta { entry, .. } = reply.msg else {
            return Err(Taken::Failed(FetchError::Protocol(format!(
                "expected meta or error in answer to get, got {}",
                reply.msg.kind()
            ))));
        };
        if entry.size > INLINE_MAX {
            self.client.abort(id);
            return Err(Taken::Large);
        }
        if let Some(wanted) = self.class.filter(|c| *c != entry.class) {
            let found = entry.class;
            return Err(Taken::Failed(FetchError::OtherClass { found, wanted }));
        }
        let dest = save::destination(self.target, name).map_err(Taken::Failed)?;
        if save::already_there(&dest, &entry) {
            tracing::debug!(
                name,
                "already in the target with the same content: left alone"
            );
            return Ok(None);
        }
        let data = reply.data.as_deref().unwrap_or_default();
        if data.len() as u64 != entry.size || Hash::of(data) != entry.blake3 {
            return Err(Taken::Failed(FetchError::Integrity));
        }
        let mut temp = TempFile::beside(&dest, entry.size).map_err(Taken::Failed)?;
        temp.write_all(data).map_err(Taken::Failed)?;
        Ok(Some((temp, entry.modified, dest)))
    }
}

/// Why an answer gave nothing to commit.
enum Taken {
    Large,
    Failed(FetchError),
}
