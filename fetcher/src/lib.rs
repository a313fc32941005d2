//! `dfs fetch`: lists the stored files, or retrieves named files into a target folder (or one
//! file to standard output).
//!
//! The fetcher is a one-shot client of the broker's fetch port (PROTOCOL.md): `list` pages for a
//! listing, `get` then `credit`/`chunk` for a read. Every wait is bounded by `--timeout`; every
//! failure prints one line on stderr naming the file, the broker and the reason; the exit code
//! is decided in [`execute`] (see [`error`] for the codes).
//!
//! Files: `client.rs` (the link to the broker), `list.rs` (listing formats), `transfer.rs` (one
//! read under credit), `save.rs` (temporary file, hash check, rename into the target),
//! `select.rs` (glob patterns and `--class`), `progress.rs` (the bar on a terminal),
//! `human.rs` (sizes and ages, also used by `dfs status`).

pub mod client;
pub mod error;
pub mod history;
pub mod human;
pub mod list;
mod many;
mod progress;
mod save;
pub mod select;
pub mod transfer;

#[cfg(test)]
mod tests;

use crate::client::Client;
use crate::error::{FetchError, EXIT_OK, EXIT_USAGE};
use crate::list::Tree;
use crate::save::{TempFile, WriterSink};
use daemon::Shutdown;
use std::io::Write;
use std::path::PathBuf;
use tracing::debug;

/// Options of `dfs fetch`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Names of the files to retrieve (paths relative to the source folder), or glob patterns
    /// matched against the stored names (`'music/*.mp3'`, `'**/*.pdf'`; quote them from the
    /// shell); none lists the store.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Only files of this class (mp3, txt, pdf, others): in the listing, among the files a
    /// pattern matches, and for named files (others are refused).
    #[arg(long, value_name = "CLASS", env = "DFS_FETCH_CLASS")]
    pub class: Option<schema::Class>,

    /// Folder the retrieved files are written into (sub-folders are recreated).
    #[arg(
        long,
        value_name = "DIR",
        env = "DFS_FETCH_TARGET",
        default_value = "./target_folder"
    )]
    pub target: PathBuf,

    /// The broker's fetch address, HOST[:PORT] (port 12346 when omitted).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "DFS_FETCH_BROKER",
        default_value = schema::ports::FETCH_ADDR
    )]
    pub broker: String,

    /// List as one JSON object per line (name, size, class, blake3, modified, version).
    #[arg(long)]
    pub json: bool,

    /// Write the content of the single NAME (taken literally) to FILE instead; only `-`
    /// (standard output) is supported.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<String>,

    /// Longest wait for any answer from the broker, in seconds (fractions allowed).
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_FETCH_TIMEOUT",
        default_value_t = 5.0
    )]
    pub timeout: f64,

    /// This fetcher's CURVE secret key (made by `dfs keygen`, mode 600); its public key must be
    /// in the broker's --allow-fetchers.
    #[arg(long, value_name = "FILE", env = "DFS_FETCH_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,

    /// The broker's public key file (its NAME.pub): with --secret-key, the link uses CURVE.
    #[arg(long, value_name = "FILE", env = "DFS_FETCH_BROKER_KEY")]
    pub broker_key: Option<PathBuf>,

    /// Retrieve version N of the one NAME given, current or kept in the history (`dfs history
    /// NAME` lists them), deleted names included.
    #[arg(long, value_name = "N", conflicts_with = "at")]
    pub version: Option<u64>,

    /// As the store was at TIME (RFC 3339, such as 2026-12-01T09:00:00Z, or an age such as 90m,
    /// 2h, 3d), deleted files included: without NAME the listing of then; with names or
    /// patterns, the versions current then.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Mode<'a> {
    List { json: bool },
    Save { names: &'a [String] },
    Stdout { name: &'a str },
}

/// Runs `dfs fetch` and returns its exit code: 0 success, 1 a per-file failure, 2 usage error,
/// 3 broker or storage unreachable, timed out or asking to retry later, 4 integrity failure.
pub fn run(args: Args) -> u8 {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let code = execute(
        &args,
        &mut out,
        &mut std::io::stderr(),
        Shutdown::on_signals(),
    );
    match out.flush() {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("dfs fetch: cannot write to standard output: {e}");
            code.max(error::EXIT_FILE)
        }
    }
}

