//! `fsck` on a running broker: pages the node's `check` answers through [`Audit`] from the
//! serving loop (one page request in flight at a time), streams `findings` pages back to the
//! requester, and with `repair` fixes the index and has the node set corrupt files aside.
//!
//! One fsck runs at a time. Names with a change in flight are left out of the verdicts, and a
//! name being set aside refuses changes (`busy`) until the node answered.

use crate::fsck::{self, Audit, CHECK_LIMIT, FINDINGS_PAGE};
use crate::links::Link;
use crate::relay::Relay;
use crate::table::{Front, Requester};
use schema::{CheckedFile, ErrorCode, Finding, FindingKind, Message};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long to wait for one node answer before the fsck fails as unavailable.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// A running fsck.
pub struct FsckRun {
    req: Requester,
    repair: bool,
    audit: Audit,
    /// The node's cursor (`class/name` of the last file checked).
    after: Option<String>,
    /// The `check` in flight and when it went out; `None` once the node listed everything.
    asked: Option<(u64, Instant)>,
    listed: bool,
    /// Quarantines in flight: bid → the finding they repair.
    quarantines: HashMap<u64, (Finding, Instant)>,
}

impl FsckRun {
    /// Whether `name` is being set aside on the node.
    pub fn is_quarantining(&self, name: &str) -> bool {
        self.quarantines.values().any(|(f, _)| f.name == name)
    }
}

impl Relay {
    /// An `fsck` request from a front port.
    pub(crate) fn fsck_request(&mut self, req: Requester, repair: bool) {
        let refusal = if repair && req.front == Front::Fetch {
            Some((
                ErrorCode::Unexpected,
                "the fetch port never writes: send fsck with repair to the ingest port".into(),
            ))
        } else if self.rebuild.is_active() {
            Some((
                ErrorCode::Busy,
                "the broker is rebuilding its index from the storage node; try again shortly"
                    .to_string(),
            ))
        } else if self.fsck.is_some() {
            Some((
                ErrorCode::Busy,
                "another fsck is running on this broker; try again when it is done".to_string(),
            ))
        } else {
            None
        };
        if let Some((code, text)) = refusal {
            self.answer(&req, Message::error(0, code, text), None);
            return;
        }
        tracing::info!(
            "fsck{} asked on the {} port: comparing the index with the storage node",
            if repair { " --repair" } else { "" },
            req.front.as_str()
        );
        self.fsck = Some(FsckRun {
            req,
            repair,
            audit: Audit::default(),
            after: None,
            asked: None,
            listed: false,
            quarantines: HashMap::new(),
        });
        self.fsck_tick();
    }

    /// Whether `bid` is a request of the running fsck.
    pub(crate) fn fsck_owns(&self, bid: u64) -> bool {
        self.fsck.as_ref().is_some_and(|run| {
            run.asked.is_some_and(|(b, _)| b == bid) || run.quarantines.contains_key(&bid)
        })
    }

    /// Whether a change of `name` must wait for the running fsck.
    pub(crate) fn fsck_holds(&self, name: &str) -> bool {
        self.fsck.as_ref().is_some_and(|r| r.is_quarantining(name))
    }

    /// Notes a change of `name` that committed while an fsck runs (it is not missing).
    pub(crate) fn fsck_saw(&mut self, name: &str) {
        if let Some(run) = &mut self.fsck {
            run.audit.saw(name);
        }
    }

