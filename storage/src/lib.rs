//! The dfs storage node: keeps files under `ROOT/mp3`, `ROOT/txt`, `ROOT/pdf`, `ROOT/others`
//! and serves them back.
//!
//! # Sockets
//! Five ROUTERs on consecutive ports: `base+0..base+3` take the uploads, deletes and renames of
//! one class each (the broker routes; the node stores what arrives on a class port in that
//! class), `base+4` serves reads and listings. One thread owns them all ([`Node::serve`]); a pool
//! of sync workers makes finished uploads durable beside it ([`sync`]).
//!
//! # Files
//! `lib.rs` (options, entry point), [`node`] (binding, the socket loop, dispatch: the only code
//! that touches sockets), [`upload`] (the uploads component: puts, chunks, sync jobs),
//! [`read`] (the reads component: gets), [`outbox`] (how components say what to send),
//! [`peer`] (transfer keys, peer ids in logs), [`credit`] (flow control of uploads), [`sync`]
//! (the durable write pool), [`durable`] (the metadata attribute, then `disk::atomic`'s durable
//! write), [`list`] (listings), [`change`] (deletes, renames), [`metrics`] (`--metrics`),
//! [`check`] (re-hashing and quarantine for `dfs fsck`), [`status`] (the answer to `status`),
//! [`meta`] (the `user.dfs.meta` attribute), [`layout`] (the folders under the root: the
//! local-folder backend), [`error`] (routine errors and their reply codes).

pub mod admission;
pub mod arrival;
pub mod bucket;
pub mod change;
pub mod check;
pub mod credit;
pub mod durable;
pub mod error;
pub mod history;
pub mod layout;
pub mod list;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod owners;
pub mod past;
pub mod peer;
pub mod read;
pub mod s3;
pub mod status;
pub mod sync;
pub mod upload;

#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use node::Node;

use daemon::Shutdown;
use std::path::PathBuf;

/// Options of `dfs storage`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Storage root: files land in ROOT/mp3, ROOT/txt, ROOT/pdf and ROOT/others; uploads in
    /// progress live in ROOT/.dfs/tmp. Its filesystem must support user extended attributes.
    #[arg(long, env = "DFS_STORAGE_ROOT", default_value = "./node")]
    pub root: PathBuf,
    /// Address to bind the five ports on.
    #[arg(long, env = "DFS_STORAGE_BIND", default_value = "0.0.0.0")]
    pub bind: String,
    /// First port: classes mp3, txt, pdf, others on BASE..BASE+3, reads on BASE+4. 0 picks a
    /// free run of five ports.
    #[arg(long, env = "DFS_STORAGE_BASE_PORT", default_value_t = schema::ports::STORAGE_BASE_PORT)]
    pub base_port: u16,
    /// Write {"role":"storage","base_port":P,"root":"..."} here once every port is bound.
    #[arg(long, env = "DFS_STORAGE_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Threads making finished uploads durable (fsync, rename, fsync the folder); fsyncs of
    /// different files run concurrently.
    #[arg(long, env = "DFS_STORAGE_SYNC_THREADS", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub sync_threads: u16,
    /// Serve Prometheus metrics on HOST:PORT at GET /metrics (off unless given; port 0 picks a
    /// free port, reported in the ready file).
    #[arg(long, value_name = "HOST:PORT", env = "DFS_STORAGE_METRICS")]
    pub metrics: Option<String>,
    /// This node's CURVE secret key (made by `dfs keygen`, mode 600): every port then takes
    /// only CURVE connections from the keys in --allow.
    #[arg(long, value_name = "FILE", env = "DFS_STORAGE_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,
    /// Public keys of the brokers allowed to connect: a file of keys, one a line, or a folder
    /// of NAME.pub files. Read again on SIGHUP.
    #[arg(long, value_name = "FILE|DIR", env = "DFS_STORAGE_ALLOW")]
    pub allow: Option<PathBuf>,
    /// Listen beyond loopback without keys: no authentication, no encryption.
    #[arg(long, env = "DFS_STORAGE_INSECURE", conflicts_with = "secret_key")]
    pub insecure: bool,
    /// How long every replaced or deleted version stays retrievable (ROOT/.dfs/history), for
    /// example 30d, 12h; 0 keeps none. No client can shorten it.
    #[arg(long, value_name = "DURATION", env = "DFS_STORAGE_KEEP_HISTORY",
          default_value = "30d", value_parser = parse_keep)]
    pub keep_history: std::time::Duration,

    /// Keep the files in an S3 bucket instead of under --root, which then holds only the
    /// uploads and reads in progress. Credentials: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY (the other AWS_* variables apply too).
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]", env = "DFS_STORAGE_BACKEND")]
    pub backend: Option<String>,
    /// The S3 endpoint of --backend, such as http://127.0.0.1:3900 for a Garage beside the
    /// node (AWS_ENDPOINT_URL when not given).
    #[arg(
        long,
        value_name = "URL",
        env = "DFS_STORAGE_S3_ENDPOINT",
        requires = "backend"
    )]
    pub s3_endpoint: Option<String>,
    /// The S3 region of --backend (Garage's s3_region; AWS_REGION when not given).
    #[arg(
        long,
        value_name = "REGION",
        env = "DFS_STORAGE_S3_REGION",
        requires = "backend"
    )]
    pub s3_region: Option<String>,

    /// Most bytes the history may hold beyond the current files (such as 200GiB). Past it the
    /// oldest versions go before their time, with a warning; without it only --keep-history
    /// removes versions.
    #[arg(long, value_name = "SIZE", env = "DFS_STORAGE_HISTORY_BUDGET",
          value_parser = parse_budget)]
    pub history_budget: Option<u64>,
    /// Extra routes, EXT=CLASS,... as given to the broker (`dfs broker --routes`; for example
    /// flac=mp3,md=txt): each class port refuses a name that routes to another class.
    #[arg(long, value_name = "EXT=CLASS,...", env = "DFS_STORAGE_ROUTES")]
    pub routes: Option<String>,
}

/// A `--history-budget` value: bytes, or a size such as `200GiB` or `500MB`.
fn parse_budget(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (for example 200GiB, 500MB)"))
}

/// A `--keep-history` value: `0`, or a duration such as `30d` or `90m`.
fn parse_keep(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (for example 30d, 12h, or 0)"))
}

/// Runs a storage node until `stop`: binds, writes the ready file, serves.
pub fn run(args: Args, stop: Shutdown) -> anyhow::Result<()> {
    let ctx = net::socket::context();
    let node = Node::bind(&ctx, &args)?;
    let ready = serde_json::json!({
        "role": "storage",
        "base_port": node.base_port(),
        "root": node.root().display().to_string(),
    });
    let metrics = args
        .metrics
        .as_deref()
        .map(|a| (a, node.metrics().registry()));
    let _metrics = daemon::announce_ready(ready, args.ready_file.as_deref(), metrics)?;
    node.serve(stop)
}
