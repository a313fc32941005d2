//! What the broker does with each message from the storage node: translate it back to the
//! requester's id and relay it, and record finished changes in the index (their `done` waits
//! for the round's flush).

use super::{fsck_cx, Relay};
use crate::in_flight::Op;
use crate::links::{NodePort, ToNode};
use crate::record::Record;
use schema::codec::Inbound;
use schema::limits::INLINE_MAX;
use schema::names;
use schema::transfer::CreditError;
use schema::{ErrorCode, Message};

impl Relay {
    /// Handles one message from the node on `link`.
    pub fn on_node(&mut self, link: NodePort, inbound: Inbound, node: &mut dyn ToNode) {
        let msg = match inbound.msg {
            Ok(m) => m,
            Err(rejected) => {
                tracing::warn!(
                    "storage node {} sent a malformed message: {}",
                    node.endpoint(link),
                    rejected.error
                );
                if rejected.id != 0 {
                    let text = format!(
                        "storage node {} sent a malformed reply: {}",
                        node.endpoint(link),
                        rejected.error
                    );
                    self.fail(rejected.id, ErrorCode::Io, text, node);
                }
                return;
            }
        };
        let bid = msg.id();
        if self.rebuild.owns(bid) {
            let storage = node.endpoint(NodePort::Serve).to_string();
            self.rebuild.on_reply(msg, &self.index, &storage);
            return;
        }
        if self.owner_sync.owns(bid) {
            self.owner_sync.on_reply(msg);
            return;
        }
        if self.fsck.owns(bid) {
            self.fsck.on_reply(bid, msg, &mut fsck_cx!(self, node));
            return;
        }
        if self.status.owns(bid) {
            let facts = self.facts(node);
            self.status.on_reply(bid, msg, &facts, &mut self.out);
            return;
        }
        let Some(pending) = self.table.touch(bid) else {
            tracing::debug!(
                "ignoring a stale {} from the storage node (id {bid})",
                msg.kind()
            );
            return;
        };
        let req = pending.req.clone();
        match msg {
            Message::Credit { chunks, .. } if matches!(pending.op, Op::Put { .. }) => {
                if let Op::Put { credit, .. } = &mut pending.op {
                    if let Err(e) = credit.grant(chunks) {
                        return self.node_broke_credit(bid, e, node);
                    }
                }
                self.answer(&req, Message::Credit { id: 0, chunks }, None);
            }
            Message::Meta { entry, .. } if matches!(pending.op, Op::Get { .. }) => {
                let size = entry.size;
                if size <= INLINE_MAX {
                    if let Some(p) = self.table.remove(bid) {
                        self.observe_done(&p);
                    }
                    self.metrics.files_served.inc();
                    self.metrics.bytes_served.inc_by(size);
                } else if let Op::Get { size: s, .. } = &mut pending.op {
                    *s = Some(size);
                }
                self.answer(&req, Message::Meta { id: 0, entry }, inbound.data);
            }
            Message::Chunk { offset, .. } if matches!(pending.op, Op::Get { .. }) => {
                if let Op::Get { credit, .. } = &mut pending.op {
                    if let Err(e) = credit.spend() {
                        return self.node_broke_credit(bid, e, node);
                    }
                }
                let len = inbound.data.as_ref().map_or(0, |d| d.len() as u64);
                let end = offset.saturating_add(len);
                self.metrics.bytes_served.inc_by(len);
                if matches!(pending.op, Op::Get { size: Some(s), .. } if end >= s) {
                    if let Some(p) = self.table.remove(bid) {
                        self.observe_done(&p);
                    }
                    self.metrics.files_served.inc();
                }
                let chunk = Message::Chunk {
                    id: 0,
                    offset,
                    blake3: None,
                    modified: None,
                };
                self.answer(&req, chunk, inbound.data);
            }
            Message::Versions { name, versions, .. }
                if matches!(pending.op, Op::History { .. }) =>
            {
                if let Some(p) = self.table.remove(bid) {
                    self.observe_done(&p);
                }
                let reply = Message::Versions {
                    id: 0,
                    name,
                    versions,
                };
                self.answer(&req, reply, None);
            }
            Message::Listing { entries, more, .. } if matches!(pending.op, Op::Past) => {
                if let Some(p) = self.table.remove(bid) {
                    self.observe_done(&p);
                }
                let reply = Message::Listing {
                    id: 0,
                    entries,
                    more,
                };
                self.answer(&req, reply, None);
            }
            Message::Done {
                version, unchanged, ..
            } => self.on_done(bid, version, unchanged),
            Message::Error { code, message, .. } => {
                if let Some(p) = self.table.remove(bid) {
                    self.observe_done(&p);
                    match &p.op {
                        Op::Get { name, .. } | Op::History { name } => {
                            tracing::debug!("read of {name} failed on the node: {message}")
                        }
                        Op::Past => {
                            tracing::debug!(
                                "a listing of the history failed on the node: {message}"
                            )
                        }
                        Op::Put { name, .. } => {
                            tracing::warn!("upload of {name} failed on the node: {message}")
                        }
                        Op::Delete { name } | Op::Rename { from: name, .. } => {
                            tracing::warn!("change of {name} failed on the node: {message}")
                        }
                    }
                    self.answer(&p.req, Message::error(0, code, message), None);
                }
            }
            other => {
                tracing::debug!(
                    "ignoring an unexpected {} from the storage node {} (id {bid})",
                    other.kind(),
                    node.endpoint(link)
                );
            }
        }
    }

