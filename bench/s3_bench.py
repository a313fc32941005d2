#!/usr/bin/env python3
"""dfs on the S3 backend against a plain S3 client (boto3), on the same Garage cluster, in one run.

Garage: three `garage server` processes on loopback with free ports, one zone each, replication
factor 3, consistent mode, data and metadata fsynced, sqlite metadata (as tests/e2e/garage.rs);
one bucket and one key with read and write on it. Both systems talk to Garage node 0.

dfs: the three daemons on loopback (bench/dfs_bench.py's Cluster), the storage node started with
`--backend s3://dfs/PREFIX --s3-endpoint http://127.0.0.1:PORT --s3-region garage` and the
credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. A push is timed from the start of the
`cp` into the watched folder until every file is listed by `dfs fetch --json` with its size and a
BLAKE3 (the broker's files_routed metric is polled first, as the cheap probe, so that the probe
does not take the CPU the daemons need). A fetch is `dfs fetch` into an empty folder (each file
verified, fsynced, renamed into place, its folder fsynced).

plain: boto3 with path-style addressing, region "garage", its default checksums and SigV4
payload signing (the endpoint is plain http). The 1 GiB file: upload_file / download_file with
TransferConfig(multipart_chunksize=8 MiB, max_concurrency=2), as the dfs node uploads 8 MiB parts
two at a time; the download is fsynced (file and folder) before the clock stops. The 10,000
files: put_object of each from a pool of --threads threads (32); the restore lists the prefix
and get_object's every key into a file from the same pool, fsyncing each file, then the folder.

Each run has a fresh prefix in the bucket (nothing is deleted from Garage between runs) and new
bytes: the datasets (WORK/data-xSCALE) are rewritten in place with random bytes before every
run of either side, since Garage keeps a block once however many objects hold it, and a run
putting the bytes of an earlier run would write no block. Runs alternate dfs, plain, dfs,
plain, ... Before each timed push the source is read once (warm) and `sync` runs, and the bench
waits (at most 30 s) until Garage's three processes are idle. Per phase it also notes the S3
requests Garage node 0 took by call (from its admin /metrics; the bench's own HEAD probes, one
per 50 ms during a dfs push of one file, left out), the block bytes the three nodes wrote, the
disk's bytes written and the CPU seconds of each side. The table gives the spread and the
median of each system, the ratio of the medians dfs/plain and the median of the run-by-run
ratios; then the peak RSS (VmHWM) of each dfs daemon per row (reset through
/proc/PID/clear_refs between the push and the fetch of one run) and of `dfs fetch` (wait4), and
Garage's disk use at the end. One bench at a time per --work (a lock file).

Usage: python3 bench/s3_bench.py [--bin target/release/dfs] [--runs 3]
       [--sets big,small,restore,bigfetch] [--scale 1.0] [--threads 32] [--work /tmp/dfsbench/s3]

No host setting is changed. Every process started is stopped at the end, on error and on Ctrl-C.
"""
import argparse
import concurrent.futures
import fcntl
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dfs_bench  # noqa: E402
from dfs_bench import Cluster, log, make_datasets, paired, sh, warm  # noqa: E402
import vm_memory  # noqa: E402

BUCKET = "dfs"
KEY_NAME = "dfs-bench"
PART = 8 << 20
PARTS_IN_FLIGHT = 2
HEX64 = re.compile(r"[0-9a-f]{64}")


def class_of(name):
    """The class folder dfs's default routing gives `name` (by extension)."""
    last = name.rsplit("/", 1)[-1].lstrip(".")
    ext = last.rsplit(".", 1)[1].lower() if "." in last else ""
    return ext if ext in ("mp3", "txt", "pdf") else "others"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def disk_written(path):
    """Bytes written so far to the disk that holds `path` (/sys/dev/block/MAJ:MIN/stat)."""
    st = os.stat(path).st_dev
    dev = f"/sys/dev/block/{os.major(st)}:{os.minor(st)}/stat"
    try:
        with open(dev) as f:
            return int(f.read().split()[6]) * 512
    except (OSError, IndexError, ValueError):
        return 0


