//! `dfs mount DIR`: the stored tree as a read-only folder (FUSE), for people who look for a
//! file before they restore it.
//!
//! The mount is a client of the broker's fetch port, like `dfs fetch`, with its keys and
//! timeout. It shows the listing's names (all volumes) as files and the folders they imply,
//! with their sizes and modification times; the lister reads the listing again every
//! `--refresh`, so new, replaced and deleted names show within seconds. A file's bytes are read
//! on first use, through the same `get` and credit as `dfs fetch`, and are returned only once
//! the whole content matched its BLAKE3: a corrupt file fails its reads with `EIO` and is
//! logged. Contents are cached by hash within `--cache-size`. `--at TIME` shows the tree as it
//! was then, and `DIR/.history/TIME/` does the same without remounting.
//!
//! Files: `place.rs` (the mount point, stale mounts), `link.rs` (the lister and the fetch
//! workers, each with its own link to the broker), `tree.rs` (one listing as folders),
//! `views.rs` (the main tree and the views of the past), `inodes.rs`, `cache.rs` (verified
//! contents, in memory or in unnamed files), `fs.rs` (the FUSE calls).

mod cache;
mod fs;
mod inodes;
mod link;
mod place;
mod tree;
mod views;

use crate::cache::Cache;
use crate::link::{Endpoint, Fetcher, Lister};
use crate::views::Views;
use daemon::Shutdown;
use fetcher::error::{EXIT_FILE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
use fuser::{Config, MountOption, SessionACL};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{info, warn};

/// Options of `dfs mount`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The folder to show the store in (it must exist; it is empty while nothing is mounted).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Show the tree as it was at TIME (RFC 3339, such as 2026-12-01T09:00:00Z, or an age such
    /// as 90m, 2h, 3d), deleted files included, instead of the store now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,

    /// The broker's fetch address, HOST[:PORT] (port 12346 when omitted).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "DFS_MOUNT_BROKER",
        default_value = schema::ports::FETCH_ADDR
    )]
    pub broker: String,

    /// Longest wait for any answer from the broker, in seconds: a read the broker does not
    /// answer fails with EIO after it.
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_MOUNT_TIMEOUT",
        default_value_t = 5.0
    )]
    pub timeout: f64,

    /// This client's CURVE secret key (made by `dfs keygen`, mode 600); its public key must be
    /// in the broker's --allow-fetchers.
    #[arg(long, value_name = "FILE", env = "DFS_MOUNT_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,

    /// The broker's public key file (its NAME.pub): with --secret-key, the link uses CURVE.
    #[arg(long, value_name = "FILE", env = "DFS_MOUNT_BROKER_KEY")]
    pub broker_key: Option<PathBuf>,

    /// Most bytes of closed files' contents kept on disk for later reads (contents of open
    /// files stay while open); small files are kept in memory, up to 64 MiB of them.
    #[arg(
        long,
        value_name = "SIZE",
        env = "DFS_MOUNT_CACHE_SIZE",
        default_value = "1GiB"
    )]
    pub cache_size: bytesize::ByteSize,

    /// Folder for the cached contents of large files (unnamed files, gone when the mount
    /// stops); default $XDG_CACHE_HOME/dfs, ~/.cache/dfs or the temporary folder.
    #[arg(long, value_name = "DIR", env = "DFS_MOUNT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// How often the listing is read again, in seconds (at least ten times as long as a
    /// listing takes).
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_MOUNT_REFRESH",
        default_value_t = 2.0
    )]
    pub refresh: f64,

    /// Read large files through this process instead of letting the kernel read their verified
    /// cache files directly (FUSE passthrough, used by default where the kernel has it: Linux
    /// 6.9 and later, as root).
    #[arg(long, env = "DFS_MOUNT_NO_PASSTHROUGH")]
    pub no_passthrough: bool,

    /// Write a JSON line here once the folder is mounted (for scripts and tests).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Runs `dfs mount` until SIGINT or SIGTERM, then unmounts. Exit codes: 0 after a clean stop,
/// 1 the folder cannot be mounted, 2 usage error, 3 the broker is unreachable at start.
pub fn run(args: Args) -> u8 {
    match execute(&args, Shutdown::on_signals()) {
        Ok(()) => EXIT_OK,
        Err((code, line)) => {
            eprintln!("dfs mount: {line}");
            code
        }
    }
}

type Failure = (u8, String);

fn usage(line: String) -> Failure {
    (EXIT_USAGE, line)
}

