//! What the broker does with each message from a watcher (ingest port) or a fetcher (fetch
//! port): check it, answer from the index where it can, else forward it to the node under a
//! fresh broker id.

use super::{fsck_cx, Relay};
use crate::in_flight::{Op, Refusal};
use crate::links::{NodePort, ToNode};
use crate::peer::{Front, Requester};
use crate::record::Record;
use schema::codec::Inbound;
use schema::limits::INLINE_MAX;
use schema::transfer::Credit;
use schema::{names, ErrorCode, Hash, Message};

/// The fields of a watcher's `put`.
#[derive(Debug)]
struct NewPut {
    name: String,
    size: u64,
    modified: i64,
    blake3: Option<Hash>,
    growing: bool,
}

impl Relay {
    /// Handles one message from a front port (its sender already admitted by the port's gate).
    pub fn on_front(&mut self, front: Front, inbound: Inbound, node: &mut dyn ToNode) {
        let Some(peer) = inbound.peer else {
            return;
        };
        let msg = match inbound.msg {
            Ok(m) => m,
            Err(rejected) => {
                tracing::warn!(
                    "refused a message on the {} port: {}",
                    front.as_str(),
                    rejected.error
                );
                self.out.reply(front, peer, rejected.reply());
                return;
            }
        };
        let req = Requester {
            front,
            peer,
            id: msg.id(),
        };
        let data = inbound.data;
        let key = inbound.user_id;
        match (front, msg) {
            (_, Message::Ping { id }) => self.answer(&req, Message::Pong { id }, None),
            (
                _,
                Message::List {
                    after,
                    limit,
                    at: None,
                    deleted: false,
                    ..
                },
            ) => self.list(&req, after.as_deref(), limit),
            (
                Front::Fetch,
                Message::List {
                    after,
                    limit,
                    at,
                    deleted,
                    ..
                },
            ) => self.past(req, (after, limit), (at, deleted), node),
            (Front::Ingest, Message::List { .. }) => self.refuse(
                &req,
                ErrorCode::BadMessage,
                "the ingest port lists the present only; the fetch port lists the history".into(),
            ),
            (_, Message::Abort { .. }) => self.abort(&req, node),
            (
                Front::Ingest,
                Message::Put {
                    name,
                    size,
                    modified,
                    blake3,
                    growing,
                    ..
                },
            ) => {
                let put = NewPut {
                    name,
                    size,
                    modified,
                    blake3,
                    growing,
                };
                self.put(req, put, data, node)
            }
            (
                Front::Ingest,
                Message::Chunk {
                    offset,
                    blake3,
                    modified,
                    ..
                },
            ) => self.upload_chunk(&req, offset, blake3, modified, data, node),
            (Front::Ingest, Message::Delete { name, .. }) => self.delete(req, name, node),
            (
                Front::Ingest,
                Message::Claim {
                    volume,
                    owner,
                    take_over,
                    ..
                },
            ) => {
                // With CURVE the owner is the key the ZAP handler admitted, not what it says,
                // and its allow-list entry may keep it to some volumes.
                if let Some(k) = key.as_deref() {
                    if let Err(why) = self.ingest_gate.may_claim(k, &volume) {
                        tracing::warn!("refused a claim of {volume:?}: {why}");
                        return self.refuse(&req, ErrorCode::Forbidden, why);
                    }
                }
                let owner = key.map_or(owner, |k| format!("key {k}"));
                self.claim(&req, &volume, &owner, take_over);
            }
            (
                Front::Ingest,
                Message::Rename {
                    from, to, blake3, ..
                },
            ) => self.rename(req, from, to, blake3, node),
            (Front::Fetch, Message::Get { name, version, .. }) => {
                self.get(req, name, version, node)
            }
            (Front::Fetch, Message::History { name, .. }) => self.history(req, name, node),
            (_, Message::Fsck { repair, .. }) => {
                let rebuilding = self.rebuild.is_active();
                self.fsck
                    .request(req, repair, rebuilding, &mut fsck_cx!(self, node));
            }
            (_, Message::Status { wait_ms, .. }) => {
                let facts = self.facts(node);
                let out = &mut self.out;
                self.status
                    .request(req, wait_ms, &facts, &mut self.bids, node, out);
            }
            (Front::Fetch, Message::Credit { chunks, .. }) => self.read_credit(&req, chunks, node),
            (front, other) => {
                let text = format!(
                    "the broker's {} port does not take {} messages",
                    front.as_str(),
                    other.kind()
                );
                tracing::debug!("{text}");
                self.answer(&req, Message::error(0, ErrorCode::Unexpected, text), None);
            }
        }
    }

