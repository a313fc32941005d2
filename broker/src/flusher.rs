//! Group commit off the serving thread.
//!
//! Flushing sled is an fsync: fractions of a millisecond on an idle disk, seconds on a busy one.
//! Done on the serving thread it would stop every relay, listing and read meanwhile. The flusher
//! thread flushes on request and reports back through an inproc PAIR that the serving thread
//! polls beside its other sockets. A flush covers every index change made before it was
//! requested; changes made while it runs wait for the next one.

use crate::index::IndexSyncer;
use anyhow::Context as _;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The flusher thread and the serving thread's end of its report channel.
pub struct Flusher {
    requests: Option<mpsc::Sender<()>>,
    reports: zmq::Socket,
    thread: Option<JoinHandle<()>>,
    busy: bool,
}

impl Flusher {
    /// Starts the thread that flushes `index`.
    pub fn start(ctx: &zmq::Context, index: IndexSyncer) -> anyhow::Result<Flusher> {
        let (reports, sender) = net::inproc::pair(ctx, "broker-flush", zmq::PAIR, zmq::PAIR)
            .context("cannot open the flush report sockets")?;
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("broker-flush".into())
            .spawn(move || {
                for () in rx {
                    let report = match index.flush() {
                        Ok(()) => Vec::new(),
                        Err(e) => e.to_string().into_bytes(),
                    };
                    if sender.send(report, 0).is_err() {
                        return;
                    }
                }
            })
            .context("cannot start the flush thread")?;
        Ok(Flusher {
            requests: Some(tx),
            reports,
            thread: Some(thread),
            busy: false,
        })
    }

    /// Whether a flush is running.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// Starts a flush of every change made so far. `false` if the thread is gone.
    pub fn request(&mut self) -> bool {
        let sent = self.requests.as_ref().is_some_and(|tx| tx.send(()).is_ok());
        self.busy = sent;
        sent
    }

    /// The socket that becomes readable when a flush ends.
    pub fn socket(&self) -> &zmq::Socket {
        &self.reports
    }

    /// The outcome of the flush that ended, if one did: `Ok`, or why it failed.
    pub fn finished(&mut self) -> Option<Result<(), String>> {
        let report = self.reports.recv_bytes(zmq::DONTWAIT).ok()?;
        self.busy = false;
        Some(if report.is_empty() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&report).into_owned())
        })
    }

    /// Waits for a running flush to end and returns its outcome.
    pub fn wait(&mut self) -> Option<Result<(), String>> {
        if !self.busy {
            return None;
        }
        let report = self.reports.recv_bytes(0).ok()?;
        self.busy = false;
        Some(if report.is_empty() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&report).into_owned())
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
