#!/usr/bin/env python3
"""End-to-end benchmark of dfs against rsync, in one run on this machine.

dfs: three daemons on loopback; a dataset is copied into the watched folder (`cp -r`) and timed
until every file is durable on the node and listed by the broker. rsync: `rsync -a --whole-file
--fsync` pushing the same dataset to a loopback rsync daemon, and pulling it back, with
TCP_NODELAY on both sides (without it rsync's small writes wait on delayed ACKs over loopback). dfs and rsync runs
alternate; the table gives medians and the ratios dfs/rsync.

Usage: python3 bench/dfs_bench.py [--bin target/release/dfs] [--runs 3]
       [--sets big,small,medium,latency] [--scale 1.0] [--no-rsync] [--work /tmp/dfsbench/dfs]
       [--curve]

--curve runs every dfs link with CURVE (keys made by `dfs keygen` for each cluster).
The machine is measured as it is: no host setting is changed. On a VM with free page reporting
big-file runs vary with the guest's memory state (see vm_memory.py); the output says which state
the machine was in, and the spread of the runs shows it.

Datasets (random bytes): big = 1 x 1 GiB, small = 10,000 x 4 KiB,
medium = 1,000 x 1 MiB; names rotate .mp3 .txt .pdf .bin. Before each timed run the previous
copy is removed, or moved aside when it has many files (deleting thousands of files makes ext4
without a journal slow to create files for 60 s), the source data is read once (warm) and `sync`
runs.
Prints one line per run and a table of medians; peak RSS (VmHWM) of each daemon per dataset.
"""
import argparse
import datetime, json, os, shutil, statistics, subprocess, sys, time
import vm_memory

HERE = os.path.dirname(os.path.abspath(__file__))


# Runs of a restore again over a complete target (dfs and rsync alike), of which the median counts.
RERUNS = 5


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_datasets(root, scale, sets):
    specs = {"big": (1, int((1 << 30) * scale)), "small": (int(10000 * scale), 4096),
             "medium": (int(1000 * scale), 1 << 20)}
    exts = [".mp3", ".txt", ".pdf", ".bin"]
    for name, (count, size) in specs.items():
        if name not in sets and not (name == "big" and "fetch" in sets) \
                and not (name == "small" and "restore" in sets):
            continue
        d = os.path.join(root, name)
        marker = os.path.join(root, f".{name}.done-{count}-{size}")
        if os.path.exists(marker):
            continue
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        log(f"making dataset {name}: {count} x {size} bytes")
        for i in range(count):
            fn = "big.bin" if name == "big" else f"f{i:06d}{exts[i % 4]}"
            write_random(os.path.join(d, fn), size)
        open(marker, "w").close()
    return specs