    fn refuse(&mut self, req: &Requester, code: ErrorCode, text: String) {
        tracing::debug!(
            "refused request {} on the {} port: {text}",
            req.id,
            req.front.as_str()
        );
        self.answer(req, Message::error(0, code, text), None);
    }

    fn check_name(&mut self, req: &Requester, name: &str) -> bool {
        match names::check(name) {
            Ok(()) => true,
            Err(e) => {
                self.refuse(req, ErrorCode::BadName, e.to_string());
                false
            }
        }
    }

    /// `req` claims `volume` (empty: the root volume) as `owner`; the answer waits until a new
    /// owner is durable.
    fn claim(&mut self, req: &Requester, volume: &str, owner: &str, take_over: bool) {
        let volume = match schema::names::Volume::named(volume) {
            Ok(v) => v,
            Err(e) => return self.refuse(req, ErrorCode::BadName, format!("claim: {e}")),
        };
        if owner.is_empty() {
            let text = "claim: the owner is empty".to_string();
            return self.refuse(req, ErrorCode::BadMessage, text);
        }
        if self.rebuild.is_active() {
            // The owners come back from the node first: until then nobody's claim is known.
            let text = "the broker is rebuilding its index and the volume owners from the \
                        storage node; try again shortly";
            return self.refuse(req, ErrorCode::Busy, text.into());
        }
        match self
            .owners
            .claim(&self.index, &req.peer, volume.clone(), owner, take_over)
        {
            Ok(Ok(recorded)) => {
                tracing::debug!("{owner} claimed {volume}");
                if recorded {
                    self.owner_sync.queue(volume.name(), owner);
                }
                let claimed = Message::Claimed {
                    id: 0,
                    volumes: self.owners.named(),
                };
                self.out.changed();
                self.out.after_flush(req, claimed);
            }
            Ok(Err(refused)) => {
                tracing::warn!("refused a claim of {volume} by {owner}: {refused}");
                self.refuse(req, ErrorCode::Forbidden, refused.to_string());
            }
            Err(e) => {
                tracing::error!("{e}");
                let text = format!("the broker cannot record the owner: {e}");
                self.refuse(req, ErrorCode::Io, text);
            }
        }
    }

    /// A change of a name outside the volume this connection claimed is refused (`forbidden`).
    fn refuse_outside_volume(&mut self, req: &Requester, names: &[&str]) -> bool {
        match self.owners.confine(&req.peer, names) {
            Ok(()) => false,
            Err(refused) => {
                self.refuse(req, ErrorCode::Forbidden, refused.to_string());
                true
            }
        }
    }

    /// A change of a name that a running fsck is setting aside on the node is refused
    /// (`busy`), so the node never moves a version stored meanwhile.
    fn refuse_while_quarantining(&mut self, req: &Requester, names: &[&str]) -> bool {
        let Some(name) = names.iter().find(|n| self.fsck.holds(n)) else {
            return false;
        };
        let text = format!("fsck is setting {name} aside on the storage node; try again shortly");
        self.refuse(req, ErrorCode::Busy, text);
        true
    }

    /// A change arriving while the index is still being rebuilt is refused (`busy`), so an
    /// entry rebuilt from the node never overwrites a newer change.
    fn refuse_while_rebuilding(&mut self, req: &Requester, node: &dyn ToNode) -> bool {
        if !self.rebuild.is_active() {
            return false;
        }
        let text = format!(
            "the broker is rebuilding its index from the storage node {}; try again shortly",
            node.endpoint(NodePort::Serve)
        );
        self.refuse(req, ErrorCode::Busy, text);
        true
    }

