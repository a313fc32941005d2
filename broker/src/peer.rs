//! Who a reply goes to: the front port a request came in on, the peer's ROUTER identity and
//! the peer's own request id.

/// Which front port a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Front {
    /// Watchers: uploads, deletes, renames.
    Ingest,
    /// Fetchers: reads.
    Fetch,
}

impl Front {
    /// The port's name in logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Front::Ingest => "ingest",
            Front::Fetch => "fetch",
        }
    }
}

/// Who asked: the front port, the peer's ROUTER identity and the peer's request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requester {
    pub front: Front,
    pub peer: Vec<u8>,
    pub id: u64,
}

impl Requester {
    /// The number the node knows this requester's connection by (`put.sender`), so that it
    /// shares its credit fairly between the broker's peers, not only between their uploads.
    pub fn sender(&self) -> u64 {
        let hash = blake3::hash(&self.peer);
        u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

/// Broker ids (bids): every request the broker sends to the node, forwarded or its own (index
/// rebuild pages, fsck checks, status), gets a fresh one, so the node's answers can be told
/// apart.
#[derive(Debug, Default)]
pub struct Bids {
    last: u64,
}

impl Bids {
    /// A bid never handed out before.
    pub fn next(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}
