//! `dfs fsck`: checks the index against what the storage node holds, by asking the running
//! broker (`--broker`) or, with the broker stopped, by opening its index and asking the node
//! itself (`--data DIR --storage HOST[:BASEPORT]`). One line per finding and a summary on
//! standard output; exit 0 clean, 1 findings, 2 usage, 3 a peer unreachable or timed out.

use broker::fsck::{self, Audit, CHECK_LIMIT};
use broker::{Index, IndexError};
use daemon::host_port;
use net::client::{Client, ClientError};
use net::security::{client_auth, ClientAuth, ClientOptions};
use net::socket::endpoint;
use schema::route::SERVE_OFFSET;
use schema::{Class, Finding, FindingKind, Message};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `dfs fsck`.
#[derive(clap::Args, Debug, Clone)]
pub struct FsckArgs {
    /// Ask the running broker, HOST[:PORT]: its fetch port (12346 when omitted), or with
    /// --repair its ingest port (12345 when omitted).
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "data")]
    pub broker: Option<String>,
    /// With the broker stopped: its data folder (the index DATA/index.db is opened directly).
    #[arg(long, value_name = "DIR", requires = "storage")]
    pub data: Option<PathBuf>,
    /// With --data: the storage node, HOST[:BASEPORT] (port 9000 when omitted).
    #[arg(long, value_name = "HOST[:BASEPORT]", requires = "data")]
    pub storage: Option<String>,
    /// Make the index agree with the node: remove missing names, adopt intact extra files, and
    /// set corrupt files aside on the node (ROOT/.dfs/quarantine) so the watcher re-sends them.
    #[arg(long)]
    pub repair: bool,
    /// One JSON object per finding, then one with the summary.
    #[arg(long)]
    pub json: bool,
    /// Longest wait for any one answer, in seconds (a page re-hashes up to 64 MiB on the node).
    #[arg(
        long,
        value_name = "SECS",
        env = "DFS_FSCK_TIMEOUT",
        default_value_t = 120.0
    )]
    pub timeout: f64,
    /// A CURVE secret key (made by `dfs keygen`, mode 600) allowed where fsck connects: a
    /// fetcher's key for --broker, a watcher's for --broker with --repair, the broker's own for
    /// --storage.
    #[arg(long, value_name = "FILE", env = "DFS_FSCK_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,
    /// With --broker: the broker's public key file; the link then uses CURVE.
    #[arg(
        long,
        value_name = "FILE",
        env = "DFS_FSCK_BROKER_KEY",
        conflicts_with = "storage_key"
    )]
    pub broker_key: Option<PathBuf>,
    /// With --storage: the storage node's public key file; the links then use CURVE.
    #[arg(long, value_name = "FILE", env = "DFS_FSCK_STORAGE_KEY")]
    pub storage_key: Option<PathBuf>,
}

use daemon::exit::{FAILURE, UNREACHABLE as EXIT_UNREACHABLE, USAGE};

/// Why the check could not finish: its exit code and one line.
struct Failure {
    code: u8,
    text: String,
}

impl From<IndexError> for Failure {
    fn from(e: IndexError) -> Failure {
        Failure {
            code: FAILURE,
            text: e.to_string(),
        }
    }
}

/// Runs `dfs fsck` and returns its exit code.
pub fn run(args: FsckArgs) -> u8 {
    let stdout = std::io::stdout();
    let mut report = Report::new(args.json, stdout.lock());
    let result = if !(args.timeout.is_finite() && args.timeout > 0.0) {
        Err(Failure {
            code: USAGE,
            text: format!(
                "--timeout {} is not a positive number of seconds",
                args.timeout
            ),
        })
    } else {
        match (&args.broker, &args.data, &args.storage) {
            (Some(broker), None, None) => ask_broker(&args, broker, &mut report),
            (None, Some(data), Some(storage)) => check_offline(&args, data, storage, &mut report),
            _ => Err(Failure {
                code: USAGE,
                text: "give --broker HOST[:PORT], or --data DIR --storage HOST[:BASEPORT]".into(),
            }),
        }
    };
    match result {
        Ok(()) => report.finish(),
        Err(f) => {
            let _ = report.out.flush();
            eprintln!("dfs fsck: {}", f.text);
            f.code
        }
    }
}

/// Findings as they come, and the counts for the summary.
struct Report<W: Write> {
    json: bool,
    out: W,
    counts: BTreeMap<&'static str, u64>,
    repaired: u64,
    checked: u64,
}

impl<W: Write> Report<W> {
    fn new(json: bool, out: W) -> Report<W> {
        Report {
            json,
            out,
            counts: BTreeMap::new(),
            repaired: 0,
            checked: 0,
        }
    }

