#!/usr/bin/env python3
"""One folder at scale: a watcher over 100,000 and 1,000,000 files.

For each count N: a tree of N small files (1,000 per folder, every class) is made once under
--data; the three daemons start on loopback with the tree as the watcher's source, and the run
is timed until the watcher reports every file synced (its status file) and `dfs fetch --json`
lists N names. Then the watcher alone is stopped and started again over the same tree: that is
the start-up comparison (the broker's whole listing against a walk of the folder), timed until
the watcher logs that it compared the folder, and checked to send nothing. Peak RSS (VmHWM) of
each process is read from /proc at the end of each phase.

    python3 bench/scale.py --counts 100000,1000000

Bounded: every wait gives up after --timeout seconds (default 1800) with an error.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dfs_bench import Daemon, log  # noqa: E402

PER_FOLDER = 1000
SIZE = 256


def make_tree(data, count):
    root = os.path.join(data, f"tree-{count}")
    marker = os.path.join(data, f".tree-{count}.done")
    if os.path.exists(marker):
        return root
    shutil.rmtree(root, ignore_errors=True)
    log(f"making {count} files of {SIZE} B under {root}")
    exts = [".mp3", ".txt", ".pdf", ".bin"]
    for i in range(count):
        if i % PER_FOLDER == 0:
            d = os.path.join(root, f"d{i // PER_FOLDER:04d}")
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:07d}{exts[i % 4]}"), "wb") as f:
            f.write(os.urandom(SIZE))
    open(marker, "w").close()
    return root


def status(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait(what, cond, deadline, poll=0.5):
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll)


def listed(bin, fetch_addr):
    out = subprocess.run([bin, "fetch", "--json", "--broker", fetch_addr], capture_output=True, timeout=300)
    return out.stdout.count(b"\n")


def watcher(bin, work, tree, ingest, name):
    st = os.path.join(work, f"{name}.status")
    d = Daemon(bin, work, name, ["watch", "--source", tree, "--broker", ingest, "--status-file", st])
    return d, st


def run(bin, data, work, count, timeout):
    tree = make_tree(data, count)
    work = os.path.join(work, f"scale-{count}-{time.monotonic_ns()}")
    node, server = os.path.join(work, "node"), os.path.join(work, "server")
    os.makedirs(node)
    os.makedirs(server)
    storage = Daemon(bin, work, "storage", ["storage", "--root", node, "--bind", "127.0.0.1", "--base-port", "0"])
    base = storage.wait_ready()["base_port"]
    broker = Daemon(bin, work, "broker", ["broker", "--data", server, "--bind", "127.0.0.1", "--ingest-port", "0",
                                          "--fetch-port", "0", "--storage", f"127.0.0.1:{base}"])
    r = broker.wait_ready()
    ingest, fetch_addr = f"127.0.0.1:{r['ingest_port']}", f"127.0.0.1:{r['fetch_port']}"
    row = {"files": count}
    try:
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        w, st = watcher(bin, work, tree, ingest, "watch")
        w.wait_ready()
        wait("every file synced", lambda: (status(st) or {}).get("files_synced", 0) >= count, deadline)
        wait("every file listed", lambda: listed(bin, fetch_addr) >= count, deadline, poll=1)
        row["sync_s"] = time.monotonic() - t0
        row["sync_rss"] = {"watch": w.peak_rss_mib(), "broker": broker.peak_rss_mib(),
                           "storage": storage.peak_rss_mib()}
        log(f"{count}: synced in {row['sync_s']:.1f} s, peak RSS {row['sync_rss']}")
        w.stop()

        deadline = time.monotonic() + timeout
        logf = os.path.join(work, "again.log")
        t0 = time.monotonic()
        w, st = watcher(bin, work, tree, ingest, "again")
        done = re.compile(rb"compared (\d+) files")

        def compared():
            with open(logf, "rb") as f:
                return done.search(f.read()) is not None
        wait("the start-up comparison", compared, deadline, poll=0.05)
        row["restart_s"] = time.monotonic() - t0
        # Nothing may be sent: every file is stored as it is.
        wait("an idle watcher", lambda: (lambda s: s is not None and s.get("pending") == 0
                                         and s.get("in_flight") == 0)(status(st)), deadline)
        s = status(st)
        if s.get("files_synced", 0) != 0:
            raise SystemExit(f"the restarted watcher sent {s['files_synced']} files again")
        row["restart_rss"] = w.peak_rss_mib()
        log(f"{count}: start-up comparison in {row['restart_s']:.1f} s, watcher peak RSS {row['restart_rss']:.0f} MiB")
        w.stop()
    finally:
        for d in (broker, storage):
            d.stop()
    shutil.rmtree(work, ignore_errors=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/dfs")
    ap.add_argument("--counts", default="100000,1000000")
    ap.add_argument("--data", default="/tmp/dfs-scale-data")
    ap.add_argument("--work", default="/tmp/dfs-scale-work")
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    os.makedirs(a.data, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    rows = [run(os.path.abspath(a.bin), a.data, a.work, int(n), a.timeout) for n in a.counts.split(",")]
    print("\n| files | first sync | peak RSS watch / broker / storage | start-up comparison again | watcher peak RSS then |")
    print("|---|---|---|---|---|")
    for r in rows:
        rss = r["sync_rss"]
        print(f"| {r['files']:,} | {r['sync_s']:.1f} s ({r['files'] / r['sync_s']:,.0f} files/s) | "
              f"{rss['watch']:.0f} / {rss['broker']:.0f} / {rss['storage']:.0f} MiB | {r['restart_s']:.1f} s | "
              f"{r['restart_rss']:.0f} MiB |")


if __name__ == "__main__":
    main()
