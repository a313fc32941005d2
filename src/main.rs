//! `dfs`: one binary, one subcommand per role. Each role's crate owns its options and its loop;
//! this file only parses the command line, sets up logging and the stop signal, and maps results
//! to exit codes.

mod completions;
mod config;
mod keygen;
mod logging;
mod man;
mod up;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use daemon::Shutdown;
use std::process::ExitCode;

/// A small, fast, trustworthy distributed file system over ZeroMQ.
#[derive(Parser, Debug)]
#[command(name = "dfs", version, about, propagate_version = true)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG, when set, wins.
    #[arg(long, global = true, env = "DFS_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Log format: plain lines, or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "DFS_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    log_format: logging::LogFormat,

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
    // `--version N` picks a stored version here; `dfs --version` still prints dfs's.
    #[command(disable_version_flag = true)]
    Fetch(fetcher::Args),
    /// The stored tree as a read-only folder (FUSE): files read on demand and verified;
    /// --at TIME, or DIR/.history/TIME/, shows the tree as it was then.
    Mount(mount::Args),
    /// A read-only web page (browse, search, history, downloads, restore as of an instant,
    /// health with plots) through the broker's fetch port.
    Web(web::Args),
    /// Storage, broker and watcher in one process on 127.0.0.1, with folders under the current one.
    Up(up::Args),
    /// Checks the index against the storage node: names missing, extra or with a different
    /// hash (exit 1 if any); --repair makes the index agree with the node.
    Fsck(fsck::FsckArgs),
    /// Is everything up and in sync: the broker, its storage node and (with --status-file)
    /// watchers; exit 0 healthy, 1 a problem, 3 broker or node unreachable.
    Status(status::StatusArgs),
    /// The versions of stored names: the current one and those the storage node keeps
    /// (--keep-history); retrieve one with `dfs fetch --version N NAME`.
    History(fetcher::history::HistoryArgs),
    /// Makes a CURVE key pair: DIR/NAME.key (secret, mode 600) and DIR/NAME.pub (public).
    Keygen(keygen::Args),
    /// Index maintenance.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Prints the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Writes the man pages (dfs.1, dfs-storage.1...) into a folder.
    #[command(hide = true)]
    Man(man::Args),
}

#[derive(Subcommand, Debug)]
enum IndexCommand {
    /// Writes the text index (myIndex/index.txt) now, from the broker's database.
    Export(broker::ExportArgs),
}

fn main() -> ExitCode {
    let cli = match config::parse::<Cli>(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(config::ParseError::Cli(e)) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    daemon::exit::OK
                }
                _ => daemon::exit::USAGE,
            });
        }
        Err(config::ParseError::Config(e)) => {
            eprintln!("dfs: {e}");
            return ExitCode::from(daemon::exit::USAGE);
        }
    };
    keep_transfer_buffers();
    logging::init(&cli.log_level, cli.log_format);
    let code = match cli.command {
        Command::Fetch(args) => fetcher::run(args),
        Command::Mount(args) => mount::run(args),
        Command::Web(args) => web::run(args),
        Command::Storage(args) => daemon(|stop| storage::run(args, stop)),
        Command::Broker(args) => daemon(|stop| broker::run(args, stop)),
        Command::Watch(args) => daemon(|stop| watcher::run(args, stop)),
        Command::Up(args) => daemon(|stop| up::run(args, stop)),
        Command::Fsck(args) => fsck::run(args),
        Command::Status(args) => status::run(args),
        Command::History(args) => fetcher::history::run(args),
        Command::Keygen(args) => report(keygen::run(&args)),
        Command::Index {
            command: IndexCommand::Export(args),
        } => report(broker::export_index(&args)),
        Command::Completions(args) => report(completions::run(&args, config::command::<Cli>())),
        Command::Man(args) => report(man::run(&args, config::command::<Cli>())),
    };
    ExitCode::from(code)
}

/// Stops glibc's malloc from handing every freed chunk buffer back to the kernel. Each 256 KiB
/// chunk is a fresh allocation in ZeroMQ's I/O threads; with the default (dynamic) thresholds a
/// thread arena trims itself with `madvise` after nearly every free and the next chunk
/// page-faults its memory back in, zeroed: 14 % of the broker's CPU while relaying a 1 GiB
/// file went there. Freed chunks are now kept for reuse (peak memory is bounded by the credit
/// windows, so this does not raise it).
fn keep_transfer_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Runs a daemon until SIGINT or SIGTERM; exit 0 after a clean stop, 1 on a fatal error.
/// SIGHUP reloads the CURVE allow-lists (installed after ctrlc, which would take it as a stop).
fn daemon(body: impl FnOnce(Shutdown) -> anyhow::Result<()>) -> u8 {
    let stop = Shutdown::new();
    let handler = stop.clone();
    let on_signal = move || {
        handler.trigger();
        daemon::notify_stopping();
    };
    if let Err(e) =
        ctrlc::set_handler(on_signal).context("cannot install the SIGINT/SIGTERM handler")
    {
        return report(Err(e));
    }
    if let Err(e) = net::zap::reload_on_sighup().context("cannot install the SIGHUP handler") {
        return report(Err(e));
    }
    report(body(stop))
}

/// Prints a fatal error as one line (`dfs: what: why: cause`) and returns the exit code.
fn report(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => daemon::exit::OK,
        Err(e) => {
            eprintln!("dfs: {e:#}");
            daemon::exit::FAILURE
        }
    }
}
