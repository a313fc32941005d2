//! End-to-end tests: real `dfs` processes on loopback, free ports, temporary folders, polled waits
//! with deadlines. One test binary (one link step on two cores).

mod bad_peers;
mod churn;
mod fetch;
mod harness;
mod kill;
mod memory;
mod outage;
mod pipeline;
mod shutdown;
mod up;