def write_random(path, size):
    """A file of `size` random bytes (incompressible), written 16 MiB at a time."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 24)
            f.write(os.urandom(n))
            left -= n


class Daemon:
    def __init__(self, bin, work, name, args):
        self.name = name
        self.ready = os.path.join(work, f"{name}.ready")
        self.logf = open(os.path.join(work, f"{name}.log"), "ab")
        self.p = subprocess.Popen([bin] + args + ["--ready-file", self.ready],
                                  stdout=self.logf, stderr=self.logf, cwd=work)

    def wait_ready(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(self.ready) as f:
                    return json.loads(f.read())
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if self.p.poll() is not None:
                raise SystemExit(f"{self.name} exited early; see its log")
            time.sleep(0.01)
        raise SystemExit(f"{self.name} not ready")

    def peak_rss_mib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self):
        """User + system CPU seconds used so far (from /proc/PID/stat)."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Cluster:
    # --curve: every link uses CURVE, with keys made by `dfs keygen` for each cluster.
    curve = False

    def __init__(self, bin, work):
        self.bin, self.work = bin, work
        for d in ("source", "node", "server"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        self.source = os.path.join(work, "source")
        self.node = os.path.join(work, "node")
        keys = self.keys(bin, work)
        self.storage = Daemon(bin, work, "storage", ["storage", "--root", self.node, "--bind", "127.0.0.1", "--base-port", "0"]
                              + keys["storage"])
        base = self.storage.wait_ready()["base_port"]
        self.broker = Daemon(bin, work, "broker", ["broker", "--data", os.path.join(work, "server"), "--bind", "127.0.0.1",
                                                   "--ingest-port", "0", "--fetch-port", "0", "--storage", f"127.0.0.1:{base}"]
                             + keys["broker"])
        r = self.broker.wait_ready()
        self.fetch_addr = f"127.0.0.1:{r['fetch_port']}"
        self.fetch_keys = keys["fetch"]
        self.watch = Daemon(bin, work, "watch", ["watch", "--source", self.source, "--broker", f"127.0.0.1:{r['ingest_port']}"]
                            + keys["watch"])
        self.watch.wait_ready()

    @classmethod
    def keys(cls, bin, work):
        """The key options of each role: none, or with --curve a key pair each from `dfs keygen`."""
        if not cls.curve:
            return {"storage": [], "broker": [], "watch": [], "fetch": []}
        d = os.path.join(work, "keys")
        for name in ("storage", "broker", "watcher", "fetcher"):
            subprocess.run([bin, "keygen", "--out", d, "--name", name], check=True, capture_output=True)
        k = lambda f: os.path.join(d, f)
        return {"storage": ["--secret-key", k("storage.key"), "--allow", k("broker.pub")],
                "broker": ["--secret-key", k("broker.key"), "--allow-watchers", k("watcher.pub"),
                           "--allow-fetchers", k("fetcher.pub"), "--storage-key", k("storage.pub")],
                "watch": ["--secret-key", k("watcher.key"), "--broker-key", k("broker.pub")],
                "fetch": ["--secret-key", k("fetcher.key"), "--broker-key", k("broker.pub")]}

    def listed(self):
        out = subprocess.run([self.bin, "fetch", "--json", "--broker", self.fetch_addr] + self.fetch_keys,
                             capture_output=True, timeout=60)
        return out.stdout.count(b"\n")

    def daemons(self):
        return [self.watch, self.broker, self.storage]

    def stop(self):
        for d in self.daemons():
            d.stop()


class Rsyncd:
    """A loopback rsync daemon with TCP_NODELAY, module `mod` rooted in WORK/rsyncd/mod."""

    def __init__(self, work):
        import socket
        self.root = os.path.join(work, "rsyncd", "mod")
        os.makedirs(self.root, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(work, "rsyncd", "rsyncd.conf")
        with open(conf, "w") as f:
            f.write(f"pid file = {work}/rsyncd/pid\nuse chroot = no\nmax connections = 8\n"
                    f"socket options = TCP_NODELAY\n[mod]\n  path = {self.root}\n  read only = false\n"
                    "  uid = root\n  gid = root\n")
        self.logf = open(os.path.join(work, "rsyncd", "out.log"), "ab")
        self.p = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}", "--address=127.0.0.1",
                                   f"--port={self.port}"], stdout=self.logf, stderr=self.logf)
        import socket as so
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                so.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("rsync daemon did not start")

    def url(self, sub):
        return f"rsync://127.0.0.1:{self.port}/mod/{sub}/"

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def run_rsync(rsyncd, data, ds, count, state, trash, work_root):
    """Push the dataset with --fsync; for the big file and the small set also pull it back, as is
    and with --fsync, and for the small set once more into the complete copy (nothing to do).
    Returns (push s, {"pull": s, "pull --fsync": s[, "pull again": s]} or {})."""
    if count > 1:
        settle(state)
    sub = f"push-{ds}-{time.monotonic_ns()}"
    warm(os.path.join(data, ds))
    sh("sync")
    t0 = time.monotonic()
    sh(f"rsync -a --whole-file --fsync --sockopts=TCP_NODELAY {os.path.join(data, ds)}/ {rsyncd.url(sub)}")
    push = time.monotonic() - t0
    pulls = {}
    if ds in ("big", "small"):
        for kind, flag in (("pull", ""), ("pull --fsync", "--fsync ")):
            dst = os.path.join(work_root, f"pull-{time.monotonic_ns()}")
            warm(os.path.join(rsyncd.root, sub))
            sh("sync")
            t1 = time.monotonic()
            sh(f"rsync -a --whole-file {flag}--sockopts=TCP_NODELAY {rsyncd.url(sub)} {dst}/")
            pulls[kind] = time.monotonic() - t1
            if ds == "small" and flag:
                # Run again over the complete copy, right away: the median of RERUNS runs.
                again = []
                for _ in range(RERUNS):
                    t1 = time.monotonic()
                    sh(f"rsync -a --whole-file {flag}--sockopts=TCP_NODELAY {rsyncd.url(sub)} {dst}/")
                    again.append(time.monotonic() - t1)
                pulls["pull again"] = statistics.median(again)
            discard(dst, count, trash)
    discard(os.path.join(rsyncd.root, sub), count, trash)
    return push, pulls