    fn add(&mut self, f: &Finding) {
        *self.counts.entry(f.kind.as_str()).or_default() += 1;
        self.repaired += u64::from(f.repaired);
        let hex = |h: &Option<schema::Hash>| h.map(|h| h.to_hex());
        let line = if self.json {
            serde_json::json!({
                "name": f.name,
                "kind": f.kind.as_str(),
                "indexed": hex(&f.indexed),
                "stored": hex(&f.stored),
                "content": hex(&f.content),
                "repaired": f.repaired,
                "note": f.note,
            })
            .to_string()
        } else {
            fsck::line(f)
        };
        let _ = writeln!(self.out, "{line}");
    }

    /// Prints the summary; the exit code: 1 if anything was found, else 0.
    fn finish(mut self) -> u8 {
        let found: u64 = self.counts.values().sum();
        let count = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        let summary = if self.json {
            serde_json::json!({
                "summary": true,
                "checked": self.checked,
                "missing": count("missing"),
                "extra": count("extra"),
                "corrupt": count("corrupt"),
                "differs": count("differs"),
                "kept_missing": count("kept_missing"),
                "kept_corrupt": count("kept_corrupt"),
                "repaired": self.repaired,
            })
            .to_string()
        } else {
            let kept = count("kept_missing") + count("kept_corrupt");
            format!(
                "fsck: {} files on the node checked: {} missing, {} extra, {} corrupt, {} \
                 differing{}{}",
                self.checked,
                count("missing"),
                count("extra"),
                count("corrupt"),
                count("differs"),
                if kept > 0 {
                    format!(
                        "; kept versions: {} without content, {} corrupt",
                        count("kept_missing"),
                        count("kept_corrupt")
                    )
                } else {
                    String::new()
                },
                if self.repaired > 0 {
                    format!("; {} repaired", self.repaired)
                } else {
                    String::new()
                }
            )
        };
        let _ = writeln!(self.out, "{summary}");
        let _ = self.out.flush();
        if found > 0 {
            FAILURE
        } else {
            daemon::exit::OK
        }
    }
}

/// The security of fsck's links to `peer` at `host`, whose key option is `server_option`.
fn link_auth(
    args: &FsckArgs,
    peer: &str,
    host: &str,
    server_key: Option<&std::path::Path>,
    server_option: &'static str,
) -> Result<ClientAuth, Failure> {
    client_auth(ClientOptions {
        peer,
        host,
        secret_key: args.secret_key.as_deref(),
        server_key,
        server_option,
        insecure: None,
    })
    .map_err(|e| Failure {
        code: USAGE,
        text: e.to_string(),
    })
}

/// A link to one peer with bounded waits (`net::client`), its failures as fsck's.
struct Peer {
    client: Client,
    endpoint: String,
}

impl Peer {
    /// Connects with the security `auth` and waits (at most the timeout) until the connection
    /// is up; a refused handshake is named in the failure.
    fn connect(ep: String, auth: &ClientAuth, timeout: Duration) -> Result<Peer, Failure> {
        match Client::connect(&ep, auth, timeout, None) {
            Ok(client) => Ok(Peer {
                client,
                endpoint: ep,
            }),
            Err(e) => Err(Peer::failure(&ep, e)),
        }
    }

    /// A failure of a request to the peer at `ep`: exit 3 where the peer or the store behind it
    /// is away or busy, 1 otherwise.
    fn failure(ep: &str, e: ClientError) -> Failure {
        match e {
            ClientError::Remote { code, message } => Failure {
                code: match code.retry() {
                    schema::Retry::StoreWide | schema::Retry::Request => EXIT_UNREACHABLE,
                    schema::Retry::Never => FAILURE,
                },
                text: format!("{ep}: {message}"),
            },
            e @ ClientError::BadReply { .. } => Failure {
                code: FAILURE,
                text: e.to_string(),
            },
            e => Failure {
                code: EXIT_UNREACHABLE,
                text: e.to_string(),
            },
        }
    }

    /// Sends `msg` with a fresh id; returns the id.
    fn send(&mut self, msg: Message) -> Result<u64, Failure> {
        let ep = &self.endpoint;
        self.client.request(msg).map_err(|e| Peer::failure(ep, e))
    }

    /// The next reply to `id`; an `error` reply becomes a failure naming the peer.
    fn reply(&self, id: u64) -> Result<Message, Failure> {
        self.client
            .reply(id)
            .map(|r| r.msg)
            .map_err(|e| Peer::failure(&self.endpoint, e))
    }
}