    /// Asks for the next `check` page when none is in flight; fails the fsck on a node timeout.
    pub(crate) fn fsck_tick(&mut self) {
        let Some(run) = &self.fsck else { return };
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
                self.node.endpoint(Link::Serve),
                NODE_TIMEOUT.as_secs()
            );
            return self.fsck_fail(ErrorCode::Unavailable, text);
        }
        if run.listed || run.asked.is_some() {
            return;
        }
        let bid = self.table.alloc();
        let msg = Message::Check {
            id: bid,
            after: run.after.clone(),
            limit: CHECK_LIMIT,
        };
        match self.node.send(Link::Serve, &msg, None) {
            Ok(()) => {
                if let Some(run) = &mut self.fsck {
                    run.asked = Some((bid, now));
                }
            }
            Err(e) => self.fsck_fail(ErrorCode::Unavailable, e.to_string()),
        }
    }

    /// Ends the fsck with an error reply.
    fn fsck_fail(&mut self, code: ErrorCode, text: String) {
        if let Some(run) = self.fsck.take() {
            tracing::warn!("fsck failed: {text}");
            self.answer(&run.req, Message::error(0, code, text), None);
            self.fsck_flush();
        }
    }

    /// Makes the repairs so far durable and asks for a new export.
    fn fsck_flush(&mut self) {
        if let Err(e) = self.index.flush() {
            tracing::error!("fsck: flushing the index failed: {e}");
        }
        self.changed();
    }

    /// A node answer to the fsck's request `bid`.
    pub(crate) fn on_fsck_reply(&mut self, bid: u64, msg: Message) {
        let Some(run) = &mut self.fsck else { return };
        if let Some((mut finding, _)) = run.quarantines.remove(&bid) {
            match msg {
                Message::Done { .. } => {
                    if let Err(e) = fsck::forget(&self.index, &mut finding) {
                        finding.note = Some(format!("set aside, but {e}"));
                    }
                }
                Message::Error { message, .. } => {
                    finding.note = Some(format!("not set aside: {message}"));
                }
                other => finding.note = Some(format!("the node answered {}", other.kind())),
            }
            tracing::info!("fsck: {}", fsck::line(&finding));
            self.fsck_send(vec![finding], false);
            return self.fsck_maybe_finish();
        }
        run.asked = None;
        let (files, more) = match msg {
            Message::Checked { files, more, .. } => (files, more),
            Message::Error { code, message, .. } => {
                let text = format!("the storage node refused to check: {message}");
                return self.fsck_fail(code, text);
            }
            other => {
                let text = format!("the storage node answered check with {}", other.kind());
                return self.fsck_fail(ErrorCode::Io, text);
            }
        };
        if let Some(last) = files.last() {
            run.after = Some(schema::page::node_cursor(&last.entry));
        }
        if !more || files.is_empty() {
            run.listed = true;
        }
        let mut found = Vec::new();
        for file in &files {
            if self.table.is_changing(&file.entry.name) {
                if let Some(run) = &mut self.fsck {
                    run.audit.saw(&file.entry.name);
                }
                continue;
            }
            let Some(run) = &mut self.fsck else { return };
            match run.audit.judge(&self.index, file) {
                Ok(Some(f)) => found.push((f, file)),
                Ok(None) => {}
                Err(e) => return self.fsck_fail(ErrorCode::Io, format!("fsck: {e}")),
            }
        }
        let mut page = Vec::with_capacity(found.len());
        for (mut finding, file) in found {
            if self.fsck.as_ref().is_some_and(|r| r.repair) {
                self.fsck_repair(&mut finding, file);
                if finding.kind == FindingKind::Corrupt && finding.note.is_none() {
                    continue; // its verdict comes with the node's answer
                }
            }
            tracing::info!("fsck: {}", fsck::line(&finding));
            page.push(finding);
        }
        self.fsck_send(page, false);
        if self.fsck.as_ref().is_some_and(|r| r.listed) {
            self.fsck_missing();
        }
        self.fsck_maybe_finish();
    }

    /// Repairs one finding: the index directly, a corrupt file through the node.
    fn fsck_repair(&mut self, finding: &mut Finding, file: &CheckedFile) {
        if finding.kind != FindingKind::Corrupt {
            if let Err(e) = fsck::repair_index(&self.index, finding, Some(file)) {
                finding.note = Some(format!("not repaired: {e}"));
            }
            return;
        }
        let bid = self.table.alloc();
        let class = file.entry.class;
        let msg = Message::Quarantine {
            id: bid,
            class,
            name: finding.name.clone(),
        };
        match self.node.send(Link::Class(class), &msg, None) {
            Ok(()) => {
                if let Some(run) = &mut self.fsck {
                    run.quarantines
                        .insert(bid, (finding.clone(), Instant::now()));
                }
            }
            Err(e) => finding.note = Some(format!("not set aside: {e}")),
        }
    }

    /// The node listed everything: report (and repair) the indexed names it does not hold.
    fn fsck_missing(&mut self) {
        let Some(run) = &self.fsck else { return };
        let table = &self.table;
        let missing = match run.audit.missing(&self.index, |n| table.is_changing(n)) {
            Ok(m) => m,
            Err(e) => return self.fsck_fail(ErrorCode::Io, format!("fsck: {e}")),
        };
        let repair = run.repair;
        let mut page = Vec::new();
        for mut finding in missing {
            if repair {
                if let Err(e) = fsck::repair_index(&self.index, &mut finding, None) {
                    finding.note = Some(format!("not repaired: {e}"));
                }
            }
            tracing::info!("fsck: {}", fsck::line(&finding));
            page.push(finding);
            if page.len() >= FINDINGS_PAGE {
                self.fsck_send(std::mem::take(&mut page), false);
            }
        }
        self.fsck_send(page, false);
    }

    /// Sends a `findings` page (nothing when empty, unless it is the `last`).
    fn fsck_send(&mut self, findings: Vec<Finding>, last: bool) {
        let Some(run) = &self.fsck else { return };
        if findings.is_empty() && !last {
            return;
        }
        let msg = Message::Findings {
            id: 0,
            findings,
            checked: run.audit.checked,
            more: !last,
        };
        let req = run.req.clone();
        self.answer(&req, msg, None);
    }

    /// Ends the fsck once the node listed everything and answered every quarantine.
    fn fsck_maybe_finish(&mut self) {
        let finished = self
            .fsck
            .as_ref()
            .is_some_and(|r| r.listed && r.asked.is_none() && r.quarantines.is_empty());
        if !finished {
            return;
        }
        self.fsck_flush();
        self.fsck_send(Vec::new(), true);
        if let Some(run) = self.fsck.take() {
            tracing::info!("fsck done: {} files on the node checked", run.audit.checked);
        }
    }
}
