//! Following large files while they are written: a file of at least [`FOLLOW_MIN`] bytes still
//! open for writing and found larger than a look before (so not one made at its full size and
//! then filled in, which would be sent twice) is sent as it grows (a growing upload, see
//! `transfer`), so that its upload ends soon after the writer closes it instead of starting
//! then. It is finished on the close event, or once it stays unchanged for the debounce (a
//! writer that never closes); a file that grows too slowly to fill chunks goes back to the
//! usual way (sent once closed or quiet).

use crate::local::Stamp;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Smallest file followed while it is written.
pub const FOLLOW_MIN: u64 = 8 << 20;

/// How long after a file's first write event it is looked at to decide whether to follow it,
/// and again while it is smaller than [`FOLLOW_MIN`], for up to a debounce.
pub const FOLLOW_LOOK: Duration = Duration::from_millis(10);

/// How often a growing upload that waits for its file to grow looks at it again.
pub const FOLLOW_POLL: Duration = Duration::from_millis(2);

/// What the watcher knows of files being written: which are open for writing, which are to be
/// looked at soon to decide whether to follow them, and which were given up.
#[derive(Debug, Default)]
pub(crate) struct Follow {
    /// Names written (created or modified) and not closed since, with how a large one looked
    /// when last found still growing (see `Watcher::upload`).
    pub writing: HashMap<String, Option<Stamp>>,
    /// Files with write events to look at soon, to follow them while they grow.
    pub looks: HashMap<String, FollowLook>,
    /// Files given up following until their writer closes them.
    pub unfollowed: HashSet<String>,
}

/// When a file with write events is looked at next to decide whether to follow it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FollowLook {
    pub at: Instant,
    /// Looks stop here: a file still small by then is not followed.
    pub until: Instant,
    /// The file's size at the look before.
    pub size: Option<u64>,
}
