//! The health of the store, as `dfs status` sees it (the same checks, through the same code),
//! sampled every [`EVERY`] on a thread of its own, and the samples behind the plots: files and
//! bytes stored per minute, the mean upload latency, the history's size. The plots cover the
//! last [`KEPT`] of samples, since this page started.

use crate::snapshot::lock;
use daemon::Shutdown;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often the status is sampled.
pub const EVERY: Duration = Duration::from_secs(5);

/// How much of the past the plots show.
pub const KEPT: Duration = Duration::from_secs(3600);

/// One sample of the counters behind the plots.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub t: f64,
    pub stored_files: u64,
    pub stored_bytes: u64,
    pub uploads: u64,
    pub upload_micros: u64,
    pub history_bytes: Option<u64>,
    pub broker_up: bool,
}

/// One plotted series: (seconds since the epoch, value) points.
pub struct Series {
    pub title: &'static str,
    pub unit: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// The latest status and the samples.
pub struct Health {
    latest: Mutex<(Value, SystemTime)>,
    samples: Mutex<VecDeque<Sample>>,
    args: status::StatusArgs,
    stop: Shutdown,
}

impl Health {
    /// Starts sampling `dfs status` with `args` until `stop`.
    pub fn start(args: status::StatusArgs, stop: Shutdown) -> Arc<Health> {
        let health = Arc::new(Health {
            latest: Mutex::new((
                json!({"broker": {"reachable": false}}),
                SystemTime::UNIX_EPOCH,
            )),
            samples: Mutex::new(VecDeque::new()),
            args,
            stop,
        });
        let h = health.clone();
        let started = std::thread::Builder::new()
            .name("web-health".into())
            .spawn(move || {
                while !h.stop.is_triggered() {
                    let began = Instant::now();
                    h.sample();
                    while began.elapsed() < EVERY && !h.stop.is_triggered() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        if let Err(e) = started {
            tracing::error!("cannot start the health sampler: {e}");
        }
        health
    }

    fn sample(&self) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = status::execute(&self.args, &mut out, &mut err, &self.stop);
        let mut v: Value = serde_json::from_slice(&out).unwrap_or_else(|_| {
            json!({"broker": {"reachable": false}, "problems": [String::from_utf8_lossy(&err).trim()]})
        });
        v["exit"] = code.into();
        let now = SystemTime::now();
        let b = &v["broker"];
        let a = &b["activity"];
        let sample = Sample {
            t: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            stored_files: a["stored_files"].as_u64().unwrap_or(0),
            stored_bytes: a["stored_bytes"].as_u64().unwrap_or(0),
            uploads: a["uploads"].as_u64().unwrap_or(0),
            upload_micros: a["upload_micros"].as_u64().unwrap_or(0),
            history_bytes: v["storage"]["history_bytes"].as_u64(),
            broker_up: b["reachable"].as_bool().unwrap_or(false),
        };
        {
            let mut s = lock(&self.samples);
            s.push_back(sample);
            while s
                .front()
                .is_some_and(|f| sample.t - f.t > KEPT.as_secs_f64())
            {
                s.pop_front();
            }
        }
        *lock(&self.latest) = (v, now);
    }

    /// The latest status, with the facts the page shows on top: `files`, `bytes`, `alarms`,
    /// `storage_nodes`, and when it was sampled.
    pub fn latest(&self) -> Value {
        let (mut v, when) = lock(&self.latest).clone();
        let b = v["broker"].clone();
        v["files"] = b["index_entries"].as_u64().unwrap_or(0).into();
        v["bytes"] = b["index_bytes"].as_u64().unwrap_or(0).into();
        v["alarms"] = b.get("alarms").cloned().unwrap_or_else(|| json!([]));
        v["storage_nodes"] = match b.get("storage_nodes") {
            Some(Value::Array(nodes)) if !nodes.is_empty() => Value::Array(nodes.clone()),
            _ => json!([{
                "address": v["storage"]["address"].clone(),
                "reachable": v["storage"]["reachable"].as_bool().unwrap_or(false),
            }]),
        };
        if v.get("watchers").is_none() {
            v["watchers"] = json!([]);
        }
        v["sampled"] = humantime::format_rfc3339_seconds(when).to_string().into();
        v
    }

    /// The plotted series, from the samples.
    pub fn series(&self) -> Vec<Series> {
        let samples: Vec<Sample> = lock(&self.samples).iter().copied().collect();
        rates(&samples)
    }
}

/// Per-minute rates between consecutive samples (a broker restart, whose counters start again,
/// gives no point), the mean upload latency of each interval, and the history's size.
pub fn rates(samples: &[Sample]) -> Vec<Series> {
    let mut files = Vec::new();
    let mut bytes = Vec::new();
    let mut latency = Vec::new();
    let mut history = Vec::new();
    for w in samples.windows(2) {
        let (a, b) = (w[0], w[1]);
        let dt = b.t - a.t;
        if dt <= 0.0 || !a.broker_up || !b.broker_up || b.stored_files < a.stored_files {
            continue;
        }
        let per_min = 60.0 / dt;
        files.push((b.t, (b.stored_files - a.stored_files) as f64 * per_min));
        bytes.push((
            b.t,
            (b.stored_bytes.saturating_sub(a.stored_bytes)) as f64 * per_min,
        ));
        let n = b.uploads.saturating_sub(a.uploads);
        if n > 0 {
            let micros = b.upload_micros.saturating_sub(a.upload_micros);
            latency.push((b.t, micros as f64 / n as f64 / 1000.0));
        }
    }
    for s in samples {
        if let Some(h) = s.history_bytes {
            history.push((s.t, h as f64));
        }
    }
    vec![
        Series {
            title: "files stored per minute",
            unit: "files/min",
            points: files,
        },
        Series {
            title: "bytes stored per minute",
            unit: "B/min",
            points: bytes,
        },
        Series {
            title: "upload latency (mean, put to done)",
            unit: "ms",
            points: latency,
        },
        Series {
            title: "history size",
            unit: "B",
            points: history,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, files: u64, bytes: u64, uploads: u64, micros: u64) -> Sample {
        Sample {
            t,
            stored_files: files,
            stored_bytes: bytes,
            uploads,
            upload_micros: micros,
            history_bytes: Some(bytes / 2),
            broker_up: true,
        }
    }

    #[test]
    fn rates_per_minute_and_mean_latency() {
        let series = rates(&[
            s(0.0, 0, 0, 0, 0),
            s(30.0, 10, 1000, 10, 50_000),
            // The broker restarted: its counters began again.
            s(60.0, 2, 100, 2, 1_000),
            s(90.0, 2, 100, 2, 1_000),
        ]);
        assert_eq!(series[0].points, [(30.0, 20.0), (90.0, 0.0)]);
        assert_eq!(series[1].points, [(30.0, 2000.0), (90.0, 0.0)]);
        assert_eq!(series[2].points, [(30.0, 5.0)]);
        assert_eq!(series[3].points.len(), 4);
    }
}