def delta(before, after, probes=0):
    """The counters of a phase: Garage CPU s, disk MB written, Garage block MB written (all
    three nodes, so three copies), S3 requests by call (the bench's own HEAD probes left out)."""
    req = {k: int(v - before["req"].get(k, 0)) for k, v in after["req"].items()}
    if probes:
        req["HeadObject"] = req.get("HeadObject", 0) - probes
    return {"garage_cpu": round(after["cpu"] - before["cpu"], 2),
            "disk_MB": round((after["disk"] - before["disk"]) / 1e6),
            "blocks_MB": round((after["blocks"] - before["blocks"]) / 1e6),
            "requests": {k: v for k, v in sorted(req.items()) if v}}


def refresh(src):
    """Every file of `src` rewritten in place with new random bytes: Garage keeps a block once
    however many objects have it, so a run that put the bytes of an earlier run would write
    nothing new. Rewritten in place, not deleted and made again (see dfs_bench.discard)."""
    for n in os.listdir(src):
        path = os.path.join(src, n)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            left = size
            while left > 0:
                k = min(left, 1 << 24)
                f.write(os.urandom(k))
                left -= k


def others():
    """Processes of this machine that would share the CPU or the disk with a run and were not
    started by this bench: another Garage, dfs daemon, bench or build. Only reported."""
    mine = {os.getpid()}
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if int(pid) in mine or ppid in mine:
            continue
        names = [os.path.basename(x.decode(errors="replace")) for x in argv[:3]]
        if names[0] in ("cargo", "rustc") or (names[0] == "garage" and b"server" in argv) \
                or (names[0] == "dfs" and len(names) > 1 and names[1] in ("storage", "broker", "watch")) \
                or any(n in ("s3_bench.py", "dfs_bench.py", "scale.py") for n in names):
            found.add(names[0] if names[0] not in ("python3", "python") else names[1])
    return sorted(found)


def self_cpu_s():
    t = os.times()
    return t.user + t.system


def stop_proc(p, grace=15):
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


