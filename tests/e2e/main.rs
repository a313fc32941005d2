//! End-to-end tests: real `dfs` processes on loopback, free ports, temporary folders, polled waits
//! with deadlines. One test binary (one link step on two cores).

mod bad_peers;
mod fetch;
mod harness;
mod memory;
mod names;
mod pipeline;
mod up;