def discard(path, count, trash):
    """Removes a run's copy. Copies of many files are moved aside instead, and removed at the end:
    on ext4 without a journal, creating files right after deleting thousands is slow for 60 s."""
    if count > 1:
        shutil.move(path, os.path.join(trash, os.path.basename(path)))
    else:
        shutil.rmtree(path, ignore_errors=True)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def warm(path):
    sh(f"find {path} -type f -exec cat {{}} + > /dev/null")


def settle(state):
    wait = state.get("last_bulk_delete", 0) + 65 - time.monotonic()
    if wait > 0:
        log(f"settle: waiting {wait:.0f} s after the last bulk delete (ext4 recently-deleted inodes)")
        time.sleep(wait)


def run_sync(bin, work_root, data, ds, count, state, trash):
    work = os.path.join(work_root, f"run-{ds}-{time.monotonic_ns()}")
    os.makedirs(work)
    if count > 1:
        settle(state)
    warm(os.path.join(data, ds))
    sh("sync")
    c = Cluster(bin, work)
    try:
        t0 = time.monotonic()
        sh(f"cp -r {os.path.join(data, ds)}/. {c.source}/")
        wait_durable_and_listed(c, count, t0, ds)
        elapsed = time.monotonic() - t0
        rss = {d.name: d.peak_rss_mib() for d in c.daemons()}
        cpu = {d.name: round(d.cpu_s(), 2) for d in c.daemons()}
        log(f"{ds}: CPU seconds until durable and listed {cpu}")
        fetch_s = None
        if ds == "big":
            target = os.path.join(work, "target")
            warm(c.node)
            sh("sync")
            t1 = time.monotonic()
            subprocess.run([bin, "fetch", "--broker", c.fetch_addr, "--target", target, "big.bin"] + c.fetch_keys,
                           check=True, timeout=600)
            fetch_s = time.monotonic() - t1
    finally:
        c.stop()
    discard(work, count, trash)
    return elapsed, rss, fetch_s