class Garage:
    """Three Garage nodes on loopback (tests/e2e/garage.rs), a bucket and a key."""

    def __init__(self, bin, root):
        self.bin, self.root = bin, root
        self.procs, self.configs, self.s3_ports, self.admin_ports = [], [], [], []
        shutil.rmtree(root, ignore_errors=True)
        secret = os.urandom(32).hex()
        for i in range(3):
            d = os.path.join(root, f"garage{i}")
            os.makedirs(d)
            rpc, s3, admin = free_port(), free_port(), free_port()
            conf = os.path.join(d, "garage.toml")
            with open(conf, "w") as f:
                f.write(f'metadata_dir = "{d}/meta"\n'
                        f'data_dir = "{d}/data"\n'
                        'db_engine = "sqlite"\n'
                        "replication_factor = 3\n"
                        'consistency_mode = "consistent"\n'
                        "metadata_fsync = true\n"
                        "data_fsync = true\n"
                        f'rpc_bind_addr = "127.0.0.1:{rpc}"\n'
                        f'rpc_public_addr = "127.0.0.1:{rpc}"\n'
                        f'rpc_secret = "{secret}"\n'
                        "[s3_api]\n"
                        's3_region = "garage"\n'
                        f'api_bind_addr = "127.0.0.1:{s3}"\n'
                        'root_domain = ".s3.garage.localhost"\n'
                        "[admin]\n"
                        f'api_bind_addr = "127.0.0.1:{admin}"\n')
            self.configs.append(conf)
            self.s3_ports.append(s3)
            self.admin_ports.append(admin)
        env = dict(os.environ, RUST_LOG="garage=warn")
        for i, conf in enumerate(self.configs):
            logf = open(os.path.join(root, f"garage{i}", "garage.log"), "ab")
            self.procs.append(subprocess.Popen([bin, "-c", conf, "server"], env=env, stdin=subprocess.DEVNULL,
                                               stdout=logf, stderr=logf))
        ids = []
        for i in range(3):
            ids.append(self.cli(i, "node", "id", "-q").strip())
        for nid in ids[1:]:
            self.cli(0, "node", "connect", nid)
        for i, nid in enumerate(ids):
            self.cli(0, "layout", "assign", "-z", f"z{i}", "-c", "1G", nid.split("@")[0])
        self.cli(0, "layout", "apply", "--version", "1")
        self.cli(0, "bucket", "create", BUCKET)
        key = self.cli(0, "key", "create", KEY_NAME)

        def field(label):
            for line in key.splitlines():
                if line.strip().startswith(label):
                    return line.split(":", 1)[1].strip()
            raise SystemExit(f"no {label!r} in `garage key create`:\n{key}")
        self.key_id, self.secret = field("Key ID"), field("Secret key")
        self.cli(0, "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME)

    def try_cli(self, i, *args):
        out = subprocess.run([self.bin, "-c", self.configs[i]] + list(args), capture_output=True, text=True,
                             timeout=60)
        if out.returncode == 0 and (out.stdout.strip() or list(args[:2]) != ["node", "id"]):
            return True, out.stdout
        return False, out.stdout + out.stderr

    def cli(self, i, *args, timeout=60):
        """`garage -c CONFIG(i) ARGS`, retried while the cluster forms."""
        end = time.monotonic() + timeout
        while True:
            for p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"a garage node exited ({p.returncode}); see {self.root}/garage*/garage.log")
            ok, out = self.try_cli(i, *args)
            if ok:
                return out
            if time.monotonic() > end:
                raise SystemExit(f"garage {' '.join(args)} failed for {timeout} s: {out}")
            time.sleep(0.2)

    def endpoint(self, i=0):
        return f"http://127.0.0.1:{self.s3_ports[i]}"

    def cpu_s(self):
        return sum(proc_cpu_s(p.pid) for p in self.procs)

    def metrics(self, i):
        """Node i's Prometheus metrics (the admin API's /metrics, open without a metrics_token)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_ports[i]}/metrics", timeout=10) as r:
            return r.read().decode()

    def counters(self):
        """What the phases are compared by: Garage's CPU seconds, the S3 requests node 0 took
        (by API call), the block bytes the three nodes wrote, and the disk's bytes written."""
        req = {}
        for line in self.metrics(0).splitlines():
            m = re.match(r'api_s3_request_counter\{api_endpoint="(\w+)"\} (\S+)', line)
            if m:
                req[m.group(1)] = float(m.group(2))
        blocks = 0.0
        for i in range(3):
            for line in self.metrics(i).splitlines():
                if line.startswith("block_bytes_written "):
                    blocks += float(line.split()[1])
        return {"cpu": self.cpu_s(), "req": req, "blocks": blocks, "disk": disk_written(self.root)}

    def peak_rss_mib(self):
        return [proc_hwm_mib(p.pid) for p in self.procs]

    def wait_idle(self, limit=30.0):
        """Waits until Garage uses under 2 % of a core over half a second (background work of
        the last run done), at most `limit` seconds; returns how long it waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            c0 = self.cpu_s()
            time.sleep(0.5)
            if self.cpu_s() - c0 < 0.01:
                break
        return time.monotonic() - t0

    def disk_bytes(self):
        out = subprocess.run(["du", "-s", "-B1"] + [os.path.join(self.root, f"garage{i}", d)
                                                      for i in range(3) for d in ("data", "meta")],
                             capture_output=True, text=True)
        return sum(int(line.split()[0]) for line in out.stdout.splitlines())

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Plain:
    """A boto3 client of the bucket through Garage node 0, counting the failed attempts (an
    exception or an HTTP status of 400 and above other than 404; each retried by botocore or
    raised)."""

    def __init__(self, g, threads):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        self.client = boto3.client(
            "s3", endpoint_url=g.endpoint(0), region_name="garage", aws_access_key_id=g.key_id,
            aws_secret_access_key=g.secret,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=max(10, threads + 4),
                          retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=600))
        self.transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                                       max_concurrency=PARTS_IN_FLIGHT)
        self.threads = threads
        self.failed = 0
        self.heads = 0
        self.lock = threading.Lock()
        self.client.meta.events.register("needs-retry.s3", self._attempt)

    def _attempt(self, response=None, caught_exception=None, **_):
        bad = caught_exception is not None
        if response is not None and response[0].status_code >= 400 and response[0].status_code != 404:
            bad = True
        if bad:
            with self.lock:
                self.failed += 1
        return None

    def keys(self, prefix):
        """(key, size) of every object below `prefix`."""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            out.extend((o["Key"], o["Size"]) for o in page.get("Contents", []))
        return out

    def probe(self, timeout=60):
        """Put, get and delete one object, retried while the new key's rights spread."""
        end = time.monotonic() + timeout
        while True:
            try:
                self.client.put_object(Bucket=BUCKET, Key="probe", Body=b"probe")
                assert self.client.get_object(Bucket=BUCKET, Key="probe")["Body"].read() == b"probe"
                self.client.delete_object(Bucket=BUCKET, Key="probe")
                return
            except Exception as e:  # noqa: BLE001 - any failure is retried until the deadline
                if time.monotonic() > end:
                    raise SystemExit(f"the bucket does not answer boto3: {e}")
                time.sleep(0.5)


