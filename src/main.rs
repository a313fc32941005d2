//! `dfs`: one binary, one subcommand per role. Each role's crate owns its options and its loop;
//! this file only parses the command line, sets up logging and the stop signal, and maps results
//! to exit codes.

mod keygen;
mod up;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use schema::daemon::Shutdown;
use std::process::ExitCode;

/// A small, fast, trustworthy distributed file system over ZeroMQ.
#[derive(Parser, Debug)]
#[command(name = "dfs", version, about, propagate_version = true)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG, when set, wins.
    #[arg(long, global = true, env = "DFS_LOG_LEVEL", default_value = "info")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Storage node: keeps files under ROOT/mp3, txt, pdf, others and serves them back.
    Storage(storage::Args),
    /// Broker: takes uploads from watchers, routes them to the storage node, keeps the index,
    /// answers fetchers.
    Broker(broker::Args),
    /// Watcher: syncs every file created or changed in the source folder to the broker.
    Watch(watcher::Args),
    /// Lists the stored files, or retrieves named files into a target folder.
    Fetch(fetcher::Args),
    /// Storage, broker and watcher in one process on 127.0.0.1, with folders under the current one.
    Up(up::Args),
    /// Checks the index against the storage node: names missing, extra or with a different
    /// hash (exit 1 if any); --repair makes the index agree with the node.
    Fsck(broker::FsckArgs),
    /// Makes a CURVE key pair: DIR/NAME.key (secret, mode 600) and DIR/NAME.pub (public).
    Keygen(keygen::Args),
    /// Index maintenance.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
}

#[derive(Subcommand, Debug)]
enum IndexCommand {
    /// Writes the text index (myIndex/index.txt) now, from the broker's database.
    Export(broker::ExportArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            });
        }
    };
    init_logging(&cli.log_level);
    let code = match cli.command {
        Command::Fetch(args) => fetcher::run(args),
        Command::Storage(args) => daemon(|stop| storage::run(args, stop)),
        Command::Broker(args) => daemon(|stop| broker::run(args, stop)),
        Command::Watch(args) => daemon(|stop| watcher::run(args, stop)),
        Command::Up(args) => daemon(|stop| up::run(args, stop)),
        Command::Fsck(args) => broker::run_fsck(args),
        Command::Keygen(args) => report(keygen::run(&args)),
        Command::Index {
            command: IndexCommand::Export(args),
        } => report(broker::export_index(&args)),
    };
    ExitCode::from(code)
}

/// Runs a daemon until SIGINT or SIGTERM; exit 0 after a clean stop, 1 on a fatal error.
/// SIGHUP reloads the CURVE allow-lists (installed after ctrlc, which would take it as a stop).
fn daemon(body: impl FnOnce(Shutdown) -> anyhow::Result<()>) -> u8 {
    let stop = Shutdown::new();
    let handler = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || handler.trigger())
        .context("cannot install the SIGINT/SIGTERM handler")
    {
        return report(Err(e));
    }
    if let Err(e) = schema::zap::reload_on_sighup().context("cannot install the SIGHUP handler") {
        return report(Err(e));
    }
    report(body(stop))
}

/// Prints a fatal error as one line (`dfs: what: why: cause`) and returns the exit code.
fn report(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dfs: {e:#}");
            1
        }
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
