//! Runtime pieces every dfs process shares, none of them protocol: the exit codes of every
//! command ([`exit`]), the stop signal, the ready file and the service manager's readiness
//! notifications, `HOST[:PORT]` parsing, and ([`metrics`]) the `--metrics` endpoint with the
//! metric types every role uses.

pub mod exit;
pub mod metrics;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How long a daemon's poll loop waits before it looks at the stop signal again (ms).
pub const POLL_MS: i64 = 50;

/// Checks a duration option given in seconds (`--timeout`, `--refresh`): a number above 0 and
/// at most a day; the error is the usage line naming `option`.
pub fn check_secs(option: &str, secs: f64) -> Result<f64, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(secs)
    } else {
        Err(format!(
            "{option} {secs} is not a number of seconds between 0 and 86400"
        ))
    }
}

/// The stop signal: set once (Ctrl-C, SIGTERM, the end of a test), seen by every loop.
#[derive(Clone, Default, Debug)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// SIGINT/SIGTERM as a flag, for a command that stops on them by itself (`dfs fetch`,
    /// `dfs mount`, `dfs web`); a stop also tells the service manager (STOPPING=1). Installed
    /// once per process; when another handler owns the signals the flag simply never rises.
    pub fn on_signals() -> &'static Shutdown {
        static SIGNAL: std::sync::OnceLock<Shutdown> = std::sync::OnceLock::new();
        SIGNAL.get_or_init(|| {
            let stop = Shutdown::new();
            let handler = stop.clone();
            if let Err(e) = ctrlc::set_handler(move || {
                handler.trigger();
                notify_stopping();
            }) {
                tracing::debug!("SIGINT/SIGTERM handler not installed: {e}");
            }
            stop
        })
    }

    /// Asks every holder to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why a daemon could not say it is ready.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("{0}")]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot write the ready file {}: {source}", path.display())]
    ReadyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The one way a daemon says it is ready, once every socket is bound: starts the `--metrics`
/// endpoint when `metrics` gives its address (serving `registry`) and adds the bound address to
/// `ready` as `metrics`, writes `ready` to the `--ready-file` when one was given, and tells the
/// service manager ([`notify_ready`]). Keep the returned endpoint as long as the daemon runs.
pub fn announce_ready(
    mut ready: serde_json::Value,
    ready_file: Option<&Path>,
    metrics: Option<(&str, metrics::Registry)>,
) -> Result<Option<metrics::MetricsServer>, ReadyError> {
    let server = metrics
        .map(|(addr, registry)| metrics::MetricsServer::start(addr, registry))
        .transpose()?;
    if let Some(m) = &server {
        ready["metrics"] = m.local_addr().to_string().into();
    }
    if let Some(path) = ready_file {
        write_ready_file(path, &ready).map_err(|source| ReadyError::ReadyFile {
            path: path.to_path_buf(),
            source,
        })?;
    }
    notify_ready(&ready);
    Ok(server)
}

/// Writes `value` as one JSON line to `path` atomically (temporary file, then rename), so a
/// reader polling for the file never sees it half written.
pub fn write_ready_file(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-ready");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{value}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Tells the service manager (systemd's `Type=notify`, through `NOTIFY_SOCKET`) that every
/// socket is bound: `READY=1`, with `ready` (the ready file's JSON) as the status line. Call it
/// right after the ready file is written. Does nothing when `NOTIFY_SOCKET` is unset; a failure
/// to notify is logged, not fatal.
pub fn notify_ready(ready: &serde_json::Value) {
    let status = format!("ready {ready}");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}

/// Tells the service manager that the daemon is stopping (`STOPPING=1`). Does nothing when
/// `NOTIFY_SOCKET` is unset.
pub fn notify_stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        let socket = std::env::var_os("NOTIFY_SOCKET").unwrap_or_default();
        tracing::warn!(
            "cannot notify the service manager at NOTIFY_SOCKET={}: {e}",
            socket.to_string_lossy()
        );
    }
}

/// Splits `HOST[:PORT]` (IPv6 as `[::1]:PORT`), using `default_port` when none is given.
pub fn host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("address {s:?} {why} (expected HOST or HOST:PORT)");
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("has no closing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("has a bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("has text after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => Ok((s.to_string(), default_port)),
        Some((h, p)) => {
            if h.is_empty() {
                return Err(bad("has no host"));
            }
            Ok((h.to_string(), p.parse().map_err(|_| bad("has a bad port"))?))
        }
        None if s.is_empty() => Err(bad("is empty")),
        None => Ok((s.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        assert_eq!(host_port("h", 1).unwrap(), ("h".into(), 1));
        assert_eq!(host_port("h:9", 1).unwrap(), ("h".into(), 9));
        assert_eq!(host_port("[::1]:9", 1).unwrap(), ("::1".into(), 9));
        assert_eq!(host_port("[::1]", 1).unwrap(), ("::1".into(), 1));
        assert_eq!(host_port("::1", 1).unwrap(), ("::1".into(), 1));
        assert!(host_port("h:x", 1).is_err());
        assert!(host_port("", 1).is_err());
        assert!(host_port(":5", 1).is_err());
    }
}