fn execute(args: &Args, stop: &Shutdown) -> Result<(), Failure> {
    daemon::check_secs("--timeout", args.timeout).map_err(usage)?;
    daemon::check_secs("--refresh", args.refresh).map_err(usage)?;
    let at = args
        .at
        .as_deref()
        .map(|t| fetcher::parse_time(t, fetcher::now_ns()))
        .transpose()
        .map_err(usage)?;
    let (host, port) = daemon::host_port(&args.broker, schema::ports::FETCH_PORT).map_err(usage)?;
    let endpoint = net::socket::endpoint(&host, port);
    let dir = place::prepare(&args.dir).map_err(|e| (EXIT_FILE, e.to_string()))?;
    let cache_dir = cache_dir(args.cache_dir.as_deref()).map_err(|e| (EXIT_FILE, e))?;
    let auth = fetcher::client::broker_auth(
        &endpoint,
        args.secret_key.as_deref(),
        args.broker_key.as_deref(),
    )
    .map_err(|e| (e.exit_code(), e.to_string()))?;
    let link = Endpoint {
        endpoint: endpoint.clone(),
        auth,
        timeout: args.timeout,
        stop: stop.clone(),
    };

    // The first listing, before anything is mounted: an unreachable broker is said at once.
    let views: Arc<OnceLock<Arc<Views>>> = Arc::new(OnceLock::new());
    let set_views = views.clone();
    let refresh = if at.is_some() {
        // The past does not change, but retention may end what it shows.
        Duration::from_secs(60)
    } else {
        Duration::from_secs_f64(args.refresh)
    };
    let lister = Lister::start(link.clone(), at, refresh, move |tree| {
        match set_views.get() {
            Some(v) => v.replace_main(tree),
            None => {
                let _ = set_views.set(Arc::new(Views::new(tree, at)));
            }
        }
    })
    .map_err(|e| (EXIT_UNREACHABLE, format!("the broker at {endpoint}: {e}")))?;
    let views = views
        .get()
        .cloned()
        .expect("the first listing made the views");
    views.set_lister(lister);

    let cache = Arc::new(Cache::new(args.cache_size.as_u64()));
    let fetcher = Fetcher::start(&link, cache.clone(), cache_dir.clone());
    let fs = fs::DfsFs::new(views.clone(), cache, fetcher, !args.no_passthrough);
    let main = views.main();
    info!(
        "mounting {} files ({}) of {endpoint} at {}{}",
        main.files(),
        bytesize::ByteSize(main.bytes()),
        dir.display(),
        at.map(|t| format!(" as they were at {}", schema::time::rfc3339(t)))
            .unwrap_or_default()
    );
    if main.get(fs::HISTORY_DIR).is_some() {
        warn!(
            "the store has a top-level {0}; DIR/{0} is the view of the past, so reach the stored \
             one with dfs fetch",
            fs::HISTORY_DIR
        );
    }
    if main.shadowed() > 0 {
        warn!(
            "{} names are not shown: a folder has the same path",
            main.shadowed()
        );
    }
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("dfs".into()),
        MountOption::Subtype("dfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
    ];
    config.acl = SessionACL::Owner;
    config.n_threads = Some(4);
    let session = fuser::Session::new(fs, &dir, &config).map_err(|e| {
        (
            EXIT_FILE,
            format!(
                "cannot mount {}: {e} (FUSE needs /dev/fuse, and fusermount3 from the fuse3 \
                 package when not run as root)",
                dir.display()
            ),
        )
    })?;
    let background = session
        .spawn()
        .map_err(|e| (EXIT_FILE, format!("cannot start serving the mount: {e}")))?;
    let ready = serde_json::json!({
        "role": "mount",
        "mount": dir.display().to_string(),
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
    info!("mounted at {}; SIGINT or SIGTERM unmounts", dir.display());
    while !stop.is_triggered() && !background.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(daemon::POLL_MS as u64));
    }
    if background.guard.is_finished() {
        info!("{} was unmounted; stopping", dir.display());
        let _ = background.join();
        return Ok(());
    }
    stop.trigger();
    match background.umount_and_join() {
        Ok(()) => info!("unmounted {}", dir.display()),
        Err(e) => {
            // Busy (a shell's folder inside, an open file): detach it, so it goes once free.
            warn!("unmounting {}: {e}; detaching it instead", dir.display());
            place::detach(&dir).map_err(|why| {
                (
                    EXIT_FILE,
                    format!("cannot unmount {}: {why}", dir.display()),
                )
            })?;
        }
    }
    Ok(())
}

/// The cache folder: `--cache-dir`, else `$XDG_CACHE_HOME/dfs`, `~/.cache/dfs`, or the
/// temporary folder; created (mode 700) when missing.
fn cache_dir(given: Option<&std::path::Path>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("dfs"))
            .unwrap_or_else(std::env::temp_dir),
    };
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create the cache folder {}: {e}", dir.display()))?;
    Ok(dir)
}
