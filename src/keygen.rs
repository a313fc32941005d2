//! `dfs keygen`: makes a CURVE key pair, the secret key readable by its owner only and the
//! public key as one Z85 line to hand to the peers that must accept it. Never overwrites.

use anyhow::Context as _;
use net::keys::{write_key_pair, KeyPair};
use std::path::{Path, PathBuf};

/// Options of `dfs keygen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder to write NAME.key (the secret key, mode 600) and NAME.pub (the public key) in;
    /// created if missing.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "secret",
        conflicts_with_all = ["secret", "public"]
    )]
    pub out: Option<PathBuf>,
    /// The name of the two files in --out (default: this machine's host name), for example
    /// `broker` or `watcher-laptop`.
    #[arg(long, requires = "out")]
    pub name: Option<String>,
    /// Write the secret key to FILE (mode 600) instead; needs --public.
    #[arg(long, value_name = "FILE", requires = "public")]
    pub secret: Option<PathBuf>,
    /// Write the public key to FILE instead; needs --secret.
    #[arg(long, value_name = "FILE", requires = "secret")]
    pub public: Option<PathBuf>,
}

/// Runs `dfs keygen`: writes both files and prints where they are and the public key.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let (secret, public) = match (&args.out, &args.secret, &args.public) {
        (Some(dir), _, _) => {
            let name = match &args.name {
                Some(name) => name.clone(),
                None => host_name(),
            };
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                anyhow::bail!("--name {name:?} is not a plain file name");
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the key folder {}", dir.display()))?;
            (
                dir.join(format!("{name}.key")),
                dir.join(format!("{name}.pub")),
            )
        }
        (None, Some(secret), Some(public)) => (secret.clone(), public.clone()),
        _ => anyhow::bail!("give --out DIR, or --secret FILE and --public FILE"),
    };
    let pair = KeyPair::generate()?;
    write_key_pair(&pair, &secret, &public)?;
    println!(
        "secret key: {} (mode 600: keep it on this machine)",
        show(&secret)
    );
    println!(
        "public key: {} (copy it to the peers that must accept this one)",
        show(&public)
    );
    println!("{}", pair.public());
    Ok(())
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// This machine's host name, or `dfs` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "dfs".to_string())
}