/// Does what `args` ask, writing results to `out` and failure lines to `err`; returns the exit
/// code. [`run`] calls it with standard output and standard error.
pub fn execute(args: &Args, out: &mut dyn Write, err: &mut dyn Write, stop: &Shutdown) -> u8 {
    let mut report = |subject: Option<&str>, e: &FetchError, endpoint: &str| -> u8 {
        if !matches!(e, FetchError::BrokenPipe) {
            let _ = writeln!(err, "{}", e.line(subject, endpoint));
        }
        e.exit_code()
    };
    let (mode, endpoint) = match usage(args) {
        Ok(ok) => ok,
        Err(e) => {
            let _ = writeln!(err, "dfs fetch: {e}");
            return EXIT_USAGE;
        }
    };
    // One instant for every name, however long the retrieval takes.
    let at = match args.at.as_deref().map(|text| parse_time(text, now_ns())) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            let _ = writeln!(err, "dfs fetch: {e}");
            return EXIT_USAGE;
        }
    };
    // Refused names cost exit 1 and are never sent or written.
    let mut code = EXIT_OK;
    let wanted: Vec<&str> = match mode {
        Mode::List { .. } => Vec::new(),
        Mode::Save { names } => names.iter().map(String::as_str).collect(),
        Mode::Stdout { name } => vec![name],
    };
    let mut valid = Vec::with_capacity(wanted.len());
    let mut patterns = Vec::new();
    for name in wanted {
        if matches!(mode, Mode::Save { .. }) && select::is_pattern(name) {
            match select::Pattern::new(name) {
                Ok(p) => patterns.push(p),
                Err(e) => {
                    let _ = writeln!(err, "dfs fetch: {e}");
                    return EXIT_USAGE;
                }
            }
            continue;
        }
        match schema::names::check(name) {
            Ok(()) => valid.push(name.to_string()),
            Err(e) => code = code.max(report(Some(name), &FetchError::BadName(e), &endpoint)),
        }
    }
    if valid.is_empty() && patterns.is_empty() && !matches!(mode, Mode::List { .. }) {
        return code;
    }
    let auth = match client::broker_auth(
        &endpoint,
        args.secret_key.as_deref(),
        args.broker_key.as_deref(),
    ) {
        Ok(auth) => auth,
        Err(e) => return code.max(report(None, &e, &endpoint)),
    };
    let mut client = match client::connect(&endpoint, &auth, args.timeout, stop.clone()) {
        Ok(c) => c,
        Err(e) => return code.max(report(None, &e, &endpoint)),
    };
    let tree = at.map_or(Tree::Now, Tree::At);
    match mode {
        Mode::List { json } => {
            if let Err(e) = list::list(&mut client, tree, json, args.class, out) {
                code = code.max(report(Some("listing"), &e, &endpoint));
            }
        }
        Mode::Stdout { .. } => {
            let name = &valid[0];
            let result = pick_version(&mut client, name, args, at)
                .and_then(|v| to_writer(&mut client, name, (args.class, v), out));
            if let Err(e) = result {
                let _ = out.flush();
                code = code.max(report(Some(name), &e, &endpoint));
            }
        }
        Mode::Save { .. } => {
            // The version of each name a pattern matched in a listing as of `--at`.
            let mut listed_at = std::collections::HashMap::new();
            // Names a pattern matched whose file the target already holds (same size and
            // BLAKE3 as listed): left alone without asking the broker.
            let mut in_target = std::collections::HashSet::new();
            if !patterns.is_empty() {
                let mut checker = save::InTarget::start(&args.target);
                let listed = select::expand(&mut client, tree, &mut patterns, args.class, |page| {
                    checker.check(page)
                });
                let there = checker.finish();
                match listed {
                    Ok(found) => {
                        for p in patterns.iter().filter(|p| p.hits == 0) {
                            let e = FetchError::NoMatch { class: args.class };
                            code = code.max(report(Some(&p.text), &e, &endpoint));
                        }
                        let named: std::collections::HashSet<String> =
                            valid.iter().cloned().collect();
                        let found: Vec<schema::Entry> = found
                            .into_iter()
                            .filter(|e| !named.contains(&e.name))
                            .collect();
                        in_target = there;
                        for e in found {
                            if in_target.contains(&e.name) {
                                continue;
                            }
                            if at.is_some() {
                                listed_at.insert(e.name.clone(), e.version);
                            }
                            valid.push(e.name);
                        }
                    }
                    Err(e) => return code.max(report(Some("listing"), &e, &endpoint)),
                }
            }
            debug!(
                left_alone = in_target.len(),
                "files already in the target as listed"
            );
            if valid.len() > 1 {
                return code.max(save_many(&mut client, args, &valid, (at, &listed_at), err));
            }
            // Once the link is broken, later names are reported, not waited for.
            let mut broken: Option<FetchError> = None;
            for name in &valid {
                let result = match &broken {
                    Some(cause) => Err(FetchError::NotTried {
                        reason: cause.to_string(),
                        code: cause.exit_code(),
                    }),
                    None => match listed_at.get(name) {
                        Some(v) => Ok(Some(*v)),
                        None => pick_version(&mut client, name, args, at),
                    }
                    .and_then(|v| save(&mut client, &args.target, name, (args.class, v))),
                };
                if let Err(e) = result {
                    code = code.max(report(Some(name), &e, &endpoint));
                    if e.is_link_failure() && broken.is_none() {
                        broken = Some(e);
                    }
                }
            }
        }
    }
    code
}