/// `--broker`: the broker compares; this side prints its findings pages.
fn ask_broker<W: Write>(
    args: &FsckArgs,
    broker: &str,
    report: &mut Report<W>,
) -> Result<(), Failure> {
    let default = if args.repair {
        schema::ports::INGEST_PORT
    } else {
        schema::ports::FETCH_PORT
    };
    let (host, port) = host_port(broker, default).map_err(|e| Failure {
        code: USAGE,
        text: format!("bad --broker: {e}"),
    })?;
    if args.storage_key.is_some() {
        return Err(Failure {
            code: USAGE,
            text: "--storage-key goes with --storage; with --broker give --broker-key".into(),
        });
    }
    let auth = link_auth(
        args,
        "the broker",
        &host,
        args.broker_key.as_deref(),
        "--broker-key",
    )?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut peer = Peer::connect(endpoint(&host, u32::from(port)), &auth, timeout)?;
    let id = peer.send(Message::Fsck {
        id: 0,
        repair: args.repair,
    })?;
    loop {
        match peer.reply(id)? {
            Message::Findings {
                findings,
                checked,
                more,
                ..
            } => {
                report.checked = checked;
                findings.iter().for_each(|f| report.add(f));
                if !more {
                    return Ok(());
                }
            }
            other => {
                return Err(Failure {
                    code: FAILURE,
                    text: format!("{} answered fsck with {}", peer.endpoint, other.kind()),
                })
            }
        }
    }
}

/// `--data --storage`: this side opens the stopped broker's index and asks the node.
/// Pages through the node's `check` answers (of its history with `history`), handing each page
/// to `each`.
fn check_pages(
    serve: &mut Peer,
    history: bool,
    mut each: impl FnMut(&[schema::CheckedFile]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut after: Option<String> = None;
    loop {
        let id = serve.send(Message::Check {
            id: 0,
            after: after.clone(),
            limit: CHECK_LIMIT,
            history,
        })?;
        let (files, more) = match serve.reply(id)? {
            Message::Checked { files, more, .. } => (files, more),
            other => {
                return Err(Failure {
                    code: FAILURE,
                    text: format!("{} answered check with {}", serve.endpoint, other.kind()),
                })
            }
        };
        each(&files)?;
        match files.last() {
            Some(last) if more => after = Some(schema::page::node_cursor(&last.entry)),
            _ => return Ok(()),
        }
    }
}

fn check_offline<W: Write>(
    args: &FsckArgs,
    data: &std::path::Path,
    storage: &str,
    report: &mut Report<W>,
) -> Result<(), Failure> {
    let index = Index::open_existing(&data.join("index.db")).map_err(|e| match e {
        IndexError::Locked { .. } => Failure {
            code: USAGE,
            text: format!("{e}; while the broker runs, use dfs fsck --broker"),
        },
        e => e.into(),
    })?;
    let (host, base) =
        host_port(storage, schema::ports::STORAGE_BASE_PORT).map_err(|e| Failure {
            code: USAGE,
            text: format!("bad --storage: {e}"),
        })?;
    if args.broker_key.is_some() {
        return Err(Failure {
            code: USAGE,
            text: "--broker-key goes with --broker; with --storage give --storage-key".into(),
        });
    }
    let auth = link_auth(
        args,
        "the storage node",
        &host,
        args.storage_key.as_deref(),
        "--storage-key",
    )?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let port = |offset: u16| endpoint(&host, u32::from(base) + u32::from(offset));
    let mut serve = Peer::connect(port(SERVE_OFFSET), &auth, timeout)?;
    let mut class_ports: BTreeMap<Class, Peer> = BTreeMap::new();
    let mut audit = Audit::default();
    check_pages(&mut serve, false, |files| {
        for file in files {
            let Some(mut finding) = audit.judge(&index, file)? else {
                continue;
            };
            if args.repair && finding.kind == FindingKind::Corrupt {
                let class = file.entry.class;
                let peer = match class_ports.entry(class) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(Peer::connect(port(class.port_offset()), &auth, timeout)?)
                    }
                };
                let id = peer.send(Message::Quarantine {
                    id: 0,
                    class,
                    name: finding.name.clone(),
                })?;
                match peer.reply(id) {
                    Ok(_) => fsck::forget(&index, &mut finding)?,
                    Err(f) if f.code == EXIT_UNREACHABLE => return Err(f),
                    Err(f) => finding.note = Some(format!("not set aside: {}", f.text)),
                }
            } else if args.repair {
                fsck::repair_index(&index, &mut finding, Some(file))?;
            }
            report.add(&finding);
        }
        report.checked = audit.checked;
        Ok(())
    })?;
    for mut finding in audit.missing(&index, |_| false)? {
        if args.repair {
            fsck::repair_index(&index, &mut finding, None)?;
        }
        report.add(&finding);
    }
    // Then every version the history keeps: its content must still be whole.
    check_pages(&mut serve, true, |files| {
        for file in files {
            if let Some(finding) = fsck::judge_kept(&mut audit, file) {
                report.add(&finding);
            }
        }
        Ok(())
    })?;
    if args.repair {
        index.flush()?;
        let out = broker::default_export_path(data);
        broker::export(&index, &out).map_err(|e| Failure {
            code: FAILURE,
            text: format!("repaired, but cannot rewrite {}: {e:#}", out.display()),
        })?;
    }
    Ok(())
}
