//! Running under systemd: `Type=notify` readiness through `NOTIFY_SOCKET`, and log lines made
//! for the journal when `JOURNAL_STREAM` names stderr.

use crate::harness::*;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Starts `dfs ARGS...` in `dir` with `env` set, stdout and stderr to `dir/<name>.log`.
fn spawn_with_env(name: &str, dir: &Path, args: &[String], env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(dfs_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().map(|(k, v)| (*k, v)));
    Proc::start(name, &dir.join(format!("{name}.log")), cmd)
}

/// `dfs storage` on a free port in `dir`, writing its ready file to `ready`.
fn storage_args(dir: &Path, ready: &Path) -> Vec<String> {
    [
        "storage",
        "--root",
        &dir.join("node").display().to_string(),
        "--bind",
        "127.0.0.1",
        "--base-port",
        "0",
        "--ready-file",
        &ready.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The next datagram on `sock` as text, waiting at most its read timeout.
fn next_message(sock: &UnixDatagram, what: &str, log: &Proc) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no {what} notification ({e}):\n{}", log.log_text()),
    }
}

#[test]
fn storage_notifies_ready_after_its_ready_file_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let socket = d.join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let ready = d.join("storage.ready");
    let mut p = spawn_with_env(
        "storage",
        d,
        &storage_args(d, &ready),
        &[("NOTIFY_SOCKET", socket.display().to_string())],
    );

    let msg = next_message(&sock, "READY=1", &p);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    // Sent after the ready file was written: it is there, complete, when READY=1 arrives.
    let file = fs::read_to_string(&ready).expect("the ready file exists when READY=1 arrives");
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let base = v["base_port"].as_u64().unwrap();
    assert!(base > 0);
    let status = msg
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {msg:?}"));
    assert!(
        status.contains(&format!("\"base_port\":{base}")),
        "{status}"
    );

    // The node serves: a fetcher-free check that its read port is bound.
    std::net::TcpStream::connect(("127.0.0.1", base as u16 + 4)).expect("serve port bound");

    unsafe {
        libc::kill(p.pid(), libc::SIGTERM);
    }
    let msg = next_message(&sock, "STOPPING=1", &p);
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");
    assert_eq!(p.stop_with(libc::SIGTERM, Duration::from_secs(20)), Some(0));
}

#[test]
fn log_lines_for_the_journal_carry_a_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Stderr is a log file; JOURNAL_STREAM names that file, as systemd names its stream.
    let ready = d.join("journal.ready");
    let log = d.join("journal.log");
    fs::File::create(&log).unwrap();
    let meta = fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut p = spawn_with_env(
        "journal",
        d,
        &storage_args(d, &ready),
        &[("JOURNAL_STREAM", stream)],
    );
    p.wait_ready(&ready);
    assert_eq!(p.stop_with(libc::SIGTERM, Duration::from_secs(20)), Some(0));
    let text = p.log_text();
    let listening = text
        .lines()
        .find(|l| l.contains("storage node listening"))
        .unwrap_or_else(|| panic!("no listening line:\n{text}"));
    assert!(
        listening.starts_with("<6>"),
        "info is priority 6: {listening:?}"
    );
    assert!(
        !has_timestamp(listening),
        "journald stamps lines: {listening:?}"
    );
    assert!(!listening.contains('\x1b'), "no colors: {listening:?}");

    // A stderr that is not the named stream (a redirection) gets ordinary lines.
    let ready = d.join("plain.ready");
    let mut p = spawn_with_env(
        "plain",
        d,
        &storage_args(d, &ready),
        &[("JOURNAL_STREAM", "1:1".to_string())],
    );
    p.wait_ready(&ready);
    assert_eq!(p.stop_with(libc::SIGTERM, Duration::from_secs(20)), Some(0));
    let text = p.log_text();
    let listening = text
        .lines()
        .find(|l| l.contains("storage node listening"))
        .unwrap_or_else(|| panic!("no listening line:\n{text}"));
    assert!(
        !listening.starts_with('<') && has_timestamp(listening),
        "{listening:?}"
    );
    assert!(
        !listening.contains('\x1b'),
        "no colors when not a terminal: {listening:?}"
    );
}

/// Whether `line` holds an RFC 3339 time of day (`T12:34:56`).
fn has_timestamp(line: &str) -> bool {
    line.as_bytes().windows(9).any(|w| {
        w[0] == b'T'
            && w[1].is_ascii_digit()
            && w[2].is_ascii_digit()
            && w[3] == b':'
            && w[6] == b':'
            && w[7].is_ascii_digit()
    })
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ready = d.join("storage.ready");
    let mut args = storage_args(d, &ready);
    args.extend(["--log-format".into(), "json".into()]);
    let mut p = spawn_with_env("storage", d, &args, &[]);
    p.wait_ready(&ready);
    assert_eq!(p.stop_with(libc::SIGTERM, Duration::from_secs(20)), Some(0));
    let text = p.log_text();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let listening = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("storage node listening"))
        })
        .unwrap_or_else(|| panic!("no listening event:\n{text}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(
        listening["bind"], "127.0.0.1",
        "fields are keys: {listening}"
    );
    assert!(listening["timestamp"].is_string(), "{listening}");
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "storage node stopped"),
        "{text}"
    );
}
