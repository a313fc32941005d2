//! Sizes and windows that bound memory in every process.

/// Bytes of file content in one `chunk` data frame (the last chunk of a file may be shorter).
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Files up to this size travel inline: the whole content rides in one data frame after the
/// `put` (upload) or `meta` (read) header, with no credit exchange.
pub const INLINE_MAX: u64 = 64 * 1024;

/// Largest frame any bound socket accepts (ZMQ_MAXMSGSIZE). A chunk plus headroom.
pub const MAX_FRAME: i64 = (CHUNK_SIZE as i64) + 64 * 1024;

/// Most frames in one message, the ROUTER identity included (`identity, header, data`).
pub const MAX_FRAMES: usize = 3;

/// Most chunks a receiver grants to one transfer at a time: 8 MiB in flight, enough to keep a
/// three-hop pipeline (watcher, broker, node) streaming while credit travels back.
pub const TRANSFER_WINDOW: u32 = 32;

/// Most chunks a receiver grants across all of its transfers at a time (bounds its memory to
/// about `GLOBAL_WINDOW * CHUNK_SIZE` of queued content).
pub const GLOBAL_WINDOW: u32 = 32;

/// Most entries in one `listing` page.
pub const MAX_LIST_PAGE: u32 = 5000;

/// Longest name in bytes.
pub const MAX_NAME: usize = 4096;

/// Longest component of a name in bytes.
pub const MAX_COMPONENT: usize = 255;

/// Longest header frame of a request (names are its only large field).
pub const MAX_HEADER: usize = 16 * 1024;

/// A `listing` page ends once the names of its entries add up to this many bytes (or at
/// [`MAX_LIST_PAGE`] entries), so that a page's header stays well under [`MAX_FRAME`].
pub const LISTING_BUDGET: usize = 160 * 1024;

/// Bytes a listing entry takes on the wire besides its name (class, size, hash, times, keys).
pub const ENTRY_OVERHEAD: usize = 100;

/// A transfer with no message in either direction for this long is dropped by the peer that
/// relays or receives it (the broker and the node), which frees its credit.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
