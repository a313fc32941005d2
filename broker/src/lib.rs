//! The dfs broker: takes uploads from watchers on its ingest port, routes each to the storage
//! node's port for its class, keeps the index of stored files (sled) and its text export
//! `myIndex/index.txt`, and answers listings and reads from fetchers on its fetch port.
//!
//! # Layout
//! * [`Broker`] (this file): start-up (open or rebuild the index, bind, connect) and shutdown.
//! * `serve`: the serving loop, the only code that touches the front sockets; `commit`: group
//!   commit of index changes; `links`: the node's sockets.
//! * `relay`: the decisions, without sockets (`relay/requests.rs`: front-port messages,
//!   `relay/replies.rs`: node messages), saying what to send through an `outbox`; `peer`: who a
//!   reply goes to, broker ids; `in_flight`: forwarded requests in flight; `rebuild`: refilling the
//!   index from the node; `fsck_relay`: `fsck` requests; `status`: `status` requests.
//! * `fsck`: the comparison of index and node behind `dfs fsck` (the command is the `fsck`
//!   crate).
//! * `index`, `record`: the sled index; `export`, `flusher`: `index.txt` and when it is
//!   written; [`metrics`]: `--metrics`.

mod alarm;
mod commit;
mod error;
mod export;
mod flusher;
pub mod fsck;
mod fsck_relay;
mod in_flight;
mod index;
mod links;
pub mod metrics;
mod outbox;
mod owner_sync;
mod owners;
mod peer;
mod rebuild;
mod record;
mod relay;
mod serve;
mod status;

#[cfg(test)]
mod tests;

pub use error::IndexError;
pub use export::{export, HEADER};
pub use index::{Index, Opened};
pub use record::Record;

use anyhow::Context as _;
use daemon::{host_port, Shutdown};
use export::Exporter;
use links::NodeLinks;
use net::security::{client_auth, ClientOptions, Domain, ServerOptions, ServerSecurity};
use net::socket::router_with;
use rebuild::Rebuild;
use relay::Relay;
use schema::route::SERVE_OFFSET;
use schema::Routes;
use serve::Serve;
use std::path::PathBuf;

/// Options of `dfs broker`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Data folder: the sled index at DATA/index.db, the export at DATA/myIndex/index.txt.
    #[arg(long, env = "DFS_BROKER_DATA", default_value = "./server")]
    pub data: PathBuf,
    /// Address to bind the ingest and fetch ports on.
    #[arg(long, env = "DFS_BROKER_BIND", default_value = "0.0.0.0")]
    pub bind: String,
    /// Port for watchers (uploads); 0 picks a free port.
    #[arg(long, env = "DFS_BROKER_INGEST_PORT", default_value_t = schema::ports::INGEST_PORT)]
    pub ingest_port: u16,
    /// Port for fetchers (listings and reads); 0 picks a free port.
    #[arg(long, env = "DFS_BROKER_FETCH_PORT", default_value_t = schema::ports::FETCH_PORT)]
    pub fetch_port: u16,
    /// The storage node: HOST[:BASEPORT] (classes on BASEPORT..+3, reads on BASEPORT+4).
    /// Repeat it for several nodes that share one backend (`dfs storage --backend s3://…`):
    /// requests are spread across the nodes that answer.
    #[arg(long, env = "DFS_BROKER_STORAGE", default_value = schema::ports::STORAGE_ADDR,
          value_delimiter = ',')]
    pub storage: Vec<String>,
    /// Extra routes, EXT=CLASS,... (for example flac=mp3,md=txt); classes: mp3, txt, pdf, others.
    #[arg(long, env = "DFS_BROKER_ROUTES")]
    pub routes: Option<String>,
    /// Write the bound ports here (one JSON line) once every socket is bound.
    #[arg(long, env = "DFS_BROKER_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Serve Prometheus metrics on HOST:PORT at GET /metrics (off unless given; port 0 picks a
    /// free port, reported in the ready file).
    #[arg(long, value_name = "HOST:PORT", env = "DFS_BROKER_METRICS")]
    pub metrics: Option<String>,
    /// The broker's CURVE secret key (made by `dfs keygen`, mode 600): the ingest and fetch
    /// ports then take only CURVE connections from the allowed keys, and the broker shows this
    /// key to the storage node.
    #[arg(long, value_name = "FILE", env = "DFS_BROKER_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,
    /// Public keys of the watchers allowed on the ingest port: a file of keys, one a line, or a
    /// folder of NAME.pub files. Read again on SIGHUP.
    #[arg(long, value_name = "FILE|DIR", env = "DFS_BROKER_ALLOW_WATCHERS")]
    pub allow_watchers: Option<PathBuf>,
    /// Public keys of the fetchers allowed on the fetch port (they can list and read, never
    /// write or delete): a file or a folder, as --allow-watchers. Read again on SIGHUP.
    #[arg(long, value_name = "FILE|DIR", env = "DFS_BROKER_ALLOW_FETCHERS")]
    pub allow_fetchers: Option<PathBuf>,
    /// The storage node's public key file (its NAME.pub): the link to the node then uses CURVE
    /// with --secret-key.
    #[arg(long, value_name = "FILE", env = "DFS_BROKER_STORAGE_KEY")]
    pub storage_key: Option<PathBuf>,
    /// Listen, or reach the storage node, beyond loopback without keys: no authentication, no
    /// encryption.
    #[arg(long, env = "DFS_BROKER_INSECURE", conflicts_with = "secret_key")]
    pub insecure: bool,
}

