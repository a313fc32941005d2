//! `dfs history NAME...`: every version of each name the storage node holds, the current one
//! and those kept in its history (docs/CONTRACT.md §8), one line each: version, size, BLAKE3,
//! modification time, when it became current, and whether it is current, replaced or deleted.

use crate::client;
use crate::error::{FetchError, EXIT_OK, EXIT_USAGE};
use crate::human::Size;
use crate::list::Tree;
use crate::select;
use daemon::Shutdown;
use schema::{Message, VersionInfo};
use std::io::Write;
use std::path::PathBuf;

/// Options of `dfs history`.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    /// Stored names (with their volume, as `dfs fetch` lists them), or glob patterns matched
    /// against the names stored now and those deleted that the history still holds.
    #[arg(value_name = "NAME", required_unless_present = "deleted")]
    pub names: Vec<String>,
    /// List the names deleted (or moved away) that the history still holds, each with its
    /// last version; with NAMEs or patterns, only those.
    #[arg(long)]
    pub deleted: bool,
    /// The broker's fetch address, HOST[:PORT] (port 12346 when omitted).
    #[arg(long, value_name = "HOST[:PORT]", env = "DFS_FETCH_BROKER",
          default_value = schema::ports::FETCH_ADDR)]
    pub broker: String,
    /// One JSON object per version (name, version, size, class, blake3, modified, since,
    /// until, state).
    #[arg(long)]
    pub json: bool,
    /// Longest wait for any answer from the broker, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_FETCH_TIMEOUT",
        default_value_t = 5.0
    )]
    pub timeout: f64,
    /// A fetcher's CURVE secret key (as for `dfs fetch`).
    #[arg(long, value_name = "FILE", env = "DFS_FETCH_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,
    /// The broker's public key file (as for `dfs fetch`).
    #[arg(long, value_name = "FILE", env = "DFS_FETCH_BROKER_KEY")]
    pub broker_key: Option<PathBuf>,
}

/// Runs `dfs history`; the exit codes are `dfs fetch`'s (1: a name with no version at all).
pub fn run(args: HistoryArgs) -> u8 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    execute(&args, &mut out, &mut std::io::stderr(), &Shutdown::new())
}

/// `dfs history` with its output and errors going to `out` and `err`.
pub fn execute(
    args: &HistoryArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stop: &Shutdown,
) -> u8 {
    let (host, port) = match daemon::host_port(&args.broker, schema::ports::FETCH_PORT) {
        Ok(hp) => hp,
        Err(e) => {
            let _ = writeln!(err, "dfs history: {e}");
            return EXIT_USAGE;
        }
    };
    let endpoint = net::socket::endpoint(&host, port);
    let report = |err: &mut dyn Write, subject: Option<&str>, e: &FetchError| -> u8 {
        let _ = writeln!(err, "{}", e.line(subject, &endpoint));
        e.exit_code()
    };
    let auth = match client::broker_auth(
        &endpoint,
        args.secret_key.as_deref(),
        args.broker_key.as_deref(),
    ) {
        Ok(a) => a,
        Err(e) => return report(err, None, &e),
    };
    let mut client = match client::connect(&endpoint, &auth, args.timeout, stop.clone()) {
        Ok(c) => c,
        Err(e) => return report(err, None, &e),
    };
    let mut code = EXIT_OK;
    let mut patterns = Vec::new();
    let mut names = Vec::new();
    for name in &args.names {
        if select::is_pattern(name) {
            match select::Pattern::new(name) {
                Ok(p) => patterns.push(p),
                Err(e) => {
                    let _ = writeln!(err, "dfs history: {e}");
                    return EXIT_USAGE;
                }
            }
        } else if let Err(e) = schema::names::check(name) {
            code = code.max(report(err, Some(name), &FetchError::BadName(e)));
        } else {
            names.push(name.clone());
        }
    }
    if args.deleted || !patterns.is_empty() {
        match expand(&mut client, args.deleted, &mut names, &mut patterns) {
            Ok(()) => {
                for p in patterns.iter().filter(|p| p.hits == 0) {
                    let e = FetchError::NoMatch { class: None };
                    code = code.max(report(err, Some(&p.text), &e));
                }
            }
            Err(e) => return code.max(report(err, Some("listing"), &e)),
        }
    }
    for name in &names {
        match versions(&mut client, name) {
            Ok(all) if args.deleted => {
                if let Some(v) = all.last().filter(|v| v.until.is_some()) {
                    let _ = writeln!(out, "{}", line(name, v, args.json));
                }
            }
            Ok(all) if all.is_empty() => {
                let e = FetchError::Remote {
                    code: schema::ErrorCode::NotFound,
                    message: "no version of it is stored or kept".into(),
                };
                code = code.max(report(err, Some(name), &e));
            }
            Ok(all) => {
                for v in &all {
                    let _ = writeln!(out, "{}", line(name, v, args.json));
                }
            }
            Err(e) => {
                code = code.max(report(err, Some(name), &e));
                if e.is_link_failure() {
                    break;
                }
            }
        }
    }
    code
}

