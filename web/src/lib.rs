//! `dfs web`: a read-only web page for people, over the broker's fetch port.
//!
//! It is a fetcher (the fetcher's `--broker`, `--timeout`, `--secret-key`, `--broker-key`) that
//! serves HTTP on `--listen`: browse and search the stored tree, a file's history with every
//! retained version to download, the tree as it was at an instant (one file, or a folder as a
//! tar archive), and the health of the broker, the nodes and the watchers with plots of what
//! moved. Every page is built on the server with every name escaped (`maud`), every asset is
//! inside the binary, and nothing it serves writes anything. Beyond loopback it refuses to start
//! without `--token-file`; the page then asks for the token once and keeps it in an `HttpOnly`,
//! `SameSite=Strict` cookie.
//!
//! Files: `serve.rs` (the HTTP workers and the routes), `auth.rs` (the token), `url.rs` (paths,
//! queries, forms), `snapshot.rs` (listings kept for browsing and search), `files.rs`
//! (verified downloads and archives), `health.rs` (status samples and plots), `pages.rs` (the
//! HTML).

mod auth;
mod files;
mod health;
mod pages;
mod serve;
mod snapshot;
mod url;

use daemon::Shutdown;
use fetcher::error::{EXIT_FILE, EXIT_OK, EXIT_USAGE};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Options of `dfs web`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Address to serve the page on, HOST:PORT (port 0 picks a free one). Beyond loopback a
    /// --token-file is required.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "DFS_WEB_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,

    /// A file holding the access token (one line, at least 16 characters); the page asks for it
    /// once. Required beyond loopback.
    #[arg(long, value_name = "FILE", env = "DFS_WEB_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// The broker's fetch address, HOST[:PORT] (port 12346 when omitted).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "DFS_WEB_BROKER",
        default_value = schema::ports::FETCH_ADDR
    )]
    pub broker: String,

    /// Longest wait for any answer from the broker, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_WEB_TIMEOUT",
        default_value_t = 5.0
    )]
    pub timeout: f64,

    /// This client's CURVE secret key (made by `dfs keygen`, mode 600); its public key must be
    /// in the broker's --allow-fetchers.
    #[arg(long, value_name = "FILE", env = "DFS_WEB_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,

    /// The broker's public key file (its NAME.pub): with --secret-key, the link uses CURVE.
    #[arg(long, value_name = "FILE", env = "DFS_WEB_BROKER_KEY")]
    pub broker_key: Option<PathBuf>,

    /// The status file of a watcher (its --status-file) to show on the health page; repeatable.
    #[arg(long = "status-file", value_name = "FILE", env = "DFS_WEB_STATUS_FILE")]
    pub status_files: Vec<PathBuf>,

    /// Write a JSON line here once the page is served (for scripts and tests).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Runs `dfs web` until SIGINT or SIGTERM. Exit codes: 0 after a clean stop, 1 it cannot
/// serve, 2 usage error (a listen address beyond loopback without a token included).
pub fn run(args: Args) -> u8 {
    match execute(&args, Shutdown::on_signals()) {
        Ok(()) => EXIT_OK,
        Err((code, line)) => {
            eprintln!("dfs web: {line}");
            code
        }
    }
}

type Failure = (u8, String);

/// What every worker needs: how to reach the broker, and the shared state.
pub(crate) struct Shared {
    pub link: files::Link,
    pub token: Option<auth::Token>,
    pub snapshots: snapshot::Snapshots,
    pub health: Arc<health::Health>,
    pub stop: Shutdown,
}

fn execute(args: &Args, stop: &Shutdown) -> Result<(), Failure> {
    let usage = |line: String| (EXIT_USAGE, line);
    daemon::check_secs("--timeout", args.timeout).map_err(usage)?;
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        usage(format!(
            "--listen {:?}: give HOST:PORT with an IP address, such as 127.0.0.1:8080",
            args.listen
        ))
    })?;
    let token = match &args.token_file {
        Some(path) => Some(auth::Token::read(path).map_err(usage)?),
        None if !listen.ip().is_loopback() => {
            return Err(usage(format!(
                "--listen {listen} is beyond loopback: give --token-file FILE (a secret of at \
                 least 16 characters) so that only people with the token see the store"
            )))
        }
        None => None,
    };
    let (host, port) = daemon::host_port(&args.broker, schema::ports::FETCH_PORT).map_err(usage)?;
    let endpoint = net::socket::endpoint(&host, port);
    let auth = fetcher::client::broker_auth(
        &endpoint,
        args.secret_key.as_deref(),
        args.broker_key.as_deref(),
    )
    .map_err(|e| (e.exit_code(), e.to_string()))?;
    let status = status::StatusArgs {
        broker: args.broker.clone(),
        json: true,
        timeout: args.timeout,
        status_files: args.status_files.clone(),
        stale_after: 30,
        secret_key: args.secret_key.clone(),
        broker_key: args.broker_key.clone(),
    };
    let health = health::Health::start(status, stop.clone());
    let shared = Arc::new(Shared {
        link: files::Link {
            endpoint: endpoint.clone(),
            auth,
            timeout: args.timeout,
            stop: stop.clone(),
        },
        token,
        snapshots: snapshot::Snapshots::default(),
        health,
        stop: stop.clone(),
    });
    let server = tiny_http::Server::http(listen)
        .map_err(|e| (EXIT_FILE, format!("cannot listen on {listen}: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| (EXIT_FILE, "the listening socket has no address".to_string()))?;
    let server = Arc::new(server);
    let workers = serve::start(server.clone(), shared);
    let ready = serde_json::json!({
        "role": "web",
        "listen": bound.to_string(),
        "pid": std::process::id(),
        "broker": endpoint,
    });
    if let Some(path) = &args.ready_file {
        daemon::write_ready_file(path, &ready).map_err(|e| {
            (
                EXIT_FILE,
                format!("cannot write the ready file {}: {e}", path.display()),
            )
        })?;
    }
    daemon::notify_ready(&ready);
    info!(
        "serving http://{bound}/ for the broker at {endpoint}{}",
        if args.token_file.is_some() {
            " (the page asks for the token)"
        } else {
            ""
        }
    );
    while !stop.is_triggered() {
        std::thread::sleep(Duration::from_millis(daemon::POLL_MS as u64));
    }
    server.unblock();
    for w in workers {
        let _ = w.join();
    }
    info!("stopped");
    Ok(())
}
