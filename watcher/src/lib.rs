//! The watcher (`dfs watch`): keeps a broker's store in step with a source folder.
//!
//! # How it works
//!
//! One thread owns the broker socket (a DEALER) and a table of every name it knows
//! ([`state::Names`]): what the store holds, whether the name is due for a look, and whether a
//! change of it is in flight. Everything that may call for a sync only marks names due: the
//! start-up comparison of the broker's listing with a walk of the folder, inotify events
//! (forwarded by `notify`'s thread, which wakes the socket thread's poll), retries, periodic
//! rescans. The loop then *reconciles* each due name: it looks at the file now and decides to do
//! nothing, upload (inline, or in chunks under the broker's credit), delete or rename.
//!
//! # Start-up
//!
//! 1. The source folder is checked and the recursive watch is put in place; the ready file is
//!    written (files created from then on are seen).
//! 2. The broker is pinged until it answers, then its listing is fetched page by page.
//! 3. The folder is walked; every file that differs from the listing, and every listed name gone
//!    from the folder, is due. Events that came meanwhile are already queued.

mod args;
mod claim;
mod decide;
mod error;
pub mod events;
mod flights;
mod follow;
pub mod ignore;
mod link;
pub mod local;
pub mod metrics;
mod outbox;
mod reporting;
pub mod scan;
pub mod state;
mod status_file;
mod store;
mod transfer;
mod watcher;

pub use args::Args;
pub use watcher::run;

#[cfg(test)]
mod tests;
