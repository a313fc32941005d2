//! docs/CONTRACT.md §4 Missed events: the watcher finds files whose events it never saw. It scans folders
//! that appear (files made in them before their watch existed), rescans the whole source when
//! the kernel's event queue overflows and periodically, and stops with a clear error naming the
//! sysctl when the inotify watch limit is reached.

use crate::harness::*;
use std::fs;
use std::process::Command;
use std::time::Duration;

const SYNC: Duration = Duration::from_secs(90);

/// `mkdir -p a/b/c` and writes inside at once, many times over: the files land before the
/// watches of their folders exist, and every one is found.
#[test]
fn files_made_in_new_folders_before_their_watch_exists_are_found() {
    let c = Cluster::start();
    let mut files = 0;
    for i in 0..60 {
        let deep = c.source.join(format!("n{i}/b/c"));
        fs::create_dir_all(&deep).unwrap();
        for j in 0..4 {
            fs::write(deep.join(format!("f{j}.txt")), format!("{i}/{j}")).unwrap();
            files += 1;
        }
        fs::write(c.source.join(format!("n{i}/top.mp3")), [i as u8; 100]).unwrap();
        files += 1;
    }
    c.wait_synced(SYNC);
    assert_eq!(c.listing().len(), files);
    eprintln!("new folders: {files} files in 60 trees made with mkdir -p and written at once");
}

