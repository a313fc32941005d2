//! The exit codes of every `dfs` command (docs/CONTRACT.md §3), in one place. Each command maps
//! its own errors onto these; none uses a number of its own.

/// Success: everything asked for was done (a daemon: it stopped cleanly).
pub const OK: u8 = 0;
/// A per-file failure (not found, refused, not written) or findings; a daemon's fatal error.
pub const FAILURE: u8 = 1;
/// The command line or a config file is wrong.
pub const USAGE: u8 = 2;
/// A peer (broker, storage node) is unreachable, timed out, or asks to try again later.
pub const UNREACHABLE: u8 = 3;
/// Content did not match its BLAKE3 hash.
pub const INTEGRITY: u8 = 4;
/// Stopped by SIGINT or SIGTERM before it was done (the shell's 128 + SIGINT).
pub const INTERRUPTED: u8 = 130;