/// Options of `dfs index export`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The broker's data folder (the index is DATA/index.db).
    #[arg(long, env = "DFS_BROKER_DATA", default_value = "./server")]
    pub data: PathBuf,
    /// Where to write (default DATA/myIndex/index.txt).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Where the export of the index in `data` goes by default.
pub fn default_export_path(data: &std::path::Path) -> PathBuf {
    data.join("myIndex").join("index.txt")
}

/// A broker with its index open and its sockets bound, ready to [`serve`](Broker::serve).
pub struct Broker {
    serve: Serve,
    ingest_port: u16,
    fetch_port: u16,
    export_path: PathBuf,
    /// The ZAP handler, when the front ports use CURVE; it stops when `serve` returns (a
    /// handshake without it is refused, since every bound socket enforces its ZAP domain).
    security: ServerSecurity,
}

impl Broker {
    /// Opens the index (a missing or damaged one is set up for a rebuild from the node), binds
    /// the ingest and fetch ROUTERs and connects to the storage node. Logs the bound ports.
    pub fn bind(ctx: &zmq::Context, args: &Args) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(&args.data)
            .with_context(|| format!("cannot create the data folder {}", args.data.display()))?;
        let db_path = args.data.join("index.db");
        let (index, opened) = Index::open(&db_path).context("cannot open the broker's index")?;
        match &opened {
            Opened::Existing => tracing::info!(
                "opened the index {} ({} files)",
                db_path.display(),
                index.len()
            ),
            Opened::Created => tracing::info!(
                "created a new index {}; it will be filled from the storage node",
                db_path.display()
            ),
            Opened::Damaged(_) => {}
        }
        let routes = Routes::from_option(args.routes.as_deref()).map_err(anyhow::Error::msg)?;
        let mut nodes = Vec::with_capacity(args.storage.len());
        for spec in &args.storage {
            let (host, base) = host_port(spec, schema::ports::STORAGE_BASE_PORT)
                .map_err(|e| anyhow::anyhow!("bad --storage {spec}: {e}"))?;
            if base.checked_add(SERVE_OFFSET).is_none() {
                anyhow::bail!(
                    "bad --storage {spec}: base port {base} leaves no room for the five node ports"
                );
            }
            let auth = client_auth(ClientOptions {
                peer: "the storage node",
                host: &host,
                secret_key: args.storage_key.as_ref().and(args.secret_key.as_deref()),
                server_key: args.storage_key.as_deref(),
                server_option: "--storage-key",
                insecure: Some(args.insecure),
            })?;
            nodes.push((host, base, auth));
        }
        if nodes.is_empty() {
            anyhow::bail!("no --storage given");
        }
        let named: Vec<String> = nodes.iter().map(|(h, b, _)| format!("{h}:{b}")).collect();
        let named = named.join(", ");
        let security = ServerSecurity::start(
            ctx,
            ServerOptions {
                bind: &args.bind,
                secret_key: args.secret_key.as_deref(),
                allow: vec![
                    (Domain::Ingest, args.allow_watchers.as_deref()),
                    (Domain::Fetch, args.allow_fetchers.as_deref()),
                ],
                insecure: args.insecure,
            },
        )?;
        let node = NodeLinks::connect(ctx, &nodes)
            .with_context(|| format!("cannot connect to the storage nodes {named}"))?;
        let (ingest, ingest_port) = router_with(
            ctx,
            &args.bind,
            args.ingest_port,
            &security.auth(Domain::Ingest),
        )
        .context("cannot open the ingest port (for watchers)")?;
        let (fetch, fetch_port) = router_with(
            ctx,
            &args.bind,
            args.fetch_port,
            &security.auth(Domain::Fetch),
        )
        .context("cannot open the fetch port (for fetchers)")?;
        tracing::info!(
            "broker listening on {}: ingest port {ingest_port}, fetch port {fetch_port}; \
             storage nodes {named}",
            args.bind
        );
        let rebuild = Rebuild::new(opened.needs_rebuild());
        let flusher = flusher::Flusher::start(ctx, index.syncer())?;
        let owners = owners::Owners::load(&index).context("cannot read the volume owners")?;
        let mut relay = Relay::new(index, routes, rebuild, owners);
        relay.status.data = args
            .data
            .canonicalize()
            .unwrap_or_else(|_| args.data.clone());
        let gates = [security.gate(Domain::Ingest), security.gate(Domain::Fetch)];
        relay.ingest_gate = gates[0].clone();
        let commit = commit::GroupCommit::new(flusher);
        Ok(Broker {
            serve: Serve::new((ingest, fetch), gates, node, commit, relay),
            ingest_port,
            fetch_port,
            export_path: default_export_path(&args.data),
            security,
        })
    }

    /// The bound ingest (watcher) port.
    pub fn ingest_port(&self) -> u16 {
        self.ingest_port
    }

    /// The broker's metrics (served with `--metrics`).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.serve.relay.metrics
    }

    /// The bound fetch (fetcher) port.
    pub fn fetch_port(&self) -> u16 {
        self.fetch_port
    }

    /// Serves until `stop` is triggered; then abandons or finishes the transfers in flight,
    /// flushes the index and writes the export.
    pub fn serve(mut self, stop: Shutdown) -> anyhow::Result<()> {
        let _security = self.security;
        let relay = &mut self.serve.relay;
        let exporter = Exporter::start(relay.index.clone(), self.export_path.clone())
            .context("cannot start the index export thread")?;
        relay.status.totals = exporter.totals();
        if relay.is_rebuilding() {
            // The export follows once the rebuild is done.
        } else if let Some((files, bytes)) = relay.index.current_export(&self.export_path) {
            tracing::info!(
                "{} is current (written at the last clean stop)",
                self.export_path.display()
            );
            relay.status.totals.set(files as usize, bytes);
        } else {
            exporter.request();
        }
        self.serve.run(&stop, &exporter);
        let (files, bytes) = exporter
            .finish()
            .context("cannot write the index export at stop")?;
        // Nothing changes the index any more: the next start can trust this export.
        if let Err(e) = self
            .serve
            .relay
            .index
            .mark_exported(&self.export_path, files as u64, bytes)
        {
            tracing::warn!("{e}");
        }
        tracing::info!(
            "broker stopped; index flushed, {} lists {files} files",
            self.export_path.display()
        );
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn relay_mut(&mut self) -> &mut Relay {
        &mut self.serve.relay
    }
}

