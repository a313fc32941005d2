//! `fsck` on a running broker: pages the node's `check` answers through [`Audit`] from the
//! serving loop (one page request in flight at a time), streams `findings` pages back to the
//! requester, and with `repair` fixes the index and has the node set corrupt files aside.
//!
//! One fsck runs at a time. Names with a change in flight are left out of the verdicts, and a
//! name being set aside refuses changes (`busy`) until the node answered.

use crate::fsck::{self, Audit, CHECK_LIMIT, FINDINGS_PAGE};
use crate::in_flight::InFlight;
use crate::index::Index;
use crate::links::{NodePort, ToNode};
use crate::outbox::Outbox;
use crate::peer::{Bids, Front, Requester};
use schema::{CheckedFile, ErrorCode, Finding, FindingKind, Message};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long to wait for one node answer before the fsck fails as unavailable.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// The fsck of a running broker: none, or the one running.
#[derive(Default)]
pub struct Fsck {
    run: Option<FsckRun>,
}

/// What an fsck step may use: the index to judge and repair, the requests in flight (their
/// names are left out), bids and the node for its requests, the outbox for its pages.
pub struct Ctx<'a> {
    pub index: &'a Index,
    pub table: &'a InFlight,
    pub bids: &'a mut Bids,
    pub node: &'a mut dyn ToNode,
    pub out: &'a mut Outbox,
}

/// A running fsck.
struct FsckRun {
    req: Requester,
    repair: bool,
    audit: Audit,
    /// The node's cursor (`class/name` of the last file checked).
    after: Option<String>,
    /// The `check` in flight and when it went out; `None` once the node listed everything.
    asked: Option<(u64, Instant)>,
    listed: bool,
    /// Whether the pass over the current files is done and the history's is under way.
    history: bool,
    /// Quarantines in flight: bid → the finding they repair.
    quarantines: HashMap<u64, (Finding, Instant)>,
}

impl FsckRun {
    /// Whether `name` is being set aside on the node.
    fn is_quarantining(&self, name: &str) -> bool {
        self.quarantines.values().any(|(f, _)| f.name == name)
    }
}

impl Fsck {
    /// An `fsck` request from a front port.
    /// Refused while the index is `rebuilding`.
    pub fn request(&mut self, req: Requester, repair: bool, rebuilding: bool, cx: &mut Ctx) {
        let refusal = if repair && req.front == Front::Fetch {
            Some((
                ErrorCode::Unexpected,
                "the fetch port never writes: send fsck with repair to the ingest port".into(),
            ))
        } else if rebuilding {
            Some((
                ErrorCode::Busy,
                "the broker is rebuilding its index from the storage node; try again shortly"
                    .to_string(),
            ))
        } else if self.run.is_some() {
            Some((
                ErrorCode::Busy,
                "another fsck is running on this broker; try again when it is done".to_string(),
            ))
        } else {
            None
        };
        if let Some((code, text)) = refusal {
            cx.out.answer(&req, Message::error(0, code, text), None);
            return;
        }
        tracing::info!(
            "fsck{} asked on the {} port: comparing the index with the storage node",
            if repair { " --repair" } else { "" },
            req.front.as_str()
        );
        self.run = Some(FsckRun {
            req,
            repair,
            audit: Audit::default(),
            after: None,
            asked: None,
            listed: false,
            history: false,
            quarantines: HashMap::new(),
        });
        self.tick(cx);
    }

    /// Whether `bid` is a request of the running fsck.
    pub fn owns(&self, bid: u64) -> bool {
        self.run.as_ref().is_some_and(|run| {
            run.asked.is_some_and(|(b, _)| b == bid) || run.quarantines.contains_key(&bid)
        })
    }

    /// Whether a change of `name` must wait for the running fsck.
    pub fn holds(&self, name: &str) -> bool {
        self.run.as_ref().is_some_and(|r| r.is_quarantining(name))
    }