/// Retrieves several names into the target, many at a time ([`many`]), the large ones one by
/// one after; `listed_at` holds the versions an `--at` listing found. Returns the exit code.
fn save_many(
    client: &mut Client,
    args: &Args,
    names: &[String],
    (at, listed_at): (Option<i64>, &std::collections::HashMap<String, u64>),
    err: &mut dyn Write,
) -> u8 {
    let endpoint = client.endpoint().to_string();
    let mut code = EXIT_OK;
    let mut report = |name: &str, e: &FetchError| {
        if !matches!(e, FetchError::BrokenPipe) {
            let _ = writeln!(err, "{}", e.line(Some(name), &endpoint));
        }
        code = code.max(e.exit_code());
    };
    let mut wanted = Vec::with_capacity(names.len());
    for name in names {
        let version = match listed_at.get(name) {
            Some(v) => Ok(Some(*v)),
            None => pick_version(client, name, args, at),
        };
        match version {
            Ok(v) => wanted.push((name.clone(), v)),
            Err(e) => {
                report(name, &e);
                if e.is_link_failure() {
                    return code;
                }
            }
        }
    }
    let (outcomes, mut broken) = many::save_all(client, &args.target, &wanted, args.class);
    for ((name, version), outcome) in wanted.iter().zip(outcomes) {
        let result = match outcome {
            many::Outcome::Done => Ok(()),
            many::Outcome::Failed(e) => Err(e),
            many::Outcome::Later => match &broken {
                Some((reason, code)) => Err(FetchError::NotTried {
                    reason: reason.clone(),
                    code: *code,
                }),
                None => save(client, &args.target, name, (args.class, *version)),
            },
        };
        if let Err(e) = result {
            report(name, &e);
            if e.is_link_failure() && broken.is_none() {
                broken = Some((e.to_string(), e.exit_code()));
            }
        }
    }
    code
}