def run_restore(bin, work_root, data, count, state, trash):
    """The small set stored, then every file rewritten in place (a folder "encrypted"): the time
    of a restore of everything as it is now (`dfs fetch '**'`) and as it was before the rewrite
    (`dfs fetch --at T '**'`), each into an empty target, and what the history costs on the node's
    disk for that churn (bytes in use under ROOT/.dfs/objects and ROOT/.dfs/history, `du`)."""
    work = os.path.join(work_root, f"run-restore-{time.monotonic_ns()}")
    os.makedirs(work)
    settle(state)
    src = os.path.join(data, "small")
    warm(src)
    sh("sync")
    c = Cluster(bin, work)
    try:
        t0 = time.monotonic()
        sh(f"cp -r {src}/. {c.source}/")
        wait_durable_and_listed(c, count, t0, "restore")
        # Clear of the last version's start and of the first rewrite (ctimes are coarse).
        time.sleep(0.05)
        instant = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        time.sleep(0.05)
        names = sorted(os.listdir(c.source))
        for n in names:
            write_random(os.path.join(c.source, n), os.path.getsize(os.path.join(src, n)))
        while True:
            out = subprocess.run([bin, "fetch", "--json", "--broker", c.fetch_addr] + c.fetch_keys,
                                 capture_output=True, text=True, check=True, timeout=120).stdout
            if sum(1 for line in out.splitlines() if json.loads(line)["version"] == 2) == count:
                break
            if time.monotonic() - t0 > 600:
                raise SystemExit("restore: the rewrite was not all stored after 600 s")
            time.sleep(0.2)
        sh("sync")
        cost = {d: du_bytes(os.path.join(c.node, ".dfs", d)) for d in ("objects", "history")}
        times = {}
        for label, extra in (("now", []), ("again", []), ("at", ["--at", instant])):
            target = os.path.join(work, f"target-{'now' if label == 'again' else label}")
            if label != "again":
                warm(c.node)
                sh("sync")
            # The run again over the complete target follows the restore right away, as rsync's
            # does its pull: the median of RERUNS runs (one run of 0.05 s is mostly noise here).
            took = []
            for _ in range(RERUNS if label == "again" else 1):
                t1 = time.monotonic()
                subprocess.run([bin, "fetch", "--broker", c.fetch_addr, "--target", target, "--timeout", "60"]
                               + extra + c.fetch_keys + ["**"], check=True, timeout=900)
                took.append(time.monotonic() - t1)
            times[label] = statistics.median(took)
        same = subprocess.run(["diff", "-r", "-q", src, os.path.join(work, "target-at")],
                              capture_output=True, text=True)
        if same.returncode != 0:
            raise SystemExit(f"restore --at did not give the files of before: {same.stdout[:500]}")
    finally:
        c.stop()
    discard(work, count, trash)
    return times, cost