    /// Notes a change of `name` that committed while an fsck runs (it is not missing).
    pub fn saw(&mut self, name: &str) {
        if let Some(run) = &mut self.run {
            run.audit.saw(name);
        }
    }

    /// Asks for the next `check` page when none is in flight; fails the fsck on a node timeout.
    pub fn tick(&mut self, cx: &mut Ctx) {
        let Some(run) = &self.run else { return };
        let now = Instant::now();
        let timed_out = run
            .asked
            .map(|(_, t)| t)
            .into_iter()
            .chain(run.quarantines.values().map(|(_, t)| *t))
            .any(|t| now.duration_since(t) > NODE_TIMEOUT);
        if timed_out {
            let text = format!(
                "storage node {} did not answer the fsck within {} s",
                cx.node.endpoint(NodePort::Serve),
                NODE_TIMEOUT.as_secs()
            );
            return self.fail(ErrorCode::Unavailable, text, cx);
        }
        if run.listed || run.asked.is_some() {
            return;
        }
        let bid = cx.bids.next();
        let msg = Message::Check {
            id: bid,
            after: run.after.clone(),
            limit: CHECK_LIMIT,
            history: run.history,
        };
        match cx.node.send(NodePort::Serve, &msg, None) {
            Ok(()) => {
                if let Some(run) = &mut self.run {
                    run.asked = Some((bid, now));
                }
            }
            Err(e) => self.fail(ErrorCode::Unavailable, e.to_string(), cx),
        }
    }

    /// Ends the fsck with an error reply.
    fn fail(&mut self, code: ErrorCode, text: String, cx: &mut Ctx) {
        if let Some(run) = self.run.take() {
            tracing::warn!("fsck failed: {text}");
            cx.out.answer(&run.req, Message::error(0, code, text), None);
            flush(cx.index, cx.out);
        }
    }

    /// A node answer to the fsck's request `bid`.
    pub fn on_reply(&mut self, bid: u64, msg: Message, cx: &mut Ctx) {
        let Some(run) = &mut self.run else { return };
        if let Some((mut finding, _)) = run.quarantines.remove(&bid) {
            match msg {
                Message::Done { .. } => {
                    if let Err(e) = fsck::forget(cx.index, &mut finding) {
                        finding.note = Some(format!("set aside, but {e}"));
                    }
                }
                Message::Error { message, .. } => {
                    finding.note = Some(format!("not set aside: {message}"));
                }
                other => finding.note = Some(format!("the node answered {}", other.kind())),
            }
            tracing::info!("fsck: {}", fsck::line(&finding));
            self.send(vec![finding], false, cx.out);
            return self.maybe_finish(cx);
        }
        run.asked = None;
        let (files, more) = match msg {
            Message::Checked { files, more, .. } => (files, more),
            Message::Error { code, message, .. } => {
                let text = format!("the storage node refused to check: {message}");
                return self.fail(code, text, cx);
            }
            other => {
                let text = format!("the storage node answered check with {}", other.kind());
                return self.fail(ErrorCode::Io, text, cx);
            }
        };
        if let Some(last) = files.last() {
            run.after = Some(schema::page::node_cursor(&last.entry));
        }
        if !more || files.is_empty() {
            run.listed = true;
        }
        if run.history {
            let found: Vec<Finding> = files
                .iter()
                .filter_map(|f| fsck::judge_kept(&mut run.audit, f))
                .inspect(|f| tracing::warn!("fsck: {}", fsck::line(f)))
                .collect();
            self.send(found, false, cx.out);
            return self.maybe_finish(cx);
        }
        let mut found = Vec::new();
        for file in &files {
            if cx.table.is_changing(&file.entry.name) {
                if let Some(run) = &mut self.run {
                    run.audit.saw(&file.entry.name);
                }
                continue;
            }
            let Some(run) = &mut self.run else { return };
            match run.audit.judge(cx.index, file) {
                Ok(Some(f)) => found.push((f, file)),
                Ok(None) => {}
                Err(e) => return self.fail(ErrorCode::Io, format!("fsck: {e}"), cx),
            }
        }
        let mut page = Vec::with_capacity(found.len());
        for (mut finding, file) in found {
            if self.run.as_ref().is_some_and(|r| r.repair) {
                self.repair(&mut finding, file, cx);
                if finding.kind == FindingKind::Corrupt && finding.note.is_none() {
                    continue; // its verdict comes with the node's answer
                }
            }
            tracing::info!("fsck: {}", fsck::line(&finding));
            page.push(finding);
        }
        self.send(page, false, cx.out);
        if self.run.as_ref().is_some_and(|r| r.listed) {
            self.missing(cx);
            // Then the versions the history keeps, from the start of the node's order.
            if let Some(run) = &mut self.run {
                run.history = true;
                run.listed = false;
                run.after = None;
            }
            self.tick(cx);
        }
        self.maybe_finish(cx);
    }