class S3Cluster(Cluster):
    """dfs_bench's Cluster with the storage node on the bucket and the broker's metrics on."""

    def __init__(self, bin, work, backend):
        self.backend = backend
        try:
            super().__init__(bin, work)
        except BaseException:
            for name in ("watch", "broker", "storage"):
                d = getattr(self, name, None)
                if d is not None:
                    d.stop()
            raise
        self.metrics = self.broker.wait_ready()["metrics"]

    def keys(self, bin, work):
        # Cluster.__init__ appends each role's "keys" to its options: the backend's go with them.
        k = Cluster.keys(bin, work)
        k["storage"] = k["storage"] + self.backend
        k["broker"] = k["broker"] + ["--metrics", "127.0.0.1:0"]
        return k

    def routed(self):
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("dfs_broker_files_routed"):
                    return float(line.split()[-1])
        return 0.0

    def listing(self):
        import json
        out = subprocess.run([self.bin, "fetch", "--json", "--broker", self.fetch_addr] + self.fetch_keys,
                             capture_output=True, text=True, timeout=60)
        rows = {}
        for line in out.stdout.splitlines():
            if line.strip():
                v = json.loads(line)
                rows[v["name"]] = (v["size"], v["blake3"])
        return rows

    def node_tmp_max(self):
        """The largest file the node has open in ROOT/.dfs/tmp (an upload being received, a
        read being copied from the bucket): its temporary files are unnamed (O_TMPFILE), so
        they are found through /proc/PID/fd."""
        tmp = os.path.join(self.node, ".dfs", "tmp")
        fds = f"/proc/{self.storage.p.pid}/fd"
        best = 0
        for fd in os.listdir(fds):
            try:
                if os.readlink(os.path.join(fds, fd)).startswith(tmp):
                    best = max(best, os.stat(os.path.join(fds, fd)).st_size)
            except FileNotFoundError:
                pass
        return best

    def reset_peaks(self):
        for d in self.daemons():
            with open(f"/proc/{d.p.pid}/clear_refs", "w") as f:
                f.write("5")

    def warnings(self):
        """WARN and ERROR lines of the three daemons' logs."""
        lines = []
        for d in self.daemons():
            with open(os.path.join(self.work, f"{d.name}.log"), errors="replace") as f:
                lines += [f"{d.name}: {line.rstrip()}" for line in f if " WARN " in line or " ERROR " in line]
        return lines