    /// Admits `job` and forwards `msg` (with the new bid) to `link`; refuses on conflict or
    /// when the node is unreachable.
    fn forward(
        &mut self,
        req: Requester,
        link: NodePort,
        job: Op,
        msg: Message,
        data: Option<zmq::Message>,
        node: &mut dyn ToNode,
    ) {
        let bid = self.bids.next();
        match self.table.insert(bid, req.clone(), link, job) {
            Ok(()) => {}
            Err(refusal) => {
                let (code, text) = match refusal {
                    Refusal::IdInUse => (
                        ErrorCode::BadMessage,
                        format!("request id {} is already in flight from this peer", req.id),
                    ),
                    Refusal::NameBusy(n) => (
                        ErrorCode::Busy,
                        format!("a change of {n} is already in flight; try again when it is done"),
                    ),
                    Refusal::Full => (
                        ErrorCode::Busy,
                        "the broker has too many requests in flight; try again later".into(),
                    ),
                };
                self.refuse(&req, code, text);
                return;
            }
        }
        if let Err(e) = node.send(link, &msg.with_id(bid), data) {
            self.table.remove(bid);
            self.refuse(&req, ErrorCode::Unavailable, e.to_string());
        }
    }

    fn lookup(&mut self, req: &Requester, name: &str) -> Result<Option<Record>, ()> {
        self.index.get(name).map_err(|e| {
            tracing::error!("{e}");
            self.refuse(
                req,
                ErrorCode::Io,
                format!("the broker cannot read its index: {e}"),
            );
        })
    }

    fn put(
        &mut self,
        req: Requester,
        put: NewPut,
        data: Option<zmq::Message>,
        node: &mut dyn ToNode,
    ) {
        let NewPut {
            name,
            size,
            modified,
            blake3,
            growing,
        } = put;
        if !self.check_name(&req, &name)
            || self.refuse_while_rebuilding(&req, node)
            || self.refuse_outside_volume(&req, &[&name])
            || self.refuse_while_quarantining(&req, &[&name])
        {
            return;
        }
        if let Err(e) = schema::transfer::put_kind(size, blake3, growing) {
            self.refuse(&req, ErrorCode::BadMessage, format!("put of {name}: {e}"));
            return;
        }
        let Ok(indexed) = self.lookup(&req, &name) else {
            return;
        };
        if let (Some(h), Some(rec)) = (blake3, &indexed) {
            if rec.blake3 == h && !self.table.is_changing(&name) {
                let done = Message::Done {
                    id: req.id,
                    version: rec.version,
                    unchanged: true,
                };
                tracing::debug!("{name} is unchanged (version {})", rec.version);
                self.answer(&req, done, None);
                return;
            }
        }
        let class = self.routes.class_of(&name);
        let version = indexed.map_or(1, |r| r.version + 1);
        let msg = Message::Put {
            id: 0,
            name: name.clone(),
            size,
            modified,
            blake3,
            version: Some(version),
            growing,
            sender: Some(req.sender()),
        };
        let job = Op::Put {
            name,
            class,
            size,
            modified,
            blake3,
            last_sent: size <= INLINE_MAX,
            growing,
            credit: Credit::default(),
        };
        self.forward(req, NodePort::Class(class), job, msg, data, node);
    }

    fn upload_chunk(
        &mut self,
        req: &Requester,
        offset: u64,
        blake3: Option<Hash>,
        modified: Option<i64>,
        data: Option<zmq::Message>,
        node: &mut dyn ToNode,
    ) {
        let len = data.as_ref().map_or(0, |d| d.len() as u64);
        let found = self.table.bid_of(req).and_then(|bid| {
            let p = self.table.touch(bid)?;
            match &mut p.op {
                Op::Put {
                    name,
                    size,
                    modified: mtime,
                    blake3: hash,
                    last_sent,
                    growing,
                    credit,
                    ..
                } => {
                    // A chunk beyond the credit relayed to the sender is not forwarded.
                    if let Err(e) = credit.spend() {
                        return Some(Err((bid, format!("upload of {name}: {e}"))));
                    }
                    if blake3.is_some() {
                        *hash = blake3;
                    }
                    let stop = offset.saturating_add(len);
                    if schema::transfer::is_last_chunk(*growing, *size, stop, blake3.is_some()) {
                        *last_sent = true;
                        // The chunk with the hash ends a growing file and gives its mtime.
                        if *growing {
                            *size = stop;
                            if let Some(m) = modified {
                                *mtime = m;
                            }
                        }
                    }
                    Some(Ok((bid, p.link)))
                }
                _ => None,
            }
        });
        let Some((bid, link)) = self.within_credit(req, "upload", found, node) else {
            return;
        };
        let chunk = Message::Chunk {
            id: bid,
            offset,
            blake3,
            modified,
        };
        if let Err(e) = node.send(link, &chunk, data) {
            self.fail(bid, ErrorCode::Unavailable, e.to_string(), node);
        }
    }