/// `dfs broker`: binds, writes the ready file
/// `{"role":"broker","ingest_port":I,"fetch_port":F}`, and serves until `stop`.
pub fn run(args: Args, stop: Shutdown) -> anyhow::Result<()> {
    let ctx = net::socket::context();
    let broker = Broker::bind(&ctx, &args)?;
    let ready = serde_json::json!({
        "role": "broker",
        "ingest_port": broker.ingest_port(),
        "fetch_port": broker.fetch_port(),
    });
    let metrics = args
        .metrics
        .as_deref()
        .map(|a| (a, broker.metrics().registry()));
    let _metrics = daemon::announce_ready(ready, args.ready_file.as_deref(), metrics)?;
    broker.serve(stop)
}

/// `dfs index export`: writes the text index from the broker's database now. Fails with a clear
/// error while a running broker holds the database (it keeps the export current itself).
pub fn export_index(args: &ExportArgs) -> anyhow::Result<()> {
    let db_path = args.data.join("index.db");
    let index = Index::open_existing(&db_path)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_export_path(&args.data));
    let (files, bytes) = export::export_counted(&index, &out)?;
    if out == default_export_path(&args.data) {
        index.mark_exported(&out, files as u64, bytes)?;
    }
    tracing::info!("wrote {} ({files} files)", out.display());
    Ok(())
}