    /// The node finished a change: record it and hold the ack for the round's flush.
    fn on_done(&mut self, bid: u64, version: u64, unchanged: bool) {
        let Some(p) = self.table.remove(bid) else {
            return;
        };
        self.observe_done(&p);
        if let Op::Put { name, .. } | Op::Rename { to: name, .. } = &p.op {
            self.fsck.saw(name);
        }
        let done = Message::Done {
            id: 0,
            version,
            unchanged,
        };
        let written = match &p.op {
            Op::Put {
                name,
                class,
                size,
                modified,
                blake3,
                ..
            } => {
                let Some(hash) = blake3 else {
                    let text = format!("upload of {name} ended without a content hash");
                    tracing::warn!("{text}");
                    self.answer(&p.req, Message::error(0, ErrorCode::BadMessage, text), None);
                    return;
                };
                if unchanged {
                    match self.index.get(name) {
                        Ok(Some(r)) if r.blake3 == *hash => {
                            self.answer(&p.req, done, None);
                            return;
                        }
                        _ => {}
                    }
                }
                let rec = Record::stored(*class, *size, *hash, *modified, version);
                // The broker numbers a put one past the indexed version: a version past 1 means
                // the name was stored when the put came, so this replaced it.
                let rewrite = !unchanged && version > 1;
                let written = self.index.put(name, &rec);
                if written.is_ok() && rewrite {
                    self.note_change(name, false);
                }
                if written.is_ok() && !unchanged {
                    self.metrics.files_routed.inc();
                    self.metrics.bytes_routed.inc_by(*size);
                    self.status.note_stored(*size);
                }
                if written.is_ok() {
                    tracing::info!(
                        "stored {} ({size} bytes, {class}, version {version}{})",
                        names::escape(name),
                        if unchanged {
                            ", unchanged on the node"
                        } else {
                            ""
                        }
                    );
                }
                written
            }
            Op::Delete { name } => {
                let written = self.index.remove(name);
                if written.is_ok() {
                    tracing::info!("deleted {}", names::escape(name));
                    self.note_change(name, true);
                }
                written
            }
            Op::Rename { from, to, rec } => {
                let mut rec = rec.clone();
                if version != 0 {
                    rec.version = version;
                }
                let written = self.index.rename(from, to, &rec);
                if written.is_ok() {
                    self.note_change(from, true);
                    tracing::info!(
                        "renamed {} to {} (version {})",
                        names::escape(from),
                        names::escape(to),
                        rec.version
                    );
                }
                written
            }
            Op::Get { .. } | Op::History { .. } | Op::Past => {
                tracing::debug!("ignoring a done for a read (id {bid})");
                return;
            }
        };
        match written {
            Ok(()) => {
                self.out.changed();
                self.out.after_flush(&p.req, done);
            }
            Err(e) => {
                tracing::error!("{e}");
                let text = format!("the broker could not update its index: {e}");
                self.answer(&p.req, Message::error(0, ErrorCode::Io, text), None);
            }
        }
    }

    /// The node sent a chunk or a grant of transfer `bid` beyond its credit: the transfer fails.
    fn node_broke_credit(&mut self, bid: u64, e: CreditError, node: &mut dyn ToNode) {
        let text = format!("the storage node broke flow control: {e}");
        tracing::warn!("{text}");
        self.fail(bid, ErrorCode::Unavailable, text, node);
    }
}