    fn abort(&mut self, req: &Requester, node: &mut dyn ToNode) {
        let Some(bid) = self.table.bid_of(req) else {
            tracing::debug!("abort of unknown transfer {} ignored", req.id);
            return;
        };
        let streaming = self.table.touch(bid).is_some_and(|p| p.op.is_streaming());
        if !streaming {
            // A delete or rename cannot be aborted; an upload already complete commits.
            return;
        }
        if let Some(p) = self.table.remove(bid) {
            tracing::debug!(
                "transfer {} aborted by its {} peer",
                req.id,
                req.front.as_str()
            );
            let _ = node.send(p.link, &Message::Abort { id: bid }, None);
        }
    }

    fn delete(&mut self, req: Requester, name: String, node: &mut dyn ToNode) {
        if !self.check_name(&req, &name)
            || self.refuse_while_rebuilding(&req, node)
            || self.refuse_outside_volume(&req, &[&name])
            || self.refuse_while_quarantining(&req, &[&name])
        {
            return;
        }
        let Ok(indexed) = self.lookup(&req, &name) else {
            return;
        };
        let Some(rec) = indexed else {
            if self.table.is_changing(&name) {
                let text =
                    format!("a change of {name} is already in flight; try again when it is done");
                self.refuse(&req, ErrorCode::Busy, text);
            } else {
                let done = Message::Done {
                    id: req.id,
                    version: 0,
                    unchanged: false,
                };
                self.answer(&req, done, None);
            }
            return;
        };
        let msg = Message::Delete {
            id: 0,
            name: name.clone(),
        };
        let job = Op::Delete { name };
        self.forward(req, NodePort::Class(rec.class), job, msg, None, node);
    }

    fn rename(
        &mut self,
        req: Requester,
        from: String,
        to: String,
        blake3: Hash,
        node: &mut dyn ToNode,
    ) {
        if !self.check_name(&req, &from)
            || !self.check_name(&req, &to)
            || self.refuse_while_rebuilding(&req, node)
            || self.refuse_outside_volume(&req, &[&from, &to])
            || self.refuse_while_quarantining(&req, &[&from, &to])
        {
            return;
        }
        let Ok(source) = self.lookup(&req, &from) else {
            return;
        };
        let Some(source) = source.filter(|r| r.blake3 == blake3) else {
            let text = format!("{from} is not stored with that content; upload {to} instead");
            self.refuse(&req, ErrorCode::NotFound, text);
            return;
        };
        if from == to {
            let done = Message::Done {
                id: req.id,
                version: source.version,
                unchanged: true,
            };
            self.answer(&req, done, None);
            return;
        }
        let Ok(target) = self.lookup(&req, &to) else {
            return;
        };
        let to_class = self.routes.class_of(&to);
        let version = target.map_or(1, |r| r.version + 1);
        let rec = Record::stored(to_class, source.size, blake3, source.modified, version);
        let msg = Message::Rename {
            id: 0,
            from: from.clone(),
            to: to.clone(),
            blake3,
            to_class: Some(to_class),
            version: Some(version),
        };
        let job = Op::Rename { from, to, rec };
        self.forward(req, NodePort::Class(source.class), job, msg, None, node);
    }

    fn list(&mut self, req: &Requester, after: Option<&str>, limit: u32) {
        match self.index.page(after, limit) {
            Ok((entries, more)) => {
                let listing = Message::Listing {
                    id: 0,
                    entries,
                    more,
                };
                self.answer(req, listing, None);
            }
            Err(e) => {
                tracing::error!("{e}");
                self.refuse(
                    req,
                    ErrorCode::Io,
                    format!("the broker cannot read its index: {e}"),
                );
            }
        }
    }

