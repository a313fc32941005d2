//! `dfs up`: a storage node, a broker and a watcher in one process on 127.0.0.1, with their
//! folders under the current one. For trying dfs out and for a single machine.

use anyhow::Context as _;
use clap::Parser;
use daemon::Shutdown;
use std::path::PathBuf;
use std::thread;

/// Options of `dfs up`; every folder defaults to the one its role uses on its own.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder the watcher syncs.
    #[arg(long, env = "DFS_UP_SOURCE", default_value = "./source_folder")]
    source: PathBuf,
    /// Storage root of the node.
    #[arg(long, env = "DFS_UP_ROOT", default_value = "./node")]
    root: PathBuf,
    /// Broker data folder (sled index, myIndex/index.txt).
    #[arg(long, env = "DFS_UP_DATA", default_value = "./server")]
    data: PathBuf,
    /// First storage port (classes on base..base+3, serve on base+4); 0 picks free ports.
    #[arg(long, env = "DFS_UP_BASE_PORT", default_value_t = schema::ports::STORAGE_BASE_PORT)]
    base_port: u16,
    /// Broker port for watchers; 0 picks a free port.
    #[arg(long, env = "DFS_UP_INGEST_PORT", default_value_t = schema::ports::INGEST_PORT)]
    ingest_port: u16,
    /// Broker port for fetchers; 0 picks a free port.
    #[arg(long, env = "DFS_UP_FETCH_PORT", default_value_t = schema::ports::FETCH_PORT)]
    fetch_port: u16,
    /// Write the bound ports here (one JSON line) once everything is listening.
    #[arg(long, env = "DFS_UP_READY_FILE")]
    ready_file: Option<PathBuf>,
}

/// Parses a role's own options from `argv`, as if given on its command line.
fn role_args<T: clap::Args>(argv: &[String]) -> anyhow::Result<T> {
    #[derive(Parser)]
    struct Wrap<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    let argv = std::iter::once("dfs-up".to_string()).chain(argv.iter().cloned());
    Ok(Wrap::<T>::try_parse_from(argv)?.inner)
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Starts the three roles, prints where everything is, and waits for the stop signal.
pub fn run(args: Args, stop: Shutdown) -> anyhow::Result<()> {
    let ctx = net::socket::context();
    std::fs::create_dir_all(&args.source)
        .with_context(|| format!("cannot create the source folder {}", args.source.display()))?;

    let storage_args: storage::Args = role_args(&[
        "--root".into(),
        s(&args.root),
        "--bind".into(),
        "127.0.0.1".into(),
        "--base-port".into(),
        args.base_port.to_string(),
    ])?;
    let node = storage::Node::bind(&ctx, &storage_args)?;
    let base = node.base_port();

    let broker_args: broker::Args = role_args(&[
        "--data".into(),
        s(&args.data),
        "--bind".into(),
        "127.0.0.1".into(),
        "--ingest-port".into(),
        args.ingest_port.to_string(),
        "--fetch-port".into(),
        args.fetch_port.to_string(),
        "--storage".into(),
        format!("127.0.0.1:{base}"),
    ])?;
    let broker = broker::Broker::bind(&ctx, &broker_args)?;
    let (ingest, fetch) = (broker.ingest_port(), broker.fetch_port());

    let watch_args: watcher::Args = role_args(&[
        "--source".into(),
        s(&args.source),
        "--broker".into(),
        format!("127.0.0.1:{ingest}"),
    ])?;

    let node_stop = stop.clone();
    let node_thread = thread::Builder::new()
        .name("storage".into())
        .spawn(move || node.serve(node_stop))?;
    let broker_stop = stop.clone();
    let broker_thread = thread::Builder::new()
        .name("broker".into())
        .spawn(move || broker.serve(broker_stop))?;
    let watch_stop = stop.clone();
    let watch_thread = thread::Builder::new()
        .name("watcher".into())
        .spawn(move || watcher::run(watch_args, watch_stop))?;

    println!("dfs is up on 127.0.0.1:");
    println!("  watching   {}", s(&args.source));
    println!(
        "  broker     ingest :{ingest}  fetch :{fetch}  index {}",
        s(&args.data.join("myIndex/index.txt"))
    );
    println!(
        "  storage    {}  (mp3 :{base}, txt :{}, pdf :{}, others :{}, serve :{})",
        s(&args.root),
        base + 1,
        base + 2,
        base + 3,
        base + 4
    );
    println!("  list with  dfs fetch --broker 127.0.0.1:{fetch}");
    println!("Ctrl-C stops everything.");
    let ready = serde_json::json!({
        "role": "up", "base_port": base, "ingest_port": ingest, "fetch_port": fetch,
    });
    daemon::announce_ready(ready, args.ready_file.as_deref(), None)?;

    // Any role ending (an error, or the stop signal) stops the others. Then join in order: the
    // watcher first (no new uploads), the broker (flushes and exports the index), the node.
    let handles = [
        ("watcher", watch_thread),
        ("broker", broker_thread),
        ("storage", node_thread),
    ];
    while !stop.is_triggered() && !handles.iter().any(|(_, h)| h.is_finished()) {
        thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.trigger();
    let mut first_error = None;
    for (name, handle) in handles {
        let result = match handle.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("thread panicked")),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e.context(format!("{name} stopped")));
        }
    }
    first_error.map_or(Ok(()), Err)
}