def run_timed(cmd, timeout, on_poll=None):
    """Runs `cmd`; returns (seconds, peak RSS MiB, CPU s) of the process, from wait4. `on_poll`
    is called every 10 ms meanwhile."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    err = []
    drain = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    drain.start()
    try:
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if on_poll:
                on_poll(time.monotonic() - t0)
            time.sleep(0.01)
        took = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        p.kill()
        p.wait()
        raise
    finally:
        killer.cancel()
    drain.join(5)
    if p.returncode != 0:
        text = b"".join(err).decode(errors="replace")
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}: {text[-2000:]}")
    return took, ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime


def wait_listed(c, want, t0, ds, timeout, phases, in_store=None):
    """Until the broker's files_routed reaches len(want) (polled cheaply), then until `dfs fetch
    --json` lists every name of `want` with its size and a BLAKE3. For one file, the moments the
    node had the whole upload in its temp folder and the object was in the bucket (`in_store`,
    a HEAD) are noted."""
    count = len(want)
    poll = 0.01 if count == 1 else 0.05
    size = max(want.values())
    last_head = 0.0
    while c.routed() < count:
        if count == 1:
            now = time.monotonic() - t0
            if "node has the file" not in phases:
                if c.node_tmp_max() >= size:
                    phases["node has the file"] = now
            elif "object in bucket" not in phases and in_store and now - last_head >= 0.05:
                # A HEAD every 50 ms at most, each one work for Garage (and often the broker has
                # the file within 50 ms of the object: then this phase is not seen).
                last_head = now
                if in_store():
                    phases["object in bucket"] = now
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"{ds}: not all stored after {timeout} s")
        time.sleep(poll)
    phases["broker indexed"] = time.monotonic() - t0
    while True:
        rows = c.listing()
        if all(n in rows and rows[n][0] == s and HEX64.fullmatch(rows[n][1]) for n, s in want.items()):
            return rows
        if time.monotonic() - t0 > timeout:
            missing = [n for n in want if n not in rows][:5]
            raise SystemExit(f"{ds}: not all listed after {timeout} s (missing e.g. {missing})")
        time.sleep(0.002 if count == 1 else 0.05)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def head(p, key):
    """Whether `key` is in the bucket (a HEAD through the plain client, not counted as a failure)."""
    p.heads += 1
    try:
        p.client.head_object(Bucket=BUCKET, Key=key)
        return True
    except p.client.exceptions.ClientError:
        return False


def same_tree(a, b):
    out = subprocess.run(["diff", "-r", "-q", a, b], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{b} differs from {a}: {out.stdout[:500]}{out.stderr[:500]}")


def source_files(src):
    return {n: os.path.getsize(os.path.join(src, n)) for n in sorted(os.listdir(src))}


def run_dfs(a, g, ds, src, second, trash):
    """One dfs run: push the dataset `ds`, then (if `second`) fetch it back into an empty folder."""
    tag = f"dfs-{ds}-{time.monotonic_ns()}"
    work = os.path.join(a.work, tag)
    os.makedirs(work)
    want = source_files(src)
    many = len(want) > 1
    refresh(src)
    warm(src)
    sh("sync")
    idle = g.wait_idle()
    c = S3Cluster(a.bin, work, ["--backend", f"s3://{BUCKET}/{tag}", "--s3-endpoint", g.endpoint(0),
                                "--s3-region", "garage"])
    res = {"phases": {}, "idle": idle}
    try:
        cpu0 = {d.name: d.cpu_s() for d in c.daemons()}
        g0, heads0 = g.counters(), a.plain.heads
        t0 = time.monotonic()
        sh(f"cp -r {src}/. {c.source}/")
        res["phases"]["cp done"] = time.monotonic() - t0
        only = next(iter(want))
        in_store = None if many else (lambda: head(a.plain, f"{tag}/{class_of(only)}/{only}"))
        wait_listed(c, want, t0, ds, a.timeout, res["phases"], in_store)
        res["push"] = time.monotonic() - t0
        res["push_rss"] = {d.name: d.peak_rss_mib() for d in c.daemons()}
        res["push_cpu"] = {d.name: round(d.cpu_s() - cpu0[d.name], 2) for d in c.daemons()}
        res["push_garage"] = delta(g0, g.counters(), a.plain.heads - heads0)
        if second:
            target = os.path.join(work, "target")
            c.reset_peaks()
            cpu0 = {d.name: d.cpu_s() for d in c.daemons()}
            sh("sync")
            g.wait_idle()
            g0 = g.counters()
            names = ["big.bin"] if not many else ["**"]
            size = max(want.values())
            fetched = {}

            def note(now):
                if not many and "node copied the object" not in fetched and c.node_tmp_max() >= size:
                    fetched["node copied the object"] = now
            took, rss, cpu = run_timed([a.bin, "fetch", "--broker", c.fetch_addr, "--target", target,
                                        "--timeout", "120"] + c.fetch_keys + names, a.timeout, note)
            res["fetch"] = took
            res["fetch_phases"] = fetched
            res["fetch_rss"] = {d.name: d.peak_rss_mib() for d in c.daemons()}
            res["fetch_rss"]["fetch"] = rss
            res["fetch_cpu"] = {d.name: round(d.cpu_s() - cpu0[d.name], 2) for d in c.daemons()}
            res["fetch_cpu"]["fetch"] = round(cpu, 2)
            res["fetch_garage"] = delta(g0, g.counters())
            same_tree(src, target)
    finally:
        c.stop()
    res["warnings"] = c.warnings()
    objs = a.plain.keys(tag + "/")
    res["objects"] = (len(objs), sum(s for _, s in objs))
    dfs_bench.discard(work, len(want), trash)
    return res


def run_plain(a, g, ds, src, second, trash):
    """One boto3 run: the same files to a fresh prefix, then (if `second`) back into an empty folder."""
    p = a.plain
    tag = f"plain-{ds}-{time.monotonic_ns()}"
    want = source_files(src)
    many = len(want) > 1
    key = lambda n: f"{tag}/{class_of(n)}/{n}"  # noqa: E731
    refresh(src)
    warm(src)
    sh("sync")
    res = {"idle": g.wait_idle()}
    failed0 = p.failed
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=p.threads)
    try:
        cpu0, g0 = self_cpu_s(), g.counters()
        t0 = time.monotonic()
        if many:
            def put(n):
                with open(os.path.join(src, n), "rb") as f:
                    body = f.read()
                p.client.put_object(Bucket=BUCKET, Key=key(n), Body=body)
            for _ in pool.map(put, want):
                pass
        else:
            (n,) = want
            p.client.upload_file(os.path.join(src, n), BUCKET, key(n), Config=p.transfer)
        res["push"] = time.monotonic() - t0
        res["push_cpu"] = {"client": round(self_cpu_s() - cpu0, 2)}
        res["push_garage"] = delta(g0, g.counters())
        if second:
            target = os.path.join(a.work, f"{tag}-target")
            os.makedirs(target)
            sh("sync")
            g.wait_idle()
            cpu0, g0 = self_cpu_s(), g.counters()
            t1 = time.monotonic()
            if many:
                def get(k):
                    body = p.client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
                    with open(os.path.join(target, k.rsplit("/", 1)[1]), "wb") as f:
                        f.write(body)
                        f.flush()
                        os.fsync(f.fileno())
                for _ in pool.map(get, [k for k, _ in p.keys(tag + "/")]):
                    pass
            else:
                (n,) = want
                dst = os.path.join(target, n)
                p.client.download_file(BUCKET, key(n), dst, Config=p.transfer)
                fd = os.open(dst, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(target)
            res["fetch"] = time.monotonic() - t1
            res["fetch_cpu"] = {"client": round(self_cpu_s() - cpu0, 2)}
            res["fetch_garage"] = delta(g0, g.counters())
            same_tree(src, target)
            dfs_bench.discard(target, len(want), trash)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    res["failed"] = p.failed - failed0
    objs = p.keys(tag + "/")
    res["objects"] = (len(objs), sum(s for _, s in objs))
    return res


def spread(xs):
    return f"{min(xs):.2f}–{max(xs):.2f} s ({statistics.median(xs):.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "dfs"))
    ap.add_argument("--garage", default=shutil.which("garage") or os.path.expanduser("~/.cargo/bin/garage"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sets", default="big,small,restore,bigfetch")
    ap.add_argument("--scale", type=float, default=1.0, help="shrink the datasets (such as 0.01 for a quick try)")
    ap.add_argument("--threads", type=int, default=32, help="threads of the plain client for the small files")
    ap.add_argument("--data", default=None, help="datasets (default WORK/data-xSCALE; rewritten with new bytes before "
                    "every run)")
    ap.add_argument("--work", default="/tmp/dfsbench/s3")
    ap.add_argument("--timeout", type=float, default=1800, help="longest wait for one push or fetch, seconds")
    ap.add_argument("--no-dfs", action="store_true", help="the plain client only (Garage and boto3)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started with SIGINT ignored
    sets = a.sets.split(",")
    unknown = set(sets) - {"big", "small", "restore", "bigfetch"}
    if unknown:
        ap.error(f"unknown sets {sorted(unknown)}")
    a.bin = os.path.abspath(a.bin)
    # One folder per scale: dfs_bench.make_datasets keeps a marker per size, not per folder.
    a.data = a.data or os.path.join(a.work, f"data-x{a.scale:g}")
    if not a.no_dfs and not os.access(a.bin, os.X_OK):
        ap.error(f"no dfs binary at {a.bin}")
    os.makedirs(a.work, exist_ok=True)
    # One bench per --work: a second one would wipe this one's Garage and rewrite its datasets.
    lock = open(os.path.join(a.work, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another s3_bench.py is running with --work {a.work}: give another --work")
    for stale in os.listdir(a.work):
        # What a run stopped midway left (its copies, its fetch targets).
        if stale.startswith(("dfs-", "plain-")):
            shutil.rmtree(os.path.join(a.work, stale), ignore_errors=True)
    specs = make_datasets(a.data, a.scale, [s for s in ("big", "small") if s in sets
                                            or (s == "big" and "bigfetch" in sets)
                                            or (s == "small" and "restore" in sets)])
    trash = os.path.join(a.work, "trash")
    os.makedirs(trash, exist_ok=True)
    g = None
    results = {}
    a.overlapped = []
    try:
        log("starting Garage (3 nodes, RF 3, consistent, fsync on, sqlite)")
        g = Garage(a.garage, os.path.join(a.work, "garage"))
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = g.key_id, g.secret
        a.plain = Plain(g, a.threads)
        a.plain.probe()
        for ds, second_set in (("big", "bigfetch"), ("small", "restore")):
            if ds not in sets and second_set not in sets:
                continue
            src = os.path.join(a.data, ds)
            second = second_set in sets
            rs = results[ds] = {"dfs": [], "plain": []}
            for r in range(a.runs):
                busy = others()
                if busy:
                    log(f"{ds} run {r + 1}: other processes share this machine now: {busy}")
                    a.overlapped.append(f"{ds} run {r + 1}: {', '.join(busy)}")
                if not a.no_dfs:
                    d = run_dfs(a, g, ds, src, second, trash)
                    rs["dfs"].append(d)
                    log(f"{ds} run {r + 1}: dfs push {d['push']:.3f} s "
                        f"(phases {', '.join(f'{k} {v:.2f}' for k, v in d['phases'].items())}; CPU s {d['push_cpu']}; "
                        f"Garage {d['push_garage']})"
                        + (f", fetch {d['fetch']:.3f} s ("
                           + "".join(f"{k} {v:.2f}; " for k, v in d["fetch_phases"].items())
                           + f"CPU s {d['fetch_cpu']}; Garage {d['fetch_garage']})" if second else "")
                        + f"; objects in prefix {d['objects']}; waited {d['idle']:.1f} s for Garage idle"
                        + f"; peak RSS MiB push {fmt_rss(d['push_rss'])}"
                        + (f", fetch {fmt_rss(d['fetch_rss'])}" if second else ""))
                    for w in d["warnings"][:10]:
                        log(f"  {w}")
                    if len(d["warnings"]) > 10:
                        log(f"  ... {len(d['warnings'])} WARN/ERROR lines in all")
                pl = run_plain(a, g, ds, src, second, trash)
                rs["plain"].append(pl)
                log(f"{ds} run {r + 1}: plain push {pl['push']:.3f} s (CPU s {pl['push_cpu']}; Garage {pl['push_garage']})"
                    + (f", fetch {pl['fetch']:.3f} s (CPU s {pl['fetch_cpu']}; Garage {pl['fetch_garage']})"
                       if second else "")
                    + f"; objects in prefix {pl['objects']}; failed attempts {pl['failed']}"
                    f"; waited {pl['idle']:.1f} s for Garage idle")
        garage_disk = g.disk_bytes()
        garage_rss = g.peak_rss_mib()
    finally:
        if g:
            g.stop()
        log("removing the runs' copies")
        shutil.rmtree(trash, ignore_errors=True)
    report(a, sets, specs, results, garage_disk, garage_rss)
    shutil.rmtree(os.path.join(a.work, "garage"), ignore_errors=True)


def fmt_rss(rss):
    return " / ".join(f"{rss[k]:.0f}" for k in ("watch", "broker", "storage", "fetch") if k in rss)


def report(a, sets, specs, results, garage_disk, garage_rss):
    print(f"\nguest memory: {vm_memory.describe()}")
    print(f"Garage: 3 nodes on loopback, RF 3, consistent mode, data and metadata fsynced, sqlite; both "
          f"systems through node 0. dfs: {a.bin}. plain: boto3 (path style, region garage, default "
          f"checksums); 1 GiB with TransferConfig(multipart_chunksize=8 MiB, max_concurrency=2); small files "
          f"from {a.threads} threads. Every plain fetch fsyncs each file it writes and then its folder, "
          f"as dfs fetch does. {a.runs} runs each, alternating dfs and plain; fresh prefix per run.\n")
    print("| measurement | dfs: range (median) | plain boto3: range (median) | dfs/plain (medians) | "
          "run by run | dfs peak RSS MiB (watch / broker / storage[ / fetch]) |")
    print("|---|---|---|---|---|---|")
    rows = []
    if "big" in results:
        n, size = specs["big"]
        mib = size / 2**20
        rs = results["big"]
        if "big" in sets:
            rows.append((f"1 file of {mib:.0f} MiB pushed (dfs: from the start of `cp` into the source to listed "
                         f"with its hash; plain: upload_file)", rs, "push", size, None))
        if "bigfetch" in sets:
            rows.append((f"fetch of the {mib:.0f} MiB file (dfs fetch, verified, fsynced; plain: download_file, "
                         f"then fsync)", rs, "fetch", size, None))
    if "small" in results:
        n, size = specs["small"]
        rs = results["small"]
        if "small" in sets:
            rows.append((f"{n:,} files of {size // 1024} KiB pushed (dfs: `cp -r` into the source to all listed; "
                         f"plain: put_object, {a.threads} threads)", rs, "push", n * size, n))
        if "restore" in sets:
            rows.append((f"restore of the {n:,} files into an empty folder (dfs fetch '**'; plain: list, then "
                         f"get_object from {a.threads} threads, each file fsynced)", rs, "fetch", n * size, n))
    for label, rs, key, nbytes, nfiles in rows:
        ours = [r[key] for r in rs["dfs"]]
        theirs = [r[key] for r in rs["plain"]]
        def cell(xs):
            if not xs:
                return ""
            m = statistics.median(xs)
            rate = f"{nfiles / m:,.0f} files/s" if nfiles else f"{nbytes / m / 1e6:.1f} MB/s"
            return f"{spread(xs)}; {rate}"
        ratio = f"{statistics.median(ours) / statistics.median(theirs):.2f}×" if ours and theirs else ""
        pr = paired(ours, theirs) if ours else None
        rss_key = "push_rss" if key == "push" else "fetch_rss"
        peak = {}
        for r in rs["dfs"]:
            for k, v in r[rss_key].items():
                peak[k] = max(peak.get(k, 0), v)
        print(f"| {label} | {cell(ours)} | {cell(theirs)} | {ratio} | {f'{pr:.2f}×' if pr else ''} | "
              f"{fmt_rss(peak)} |")
    print("\n| where the work went (medians of the runs; requests: the last run) | side | S3 requests to Garage "
          "node 0 | Garage block MB written (3 copies) | disk MB written | Garage CPU s | dfs daemons + fetch / "
          "boto3 CPU s |")
    print("|---|---|---|---|---|---|---|")
    for label, rs, key, nbytes, nfiles in rows:
        for side in ("dfs", "plain"):
            runs = rs[side]
            if not runs:
                continue
            gk, ck = f"{key}_garage", f"{key}_cpu"
            med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
            reqs = ", ".join(f"{k} {v:,}" for k, v in runs[-1][gk]["requests"].items())
            print(f"| {label.split(' (')[0]} | {side} | {reqs} | {med(lambda r: r[gk]['blocks_MB']):,.0f} | "
                  f"{med(lambda r: r[gk]['disk_MB']):,.0f} | {med(lambda r: r[gk]['garage_cpu']):.1f} | "
                  f"{med(lambda r: sum(r[ck].values())):.1f} |")
    failed = sum(r["failed"] for rs in results.values() for r in rs["plain"])
    warns = sum(len(r["warnings"]) for rs in results.values() for r in rs["dfs"])
    print(f"\nruns started while other heavy processes ran: {'; '.join(a.overlapped) or 'none'}")
    print(f"plain client: {failed} failed S3 attempts (retried by botocore); dfs daemons: {warns} WARN/ERROR "
          f"log lines")
    for ds, rs in results.items():
        for side in ("dfs", "plain"):
            if rs[side]:
                objs = rs[side][-1]["objects"]
                print(f"objects in the last {side} run's prefix ({ds}): {objs[0]:,}, {objs[1] / 2**20:.1f} MiB")
    print(f"Garage on disk at the end (data + metadata of the three nodes, every run kept): "
          f"{garage_disk / 2**30:.2f} GiB; Garage peak RSS MiB per node: "
          + " / ".join(f"{x:.0f}" for x in garage_rss))


if __name__ == "__main__":
    main()