    /// Repairs one finding: the index directly, a corrupt file through the node.
    fn repair(&mut self, finding: &mut Finding, file: &CheckedFile, cx: &mut Ctx) {
        if finding.kind != FindingKind::Corrupt {
            if let Err(e) = fsck::repair_index(cx.index, finding, Some(file)) {
                finding.note = Some(format!("not repaired: {e}"));
            }
            return;
        }
        let bid = cx.bids.next();
        let class = file.entry.class;
        let msg = Message::Quarantine {
            id: bid,
            class,
            name: finding.name.clone(),
        };
        match cx.node.send(NodePort::Class(class), &msg, None) {
            Ok(()) => {
                if let Some(run) = &mut self.run {
                    run.quarantines
                        .insert(bid, (finding.clone(), Instant::now()));
                }
            }
            Err(e) => finding.note = Some(format!("not set aside: {e}")),
        }
    }

    /// The node listed everything: report (and repair) the indexed names it does not hold.
    fn missing(&mut self, cx: &mut Ctx) {
        let Some(run) = &self.run else { return };
        let table = cx.table;
        let missing = match run.audit.missing(cx.index, |n| table.is_changing(n)) {
            Ok(m) => m,
            Err(e) => return self.fail(ErrorCode::Io, format!("fsck: {e}"), cx),
        };
        let repair = run.repair;
        let mut page = Vec::new();
        for mut finding in missing {
            if repair {
                if let Err(e) = fsck::repair_index(cx.index, &mut finding, None) {
                    finding.note = Some(format!("not repaired: {e}"));
                }
            }
            tracing::info!("fsck: {}", fsck::line(&finding));
            page.push(finding);
            if page.len() >= FINDINGS_PAGE {
                self.send(std::mem::take(&mut page), false, cx.out);
            }
        }
        self.send(page, false, cx.out);
    }

    /// Sends a `findings` page (nothing when empty, unless it is the `last`).
    fn send(&self, findings: Vec<Finding>, last: bool, out: &mut Outbox) {
        let Some(run) = &self.run else { return };
        if findings.is_empty() && !last {
            return;
        }
        let msg = Message::Findings {
            id: 0,
            findings,
            checked: run.audit.checked,
            more: !last,
        };
        out.answer(&run.req, msg, None);
    }

    /// Ends the fsck once the node listed everything and answered every quarantine.
    fn maybe_finish(&mut self, cx: &mut Ctx) {
        let finished = self.run.as_ref().is_some_and(|r| {
            r.history && r.listed && r.asked.is_none() && r.quarantines.is_empty()
        });
        if !finished {
            return;
        }
        flush(cx.index, cx.out);
        self.send(Vec::new(), true, cx.out);
        if let Some(run) = self.run.take() {
            tracing::info!(
                "fsck done: {} files on the node checked, and {} kept versions",
                run.audit.checked,
                run.audit.kept
            );
        }
    }
}

/// Makes the repairs so far durable and asks for a new export.
fn flush(index: &Index, out: &mut Outbox) {
    if let Err(e) = index.flush() {
        tracing::error!("fsck: flushing the index failed: {e}");
    }
    out.changed();
}
