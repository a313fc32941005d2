//! Metrics plumbing every daemon shares: the `--metrics ADDR` endpoint (Prometheus text format
//! on `GET /metrics`, served by a small thread), the metric types, the latency buckets, the
//! error-kind labels and the metrics every role exports (`dfs_build_info`,
//! `process_start_time_seconds`).
//!
//! Each role keeps its own metrics in its crate's `metrics.rs`: plain counters, gauges and
//! histograms (atomics; a histogram takes a short lock per observation, so it is observed once
//! per file or request, never per chunk) that its loops update, registered into a [`Registry`]
//! only when the endpoint is asked for.

use crate::Shutdown;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;
use schema::ErrorCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A label set naming one label.
pub type Label = [(&'static str, &'static str); 1];

/// Counters by error kind (label `kind`): the protocol's error codes (`no_space`, `io`, ...)
/// and a few kinds of the role's own (`unreachable`, ...).
pub type ErrorCounter = Family<Label, Counter>;

/// Latency histograms by operation (label `op`).
pub type LatencyFamily = Family<Label, Histogram>;

/// Histogram buckets for latencies: 1 ms doubling to about 65 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// A latency histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A family of latency histograms with [`latency_buckets`].
pub fn latency_family() -> LatencyFamily {
    Family::new_with_constructor(latency_histogram)
}

/// Counts one error of `kind`.
pub fn count_error(errors: &ErrorCounter, kind: &'static str) {
    errors.get_or_create(&[("kind", kind)]).inc();
}

/// The label value of an error code: its wire name.
pub fn code_kind(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadMessage => "bad_message",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::Unexpected => "unexpected",
        ErrorCode::BadName => "bad_name",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Uploading => "uploading",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Integrity => "integrity",
        ErrorCode::NoSpace => "no_space",
        ErrorCode::Io => "io",
        ErrorCode::UnknownTransfer => "unknown_transfer",
        ErrorCode::Busy => "busy",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::Unknown => "unknown",
    }
}

/// A registry holding the metrics every role exports: `dfs_build_info{role,version} 1` and
/// `process_start_time_seconds`.
pub fn registry_for(role: &'static str) -> Registry {
    let mut registry = Registry::default();
    let info = prometheus_client::metrics::info::Info::new(vec![
        ("role", role),
        ("version", schema::status::SOFTWARE_VERSION),
    ]);
    registry.register("dfs_build", "The dfs role and software version", info);
    let start: Gauge = Gauge::default();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    start.set(i64::try_from(secs).unwrap_or(i64::MAX));
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        start,
    );
    registry
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason} (--metrics takes HOST:PORT, for example 127.0.0.1:9100; port 0 picks a free one)")]
pub struct MetricsError {
    pub addr: String,
    pub reason: String,
}

/// The running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    stopping: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one) and serves `registry` on
    /// `GET /metrics` from a thread of its own.
    pub fn start(addr: &str, registry: Registry) -> Result<MetricsServer, MetricsError> {
        let fail = |reason: String| MetricsError {
            addr: addr.to_string(),
            reason,
        };
        let server = tiny_http::Server::http(addr).map_err(|e| fail(e.to_string()))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| fail("not an IP address".into()))?;
        let server = Arc::new(server);
        let stopping = Shutdown::new();
        let (s, stop, registry) = (server.clone(), stopping.clone(), Arc::new(registry));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&s, &registry, &stop))
            .map_err(|e| fail(format!("cannot start its thread: {e}")))?;
        tracing::info!("metrics on http://{bound}/metrics");
        Ok(MetricsServer {
            server,
            addr: bound,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address bound (with the port picked when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.trigger();
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers requests until the server is unblocked by a stop.
fn serve(server: &tiny_http::Server, registry: &Registry, stopping: &Shutdown) {
    loop {
        let request = match server.recv() {
            Ok(r) => r,
            Err(_) if stopping.is_triggered() => return,
            Err(e) => {
                tracing::debug!("metrics endpoint: {e}");
                continue;
            }
        };
        let response = answer(request.method(), request.url(), registry);
        if let Err(e) = request.respond(response) {
            tracing::debug!("metrics endpoint: cannot answer: {e}");
        }
    }
}

/// The response to `method url`: the metrics for `GET /metrics`, else 404 or 405.
fn answer(
    method: &tiny_http::Method,
    url: &str,
    registry: &Registry,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    use prometheus_client::encoding::prometheus_text::{encode, CONTENT_TYPE};
    let text = |code: u16, body: String, content_type: &str| {
        let header =
            tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
        tiny_http::Response::from_string(body)
            .with_status_code(code)
            .with_header(header)
    };
    let path = url.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return text(404, "dfs serves GET /metrics only\n".into(), "text/plain");
    }
    if *method != tiny_http::Method::Get && *method != tiny_http::Method::Head {
        return text(405, "use GET /metrics\n".into(), "text/plain");
    }
    let mut body = String::with_capacity(4096);
    match encode(&mut body, registry) {
        Ok(()) => text(200, body, CONTENT_TYPE),
        Err(e) => text(
            500,
            format!("cannot encode the metrics: {e}\n"),
            "text/plain",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_registry_in_prometheus_text_and_stops() {
        let mut registry = registry_for("test");
        let files: Counter = Counter::default();
        let errors = ErrorCounter::default();
        let latency = latency_family();
        registry.register("dfs_test_files", "Files", files.clone());
        registry.register("dfs_test_errors", "Errors by kind", errors.clone());
        registry.register("dfs_test_seconds", "Latency", latency.clone());
        files.inc_by(3);
        count_error(&errors, code_kind(ErrorCode::NoSpace));
        latency.get_or_create(&[("op", "put")]).observe(0.003);
        let server = MetricsServer::start("127.0.0.1:0", registry).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let page = get(addr, "/metrics");
        assert!(
            page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/1.0 200"),
            "{page}"
        );
        assert!(page.contains("text/plain; version=0.0.4"), "{page}");
        assert!(page.contains("\ndfs_test_files_total 3\n"), "{page}");
        assert!(
            page.contains("dfs_test_errors_total{kind=\"no_space\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("dfs_test_seconds_count{op=\"put\"} 1"),
            "{page}"
        );
        assert!(
            page.contains("dfs_build_info{role=\"test\",version=\""),
            "{page}"
        );
        assert!(page.contains("process_start_time_seconds "), "{page}");
        assert!(get(addr, "/").contains(" 404 "));
        drop(server);
        // Stopped: the port refuses, or (taken at once by another test's socket) serves no
        // metrics within a second.
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            s.set_read_timeout(Some(std::time::Duration::from_secs(1)))
                .unwrap();
            let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            assert!(
                !out.contains("dfs_test_files_total"),
                "still serving: {out}"
            );
        }
    }

    #[test]
    fn a_bad_address_is_a_clear_error() {
        let e = MetricsServer::start("not an address", Registry::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not an address"), "{e}");
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
    }
}