    fn get(&mut self, req: Requester, name: String, version: Option<u64>, node: &mut dyn ToNode) {
        if !self.check_name(&req, &name) {
            return;
        }
        let Ok(indexed) = self.lookup(&req, &name) else {
            return;
        };
        if let (Some(_), None) = (version, &indexed) {
            // A version of a deleted name: only the node's history knows it (in any class).
            let msg = Message::Get {
                id: 0,
                name: name.clone(),
                class: None,
                version,
                sender: Some(req.sender()),
            };
            let job = Op::Get {
                name,
                size: None,
                credit: Credit::default(),
            };
            return self.forward(req, NodePort::Serve, job, msg, None, node);
        }
        let Some(rec) = indexed else {
            let (code, text) = if self.table.is_uploading(&name) {
                (
                    ErrorCode::Uploading,
                    format!("{name} is being uploaded and has no complete version yet; try again"),
                )
            } else if self.rebuild.is_active() {
                (
                    ErrorCode::Unavailable,
                    format!(
                        "the broker is rebuilding its index from the storage node {}; try \
                         again shortly",
                        node.endpoint(NodePort::Serve)
                    ),
                )
            } else {
                (ErrorCode::NotFound, format!("no file named {name}"))
            };
            self.refuse(&req, code, text);
            return;
        };
        let msg = Message::Get {
            id: 0,
            name: name.clone(),
            class: if version.is_some_and(|v| v != rec.version) {
                None
            } else {
                Some(rec.class)
            },
            version,
            sender: Some(req.sender()),
        };
        let job = Op::Get {
            name,
            size: None,
            credit: Credit::default(),
        };
        self.forward(req, NodePort::Serve, job, msg, None, node);
    }

    /// The versions of `name` the node holds (its history and the current one).
    fn history(&mut self, req: Requester, name: String, node: &mut dyn ToNode) {
        if !self.check_name(&req, &name) {
            return;
        }
        let msg = Message::History {
            id: 0,
            name: name.clone(),
        };
        self.forward(req, NodePort::Serve, Op::History { name }, msg, None, node);
    }

    /// A page of the tree as it was at `at`, or of the names deleted since (`deleted`): only the
    /// node's history knows them. The cursor is the node's, checked here.
    fn past(
        &mut self,
        req: Requester,
        (after, limit): (Option<String>, u32),
        (at, deleted): (Option<i64>, bool),
        node: &mut dyn ToNode,
    ) {
        if let Some(cursor) = after.as_deref() {
            if let Err(e) = schema::page::parse_node_cursor(cursor) {
                let text = format!(
                    "list cursor {cursor:?} {e}; a listing of the history continues after                      \"<class>/<name>\" of its last entry"
                );
                return self.refuse(&req, ErrorCode::BadMessage, text);
            }
        }
        let msg = Message::List {
            id: 0,
            after,
            limit,
            at,
            deleted,
        };
        self.forward(req, NodePort::Serve, Op::Past, msg, None, node);
    }

    /// What a chunk or grant of `req`'s `transfer` ("upload", "read") found: the transfer, or
    /// `None` after answering. A transfer not in flight is `unknown_transfer`; one whose credit
    /// rules the message broke (`Err` with its bid and why) is `bad_message`, and dropped here
    /// and on the node.
    fn within_credit<T>(
        &mut self,
        req: &Requester,
        transfer: &str,
        found: Option<Result<T, (u64, String)>>,
        node: &mut dyn ToNode,
    ) -> Option<T> {
        match found {
            Some(Ok(found)) => Some(found),
            Some(Err((bid, text))) => {
                let text = format!("{text}; {transfer} dropped");
                tracing::warn!("{text}");
                self.fail(bid, ErrorCode::BadMessage, text, node);
                None
            }
            None => {
                let text = format!(
                    "no {transfer} with id {} is in flight (it may have timed out)",
                    req.id
                );
                self.refuse(req, ErrorCode::UnknownTransfer, text);
                None
            }
        }
    }

    fn read_credit(&mut self, req: &Requester, chunks: u32, node: &mut dyn ToNode) {
        let found = self.table.bid_of(req).and_then(|bid| {
            let p = self.table.touch(bid)?;
            match &mut p.op {
                // A grant past the window is not forwarded: the node would send its chunks.
                Op::Get { name, credit, .. } => Some(
                    credit
                        .grant(chunks)
                        .map(|()| bid)
                        .map_err(|e| (bid, format!("read of {name}: {e}"))),
                ),
                _ => None,
            }
        });
        let Some(bid) = self.within_credit(req, "read", found, node) else {
            return;
        };
        let credit = Message::Credit { id: bid, chunks };
        if let Err(e) = node.send(NodePort::Serve, &credit, None) {
            self.fail(bid, ErrorCode::Unavailable, e.to_string(), node);
        }
    }
}