/// Checks the combination of options and returns the mode and the broker's endpoint.
fn usage(args: &Args) -> Result<(Mode<'_>, String), FetchError> {
    let bad = |s: String| Err(FetchError::Usage(s));
    daemon::check_secs("--timeout", args.timeout).map_err(FetchError::Usage)?;
    let (host, port) =
        daemon::host_port(&args.broker, schema::ports::FETCH_PORT).map_err(FetchError::Usage)?;
    let endpoint = net::socket::endpoint(&host, port);
    let mode = match (&args.output, args.names.as_slice()) {
        (Some(o), _) if o != "-" => {
            return bad(format!(
            "-o {o:?}: only `-o -` (standard output) is supported; use --target DIR to write files"
        ))
        }
        (Some(_), _) if args.json => return bad("--json lists; it does not go with -o".into()),
        (Some(_), [name]) => Mode::Stdout { name },
        (Some(_), names) => {
            return bad(format!(
                "-o - writes exactly one file, but {} names were given",
                names.len()
            ))
        }
        (None, []) => Mode::List { json: args.json },
        (None, _) if args.json => return bad("--json is for listing; give no NAME with it".into()),
        (None, names) => Mode::Save { names },
    };
    if args.version.is_some() {
        match args.names.as_slice() {
            [name] if !select::is_pattern(name) => {}
            _ => {
                return bad("--version retrieves one NAME (not a pattern); give exactly one".into())
            }
        }
    }
    Ok((mode, endpoint))
}

/// The version of `name` to retrieve: `--version`, the one current at the instant `at` of
/// `--at` (asking the node's history), or the current one (`None`).
fn pick_version(
    client: &mut Client,
    name: &str,
    args: &Args,
    at: Option<i64>,
) -> Result<Option<u64>, FetchError> {
    let Some(t) = at else {
        return Ok(args.version);
    };
    let versions = history::versions(client, name)?;
    match history::current_at(&versions, t) {
        Some(v) => Ok(Some(v.version)),
        None => Err(FetchError::Remote {
            code: schema::ErrorCode::NotFound,
            message: format!("it did not exist at {}", args.at.as_deref().unwrap_or("")),
        }),
    }
}

/// A time given as RFC 3339 or as an age before `now` (`90m`, `2h`, `3d`), in ns.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(schema::time::to_ns(t));
    }
    match humantime::parse_duration(text) {
        Ok(age) => Ok(now.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "--at {text:?}: give a time (2026-12-01T09:00:00Z) or an age (90m, 2h, 3d)"
        )),
    }
}

/// Now, in ns since the Unix epoch (the `now` of [`parse_time`]).
pub fn now_ns() -> i64 {
    schema::time::to_ns(std::time::SystemTime::now())
}

/// Asks for `name` and checks it is of `class` (when given) before any content moves.
fn request(
    client: &mut Client,
    name: &str,
    class: Option<schema::Class>,
    version: Option<u64>,
) -> Result<transfer::Started, FetchError> {
    let started = transfer::request(client, name, version)?;
    match class {
        Some(wanted) if started.entry.class != wanted => {
            let found = started.entry.class;
            started.abandon(client);
            Err(FetchError::OtherClass { found, wanted })
        }
        _ => Ok(started),
    }
}

/// Retrieves `name` into `target`: temporary file, hash check, modification time, rename.
fn save(
    client: &mut Client,
    target: &std::path::Path,
    name: &str,
    (class, version): (Option<schema::Class>, Option<u64>),
) -> Result<(), FetchError> {
    let started = request(client, name, class, version)?;
    let size = started.entry.size;
    let dest = match save::destination(target, name) {
        Ok(dest) => dest,
        Err(e) => {
            started.abandon(client);
            return Err(e);
        }
    };
    if save::already_there(&dest, &started.entry) {
        debug!(
            name,
            "already in the target with the same content: left alone"
        );
        started.abandon(client);
        return Ok(());
    }
    let opened = TempFile::beside(&dest, size).map(|temp| (temp, dest));
    let (mut temp, dest) = match opened {
        Ok(ok) => ok,
        Err(e) => {
            started.abandon(client);
            return Err(e);
        }
    };
    let entry = started.entry.clone();
    progress::receive(started, client, &mut temp)?;
    temp.persist(entry.modified, (target, &dest), &Default::default())?;
    debug!(
        name,
        size = entry.size,
        version = entry.version,
        broker = client.endpoint(),
        "retrieved"
    );
    Ok(())
}

/// Streams `name` to `out`; the hash is checked at the end, after the bytes went out.
fn to_writer(
    client: &mut Client,
    name: &str,
    (class, version): (Option<schema::Class>, Option<u64>),
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let started = request(client, name, class, version)?;
    progress::receive(started, client, &mut WriterSink(&mut *out))?;
    out.flush().map_err(error::stdout_error)
}
