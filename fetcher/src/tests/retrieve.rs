//! `dfs fetch NAME...` and `-o -`: where bytes land, which exit code each failure costs, and
//! the credit window.

use super::{args, fetch, pattern, tree, Content, FakeBroker, FakeFile, MODIFIED};
use schema::limits::{CHUNK_SIZE, TRANSFER_WINDOW};
use schema::ErrorCode;
use std::time::{Duration, Instant};

#[test]
fn an_inline_file_lands_in_the_target_with_its_bytes_and_mtime() {
    let bytes = pattern(5000);
    let broker = FakeBroker::start(vec![FakeFile::bytes("music/live/a.mp3", bytes.clone())], 10);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let out = fetch(&args(broker.port, &target, &["music/live/a.mp3"]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.is_empty());
    let path = target.join("music/live/a.mp3");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(mtime, schema::time::from_ns(MODIFIED));
    assert_eq!(tree(&target), ["music", "music/live", "music/live/a.mp3"]);
}

#[test]
fn an_empty_file_is_retrieved() {
    let broker = FakeBroker::start(vec![FakeFile::bytes("empty", Vec::new())], 10);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &["empty"]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(std::fs::read(dir.path().join("empty")).unwrap(), b"");
}

#[test]
fn a_chunked_file_streams_with_at_most_a_window_of_chunks_outstanding() {
    // A window and a half of chunks: credit must be replenished.
    let bytes = pattern(TRANSFER_WINDOW as usize * 3 / 2 * CHUNK_SIZE + 12345);
    let broker = FakeBroker::start(vec![FakeFile::bytes("big.bin", bytes.clone())], 10);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &["big.bin"]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(std::fs::read(dir.path().join("big.bin")).unwrap() == bytes);
    assert_eq!(tree(dir.path()), ["big.bin"], "no temporary file is left");
    let stats = broker.stats.lock().unwrap();
    assert_eq!(stats.max_outstanding, TRANSFER_WINDOW);
    assert_eq!(stats.aborts, 0);
}

#[test]
fn a_file_of_fewer_chunks_than_the_window_is_granted_only_what_it_needs() {
    let bytes = pattern(2 * CHUNK_SIZE + 1);
    let broker = FakeBroker::start(vec![FakeFile::bytes("three", bytes.clone())], 10);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &["three"]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(std::fs::read(dir.path().join("three")).unwrap() == bytes);
    assert_eq!(broker.stats.lock().unwrap().max_outstanding, 3);
}

#[test]
fn a_hash_mismatch_exits_4_and_leaves_no_file() {
    let files = vec![
        FakeFile::corrupt("small.txt", pattern(100)),
        FakeFile::corrupt("large.bin", pattern(3 * CHUNK_SIZE)),
    ];
    let broker = FakeBroker::start(files, 10);
    let dir = tempfile::tempdir().unwrap();
    for name in ["small.txt", "large.bin"] {
        let out = fetch(&args(broker.port, dir.path(), &[name]));
        assert_eq!(out.code, 4, "stderr: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "{name}: content does not match its BLAKE3 hash (broker tcp://127.0.0.1:"
            )),
            "{}",
            out.stderr
        );
        assert_eq!(tree(dir.path()), Vec::<String>::new());
    }
}

#[test]
fn a_missing_name_exits_1_and_the_others_still_complete() {
    let broker = FakeBroker::start(vec![FakeFile::bytes("here.txt", pattern(10))], 10);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &["gone.txt", "here.txt"]));
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    assert!(
        out.stderr.starts_with("dfs fetch: gone.txt: not found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("(broker tcp://127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
    assert_eq!(tree(dir.path()), ["here.txt"]);
}

#[test]
fn uploading_unavailable_and_busy_exit_3() {
    let files = vec![
        FakeFile::answering("new.txt", Content::Fail(ErrorCode::Uploading)),
        FakeFile::answering("far.txt", Content::Fail(ErrorCode::Unavailable)),
        FakeFile::answering("hot.txt", Content::Fail(ErrorCode::Busy)),
    ];
    let broker = FakeBroker::start(files, 10);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &["new.txt"]));
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("new.txt is being uploaded, try again"),
        "{}",
        out.stderr
    );
    for name in ["far.txt", "hot.txt"] {
        assert_eq!(fetch(&args(broker.port, dir.path(), &[name])).code, 3);
    }
    assert_eq!(tree(dir.path()), Vec::<String>::new());
}

#[test]
fn the_highest_exit_code_wins() {
    let files = vec![
        FakeFile::answering("new.txt", Content::Fail(ErrorCode::Uploading)),
        FakeFile::corrupt("bad.txt", pattern(10)),
        FakeFile::bytes("good.txt", pattern(10)),
    ];
    let broker = FakeBroker::start(files, 10);
    let dir = tempfile::tempdir().unwrap();
    let names = ["missing", "new.txt", "bad.txt", "good.txt"];
    let out = fetch(&args(broker.port, dir.path(), &names));
    assert_eq!(out.code, 4, "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 3, "{}", out.stderr);
    assert_eq!(tree(dir.path()), ["good.txt"]);
}

#[test]
fn an_unreachable_broker_exits_3_within_the_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(port, dir.path(), &["a.txt", "b.txt"]);
    a.timeout = 0.3;
    let start = Instant::now();
    let out = fetch(&a);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.code, 3);
    assert_eq!(
        out.stderr,
        format!("dfs fetch: cannot reach the broker at tcp://127.0.0.1:{port}: no answer within 0.3 s\n")
    );
    a.names.clear();
    assert_eq!(fetch(&a).code, 3, "listing too");
    assert_eq!(tree(dir.path()), Vec::<String>::new());
}

