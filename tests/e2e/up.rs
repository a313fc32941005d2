//! `dfs up`: everything in one process under the current folder.

use crate::harness::*;
use std::fs;
use std::time::Duration;

#[test]
fn up_syncs_a_file_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("up.ready");
    let args = up_args(&ready);
    let mut p = Proc::spawn("up", dir.path(), dir.path(), &args);
    let v = p.wait_ready(&ready);
    let fetch_port = v["fetch_port"].as_u64().unwrap();
    assert!(dir.path().join("source_folder").is_dir());
    fs::write(dir.path().join("source_folder/hello.txt"), "hello up").unwrap();
    let addr = format!("127.0.0.1:{fetch_port}");
    wait_until("hello.txt stored", Duration::from_secs(30), || {
        dir.path().join("node/txt/hello.txt").is_file()
            && parse_listing(
                &run_bounded(
                    dir.path(),
                    &["fetch", "--json", "--broker", &addr],
                    Duration::from_secs(30),
                )
                .stdout,
            )
            .contains_key("hello.txt")
    });
    let out = run_bounded(
        dir.path(),
        &["fetch", "--broker", &addr, "hello.txt"],
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    assert_eq!(
        fs::read(dir.path().join("target_folder/hello.txt")).unwrap(),
        b"hello up"
    );
    let log = p.log_text();
    assert!(
        log.contains("source_folder") && log.contains(&fetch_port.to_string()),
        "prints where everything is:\n{log}"
    );
    assert_eq!(
        p.stop_with(libc::SIGINT, Duration::from_secs(10)),
        Some(0),
        "Ctrl-C stops up with 0"
    );
    let index = fs::read_to_string(dir.path().join("server/myIndex/index.txt")).unwrap();
    assert!(
        index.lines().any(|l| l.starts_with("hello.txt\t")),
        "{index}"
    );
}
