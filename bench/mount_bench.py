#!/usr/bin/env python3
"""`dfs mount` against `dfs fetch`, on the same cluster, in one run on this machine.

One cluster (three daemons on loopback) stores the small set (10,000 x 4 KiB) under `small/` and
one 1 GiB file under `big/`. Each run, alternating the two ways in:

* small: `dfs fetch 'small/**'` into an empty target (verified, fsynced) against
  `cp -r MOUNT/small TARGET` out of a fresh `dfs mount` (its cache empty), and `cp -r` then `sync`;
* big: `dfs fetch big/big.bin` into an empty target against `cat MOUNT/big/big.bin > /dev/null`
  and `cp MOUNT/big/big.bin TARGET` then `sync TARGET/big.bin`, each out of a fresh mount.

Every mount is a new process, so nothing comes from an earlier run's cache; the node's files are
in the page cache for both ways alike. Peak RSS (VmHWM) of each `dfs mount` is reported. The
machine is measured as it is: no host setting is changed. Needs root and /dev/fuse.

Usage: python3 bench/mount_bench.py [--bin target/release/dfs] [--runs 3] [--scale 1.0]
"""
import argparse, os, shutil, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dfs_bench import Cluster, Daemon, log, make_datasets, sh, warm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class Mount(Daemon):
    def __init__(self, bin, work, point, broker):
        os.makedirs(point, exist_ok=True)
        try:
            os.remove(os.path.join(work, "mount.ready"))
        except FileNotFoundError:
            pass
        super().__init__(bin, work, "mount", ["mount", point, "--broker", broker, "--timeout", "60"])
        self.wait_ready()


def timed(cmd, **kw):
    t = time.monotonic()
    subprocess.run(cmd, check=True, timeout=1800, **kw)
    return time.monotonic() - t


def fresh(work, label):
    """A new empty target. Nothing is deleted during the run: on ext4 without a journal, creating
    files right after deleting thousands is slow for a minute, and would be measured."""
    path = os.path.join(work, f"target-{label}-{time.monotonic_ns()}")
    os.makedirs(path)
    sh("sync")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "dfs"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data", default="/tmp/dfsbench/data")
    ap.add_argument("--work", default="/tmp/dfsbench/mount")
    a = ap.parse_args()
    specs = make_datasets(a.data, a.scale, ["big", "small"])
    count, size = specs["small"]
    big = specs["big"][1]
    work = os.path.join(a.work, f"run-{time.monotonic_ns()}")
    os.makedirs(work)
    c = Cluster(a.bin, work)
    point = os.path.join(work, "mnt")
    results = {k: [] for k in ("fetch small", "cp -r", "cp -r + sync", "fetch big", "cat big", "cp big + sync")}
    peaks = []
    try:
        os.makedirs(os.path.join(c.source, "small"))
        os.makedirs(os.path.join(c.source, "big"))
        sh(f"cp -r {a.data}/small/. {c.source}/small/")
        sh(f"cp {a.data}/big/big.bin {c.source}/big/")
        t0 = time.monotonic()
        while c.listed() < count + 1:
            if time.monotonic() - t0 > 900:
                raise SystemExit("the sets were not all stored after 900 s")
            time.sleep(0.5)
        log(f"stored {count} + 1 files in {time.monotonic() - t0:.1f} s")
        warm(c.node)
        fetch = [a.bin, "fetch", "--broker", c.fetch_addr, "--timeout", "60"] + c.fetch_keys
        for r in range(a.runs):
            target = fresh(work, "fetch-small")
            results["fetch small"].append(timed(fetch + ["--target", target, "small/**"]))
            for key, then_sync in (("cp -r", False), ("cp -r + sync", True)):
                target = fresh(work, key.replace(" ", ""))
                m = Mount(a.bin, work, point, c.fetch_addr)
                t = time.monotonic()
                subprocess.run(["cp", "-r", os.path.join(point, "small"), target], check=True, timeout=1800)
                if then_sync:
                    sh("sync")
                results[key].append(time.monotonic() - t)
                peaks.append(m.peak_rss_mib())
                m.stop()
            target = fresh(work, "fetch-big")
            results["fetch big"].append(timed(fetch + ["--target", target, "big/big.bin"]))
            os.remove(os.path.join(target, "big", "big.bin"))
            target = fresh(work, "cp-big")
            m = Mount(a.bin, work, point, c.fetch_addr)
            with open(os.devnull, "wb") as null:
                results["cat big"].append(timed(["cat", os.path.join(point, "big", "big.bin")], stdout=null))
            peaks.append(m.peak_rss_mib())
            m.stop()
            m = Mount(a.bin, work, point, c.fetch_addr)
            t = time.monotonic()
            subprocess.run(["cp", os.path.join(point, "big", "big.bin"), target], check=True, timeout=1800)
            subprocess.run(["sync", os.path.join(target, "big.bin")], check=True, timeout=600)
            results["cp big + sync"].append(time.monotonic() - t)
            peaks.append(m.peak_rss_mib())
            m.stop()
            same = subprocess.run(["cmp", os.path.join(a.data, "big", "big.bin"), os.path.join(target, "big.bin")])
            if same.returncode != 0:
                raise SystemExit("the 1 GiB file read through the mount differs from the source")
            os.remove(os.path.join(target, "big.bin"))
            log(f"run {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in results.items()))
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    spread = {k: f"{min(v):.3f}-{max(v):.3f}" for k, v in results.items()}
    print(f"\n| measurement | median | spread | MB/s | vs dfs fetch |")
    print("|---|---|---|---|---|")
    for k, ref, n, b in (("fetch small", None, count, count * size), ("cp -r", "fetch small", count, count * size),
                         ("cp -r + sync", "fetch small", count, count * size), ("fetch big", None, 1, big),
                         ("cat big", "fetch big", 1, big), ("cp big + sync", "fetch big", 1, big)):
        ratio = f"{med[k] / med[ref]:.2f}x the time" if ref else ""
        print(f"| {k} | {med[k]:.3f} s | {spread[k]} s | {b / med[k] / 1e6:.1f} | {ratio} |")
    print(f"\npeak RSS of dfs mount: {max(peaks):.0f} MiB")


if __name__ == "__main__":
    main()
