//! End-to-end tests: real `dfs` processes on loopback, free ports, temporary folders, polled waits
//! with deadlines. One test binary (one link step on two cores).

mod alarm;
mod bad_peers;
mod browser;
mod churn;
mod config;
mod disk;
mod events;
mod fetch;
mod follow;
mod fsck;
mod garage;
mod harness;
mod history;
mod hosts;
mod kill;
mod memory;
mod metrics;
mod mount;
mod names;
mod outage;
mod pipeline;
mod protocol;
mod recovery;
mod restore;
mod s3;
mod s3_faults;
mod scale;
mod security;
mod shutdown;
mod status;
mod systemd;
mod up;
mod volumes;
mod web;
mod webdriver;
