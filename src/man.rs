//! `dfs man --out DIR`: the man pages (`dfs.1`, `dfs-storage.1`, ...), generated from the
//! command line's definition. Used when packaging.

use anyhow::Context as _;
use std::path::PathBuf;

/// Options of `dfs man`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder to write the pages into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// Writes one man page for `cmd` and one for each of its visible subcommands.
pub fn run(args: &Args, cmd: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the folder {}", args.out.display()))?;
    clap_mangen::generate_to(cmd, &args.out)
        .with_context(|| format!("cannot write the man pages into {}", args.out.display()))
}