#[test]
fn a_silent_broker_times_out_with_3_and_later_names_are_not_waited_for() {
    let files = vec![
        FakeFile::answering("slow.txt", Content::Silent),
        FakeFile::bytes("b.txt", pattern(10)),
    ];
    let broker = FakeBroker::start(files, 10);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(broker.port, dir.path(), &["slow.txt", "b.txt"]);
    a.timeout = 0.3;
    let start = Instant::now();
    let out = fetch(&a);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    // Both asked at once: the answered one lands, the silent one fails the run in bounded time.
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("dfs fetch: slow.txt: no answer from the broker"),
        "{lines:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("b.txt")).unwrap(),
        pattern(10)
    );
    assert_eq!(broker.stats.lock().unwrap().gets, ["slow.txt", "b.txt"]);
}

#[test]
fn refused_names_exit_1_and_nothing_is_written_outside_the_target() {
    let broker = FakeBroker::start(vec![FakeFile::bytes("ok.txt", pattern(10))], 10);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let names = [
        "../evil.txt",
        "/etc/passwd",
        "a/../../evil",
        "a//b",
        "ok.txt",
        "",
    ];
    let out = fetch(&args(broker.port, &target, &names));
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("dfs fetch: ../evil.txt: refused: "),
        "{}",
        out.stderr
    );
    assert_eq!(tree(dir.path()), ["target", "target/ok.txt"]);
    // Refused names never reach the broker.
    assert_eq!(broker.stats.lock().unwrap().gets, ["ok.txt"]);
}

#[test]
fn only_refused_names_need_no_broker() {
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(1, dir.path(), &["../x"]));
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    assert_eq!(tree(dir.path()), Vec::<String>::new());
}

#[test]
fn dash_o_streams_the_content_to_stdout() {
    let small = pattern(3000);
    let large = pattern(9 * CHUNK_SIZE + 7);
    let files = vec![
        FakeFile::bytes("s.txt", small.clone()),
        FakeFile::bytes("l.bin", large.clone()),
        FakeFile::corrupt("c.bin", pattern(2 * CHUNK_SIZE)),
    ];
    let broker = FakeBroker::start(files, 10);
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("s.txt", &small), ("l.bin", &large)] {
        let mut a = args(broker.port, dir.path(), &[name]);
        a.output = Some("-".into());
        let out = fetch(&a);
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        assert!(&out.stdout == bytes, "{name}");
    }
    let mut a = args(broker.port, dir.path(), &["c.bin"]);
    a.output = Some("-".into());
    let out = fetch(&a);
    assert_eq!(out.code, 4, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("c.bin: content does not match"),
        "{}",
        out.stderr
    );
    assert_eq!(
        tree(dir.path()),
        Vec::<String>::new(),
        "-o - writes no file"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let with = |names: &[&str], output: Option<&str>, json: bool, timeout: f64| {
        let mut a = args(1, dir.path(), names);
        a.output = output.map(String::from);
        a.json = json;
        a.timeout = timeout;
        fetch(&a)
    };
    for out in [
        with(&[], Some("-"), false, 5.0),
        with(&["a", "b"], Some("-"), false, 5.0),
        with(&["a"], Some("file.txt"), false, 5.0),
        with(&["a"], None, true, 5.0),
        with(&["a"], Some("-"), true, 5.0),
        with(&[], None, false, 0.0),
        with(&[], None, false, f64::NAN),
    ] {
        assert_eq!(out.code, 2, "stderr: {}", out.stderr);
        assert!(out.stderr.starts_with("dfs fetch: "), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1);
    }
    let mut a = args(1, dir.path(), &[]);
    a.broker = "host:notaport".into();
    assert_eq!(fetch(&a).code, 2);
}

#[test]
fn a_name_refused_as_busy_among_many_is_asked_again_on_its_own() {
    let files = vec![
        FakeFile::answering("busy.txt", Content::Fail(ErrorCode::Busy)),
        FakeFile::bytes("a.txt", pattern(10)),
        FakeFile::bytes("b.txt", pattern(20)),
    ];
    let broker = FakeBroker::start(files, 10);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(
        broker.port,
        dir.path(),
        &["busy.txt", "a.txt", "b.txt"],
    ));
    // Still busy when asked alone: reported once, as "try again later" (3); the others land.
    assert_eq!(out.code, 3, "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("dfs fetch: busy.txt: "), "{lines:?}");
    assert_eq!(tree(dir.path()), ["a.txt", "b.txt"]);
    let gets = broker.stats.lock().unwrap().gets.clone();
    assert_eq!(
        gets.iter().filter(|g| *g == "busy.txt").count(),
        2,
        "{gets:?}"
    );
}