def du_bytes(path):
    """Bytes in use on disk below `path` (blocks, as `du -s -B1` counts them), 0 if absent."""
    if not os.path.exists(path):
        return 0
    out = subprocess.run(["du", "-s", "-B1", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def wait_durable_and_listed(c, count, t0, ds):
    """Waits until `count` files are in the node's class folders (a node renames a file there only
    once it is fsynced), then until `dfs fetch --json` lists them all. The cheap folder count comes
    first so that the probe does not take the CPU the daemons need: a `dfs fetch` process per poll
    costs a process start and a whole listing."""
    poll = 0.002 if count == 1 else 0.05
    while stored_on_node(c.node) < count:
        time.sleep(poll)
        if time.monotonic() - t0 > 600:
            raise SystemExit(f"{ds}: not all stored after 600 s")
    while c.listed() < count:
        time.sleep(0.002)
        if time.monotonic() - t0 > 600:
            raise SystemExit(f"{ds}: not all listed after 600 s")


def stored_on_node(node):
    """Files in the node's class folders (the datasets are flat)."""
    n = 0
    for cls in ("mp3", "txt", "pdf", "others"):
        try:
            n += len(os.listdir(os.path.join(node, cls)))
        except FileNotFoundError:
            pass
    return n


def make_set(root, count, size):
    """A flat folder of `count` random files of `size` bytes (names rotate .mp3 .txt .pdf .bin)."""
    name = f"n{count}-s{size}"
    d = os.path.join(root, name)
    marker = os.path.join(root, f".{name}.done")
    if not os.path.exists(marker):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        log(f"making dataset {name}")
        exts = [".mp3", ".txt", ".pdf", ".bin"]
        for i in range(count):
            write_random(os.path.join(d, f"f{i:06d}{exts[i % 4]}"), size)
        open(marker, "w").close()
    return name


def run_scaling(bin, data, work, state, trash):
    """How time grows with file count (4 KiB files) and file size (one file): dfs, one run each."""
    rows = []
    for count, size in [(1000, 4096), (10000, 4096), (100000, 4096),
                        (1, 1 << 20), (1, 16 << 20), (1, 256 << 20), (1, 1 << 30), (1, 4 << 30)]:
        ds = make_set(data, count, size)
        t, rss, _ = run_sync(bin, work, data, ds, count, state, trash)
        log(f"scaling {ds}: {t:.3f} s, peak RSS MiB {rss}")
        rows.append((count, size, t, max(rss.values())))
        if count > 1:
            shutil.rmtree(os.path.join(data, ds))
            os.remove(os.path.join(data, f".{ds}.done"))
            state["last_bulk_delete"] = time.monotonic()
    print("\n| files | size | dfs time | files/s | MB/s | max peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for count, size, t, rss in rows:
        print(f"| {count} | {size} B | {t:.3f} s | {count / t:.0f} | {count * size / t / 1e6:.1f} | {rss:.0f} |")


def run_latency(bin, work_root, samples=20):
    work = os.path.join(work_root, f"run-latency-{time.monotonic_ns()}")
    os.makedirs(work)
    c = Cluster(bin, work)
    durable, listed = [], []
    try:
        # Steady state: a fresh broker refuses changes as busy until it has its index from the
        # node, which the first file would otherwise measure. One file synced first.
        with open(os.path.join(c.source, "warmup.txt"), "wb") as f:
            f.write(b"warm-up")
        end = time.monotonic() + 30
        while c.listed() < 1:
            if time.monotonic() > end:
                raise SystemExit("latency: the warm-up file was not listed after 30 s")
            time.sleep(0.01)
        for i in range(samples):
            name = f"lat{i:03d}.txt"
            dst = os.path.join(c.node, "txt", name)
            data = os.urandom(4096)
            f = open(os.path.join(c.source, name), "wb")
            f.write(data)
            t0 = time.perf_counter()
            f.close()
            while not os.path.exists(dst):
                time.sleep(0.0002)
            durable.append(time.perf_counter() - t0)
            while c.listed() < i + 2:
                pass
            listed.append(time.perf_counter() - t0)
            time.sleep(0.3)
    finally:
        c.stop()
    return durable, listed


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "dfs"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sets", default="big,small,medium,latency")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data", default="/tmp/dfsbench/data")
    ap.add_argument("--work", default="/tmp/dfsbench/dfs")
    ap.add_argument("--no-rsync", action="store_true", help="measure dfs only")
    ap.add_argument("--scaling", action="store_true",
                    help="also time 1k/10k/100k files of 4 KiB and one file of 1 MiB to 4 GiB (dfs only)")
    ap.add_argument("--curve", action="store_true", help="CURVE keys on every dfs link (dfs keygen)")
    a = ap.parse_args()
    run(a)


def run(a):
    Cluster.curve = a.curve
    sets = a.sets.split(",")
    specs = make_datasets(a.data, a.scale, sets)
    os.makedirs(a.work, exist_ok=True)
    trash = os.path.join(a.work, "trash")
    os.makedirs(trash, exist_ok=True)
    state = {}
    rows = []
    rsyncd = None if a.no_rsync else Rsyncd(a.work)
    try:
        for ds in ("big", "small", "medium"):
            if ds not in sets:
                continue
            count, size = specs[ds]
            times, fetches, rss_all, pushes = [], [], [], []
            pulls = {"pull": [], "pull --fsync": []}
            for r in range(a.runs):
                t, rss, f = run_sync(a.bin, a.work, a.data, ds, count, state, trash)
                times.append(t)
                rss_all.append(rss)
                if f is not None:
                    fetches.append(f)
                log(f"{ds} run {r + 1}: dfs {t:.3f} s" + (f", fetch {f:.3f} s" if f else "") + f", peak RSS MiB {rss}")
                if rsyncd:
                    push, pulled = run_rsync(rsyncd, a.data, ds, count, state, trash, a.work)
                    pushes.append(push)
                    for kind, secs in pulled.items():
                        pulls.setdefault(kind, []).append(secs)
                    log(f"{ds} run {r + 1}: rsync push --fsync {push:.3f} s"
                        + "".join(f", {kind} {secs:.3f} s" for kind, secs in pulled.items()))
            med = statistics.median(times)
            peak = {k: max(x[k] for x in rss_all) for k in rss_all[0]}
            ref = statistics.median(pushes) if pushes else None
            rows.append((f"{count} x {size} B: copy into source -> durable + listed", med, count * size / med / 1e6,
                         count / med, peak, ref, paired(times, pushes)))
            for kind, theirs in pulls.items():
                if fetches and (theirs or kind == "pull"):
                    rows.append((f"fetch 1 x {size} B (verified, fsynced) vs rsync {kind}", statistics.median(fetches),
                                 size / statistics.median(fetches) / 1e6, None, None,
                                 statistics.median(theirs) if theirs else None, paired(fetches, theirs)))
    finally:
        if rsyncd:
            rsyncd.stop()
    if "restore" in sets:
        count, size = specs["small"]
        ours = {"now": [], "again": [], "at": []}
        theirs = {"pull --fsync": [], "pull again": []}
        costs = []
        rsyncd = None if a.no_rsync else Rsyncd(a.work)
        try:
            for r in range(a.runs):
                times, cost = run_restore(a.bin, a.work, a.data, count, state, trash)
                for k in ours:
                    ours[k].append(times[k])
                costs.append(cost)
                log(f"restore run {r + 1}: everything now {times['now']:.3f} s, again over it "
                    f"{times['again']:.3f} s, --at before the rewrite {times['at']:.3f} s; history "
                    f"on disk {cost}")
                if rsyncd:
                    _, pulled = run_rsync(rsyncd, a.data, "small", count, state, trash, a.work)
                    for k in theirs:
                        theirs[k].append(pulled[k])
                    log(f"restore run {r + 1}: rsync pull --fsync {pulled['pull --fsync']:.3f} s, "
                        f"again {pulled['pull again']:.3f} s")
        finally:
            if rsyncd:
                rsyncd.stop()
        for label, key, ref in (("into an empty target", "now", "pull --fsync"),
                                ("again over the complete target", "again", "pull again"),
                                ("as before the rewrite (--at), into an empty target", "at", "pull --fsync")):
            med = statistics.median(ours[key])
            rmed = statistics.median(theirs[ref]) if theirs[ref] else None
            rows.append((f"restore {count} x {size} B ('**') {label} vs rsync {ref}", med,
                         count * size / med / 1e6, count / med, None, rmed, paired(ours[key], theirs[ref])))
        c = costs[-1]
        rows.append((f"history after rewriting all {count} files: objects {c['objects'] / 2**20:.1f} MiB, "
                     f"version records {c['history'] / 2**20:.1f} MiB on disk", None, None, None, None, None,
                     None))
    if "latency" in sets:
        durable, listed = run_latency(a.bin, a.work)
        for label, xs in (("close -> durable on node", durable), ("close -> listed", listed)):
            rows.append((f"latency 4 KiB, {label}: p50 {pct(xs, 50) * 1e3:.2f} ms, p99 {pct(xs, 99) * 1e3:.2f} ms",
                         None, None, None, None, None, None))
    if a.scaling:
        run_scaling(a.bin, a.data, a.work, state, trash)
    shutil.rmtree(trash, ignore_errors=True)
    print(f"\nguest memory: {vm_memory.describe()}")
    print("\n| measurement | dfs median | MB/s | files/s | rsync median | dfs/rsync time | "
          "median of run-by-run ratios | peak RSS MiB (watch/broker/storage) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, med, mbs, fps, peak, ref, pairs in rows:
        if med is None:
            print(f"| {label} | | | | | | | |")
            continue
        p = "" if not peak else " / ".join(f"{peak[k]:.0f}" for k in ("watch", "broker", "storage"))
        r = f"{ref:.3f} s" if ref else ""
        ratio = f"{med / ref:.2f}x" if ref else ""
        f = f"{fps:.0f}" if fps else ""
        pr = f"{pairs:.2f}x" if pairs else ""
        print(f"| {label} | {med:.3f} s | {mbs:.1f} | {f} | {r} | {ratio} | {pr} | {p} |")


def paired(ours, theirs):
    """The median of dfs/rsync over the runs taken side by side: on this VM a run of either tool
    can meet a slow state (page-cache writes into memory handed back to the host), and a pair
    shares the state more often than two medians do."""
    if not theirs:
        return None
    return statistics.median(a / b for a, b in zip(ours, theirs))


if __name__ == "__main__":
    main()
