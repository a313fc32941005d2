//! How received content reaches the disk, for the storage node and the fetcher alike: one
//! durable write (temporary file, fsync, rename, fsync the folder) with shared folder fsyncs
//! ([`atomic`]), large files written without the page cache ([`direct`]) and page-cache hints
//! for the others ([`writeback`]); the free space of a folder's file system ([`space`]).

pub mod atomic;
pub mod direct;
pub mod space;
pub mod writeback;
