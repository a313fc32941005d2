//! `dfs status`: is everything up and in sync? Asks the broker (`status` on its fetch port),
//! which asks its storage node, and reads the status files of watchers run with
//! `--status-file`; prints one section per daemon, as a table or as one JSON object.
//!
//! Exit code: 0 everything is up and healthy; 3 the broker or the storage node is unreachable
//! or timed out; 1 reachable but not healthy (a watcher's status file missing, stale, or
//! reporting an error; the index being rebuilt; a full disk); 2 usage error. Each problem is
//! also one line on stderr naming the daemon and the reason.

use daemon::Shutdown;
use fetcher::error::{FetchError, EXIT_FILE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
use fetcher::human::{age, Size};
use schema::status::{BrokerReport, DiskSpace, NodeReport, WatcherReport};
use schema::{ErrorCode, Message};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Options of `dfs status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The broker's fetch address, HOST[:PORT] (port 12346 when omitted).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        env = "DFS_STATUS_BROKER",
        default_value = schema::ports::FETCH_ADDR
    )]
    pub broker: String,

    /// Print one JSON object (exact byte counts) instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Longest wait for the broker and, through it, the storage node, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_STATUS_TIMEOUT",
        default_value_t = 5.0
    )]
    pub timeout: f64,

    /// The status file of a watcher (its --status-file) to include; repeatable.
    #[arg(long = "status-file", value_name = "FILE", env = "DFS_STATUS_FILE")]
    pub status_files: Vec<PathBuf>,

    /// A watcher status file not rewritten for this many seconds means its watcher is stopped
    /// or stuck (watchers rewrite it at least every 10 s).
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_STATUS_STALE_AFTER",
        default_value_t = 30
    )]
    pub stale_after: u64,
    /// A fetcher's CURVE secret key (mode 600) allowed on the broker's fetch port.
    #[arg(long, value_name = "FILE", env = "DFS_STATUS_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,
    /// The broker's public key file (its NAME.pub): with --secret-key, the link uses CURVE.
    #[arg(long, value_name = "FILE", env = "DFS_STATUS_BROKER_KEY")]
    pub broker_key: Option<PathBuf>,
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    /// Reachable, but not healthy: exit 1.
    Unhealthy,
    /// The broker or the node cannot be reached: exit 3.
    Down,
}

/// One thing wrong, as one line: who, and what.
#[derive(Debug, Clone)]
struct Problem {
    severity: Severity,
    subject: String,
    reason: String,
}

impl Problem {
    /// `subject: reason`, or the reason alone when it names its subject itself.
    fn line(&self) -> String {
        if self.subject.is_empty() {
            self.reason.clone()
        } else {
            format!("{}: {}", self.subject, self.reason)
        }
    }
}

/// What the run found out.
#[derive(Debug, Default)]
struct Findings {
    broker: Value,
    storage: Value,
    watchers: Vec<Value>,
    problems: Vec<Problem>,
    /// Remarks that are not problems (they may be passing).
    notes: Vec<String>,
}

impl Findings {
    fn problem(
        &mut self,
        severity: Severity,
        subject: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem {
            severity,
            subject: subject.into(),
            reason: reason.into(),
        });
    }

    fn exit_code(&self) -> u8 {
        match self.problems.iter().map(|p| p.severity).max() {
            None => EXIT_OK,
            Some(Severity::Unhealthy) => EXIT_FILE,
            Some(Severity::Down) => EXIT_UNREACHABLE,
        }
    }
}

/// Runs `dfs status` with standard output and standard error; returns the exit code.
pub fn run(args: StatusArgs) -> u8 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = execute(&args, &mut out, &mut std::io::stderr(), &Shutdown::new());
    match out.flush() {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("dfs status: cannot write to standard output: {e}");
            code.max(EXIT_FILE)
        }
    }
}

/// Does what `args` ask, writing the report to `out` and one line per problem to `err`;
/// returns the exit code.
pub fn execute(args: &StatusArgs, out: &mut dyn Write, err: &mut dyn Write, stop: &Shutdown) -> u8 {
    if let Err(e) = daemon::check_secs("--timeout", args.timeout) {
        let _ = writeln!(err, "dfs status: {e}");
        return EXIT_USAGE;
    }
    let endpoint = match daemon::host_port(&args.broker, schema::ports::FETCH_PORT) {
        Ok((host, port)) => net::socket::endpoint(&host, port),
        Err(e) => {
            let _ = writeln!(err, "dfs status: {e}");
            return EXIT_USAGE;
        }
    };
    let auth = match fetcher::client::broker_auth(
        &endpoint,
        args.secret_key.as_deref(),
        args.broker_key.as_deref(),
    ) {
        Ok(auth) => auth,
        Err(e) => {
            let _ = writeln!(err, "dfs status: {e}");
            return EXIT_USAGE;
        }
    };
    let mut found = Findings::default();
    ask_broker(&endpoint, &auth, args.timeout, stop, &mut found);
    for file in &args.status_files {
        let w = read_watcher(file, Duration::from_secs(args.stale_after), &mut found);
        found.watchers.push(w);
    }
    let code = found.exit_code();
    let printed = if args.json {
        print_json(&found, code, out)
    } else {
        print_table(&found, out)
    };
    if let Err(e) = printed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(err, "dfs status: cannot write to standard output: {e}");
            return code.max(EXIT_FILE);
        }
    }
    for p in &found.problems {
        let _ = writeln!(err, "dfs status: {}", p.line());
    }
    code
}

/// Asks the broker at `endpoint` for its `broker_status`, and records both reports.
fn ask_broker(
    endpoint: &str,
    auth: &net::security::ClientAuth,
    secs: f64,
    stop: &Shutdown,
    found: &mut Findings,
) {
    found.broker = json!({"address": endpoint, "reachable": false});
    found.storage = json!({"address": null, "reachable": null});
    let subject = format!("broker {endpoint}");
    let asked =
        fetcher::client::connect(endpoint, auth, secs, stop.clone()).and_then(|mut client| {
            let id = client.new_id();
            // Leave the broker room to answer about a slow node before this side gives up.
            let wait_ms = (secs * 800.0).clamp(1.0, 60_000.0) as u32;
            client.send(&Message::Status {
                id,
                wait_ms: Some(wait_ms),
            })?;
            Ok(client.reply(id)?)
        });
    let reply = match asked {
        Ok(reply) => reply.msg,
        Err(FetchError::Remote {
            code: ErrorCode::Unexpected,
            message,
        }) => {
            found.broker["reachable"] = true.into();
            let why = format!("does not answer status (an older dfs?): {message}");
            return found.problem(Severity::Unhealthy, subject, why);
        }
        Err(e) => {
            let why = match &e {
                FetchError::Unreachable { .. } | FetchError::Timeout { .. } => {
                    format!("unreachable: no answer within {secs} s")
                }
                other => other.to_string(),
            };
            found.broker["error"] = why.clone().into();
            found.problem(Severity::Down, subject, why);
            return;
        }
    };
    let Message::BrokerStatus {
        broker,
        node,
        node_error,
        ..
    } = reply
    else {
        let why = format!("answered status with {}", reply.kind());
        return found.problem(Severity::Unhealthy, subject, why);
    };
    found.broker = broker_json(endpoint, &broker);
    if broker.rebuilding {
        let why = "is rebuilding its index from the storage node; changes wait until it is done";
        found.problem(Severity::Unhealthy, subject.clone(), why);
    }
    for alarm in &broker.alarms {
        found.problem(Severity::Unhealthy, subject.clone(), alarm.clone());
    }
    disk_check(found, &subject, &broker.data, broker.disk);
    let up = broker.storage_nodes.iter().filter(|n| n.reachable).count();
    for n in broker.storage_nodes.iter().filter(|n| !n.reachable) {
        let why = format!(
            "is unreachable; {up} of the {} storage nodes serve",
            broker.storage_nodes.len()
        );
        found.problem(
            Severity::Unhealthy,
            format!("storage node {}", n.address),
            why,
        );
    }
    let node_subject = format!("storage node {}", broker.storage);
    match node {
        Some(node) => {
            found.storage = node_json(&broker.storage, &node);
            disk_check(found, &node_subject, &node.root, node.disk);
            if node.files != broker.index_entries {
                found.notes.push(format!(
                    "the index lists {} files and the node holds {}: changes in flight, or \
                     run `dfs fsck` if this stays",
                    broker.index_entries, node.files
                ));
            }
        }
        None => {
            let why = node_error.unwrap_or_else(|| "no report".into());
            found.storage = json!({
                "address": broker.storage,
                "reachable": false,
                "error": why,
            });
            // The broker's reason names the node already.
            let subject = if why.contains(&broker.storage) {
                String::new()
            } else {
                node_subject
            };
            found.problem(Severity::Down, subject, why);
        }
    }
}

/// A full disk is a problem (uploads fail with `no_space`).
fn disk_check(found: &mut Findings, subject: &str, folder: &str, disk: DiskSpace) {
    if disk.total > 0 && disk.free == 0 {
        let why = format!("the disk of {folder} is full");
        found.problem(Severity::Unhealthy, subject, why);
    }
}

fn broker_json(endpoint: &str, b: &BrokerReport) -> Value {
    let mut v = serde_json::to_value(b).unwrap_or_default();
    v["address"] = endpoint.into();
    v["reachable"] = true.into();
    v
}

fn node_json(endpoint: &str, n: &NodeReport) -> Value {
    let mut v = serde_json::to_value(n).unwrap_or_default();
    v["address"] = endpoint.into();
    v["reachable"] = true.into();
    v
}

/// Reads a watcher's status file and judges it: missing, unreadable, stale, stopped, or
/// reporting an error are problems.
fn read_watcher(path: &Path, stale_after: Duration, found: &mut Findings) -> Value {
    let file = path.display().to_string();
    let subject = format!("watcher status file {file}");
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read it: {e}"))
        .and_then(|text| {
            serde_json::from_str::<Value>(&text).map_err(|e| format!("not a status file: {e}"))
        });
    let mut v = match parsed {
        Ok(v) if v.is_object() => v,
        Ok(_) => Value::Null,
        Err(why) => {
            found.problem(Severity::Unhealthy, subject, why.clone());
            return json!({"file": file, "healthy": false, "error": why});
        }
    };
    if v.is_null() {
        let why = "not a status file: not a JSON object".to_string();
        found.problem(Severity::Unhealthy, subject, why.clone());
        return json!({"file": file, "healthy": false, "error": why});
    }
    let report: WatcherReport = match serde_json::from_value(v.clone()) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("not a status file: {e}");
            found.problem(Severity::Unhealthy, subject, why.clone());
            return json!({"file": file, "healthy": false, "error": why});
        }
    };
    let subject = format!("watcher {} (pid {}, {file})", report.source, report.pid);
    let mut problems = Vec::new();
    let updated = report
        .updated_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let age_secs = updated.map(|t| {
        SystemTime::now()
            .duration_since(t)
            .unwrap_or_default()
            .as_secs()
    });
    match age_secs {
        None => problems.push("has no valid updated_at".to_string()),
        Some(a) if a > stale_after.as_secs() => problems.push(format!(
            "status not updated for {} (stopped or stuck?)",
            age(Duration::from_secs(a))
        )),
        Some(_) => {}
    }
    let stale = age_secs.is_none_or(|a| a > stale_after.as_secs());
    if !stale {
        if !report.running {
            problems.push("stopped".to_string());
        } else if let Some(e) = &report.error {
            problems.push(e.clone());
        }
        let refused = report.refused;
        if refused > 0 {
            problems.push(format!(
                "{refused} file(s) refused by the broker, not retried until they change \
                 (see last_error)"
            ));
        }
    }
    for why in &problems {
        found.problem(Severity::Unhealthy, subject.clone(), why.clone());
    }
    v["file"] = file.into();
    v["age_secs"] = age_secs.into();
    v["stale"] = stale.into();
    v["healthy"] = problems.is_empty().into();
    v
}

fn print_json(found: &Findings, code: u8, out: &mut dyn Write) -> std::io::Result<()> {
    let problems: Vec<String> = found.problems.iter().map(Problem::line).collect();
    let v = json!({
        "ok": code == EXIT_OK,
        "exit": code,
        "broker": found.broker,
        "storage": found.storage,
        "watchers": found.watchers,
        "problems": problems,
        "notes": found.notes,
    });
    writeln!(out, "{v:#}")
}

/// A JSON number as `u64` (0 when missing).
fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn disk_text(v: &Value, folder_key: &str) -> String {
    format!(
        "{} {} free of {}",
        v[folder_key].as_str().unwrap_or("?"),
        Size(num(&v["disk"]["free"])),
        Size(num(&v["disk"]["total"]))
    )
}

fn reach(v: &Value) -> &'static str {
    match v["reachable"].as_bool() {
        Some(true) => "up",
        Some(false) => "DOWN",
        None => "unknown",
    }
}

fn print_table(found: &Findings, out: &mut dyn Write) -> std::io::Result<()> {
    let b = &found.broker;
    let addr = |v: &Value| v["address"].as_str().unwrap_or("?").to_string();
    writeln!(out, "broker   {:<28} {}", addr(b), reach(b))?;
    if b.get("version").is_some() {
        writeln!(
            out,
            "         version {}, up {}, {} requests in flight",
            b["version"].as_str().unwrap_or("?"),
            age(Duration::from_secs(num(&b["uptime"]))),
            num(&b["in_flight"])
        )?;
        writeln!(
            out,
            "         index: {} files, {}{}",
            num(&b["index_entries"]),
            Size(num(&b["index_bytes"])),
            if b["rebuilding"] == true {
                " (rebuilding from the node)"
            } else {
                ""
            }
        )?;
        writeln!(out, "         disk: {}", disk_text(b, "data"))?;
        if let Some(nodes) = b["storage_nodes"].as_array() {
            let each: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let up = if n["reachable"] == true { "up" } else { "DOWN" };
                    format!("{} {up}", n["address"].as_str().unwrap_or("?"))
                })
                .collect();
            writeln!(out, "         storage nodes: {}", each.join(", "))?;
        }
    }
    let s = &found.storage;
    match s["address"].as_str() {
        Some(saddr) => writeln!(out, "storage  {saddr:<28} {}", reach(s))?,
        None => writeln!(
            out,
            "storage  {:<28} unknown (asked through the broker)",
            "?"
        )?,
    }
    if s.get("version").is_some() {
        writeln!(
            out,
            "         version {}, up {}, {} uploads and {} reads open",
            s["version"].as_str().unwrap_or("?"),
            age(Duration::from_secs(num(&s["uptime"]))),
            num(&s["uploads"]),
            num(&s["reads"])
        )?;
        let classes: Vec<String> = s["classes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        format!(
                            "{} {}",
                            c["class"].as_str().unwrap_or("?"),
                            num(&c["files"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        writeln!(
            out,
            "         stored: {} files, {} ({})",
            num(&s["files"]),
            Size(num(&s["bytes"])),
            classes.join(", ")
        )?;
        writeln!(
            out,
            "         history: {} kept contents, {} held by the history alone",
            num(&s["history_objects"]),
            Size(num(&s["history_bytes"]))
        )?;
        if let Some(backend) = s["backend"].as_str() {
            writeln!(
                out,
                "         backend: {backend} (the root holds transfers only)"
            )?;
        }
        writeln!(out, "         disk: {}", disk_text(s, "root"))?;
    } else if let Some(e) = s["error"].as_str() {
        writeln!(out, "         {e}")?;
    }
    for w in &found.watchers {
        print_watcher(w, out)?;
    }
    for note in &found.notes {
        writeln!(out, "note: {note}")?;
    }
    match found.problems.len() {
        0 => writeln!(out, "ok: everything is up and in sync"),
        1 => writeln!(out, "1 problem (see stderr)"),
        n => writeln!(out, "{n} problems (see stderr)"),
    }
}

fn print_watcher(w: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let state = if w.get("pid").is_none() {
        "unreadable"
    } else if w["stale"] == true {
        "STALE"
    } else if w["running"] == false {
        "stopped"
    } else if w["healthy"] == true {
        "up"
    } else {
        "ERROR"
    };
    writeln!(
        out,
        "watcher  {:<28} {state}",
        w["file"].as_str().unwrap_or("?")
    )?;
    if w.get("pid").is_none() {
        return writeln!(out, "         {}", w["error"].as_str().unwrap_or(""));
    }
    writeln!(
        out,
        "         pid {}, source {}, broker {}",
        w["pid"],
        w["source"].as_str().unwrap_or("?"),
        w["broker"].as_str().unwrap_or("?")
    )?;
    let ago = |key: &str| {
        w[key]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(|t| {
                let d = SystemTime::now().duration_since(t).unwrap_or_default();
                format!("{} ago", age(d))
            })
    };
    writeln!(
        out,
        "         {}; {} pending, {} in flight; {} files synced ({}), last sync {}; updated {}",
        if w["connected"] == true {
            "connected"
        } else {
            "not connected"
        },
        num(&w["pending"]),
        num(&w["in_flight"]),
        num(&w["files_synced"]),
        Size(num(&w["bytes_sent"])),
        ago("last_sync").unwrap_or_else(|| "never".into()),
        ago("updated_at").unwrap_or_else(|| "never".into()),
    )?;
    if let Some(e) = w["error"].as_str() {
        writeln!(out, "         error: {e}")?;
    }
    if let Some(m) = w["last_error"]["message"].as_str() {
        let when = w["last_error"]["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(|t| age(SystemTime::now().duration_since(t).unwrap_or_default()))
            .unwrap_or_else(|| "?".into());
        writeln!(out, "         last error {when} ago: {m}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(content: &Value, stale_after: u64) -> (Value, Findings) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        std::fs::write(&path, content.to_string()).unwrap();
        let mut found = Findings::default();
        let v = read_watcher(&path, Duration::from_secs(stale_after), &mut found);
        (v, found)
    }

    fn file(updated: SystemTime) -> Value {
        json!({
            "pid": 7, "source": "/src", "broker": "tcp://b:12345", "running": true,
            "connected": true, "error": null, "pending": 0, "in_flight": 0, "refused": 0,
            "files_synced": 1, "bytes_sent": 5, "last_sync": null, "last_error": null,
            "updated_at": humantime::format_rfc3339_millis(updated).to_string(),
        })
    }

    #[test]
    fn a_fresh_quiet_watcher_is_healthy() {
        let (v, found) = judge(&file(SystemTime::now()), 30);
        assert_eq!(v["healthy"], true, "{v:#}");
        assert_eq!(v["stale"], false);
        assert!(found.problems.is_empty());
        assert_eq!(found.exit_code(), EXIT_OK);
    }

    #[test]
    fn stale_stopped_failing_or_refusing_watchers_are_unhealthy() {
        let old = SystemTime::now() - Duration::from_secs(120);
        let (v, found) = judge(&file(old), 30);
        assert_eq!(v["stale"], true);
        assert_eq!(found.exit_code(), EXIT_FILE);
        assert!(
            found.problems[0].line().contains("not updated for 2m"),
            "{:?}",
            found.problems
        );

        let mut stopped = file(SystemTime::now());
        stopped["running"] = false.into();
        let (_, found) = judge(&stopped, 30);
        assert!(found.problems[0].line().ends_with("stopped"));

        let mut failing = file(SystemTime::now());
        failing["error"] = "broker tcp://b:12345 does not answer".into();
        failing["refused"] = 2.into();
        let (v, found) = judge(&failing, 30);
        assert_eq!(v["healthy"], false);
        let lines: Vec<String> = found.problems.iter().map(Problem::line).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("/src") && lines[0].contains("does not answer"));
        assert!(lines[1].contains("2 file(s) refused"));

        let (v, found) = judge(&json!([1, 2]), 30);
        assert_eq!(v["healthy"], false);
        assert!(found.problems[0].line().contains("not a JSON object"));
    }

    #[test]
    fn the_worst_problem_decides_the_exit_code() {
        let mut found = Findings::default();
        assert_eq!(found.exit_code(), EXIT_OK);
        found.problem(Severity::Unhealthy, "w", "stale");
        assert_eq!(found.exit_code(), EXIT_FILE);
        found.problem(
            Severity::Down,
            "",
            "storage node tcp://n:9004 is unreachable",
        );
        assert_eq!(found.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(
            found.problems[1].line(),
            "storage node tcp://n:9004 is unreachable"
        );
    }
}