/// Folders that appear by a mount make no inotify event: only the periodic rescan
/// (`--rescan-secs`) can find their files.
#[test]
fn the_periodic_rescan_finds_what_no_event_reported() {
    if !is_root() {
        eprintln!("skipped: a change no inotify event reports is made with a bind mount, which needs root");
        return;
    }
    let mut c = Cluster::start_without_watcher();
    c.start_watcher_with(&["--rescan-secs", "2"]);
    fs::create_dir(c.source.join("mnt")).unwrap();
    fs::write(c.source.join("seen.txt"), b"seen by its event").unwrap();
    c.wait_synced(SYNC);

    // Files made elsewhere, then shown inside the source by a bind mount over an empty folder
    // the watcher already watches: the kernel reports nothing for them.
    let elsewhere = c.dir.path().join("elsewhere");
    for i in 0..5u64 {
        let p = elsewhere.join(format!("sub/m{i}.pdf"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, random_bytes(i, 10_000)).unwrap();
    }
    let src = elsewhere.display().to_string();
    let _bound = Mount::new(&c.source.join("mnt"), &["--bind", &src]).unwrap();
    c.wait_synced(SYNC);
    assert_eq!(c.listing().len(), 6);
}

/// A burst of hundreds of files and folders made while the kernel's event queue holds only 16
/// events and the watcher is not reading: the queue overflows, the watcher says so and rescans, and every file arrives. Folders
/// whose creation was among the lost events are watched afterwards: files written in them later
/// arrive without waiting for the periodic rescan.
#[test]
fn an_event_queue_overflow_makes_the_watcher_rescan() {
    if !is_root() {
        eprintln!("skipped: lowering fs.inotify.max_queued_events needs root");
        return;
    }
    let mut c = Cluster::start_without_watcher();
    {
        // The limit applies to inotify instances made while it is set: only the watcher's.
        let _small_queue = Sysctl::set("fs.inotify.max_queued_events", "16").unwrap();
        c.start_watcher();
    }
    // `burst/` is watched before the burst: the folders made in it come by their own events.
    fs::create_dir(c.source.join("burst")).unwrap();
    fs::write(c.source.join("burst/probe.txt"), b"watched").unwrap();
    let probe = c.root.join("txt/burst/probe.txt");
    wait_until("burst/probe.txt arrives", SYNC, || probe.exists());
    // The watcher is stopped (SIGSTOP) during the burst, as a watcher starved of CPU would be:
    // the kernel queues 16 events and drops the rest, among them the creation of most folders.
    let watcher_pid = c.watch.as_ref().unwrap().pid();
    unsafe { libc::kill(watcher_pid, libc::SIGSTOP) };
    wait_until("the watcher is stopped", SYNC, || {
        let stat = fs::read_to_string(format!("/proc/{watcher_pid}/stat")).unwrap();
        stat.rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('T')
    });
    let (folders, per_folder) = (150, 3);
    for i in 0..folders {
        let d = c.source.join(format!("burst/d{i}"));
        fs::create_dir_all(&d).unwrap();
        for j in 0..per_folder {
            fs::write(d.join(format!("f{j}.txt")), format!("{i}.{j}")).unwrap();
        }
    }
    for i in 0..200 {
        fs::write(c.source.join(format!("top{i}.bin")), [i as u8; 64]).unwrap();
    }
    unsafe { libc::kill(watcher_pid, libc::SIGCONT) };
    c.wait_synced(SYNC);
    let overflows = |c: &Cluster| {
        let log = c.watch.as_ref().unwrap().log_text();
        log.matches("inotify event queue overflowed").count()
    };
    let after_burst = overflows(&c);
    assert!(
        after_burst > 0,
        "the watcher's log shows no overflow rescan:\n{}",
        c.watch.as_ref().unwrap().log_text()
    );

    // Every folder made in the burst is watched now: a file written into each arrives by its
    // event (the periodic rescan is 10 minutes away). One at a time, so that the small queue
    // does not overflow again (a write and the watcher's read of it make 6 events) and call for
    // a rescan that would find them anyway.
    for i in 0..folders {
        let name = format!("burst/d{i}/later.txt");
        fs::write(c.source.join(&name), b"later").unwrap();
        let stored = c.root.join("txt").join(&name);
        wait_until(&format!("{name} arrives by its event"), SYNC, || {
            stored.exists()
        });
    }
    c.wait_synced(SYNC);
    assert_eq!(c.listing().len(), folders * (per_folder + 1) + 200 + 1);
    eprintln!(
        "overflow: {} files in a burst, {after_burst} overflow warnings, then {folders} files \
         one by one",
        folders * per_folder + 200
    );
}

/// A source with more folders than the inotify watch limit allows: the watcher stops with an
/// error that names `fs.inotify.max_user_watches` and a value to raise it to.
#[test]
fn the_watch_limit_is_a_clear_error_naming_the_sysctl() {
    if !is_root() {
        eprintln!("skipped: lowering the inotify watch limit needs root");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dfs-e2e-")
        .tempdir()
        .unwrap();
    let source = dir.path().join("source");
    for i in 0..40 {
        fs::create_dir_all(source.join(format!("d{i}/e"))).unwrap();
    }
    let watch = format!(
        "exec {} watch --source {} --broker 127.0.0.1:1",
        dfs_bin(),
        source.display()
    );
    // The limit is lowered in a user namespace of the watcher's own
    // (`/proc/sys/user/max_inotify_watches` there), which leaves the machine's limit alone; where
    // that is impossible, the machine-wide sysctl is lowered for as long as the watcher runs.
    let limit = "echo 20 > /proc/sys/user/max_inotify_watches";
    let namespaces = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", limit])
        .output()
        .is_ok_and(|o| o.status.success());
    let out = if namespaces {
        let mut cmd = Command::new("unshare");
        cmd.args(["--user", "--map-root-user", "sh", "-c"])
            .arg(format!("{limit} && {watch}"));
        run_command_bounded(cmd, Duration::from_secs(60))
    } else {
        eprintln!("no user namespaces here; lowering fs.inotify.max_user_watches briefly");
        let _low = Sysctl::set("fs.inotify.max_user_watches", "20").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &watch]);
        run_command_bounded(cmd, Duration::from_secs(60))
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("dfs: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    let raise_to = line
        .split("fs.inotify.max_user_watches=")
        .nth(1)
        .map(|v| {
            v.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    assert!(
        !raise_to.is_empty() && line.contains(&source.display().to_string()),
        "the error names neither the sysctl with a value nor the source: {line}"
    );
}