/// The names to show: with `deleted`, the deleted names the history holds that `names` or
/// `patterns` give (all of them when neither is given); else `names` and the names stored or
/// deleted that `patterns` match. Each once; counts each pattern's hits.
fn expand(
    client: &mut client::Client,
    deleted: bool,
    names: &mut Vec<String>,
    patterns: &mut [select::Pattern],
) -> Result<(), FetchError> {
    if !deleted {
        let mut seen: std::collections::HashSet<String> = names.iter().cloned().collect();
        for tree in [Tree::Now, Tree::Deleted] {
            for e in select::expand(client, tree, patterns, None, |_| ())? {
                if seen.insert(e.name.clone()) {
                    names.push(e.name);
                }
            }
        }
        return Ok(());
    }
    let wanted: std::collections::HashSet<String> = names.drain(..).collect();
    let everything = wanted.is_empty() && patterns.is_empty();
    crate::list::pages(client, Tree::Deleted, |entries| {
        for e in entries {
            let mut hit = everything || wanted.contains(&e.name);
            for p in patterns.iter_mut() {
                if p.matches(&e.name) {
                    p.hits += 1;
                    hit = true;
                }
            }
            if hit {
                names.push(e.name.clone());
            }
        }
        Ok(())
    })
}

/// The version of `versions` that was current at `t` (ns), if the name existed then.
pub fn current_at(versions: &[VersionInfo], t: i64) -> Option<&VersionInfo> {
    versions
        .iter()
        .rev()
        .find(|v| v.since <= t && v.until.is_none_or(|until| until > t))
}

/// The versions of `name`, oldest first.
pub fn versions(client: &mut client::Client, name: &str) -> Result<Vec<VersionInfo>, FetchError> {
    let id = client.new_id();
    client.send(&Message::History {
        id,
        name: name.to_string(),
    })?;
    let reply = client.reply(id)?;
    match reply.msg {
        Message::Versions { versions, .. } => Ok(versions),
        other => Err(FetchError::Protocol(format!(
            "expected versions in answer to history, got {}",
            other.kind()
        ))),
    }
}

/// Whether a version is current, was replaced, or was deleted (or moved away).
pub fn state(v: &VersionInfo) -> &'static str {
    match (v.until, v.deleted) {
        (None, _) => "current",
        (Some(_), true) => "deleted",
        (Some(_), false) => "replaced",
    }
}

/// One version as a line of the table, or as one JSON object.
fn line(name: &str, v: &VersionInfo, json: bool) -> String {
    let time = |ns: i64| schema::time::rfc3339(ns.max(0));
    if json {
        return serde_json::json!({
            "name": name,
            "version": v.version,
            "size": v.size,
            "class": v.class.as_str(),
            "blake3": v.blake3.to_string(),
            "modified": time(v.modified),
            "since": time(v.since),
            "until": v.until.map(time),
            "state": state(v),
        })
        .to_string();
    }
    let until = v.until.map_or_else(|| "-".to_string(), time);
    format!(
        "{}  v{}  {:>9}  {}  modified {}  current {} .. {}  {}",
        schema::names::escape(name),
        v.version,
        Size(v.size).to_string(),
        v.blake3,
        time(v.modified),
        time(v.since),
        until,
        state(v)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Hash};

    fn v(version: u64, since: i64, until: Option<i64>, deleted: bool) -> VersionInfo {
        VersionInfo {
            version,
            class: Class::Txt,
            size: 1,
            blake3: Hash::of(b"x"),
            modified: 0,
            since,
            until,
            deleted,
        }
    }

    #[test]
    fn the_version_current_at_an_instant() {
        // v1 from 10 to 20, v2 from 20 to 30 (then deleted), v3 current since 40.
        let all = [
            v(1, 10, Some(20), false),
            v(2, 20, Some(30), true),
            v(3, 40, None, false),
        ];
        let at = |t| current_at(&all, t).map(|v| v.version);
        assert_eq!(at(5), None, "before it existed");
        assert_eq!(at(10), Some(1));
        assert_eq!(at(25), Some(2));
        assert_eq!(at(35), None, "deleted then");
        assert_eq!(at(45), Some(3));
        assert_eq!(state(&all[1]), "deleted");
        assert_eq!(state(&all[2]), "current");
    }

    #[test]
    fn times_are_instants_or_ages() {
        let now = 100 * 3_600_000_000_000i64;
        assert_eq!(crate::parse_time("2h", now), Ok(98 * 3_600_000_000_000));
        let t = crate::parse_time("1970-01-01T00:00:01Z", now).unwrap();
        assert_eq!(t, 1_000_000_000);
        assert!(crate::parse_time("yesterday-ish", now).is_err());
    }
}
