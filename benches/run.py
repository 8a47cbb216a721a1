#!/usr/bin/env python3
"""Every benchmark row of Tandem, in one run, against its peers.

    benches/run.py [--runtime 8] [--sweep-runtime 3] [--size 1G] [--workdir DIR] [--out DIR]
    benches/run.py --rows-only [--rows w1,w5] [--targets qemu-nbd,replicated] [--baseline DIR]

The second form runs only the workload rows, for trying a change: with
--baseline DIR (another build's target/release) that build's pair runs
interleaved with this one's, an A/B comparison in one run (and with
ram-peer among the targets, that build's ram-peer beside this one's).

Targets, one after another on the same machine and the same kind of file:
  file        the preallocated file itself through fio's io_uring, O_DIRECT: the physical limit
  file-pair   two files written at once by two fio jobs: the limit of two replicas on one disk
  lockstep    each write to two files at once, done when both are (examples/lockstep_writes.rs):
              the limit of any synchronous mirror on one disk
  qemu-nbd    qemu-nbd --cache=none --aio=io_uring on the same file, unreplicated: the bar
  standalone  one tandemd, no peer (external metadata, so the file holds only data)
  replicated  two tandemd on loopback, protocol C, each on its own preallocated file
  ram-peer    the same pair with the Secondary's disk in RAM (tmpfs): replication without
              the shared disk, as with a peer on a machine of its own
  mirror      qemu-storage-daemon with a write-blocking blockdev-mirror to a second
              qemu-nbd: the replicated peer that exists today

Rows: 4k random write QD1 (mean and p99 latency), 4k random write QD32 (IOPS),
1M sequential write QD8 (MB/s), 4k random read QD32 (IOPS), 4k write + flush
QD1, the same with four committers at once (commits per second; not run on
file-pair and lockstep), and a queue-depth sweep of 4k random writes. For the replicated pair
also: the initial full sync, a full resync with and without an fio QD1 load on
the Primary (and under the load again with each --min-rates c-min-rate), a
1%-dirty resync (bytes moved), CPU-seconds per GiB written,
and the daemon's memory on a 1 TiB device.

Writes OUT/summary.md (the tables, with the performance issue's targets),
OUT/results.json, OUT/iops-by-queue-depth.png and OUT/latency-cdf.png
(gnuplot). Needs root, fio, qemu-utils, qemu-system-common
(qemu-storage-daemon), libnbd-bin, iperf3, gnuplot-nox.
"""

import argparse
import atexit
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PERCENTILES = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.99]
SWEEP_DEPTHS = [1, 2, 4, 8, 16, 32, 64]
TARGETS = ["file", "file-pair", "lockstep", "qemu-nbd", "standalone", "replicated", "ram-peer", "mirror"]

# (key, label, fio arguments)
WORKLOADS = [
    ("w1", "4k randwrite QD1", ["--rw=randwrite", "--bs=4k", "--iodepth=1"]),
    ("w2", "4k randwrite QD32", ["--rw=randwrite", "--bs=4k", "--iodepth=32"]),
    ("w3", "1M seq write QD8", ["--rw=write", "--bs=1M", "--iodepth=8"]),
    ("w4", "4k randread QD32", ["--rw=randread", "--bs=4k", "--iodepth=32"]),
    ("w5", "4k write + flush QD1", ["--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1"]),
    # Not one of the performance issue's rows: a database with several
    # threads committing at once, whose writes never go quiet (one NBD
    # connection per committer, as several clients would have).
    ("w6", "4k write + flush, 4 committers", ["--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1",
                                              "--numjobs=4", "--group_reporting"]),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(*args, check=True, **kw):
    return subprocess.run([str(a) for a in args], check=check, text=True, capture_output=True, **kw)


class Procs:
    """Every daemon this run starts, stopped by pid however the run ends."""

    def __init__(self):
        self.live = []

    def spawn(self, args, logfile, env=None):
        out = open(logfile, "w")
        p = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.live.append(p)
        return p

    def stop(self, procs):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p in self.live:
                self.live.remove(p)

    def stop_all(self):
        self.stop(list(self.live))


PROCS = Procs()


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    return total


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_for(what, cond, timeout=120.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise RuntimeError(f"timed out waiting for {what}")


def wait_nbd(uri):
    wait_for(f"{uri} to answer", lambda: run("nbdinfo", "--size", uri, check=False).returncode == 0, 20, 0.1)


def fio(where, args, size, runtime):
    """One fio job; returns its parsed JSON job record. `files:A,B` runs
    one job per file at once and returns every job's record."""
    if where.startswith("lockstep:"):
        a, b = where[9:].split(",")
        out = run(BIN / "examples" / "lockstep_writes", a, b, *args, f"--runtime={runtime}", "--ramp_time=1").stdout
        return json.loads(out)["jobs"][0]
    if where.startswith("files:"):
        io = ["--ioengine=io_uring", "--direct=1"]
        jobs = [a for i, f in enumerate(where[6:].split(",")) for a in (f"--name=bench{i}", f"--filename={f}")]
    elif where.startswith("file:"):
        io, jobs = ["--ioengine=io_uring", "--direct=1", f"--filename={where[5:]}"], ["--name=bench"]
    else:
        io, jobs = ["--ioengine=nbd", f"--uri={where}"], ["--name=bench"]
    pl = ":".join(str(p) for p in PERCENTILES)
    # Options before the first --name apply to every job.
    cmd = ["fio", *io, f"--size={size}", "--time_based", f"--runtime={runtime}",
           "--ramp_time=1", "--lat_percentiles=1", f"--percentile_list={pl}", "--output-format=json",
           *args, *jobs]
    out = run(*cmd).stdout
    # fio's nbd engine prints "fio: connected to NBD server" before the JSON.
    records = json.loads(out[out.index("{"):])["jobs"]
    return records if where.startswith("files:") else records[0]


def summarise(job, key):
    if isinstance(job, list):
        # Several files at once: the figures of one file (the jobs'
        # average), the CDF of the first.
        each = [summarise(j, key) for j in job]
        return {k: (each[0][k] if k == "cdf" else sum(e[k] for e in each) / len(each)) for k in each[0]}
    side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
    pct = side["lat_ns"].get("percentile", {})
    r = {
        "iops": side["iops"],
        "mbs": side["bw_bytes"] / 1e6,
        "mean_us": side["lat_ns"]["mean"] / 1000,
        "p99_us": pct.get("99.000000", 0) / 1000,
        "cdf": [[float(p), v / 1000] for p, v in sorted(pct.items(), key=lambda kv: float(kv[0]))],
        "bytes": side["io_bytes"],
    }
    if key in ("w5", "w6"):
        # The nbd engine turns --fsync=1 into a FLUSH after each write; its
        # latency is fio's "sync" section. A cycle is write + flush.
        r["cycle_us"] = (side["lat_ns"]["mean"] + job["sync"]["lat_ns"]["mean"]) / 1000
    return r


class Target:
    name = ""
    desc = ""

    def __init__(self, work, img, size, port, other=None):
        # `other`: a second file (the two-file limit's, the mirror's target).
        self.work, self.img, self.size, self.port, self.other = work, img, size, port, other
        self.procs = []
        self.extras = {}

    def uri(self):
        raise NotImplementedError

    def pids(self):
        return [p.pid for p in self.procs]

    def start(self):
        pass

    def stop(self):
        PROCS.stop(self.procs)
        self.procs = []

    def files(self):
        """The backing files this target runs on."""
        return [self.img, self.other] if self.other else [self.img]

    def set_files(self, files):
        if self.other:
            self.img, self.other = files
        else:
            (self.img,) = files


class FileTarget(Target):
    name = "file"
    desc = "the file itself (fio io_uring, O_DIRECT): the limit"

    def uri(self):
        return f"file:{self.img}"

    def pids(self):
        return []


class FilePairTarget(Target):
    """What a pair on this machine is up against before any software: its
    two replicas are two files on one virtual disk, written at once. Two
    fio jobs, one per file, each with the row's queue depth; the figures
    are one file's."""
    name = "file-pair"
    desc = "two files written at once (fio io_uring, O_DIRECT): the limit of two replicas on one disk"
    # Four committers on each of two files would be eight.
    skips = ("w6",)

    def uri(self):
        return f"files:{self.img},{self.other}"

    def pids(self):
        return []


class LockstepTarget(Target):
    """What any synchronous mirror on this machine is up against: each
    write goes to both files at once and is done when both are, with no
    network or NBD in between (examples/lockstep_writes.rs). Unlike the
    two independent jobs of file-pair, a request holds its slot until the
    slower copy lands, as a replicated write does. Write rows only: a
    mirror reads one copy, whose limit is the file's."""
    name = "lockstep"
    desc = "each write to two files at once, done when both are: the limit of a synchronous mirror on one disk"
    skips = ("w4", "w6")

    def uri(self):
        return f"lockstep:{self.img},{self.other}"

    def pids(self):
        return []


class QemuNbd(Target):
    name = "qemu-nbd"
    desc = "qemu-nbd --cache=none --aio=io_uring, unreplicated"
    cache = ["--cache=none", "--aio=io_uring"]

    def start(self):
        self.procs.append(PROCS.spawn(
            ["qemu-nbd", "-t", "-p", self.port, "-b", "127.0.0.1", "-f", "raw", "-x", "r0", *self.cache,
             "--discard=unmap", "--shared=8", self.img], self.work / f"{self.name}.log"))
        wait_nbd(self.uri())

    def uri(self):
        return f"nbd://127.0.0.1:{self.port}/r0"


def proc_drbd(run_dir):
    try:
        return (run_dir / "drbd").read_text()
    except FileNotFoundError:
        return ""


def drbd_field(run_dir, key):
    for tok in proc_drbd(run_dir).split():
        if tok.startswith(key + ":"):
            return int(tok.split(":")[1])
    return 0


class Tandem(Target):
    """One or two tandemd on loopback, external metadata (each file holds
    only data, so the replicas compare byte for byte)."""

    def __init__(self, work, img, size, port, peer_img=None, name="standalone", desc="one tandemd, no peer",
                 bin_dir=BIN):
        super().__init__(work, img, size, port, other=peer_img)
        self.bin = bin_dir
        self.name, self.desc = name, desc
        self.dir = work / name
        self.nodes = ["alpha", "beta"] if peer_img else ["bench"]
        # More `disk` options of the pair (set_disk_extra).
        self.disk_extra = ""
        self.daemons = {}
        # The Primary's metrics endpoint gives the write latency by part.
        self.metrics_port = port + 5 if peer_img else None

    def conf_text(self, node):
        p = self.port
        if not self.peer_img:
            return (f"resource r0 {{\n  on bench {{ device nbd://127.0.0.1:{p}/r0; disk {self.img}; "
                    f"meta-disk {self.dir}/r0.md; }}\n}}\n")
        # Both nodes run on this host: only alpha's copy of the
        # configuration opens the metrics port.
        mp = f"global {{ metrics 127.0.0.1:{self.metrics_port}; }}\n" if node == "alpha" and self.metrics_port else ""
        return (mp + f"resource r0 {{\n  protocol C;\n  net {{ shared-secret \"bench\"; connect-int 1; }}\n"
                f"  disk {{ c-max-rate 4G;{self.disk_extra} }}\n"
                f"  on alpha {{ device nbd://127.0.0.1:{p}/r0; disk {self.img}; address 127.0.0.1:{p + 1}; "
                f"meta-disk {self.dir}/alpha.md; }}\n"
                f"  on beta {{ device nbd://127.0.0.1:{p + 2}/r0; disk {self.peer_img}; address 127.0.0.1:{p + 3}; "
                f"meta-disk {self.dir}/beta.md; }}\n}}\n")

    def conf(self, node):
        return self.dir / f"{node}.conf"

    @property
    def peer_img(self):
        """The Secondary's file (a pair's second file)."""
        return self.other

    def set_disk_extra(self, text):
        """Rewrites both nodes' configuration with these `disk` options
        and applies it with `tandemadm adjust`, as an operator would."""
        self.disk_extra = f" {text}" if text else ""
        for n in self.nodes:
            self.conf(n).write_text(self.conf_text(n))
            self.adm(n, "adjust", "r0")

    def adm(self, node, *args, check=True):
        return run(self.bin / "tandemadm", "-c", self.conf(node), "--node", node, "--run-dir", self.dir / node, *args,
                   check=check)

    def launch(self, n):
        env = dict(os.environ, TANDEM_LOG="warn")
        p = PROCS.spawn([self.bin / "tandemd", "-c", self.conf(n), "--node", n, "--run-dir", self.dir / n],
                        self.dir / f"{n}.log", env)
        self.procs.append(p)
        self.daemons[n] = p
        wait_for(f"{n}'s control socket", lambda: (self.dir / n / "tandemd.sock").exists(), 10)
        self.adm(n, "up", "r0")

    def prepare_dir(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        for n in self.nodes:
            self.conf(n).write_text(self.conf_text(n))
            self.adm(n, "create-md", "--force", "r0")

    def start(self):
        self.prepare_dir()
        for n in self.nodes:
            self.launch(n)
        first = self.nodes[0]
        if self.peer_img:
            wait_for("the link", lambda: "cs:Connected" in proc_drbd(self.dir / first), 20)
        t0 = time.monotonic()
        self.adm(first, "primary", "--force", "r0")
        if self.peer_img:
            wait_for("the initial full sync", lambda: "ds:UpToDate/UpToDate" in proc_drbd(self.dir / first), 600)
            self.extras["fullsync_s"] = time.monotonic() - t0
        wait_nbd(self.uri())

    def uri(self):
        return f"nbd://127.0.0.1:{self.port}/r0"


class RamPeer(Tandem):
    """The pair with its Secondary's disk in RAM (a file on tmpfs, through
    the page cache): what replication costs when the two copies do not
    share one disk, as when the peer is a machine of its own. Only the
    Primary's file moves round the targets."""

    def __init__(self, work, img, size, port, src, name="ram-peer", bin_dir=BIN):
        super().__init__(work, img, size, port, peer_img=Path("/dev/shm") / f"tandem-bench-{name}-{os.getpid()}.img",
                         name=name, bin_dir=bin_dir,
                         desc=f"two tandemd on loopback, protocol C, the Secondary's disk in RAM (tmpfs), from {bin_dir}")
        self.src = src

    def start(self):
        if not self.peer_img.exists():
            run("cp", "--sparse=never", self.src, self.peer_img)
            atexit.register(lambda: self.peer_img.unlink(missing_ok=True))
        super().start()

    def files(self):
        return [self.img]

    def set_files(self, files):
        (self.img,) = files


def baseline_targets(work, bin_dirs, size, nbytes, port, src, ram_peer):
    """Other builds' pairs (each `bin_dirs` entry another build's
    target/release), to run beside this build's: 'baseline', 'baseline2',
    ...; with `ram_peer`, each build's pair with its Secondary in RAM too,
    for what a change does where the peer has a disk of its own. Their
    files are copies of `src`."""
    targets = []
    for i, bin_dir in enumerate(bin_dirs):
        name = "baseline" if i == 0 else f"baseline{i + 1}"
        for n in ("alpha", "beta"):
            prepare(work / f"{name}-{n}.img", nbytes, src=src)
        targets.append(Tandem(work, work / f"{name}-alpha.img", size, port + 50 + 10 * i,
                              peer_img=work / f"{name}-beta.img", name=name, desc=f"two tandemd from {bin_dir}",
                              bin_dir=bin_dir))
        if ram_peer:
            prepare(work / f"{name}-ram-peer.img", nbytes, src=src)
            targets.append(RamPeer(work, work / f"{name}-ram-peer.img", size, port + 150 + 10 * i, src,
                                   name=f"{name}-ram-peer", bin_dir=bin_dir))
    return targets


class QemuNbdWriteback(QemuNbd):
    name = "qemu-nbd-wb"
    desc = "qemu-nbd defaults (cache=writeback, aio=threads), unreplicated"
    cache = []


class Mirror(Target):
    name = "mirror"
    desc = "qemu-storage-daemon write-blocking mirror to a second qemu-nbd"

    def start(self):
        d = self.work / "qsd"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        tp = self.port + 1
        self.procs.append(PROCS.spawn(
            ["qemu-nbd", "-t", "-p", tp, "-b", "127.0.0.1", "-f", "raw", "-x", "r0b", "--cache=none",
             "--aio=io_uring", "--shared=8", self.other], d / "target.log"))
        wait_nbd(f"nbd://127.0.0.1:{tp}/r0b")
        qmp = d / "qmp.sock"
        # The export exists from the start, on src: the mirror moves src's
        # parents onto its filter, so the export's writes are mirrored. An
        # export added later, on src, would bypass the mirror silently.
        self.procs.append(PROCS.spawn(
            ["qemu-storage-daemon",
             "--blockdev", f"driver=file,filename={self.img},node-name=file0,cache.direct=on,aio=io_uring",
             "--blockdev", "driver=raw,file=file0,node-name=src",
             "--blockdev", f"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={tp},export=r0b,"
                           "node-name=tgt",
             "--chardev", f"socket,path={qmp},server=on,wait=off,id=qmp0", "--monitor", "chardev=qmp0",
             "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={self.port}",
             "--export", "type=nbd,id=exp0,node-name=src,name=r0,writable=on"], d / "qsd.log"))
        wait_for("the QMP socket", qmp.exists, 10)
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(qmp))
        f = s.makefile("rw")

        def cmd(c, a=None):
            f.write(json.dumps({"execute": c, **({"arguments": a} if a else {})}) + "\n")
            f.flush()
            while True:
                m = json.loads(f.readline())
                if "return" in m or "error" in m:
                    return m

        f.readline()
        cmd("qmp_capabilities")
        t0 = time.monotonic()
        r = cmd("blockdev-mirror", {"job-id": "m0", "device": "src", "target": "tgt", "sync": "full",
                                    "copy-mode": "write-blocking"})
        if "error" in r:
            raise RuntimeError(f"blockdev-mirror: {r['error']}")
        wait_for("the mirror to be ready", lambda: any(j.get("ready") for j in cmd("query-block-jobs")["return"]),
                 600, 0.1)
        self.extras["fullsync_s"] = time.monotonic() - t0
        self.qmp = (s, f)
        wait_nbd(self.uri())

    def uri(self):
        return f"nbd://127.0.0.1:{self.port}/r0"


def metrics_sums(port):
    """The replicated write-latency parts' (sum µs, count) from the metrics endpoint."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            head = f"tandem_write_latency_seconds_{kind}{{"
            if line.startswith(head):
                part = line.split('part="')[1].split('"')[0]
                value = float(line.rsplit(" ", 1)[1])
                out.setdefault(part, [0.0, 0.0])[0 if kind == "sum" else 1] = value * 1e6 if kind == "sum" else value
    return out


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def rotate_files(targets, rnd):
    """Round `rnd` runs every target on other files than the round before.
    This virtual disk's speed depends on where a file lies: the same build
    on two pairs of identical files made 19k and 39k IOPS at QD32, and fio
    alone on those files 60k and 110k. Moving the files round the targets
    spreads that over all of them, as the interleaving spreads a slow
    minute."""
    pool = [f for t in targets for f in t.original_files]
    assert len(set(pool)) == len(pool), "a file shared by two targets"
    pool = pool[rnd % len(pool):] + pool[:rnd % len(pool)]
    for t in targets:
        t.stop()
    for t in targets:
        n = len(t.original_files)
        t.set_files(pool[:n])
        pool = pool[n:]
        t.start()
    log(f"  round {rnd + 1}: files moved round the targets")


def run_rows(targets, args, results):
    """Every row against every target, interleaved: each round runs a row on
    each target in turn (the order rotating between rounds), so a slow
    minute of this VM hits every target alike, and on other files than the
    round before (rotate_files). Medians over the rounds."""
    raw = {t.name: {} for t in targets}
    for t in targets:
        t.original_files = t.files()
    for rnd in range(args.repeat):
        if rnd > 0:
            rotate_files(targets, rnd)
        order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
        for key, label, wargs in WORKLOADS:
            if key not in args.rows:
                continue
            for t in order:
                if key in getattr(t, "skips", ()):
                    continue
                c0 = cpu_ticks(t.pids())
                primary = [t.daemons["alpha"].pid] if getattr(t, "peer_img", None) else []
                cp0 = cpu_ticks(primary)
                split0 = metrics_sums(t.metrics_port) if getattr(t, "metrics_port", None) else None
                job = fio(t.uri(), wargs, args.size, args.runtime)
                cpu_s = (cpu_ticks(t.pids()) - c0) / CLK_TCK
                r = summarise(job, key)
                # CPU-seconds of the server processes (not fio) per GiB
                # moved; the 1 s ramp is in the CPU but not in the bytes,
                # so the bytes are scaled to the whole run.
                moved = r["bytes"] * (args.runtime + 1) / args.runtime
                r["cpu_s_per_gib"] = cpu_s / (moved / 2**30) if moved and t.pids() else None
                if primary:
                    r["cpu_primary_s_per_gib"] = (cpu_ticks(primary) - cp0) / CLK_TCK / (moved / 2**30)
                if split0 is not None:
                    split1 = metrics_sums(t.metrics_port)
                    for part, (s1, n1) in split1.items():
                        s0, n0 = split0.get(part, (0.0, 0.0))
                        r[f"{part}_us"] = (s1 - s0) / (n1 - n0) if n1 > n0 else None
                raw[t.name].setdefault(key, []).append(r)
                log(f"  round {rnd + 1} {label} {t.name}: {r['iops']:,.0f} IOPS, {r['mbs']:,.0f} MB/s, "
                    f"mean {r['mean_us']:.0f} µs, p99 {r['p99_us']:.0f} µs")
    for name, rows in raw.items():
        res = results.setdefault(name, {})
        for key, runs in rows.items():
            merged = {k: median([r.get(k) for r in runs]) for k in runs[0] if k != "cdf"}
            # The CDF of the round whose mean latency is the median one.
            mid = sorted(runs, key=lambda r: r["mean_us"])[len(runs) // 2]
            merged["cdf"] = mid["cdf"]
            merged["rounds"] = len(runs)
            res[key] = merged
    if args.rows_only:
        return
    for qd in SWEEP_DEPTHS:
        for t in targets:
            job = fio(t.uri(), ["--rw=randwrite", "--bs=4k", f"--iodepth={qd}"], args.size, args.sweep_runtime)
            results[t.name].setdefault("sweep", {})[str(qd)] = summarise(job, "sweep")["iops"]
        log(f"  sweep QD{qd}: " + ", ".join(f"{t.name} {results[t.name]['sweep'][str(qd)]:,.0f}" for t in targets))


def p99(v):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * 0.99))] if v else float("nan")


class Latencies(list):
    """The load's latencies (µs) over one window, and the window's length
    (s): a QD1 writer stuck behind the disk completes fewer writes, which
    the p99 of those it completed does not show; their mean and count do."""

    def __init__(self, secs):
        super().__init__()
        self.secs = secs

    def mean(self):
        return sum(self) / len(self) if self else float("nan")

    def iops(self):
        return len(self) / self.secs if self.secs > 0 else float("nan")


def qd1_load_around(where, args, workdir, step):
    """Run `step` under an fio QD1 4k random-write load on `where` (an NBD
    URI, or file:PATH): fio logs every I/O's latency; those of the 3 s
    before the step (after a 1 s start) are the idle baseline, those during
    it the loaded figure. Returns both lists (µs) and what `step` returns."""
    logdir = Path(tempfile.mkdtemp(dir=workdir))
    if where.startswith("file:"):
        io = ["--ioengine=io_uring", "--direct=1", f"--filename={where[5:]}"]
    else:
        io = ["--ioengine=nbd", f"--uri={where}"]
    fio_p = subprocess.Popen(
        ["fio", "--name=load", *io, f"--size={args.size}", "--rw=randwrite", "--bs=4k", "--iodepth=1",
         "--time_based", "--runtime=300", f"--write_lat_log={logdir}/load", "--log_avg_msec=0",
         "--output-format=json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    t_fio = time.monotonic()
    try:
        time.sleep(4)
        t0 = time.monotonic()
        out = step()
        t1 = time.monotonic()
        time.sleep(0.5)
    finally:
        # SIGINT: fio ends its job and still writes the latency log.
        fio_p.send_signal(signal.SIGINT)
        fio_p.communicate(timeout=60)
    idle, during = Latencies(t0 - t_fio - 1), Latencies(t1 - t0)
    for line in open(f"{logdir}/load_lat.1.log"):
        ms, ns = line.split(",")[:2]
        at = t_fio + int(ms) / 1000
        if t_fio + 1 <= at < t0:
            idle.append(int(ns) / 1000)
        elif t0 <= at < t1:
            during.append(int(ns) / 1000)
    shutil.rmtree(logdir, ignore_errors=True)
    return (idle, during), out


def identical(a, b):
    return run("cmp", "-s", a, b, check=False).returncode == 0


def pair_extras(t, args, res):
    alpha = t.dir / "alpha"
    log(f"  replicas identical after the workloads: {res['identical_after_workloads']}")

    # A full resync, idle: beta invalidated, every block moves again.
    def full_resync():
        t0 = time.monotonic()
        t.adm("alpha", "invalidate-remote", "r0")
        wait_for("the resync to start", lambda: "SyncSource" in proc_drbd(alpha), 10, 0.005)
        wait_for("the resync", lambda: "ds:UpToDate/UpToDate" in proc_drbd(alpha), 600, 0.01)
        return time.monotonic() - t0

    # The disk's speed drifts by minutes: each resync is held against the
    # mean of copies made just before and just after it.
    def copy_around(step):
        before = copy_mbs(args)
        out = step()
        return out, (before + copy_mbs(args)) / 2

    secs, res["resync_idle_copy_mbs"] = copy_around(full_resync)
    res["resync_idle_s"] = secs
    res["resync_idle_mbs"] = args.bytes / secs / 1e6
    log(f"  full resync, idle: {secs:.2f} s = {res['resync_idle_mbs']:,.0f} MB/s "
        f"(copies around it: {res['resync_idle_copy_mbs']:,.0f} MB/s)")

    # The same under an fio QD1 load on the Primary.
    ((lats_idle, lats_sync), secs), res["resync_load_copy_mbs"] = copy_around(
        lambda: qd1_load_around(t.uri(), args, t.dir, full_resync))
    res["resync_load_s"] = secs
    res["resync_load_mbs"] = args.bytes / secs / 1e6
    res["load_p99_idle_us"] = p99(lats_idle)
    res["load_p99_resync_us"] = p99(lats_sync)
    res["load_ios"] = [len(lats_idle), len(lats_sync)]
    res["load_mean_us"] = [lats_idle.mean(), lats_sync.mean()]
    res["load_iops"] = [lats_idle.iops(), lats_sync.iops()]
    log(f"  full resync under QD1 load: {secs:.2f} s = {res['resync_load_mbs']:,.0f} MB/s "
        f"(copies around it: {res['resync_load_copy_mbs']:,.0f} MB/s); "
        f"load p99 {res['load_p99_idle_us']:.0f} µs idle, {res['load_p99_resync_us']:.0f} µs during the resync")
    # The same load and resync with c-min-rate set: what yielding by rate
    # buys the load, and costs the resync.
    by_rate = res["resync_load_by_min_rate"] = {}
    for rate in args.min_rates:
        t.set_disk_extra(f"c-min-rate {rate};")
        ((idle, during), secs), copy = copy_around(lambda: qd1_load_around(t.uri(), args, t.dir, full_resync))
        by_rate[rate] = {"s": secs, "mbs": args.bytes / secs / 1e6, "copy_mbs": copy, "p99_idle_us": p99(idle),
                         "p99_resync_us": p99(during), "mean_us": [idle.mean(), during.mean()],
                         "iops": [idle.iops(), during.iops()]}
        log(f"  full resync under QD1 load, c-min-rate {rate}: {secs:.2f} s = {by_rate[rate]['mbs']:,.0f} MB/s "
            f"(copies around it: {copy:,.0f} MB/s); load p99 {p99(idle):.0f} µs idle, {p99(during):.0f} µs during")
    t.set_disk_extra("")
    res["identical_after_resync"] = identical(t.img, t.peer_img)

    # 1%-dirty resync: beta away, 1% of the blocks written, beta back.
    t.adm("beta", "disconnect", "r0")
    wait_for("WFConnection", lambda: "cs:WFConnection" in proc_drbd(alpha), 10)
    run("fio", "--name=dirty", "--ioengine=nbd", f"--uri={t.uri()}", f"--size={args.size}", "--rw=randwrite",
        "--bs=4k", f"--number_ios={args.bytes // 4096 // 100}", "--randrepeat=0", "--output-format=terse")
    ns0, oos = drbd_field(alpha, "ns"), drbd_field(alpha, "oos")
    t0 = time.monotonic()
    t.adm("beta", "connect", "r0")
    wait_for("the 1%-dirty resync",
             lambda: "ds:UpToDate/UpToDate" in proc_drbd(alpha) and drbd_field(alpha, "oos") == 0, 120, 0.01)
    res["dirty_resync_s"] = time.monotonic() - t0
    res["dirty_oos_kib"] = oos
    res["dirty_moved_pct"] = 100 * (drbd_field(alpha, "ns") - ns0) * 1024 / args.bytes
    res["identical_after_dirty_resync"] = identical(t.img, t.peer_img)
    log(f"  1%-dirty resync: {oos} KiB out of sync, {res['dirty_moved_pct']:.2f}% of the device moved in "
        f"{res['dirty_resync_s']:.2f} s; identical: {res['identical_after_dirty_resync']}")


def copy_mbs(args, requests=16):
    """One file copied to another on this disk (`args.copy_files`):
    qemu-img convert, O_DIRECT on both sides, `requests` in flight (out of
    order when more than one). With 16, the best copy this disk makes."""
    img, other = args.copy_files
    order = ["-W"] if requests > 1 else []
    t0 = time.monotonic()
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-t", "none", "-T", "none", *order, "-m",
        str(requests), img, other)
    return args.bytes / (time.monotonic() - t0) / 1e6


def limits(args, results):
    """What this machine can do at most: copying one file to another on its
    disk (a resync between two nodes that share it) and TCP over loopback."""
    lim = results.setdefault("limits", {})
    lim["copy_mbs"] = copy_mbs(args)

    # What the disk alone does to a small writer's p99 while a copy runs:
    # the gentlest copy (one request in flight) under the QD1 load the
    # pair's resync meets, that load writing straight to a file of its own.
    load = args.workdir / "load.img"
    prepare(load, args.bytes, src=args.copy_files[0])
    (idle, during), lim["gentle_copy_mbs"] = qd1_load_around(f"file:{load}", args, args.workdir,
                                                             lambda: copy_mbs(args, requests=1))
    load.unlink()
    idle_p99, during_p99 = p99(idle), p99(during)
    lim["gentle_copy_load_p99_us"] = [idle_p99, during_p99]
    port = args.port + 90
    srv = PROCS.spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", port, "-1"], args.workdir / "iperf3.log")
    wait_for("iperf3 to listen", lambda: f"127.0.0.1:{port} " in run("ss", "-Hltn").stdout, 10, 0.05)
    j = json.loads(run("iperf3", "-c", "127.0.0.1", "-p", port, "-t", "5", "-J").stdout)
    PROCS.stop([srv])
    lim["loopback_mbs"] = j["end"]["sum_received"]["bits_per_second"] / 8e6
    # The round trip a protocol-C write adds at least: 4 KiB out, an ack
    # back, one at a time (examples/loopback_rtt.rs).
    lim["loopback_rtt"] = json.loads(run(BIN / "examples" / "loopback_rtt").stdout)
    log(f"limits: disk copy {lim['copy_mbs']:,.0f} MB/s, "
        f"loopback TCP {lim['loopback_mbs']:,.0f} MB/s, a 4 KiB round trip {lim['loopback_rtt']['mean_us']:.0f} µs; "
        f"a one-request copy at {lim['gentle_copy_mbs']:,.0f} MB/s "
        f"takes a QD1 writer's p99 from {idle_p99:.0f} to {during_p99:.0f} µs")


def memory(args, results):
    """tandemd's memory on a 1 TiB sparse device, replicated: after start,
    then after writes scattered over the whole device with the peer away
    (every bitmap page dirty), then after as many writes again."""
    d = args.workdir / "memory"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    a, b = d / "a.img", d / "b.img"
    for f in (a, b):
        run("truncate", "-s", "1T", f)
    t = Tandem(d, a, "1T", args.port + 40, peer_img=b, name="pair")
    t.metrics_port = None
    mem = results.setdefault("memory", {})
    try:
        t.prepare_dir()
        for n in t.nodes:
            t.launch(n)
        wait_for("the link", lambda: "cs:Connected" in proc_drbd(t.dir / "alpha"), 20)
        # A fresh pair of empty images needs no initial sync.
        t.adm("alpha", "new-current-uuid", "--clear-bitmap", "r0")
        wait_for("UpToDate", lambda: "ds:UpToDate/UpToDate" in proc_drbd(t.dir / "alpha"), 20)
        t.adm("alpha", "primary", "r0")
        wait_nbd(t.uri())
        pid = t.daemons["alpha"].pid
        mem["after_start_kib"] = rss_kib(pid)
        t.adm("beta", "disconnect", "r0")
        wait_for("WFConnection", lambda: "cs:WFConnection" in proc_drbd(t.dir / "alpha"), 10)
        # 30,000 random 4 KiB writes dirty 97% of the 8,192 bitmap pages.
        n = 30_000
        for step in ("after_writes_kib", "after_twice_the_writes_kib"):
            run("fio", "--name=spread", "--ioengine=nbd", f"--uri={t.uri()}", "--size=1T", "--rw=randwrite",
                "--bs=4k", "--iodepth=32", f"--number_ios={n}", "--randrepeat=0", "--output-format=terse")
            mem[step] = rss_kib(pid)
        mem["peak_kib"] = rss_kib(pid, "VmHWM")
        mem["oos_kib"] = drbd_field(t.dir / "alpha", "oos")
        log(f"memory (1 TiB, {mem['oos_kib'] // 4:,} blocks out of sync): RSS {mem['after_start_kib'] // 1024} MiB "
            f"after start, {mem['after_writes_kib'] // 1024} MiB after {n:,} writes, "
            f"{mem['after_twice_the_writes_kib'] // 1024} MiB after {2 * n:,}; peak {mem['peak_kib'] // 1024} MiB")
        mem["writes"] = n
    finally:
        t.stop()


def fmt(v, digits=0):
    return "—" if v is None else f"{v:,.{digits}f}"


def report(args, results):
    r = results
    q, s, p, m, f, f2, ls = (r[k] for k in ("qemu-nbd", "standalone", "replicated", "mirror", "file", "file-pair",
                                             "lockstep"))
    cpu = run("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").stdout.strip()
    lines = [f"Machine: {platform.node()}, {os.cpu_count()} vCPU ({cpu}), kernel {platform.release()}; "
             f"{args.size} preallocated random-filled files; fio {args.runtime} s per row after a 1 s ramp, "
             f"{args.sweep_runtime} s per queue depth; each row run {args.repeat} times on every target, interleaved, "
             f"medians shown; the guest's idle vCPUs poll {fmt(r.get('halt_poll_ns'))} ns before halting "
             f"(guest_halt_poll_ns).", ""]
    rows = [
        ("4k randwrite QD1, mean latency (µs)", "w1", "mean_us", False),
        ("4k randwrite QD1, p99 latency (µs)", "w1", "p99_us", False),
        ("4k randwrite QD32, IOPS", "w2", "iops", True),
        ("1M seq write QD8, MB/s", "w3", "mbs", True),
        ("4k randread QD32, IOPS", "w4", "iops", True),
        ("4k write + flush QD1, cycle latency (µs)", "w5", "cycle_us", False),
    ]
    # The performance issue's bar for replicated / qemu-nbd on each row.
    bars = {"w1": 1.25, "w2": 0.80, "w3": 0.80, "w4": 1.00, "w5": 1.25}
    lines += ["| workload | file (limit) | two files at once | two files in lockstep (a mirror's limit) | qemu-nbd | "
              "Tandem standalone | Tandem replicated (C) | qemu mirror | replicated / qemu-nbd | target | "
              "mirror / qemu-nbd | replicated / lockstep |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, w, key, higher in rows:
        qv, rv, mv = q[w][key], p[w][key], m[w][key]
        ratio = rv / qv if qv else float("nan")
        bar = bars[w]
        ok = (ratio >= bar if higher else ratio <= bar) and (rv > mv if higher else rv < mv)
        lv = ls.get(w, {}).get(key)
        lines.append(f"| {name} | {fmt(f[w][key])} | {fmt(f2[w][key])} | {fmt(lv)} | {fmt(qv)} | {fmt(s[w][key])} | "
                     f"{fmt(rv)} | {fmt(mv)} | **{ratio:.2f}** {'✓' if ok else '✗'} | {'≥' if higher else '≤'} "
                     f"{bar:.2f}, ahead of the mirror | {mv / qv:.2f} | {fmt(rv / lv if lv else None, 2)} |")
    # The same bars for the pair whose Secondary's disk is in RAM: what the
    # software costs once the copies stop sharing one disk.
    rp = r["ram-peer"]
    lines += ["", "The pair with its Secondary's disk in RAM (tmpfs), as if the peer were a machine of its own: "
              "replication without the shared disk:", "",
              "| workload | qemu-nbd | Tandem replicated, Secondary in RAM | / qemu-nbd | target |", "|---|---|---|---|---|"]
    for name, w, key, higher in rows:
        if w == "w4":
            continue
        qv, rv = q[w][key], rp[w][key]
        ratio = rv / qv if qv else float("nan")
        ok = ratio >= bars[w] if higher else ratio <= bars[w]
        lines.append(f"| {name} | {fmt(qv)} | {fmt(rv)} | **{ratio:.2f}** {'✓' if ok else '✗'} | "
                     f"{'≥' if higher else '≤'} {bars[w]:.2f} |")
    # Several committers at once: no bar of the issue, the same ratio asked.
    nbd = ["file", "qemu-nbd", "standalone", "replicated", "ram-peer", "mirror"]
    lines += ["", "Commits (a 4k write, then a flush) per second, one committer and four at once "
              "(one connection each); not a bar of the performance issue:", "",
              "| committers | " + " | ".join(nbd) + " | replicated / qemu-nbd | ram-peer / qemu-nbd |",
              "|---" * (len(nbd) + 3) + "|"]
    for w, n in (("w5", 1), ("w6", 4)):
        vals = [r[t].get(w, {}).get("iops") for t in nbd]
        qv = r["qemu-nbd"][w]["iops"]
        lines.append(f"| {n} | " + " | ".join(fmt(v) for v in vals) +
                     f" | {r['replicated'][w]['iops'] / qv:.2f} | {r['ram-peer'][w]['iops'] / qv:.2f} |")
    lines += ["", "4k random write IOPS by queue depth (the plot `iops-by-queue-depth.png`):", "",
              "| QD | " + " | ".join(TARGETS) + " | replicated / qemu-nbd |", "|---" * (len(TARGETS) + 2) + "|"]
    for qd in SWEEP_DEPTHS:
        vals = [r[t]["sweep"][str(qd)] for t in TARGETS]
        ratio = r["replicated"]["sweep"][str(qd)] / r["qemu-nbd"]["sweep"][str(qd)]
        lines.append(f"| {qd} | " + " | ".join(fmt(v) for v in vals) + f" | {ratio:.2f} |")

    lines += ["", "Where a replicated write's time goes (means from the Primary's metrics over each row; the "
              "network part is the round trip less the peer's disk time):", "",
              "| row | fio mean (µs) | local disk | network | peer disk |", "|---|---|---|---|---|"]
    for name, w, key, higher in rows:
        if key == "p99_us":
            continue
        row = p[w]
        lines.append(f"| {name.split(',')[0]} | {fmt(row['mean_us'])} | {fmt(row.get('local_disk_us'))} | "
                     f"{fmt(row.get('network_us'))} | {fmt(row.get('peer_disk_us'))} |")

    lim = r["limits"]
    # On this machine both nodes share one disk: a resync reads and writes
    # it at once, which is what the copy limit measures (the copies made
    # just around each resync). The performance issue's letter is
    # min(disk write, loopback).
    letter = min(f["w3"]["mbs"], lim["loopback_mbs"])
    lines += ["", "Replication beyond the write path:", "", "| row | result | target |", "|---|---|---|"]
    lines.append(f"| initial full sync of {args.size} | {p['fullsync_s']:.2f} s (the qemu mirror: "
                 f"{m['fullsync_s']:.2f} s) | — |")
    for what, key in (("idle", "resync_idle"), ("under an fio QD1 load", "resync_load")):
        mbs = p[f"{key}_mbs"]
        phys = min(p[f"{key}_copy_mbs"], lim["loopback_mbs"])
        ok = mbs >= 0.8 * phys
        lines.append(f"| full resync, {what} | {mbs:,.0f} MB/s = **{mbs / phys:.2f}** of the copy limit "
                     f"{phys:,.0f} MB/s (copies just before and after) {'✓' if ok else '✗'} "
                     f"({mbs / letter:.2f} of min(disk write, loopback) = "
                     f"{letter:,.0f} MB/s) | ≥ 0.80 |")
    ratio = p["load_p99_resync_us"] / p["load_p99_idle_us"]
    lines.append(f"| that load's p99 during the resync | {p['load_p99_resync_us']:.0f} µs against "
                 f"{p['load_p99_idle_us']:.0f} µs before it = **{ratio:.2f}×** {'✓' if ratio <= 2 else '✗'} | ≤ 2× |")
    lines.append(f"| that load's mean and IOPS during the resync | {load_change(p['load_mean_us'], p['load_iops'])} "
                 f"| (what the p99 of the writes that finished hides) |")
    for rate, v in p.get("resync_load_by_min_rate", {}).items():
        phys = min(v["copy_mbs"], lim["loopback_mbs"])
        lines.append(f"| the same with `c-min-rate {rate}` | {v['mbs']:,.0f} MB/s = **{v['mbs'] / phys:.2f}** of the "
                     f"copy limit {phys:,.0f} MB/s; the load's p99 {v['p99_resync_us']:.0f} µs against "
                     f"{v['p99_idle_us']:.0f} µs = **{v['p99_resync_us'] / v['p99_idle_us']:.2f}×**; "
                     f"{load_change(v['mean_us'], v['iops'])} | (the operator's trade) |")
    ok = p["dirty_moved_pct"] <= 1.5
    lines.append(f"| 1%-dirty resync | {p['dirty_oos_kib']:,} KiB out of sync; **{p['dirty_moved_pct']:.2f}%** "
                 f"of the device moved, in {p['dirty_resync_s']:.2f} s {'✓' if ok else '✗'} | ≤ 1.5% |")
    mem = r.get("memory")
    if mem:
        worst = max(mem["after_writes_kib"], mem["after_twice_the_writes_kib"], mem["peak_kib"]) / 1024
        ok = worst <= 64 and mem["after_twice_the_writes_kib"] <= mem["after_writes_kib"] * 1.05
        lines.append(f"| tandemd RSS, 1 TiB device (32 MiB bitmap) | {mem['after_start_kib'] / 1024:.1f} MiB after start, "
                     f"{mem['after_writes_kib'] / 1024:.1f} MiB with every bitmap page dirty, "
                     f"{mem['after_twice_the_writes_kib'] / 1024:.1f} MiB after twice the writes; peak "
                     f"{mem['peak_kib'] / 1024:.1f} MiB {'✓' if ok else '✗'} | ≤ 64 MiB, constant |")
    for w, label in (("w2", "4k random writes"), ("w3", "1M sequential writes")):
        sa, rep, qn = s[w]["cpu_s_per_gib"], p[w]["cpu_s_per_gib"], q[w]["cpu_s_per_gib"]
        ok = rep <= 1.5 * sa
        prim = p[w].get("cpu_primary_s_per_gib")
        lines.append(f"| CPU-seconds per GiB, {label} | replicated (both nodes) {rep:.2f}, standalone {sa:.2f} = "
                     f"**{rep / sa:.2f}×** {'✓' if ok else '✗'}; the Primary alone {fmt(prim, 2)} "
                     f"({prim / sa:.2f}×); qemu-nbd {qn:.2f}, mirror "
                     f"{fmt(m[w]['cpu_s_per_gib'], 2)} | ≤ 1.5× standalone |")
    gi, gd = lim["gentle_copy_load_p99_us"]
    lines += ["", f"Limits: copying one file to another on this disk (qemu-img convert, O_DIRECT both sides, "
              f"16 requests in flight) runs at {lim['copy_mbs']:,.0f} MB/s; writing one (the file's 1M row) at "
              f"{f['w3']['mbs']:,.0f} MB/s; TCP over loopback "
              f"(iperf3, one stream) carries {lim['loopback_mbs']:,.0f} MB/s. The disk alone, copying with one "
              f"request in flight ({lim['gentle_copy_mbs']:,.0f} MB/s), takes the p99 of a QD1 4k writer on "
              f"another file from {gi:.0f} to {gd:.0f} µs ({gd / gi:.2f}×).", ""]
    # What the pair cannot go below on this machine, whatever its software:
    # the standalone path, plus the round trip to the peer, plus what a
    # second writer on the shared disk costs the first.
    rtt = lim["loopback_rtt"]["mean_us"]
    second = f2["w1"]["mean_us"] - f["w1"]["mean_us"]
    floor = s["w1"]["mean_us"] + rtt + second
    lines += [f"The floor of a replicated 4 KiB QD1 write here: Tandem standalone's {s['w1']['mean_us']:.0f} µs, "
              f"plus a loopback round trip of 4 KiB and an ack ({rtt:.0f} µs, `examples/loopback_rtt.rs`), plus "
              f"what a second writer on the disk adds to the first ({second:.0f} µs, the two-file column): "
              f"{floor:.0f} µs, **{floor / q['w1']['mean_us']:.2f}×** qemu-nbd. The pair took "
              f"{p['w1']['mean_us']:.0f} µs, {p['w1']['mean_us'] / floor:.2f}× that floor. "
              f"For 1M writes the two replicas share the disk's bandwidth: two files written at once get "
              f"{f2['w3']['mbs']:,.0f} MB/s each, **{f2['w3']['mbs'] / q['w3']['mbs']:.2f}×** qemu-nbd; the pair "
              f"got {p['w3']['mbs'] / f2['w3']['mbs']:.2f} of that.", "",
              f"A synchronous mirror with nothing between its two copies (`examples/lockstep_writes.rs`: each "
              f"write to both files at once, done when both are) reaches {ls['w2']['iops']:,.0f} IOPS at QD32, "
              f"**{ls['w2']['iops'] / q['w2']['iops']:.2f}×** qemu-nbd (the pair: "
              f"{p['w2']['iops'] / ls['w2']['iops']:.2f} of it), and {ls['w3']['mbs']:,.0f} MB/s for 1M writes, "
              f"**{ls['w3']['mbs'] / q['w3']['mbs']:.2f}×** (the pair: {p['w3']['mbs'] / ls['w3']['mbs']:.2f}); "
              f"a QD1 write takes it {ls['w1']['mean_us']:.0f} µs, the slower of two.", ""]
    checks = [("after the workloads", p["identical_after_workloads"]),
              ("after the full resyncs", p["identical_after_resync"]),
              ("after the 1%-dirty resync", p["identical_after_dirty_resync"])]
    lines.append("Replicas compared with cmp: " + "; ".join(f"{w}: {'identical' if ok else 'DIFFERENT'}"
                                                            for w, ok in checks) + ".")
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    print(text)


def load_change(mean_us, iops):
    """The QD1 load's mean latency and IOPS, before the resync → during."""
    (m0, m1), (i0, i1) = mean_us, iops
    return (f"mean {m0:.0f} → {m1:.0f} µs ({m1 / m0:.2f}×), {i0:,.0f} → {i1:,.0f} IOPS "
            f"({i1 / i0:.2f}×)")


def short_report(args, results, targets):
    """--rows-only: each row's main figure per target, and each target's
    ratio to qemu-nbd where it ran."""
    main_key = {"w1": "mean_us", "w2": "iops", "w3": "mbs", "w4": "iops", "w5": "cycle_us", "w6": "iops"}
    names = [t.name for t in targets]
    lines = [f"guest_halt_poll_ns: {fmt(results.get('halt_poll_ns'))}", "",
             "| row | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label, _ in WORKLOADS:
        if key not in args.rows:
            continue
        for k in (main_key[key], "p99_us") if key == "w1" else (main_key[key],):
            ref = results.get("qemu-nbd", {}).get(key, {}).get(k)
            cells = []
            for n in names:
                v = results[n].get(key, {}).get(k)
                cells.append(fmt(v) + (f" ({v / ref:.2f})" if ref and v and n != "qemu-nbd" else ""))
            lines.append(f"| {label} {k} | " + " | ".join(cells) + " |")
    for pair in names:
        if pair != "replicated" and not pair.startswith("baseline"):
            continue
        lines += ["", f"{pair}, by part (µs): " + "; ".join(
            f"{key} local {fmt(results[pair][key].get('local_disk_us'))} network "
            f"{fmt(results[pair][key].get('network_us'))} peer {fmt(results[pair][key].get('peer_disk_us'))}"
            for key, _, _ in WORKLOADS if key in args.rows)]
    text = "\n".join(lines) + "\n"
    (args.out / "short.md").write_text(text)
    print(text)


def plots(args, results):
    if not shutil.which("gnuplot"):
        log("gnuplot is not installed (apt-get install gnuplot-nox): the plots are not drawn")
        return
    out = args.out
    with open(out / "sweep.dat", "w") as f:
        f.write("# QD " + " ".join(TARGETS) + "\n")
        for qd in SWEEP_DEPTHS:
            f.write(f"{qd} " + " ".join(f"{results[t]['sweep'][str(qd)]:.0f}" for t in TARGETS) + "\n")
    for t in TARGETS:
        with open(out / f"cdf-{t}.dat", "w") as f:
            for pct, us in results[t]["w1"]["cdf"]:
                f.write(f"{us:.1f} {pct}\n")
    sweep_cols = ", ".join(f"'{out}/sweep.dat' using 1:{i + 2} with linespoints lw 2 title '{t}'"
                           for i, t in enumerate(TARGETS))
    cdf_lines = ", ".join(f"'{out}/cdf-{t}.dat' using 1:2 with linespoints lw 2 title '{t}'" for t in TARGETS)
    script = f"""
set terminal pngcairo size 900,560 font ',11'
set output '{out}/iops-by-queue-depth.png'
set title '4k random write IOPS by queue depth (fio, nbd engine; file: io\\_uring O\\_DIRECT)'
set xlabel 'queue depth'; set ylabel 'IOPS'; set logscale x 2; set grid; set key top left
plot {sweep_cols}
set output '{out}/latency-cdf.png'
set title '4k random write QD1: latency distribution'
unset logscale x; set logscale x 10
set xlabel 'latency (µs)'; set ylabel 'percentile'; set key bottom right; set yrange [0:100]
plot {cdf_lines}
"""
    (out / "plots.gp").write_text(script)
    r = run("gnuplot", out / "plots.gp", check=False)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()}")
    else:
        log(f"plots: {out}/iops-by-queue-depth.png, {out}/latency-cdf.png")


def prepare(path, nbytes, src=None):
    if path.exists() and path.stat().st_size == nbytes:
        return
    if src:
        log(f"copying {src} to {path}")
        run("cp", "--sparse=never", src, path)
    else:
        log(f"preparing {nbytes >> 20} MiB of random data in {path} (once)")
        # Filled, not fallocated: unwritten extents read as zeroes without I/O.
        with open(path, "wb") as f, open("/dev/urandom", "rb") as r:
            left = nbytes
            while left:
                chunk = r.read(min(left, 1 << 24))
                f.write(chunk)
                left -= len(chunk)
    run("sync")


HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def set_halt_poll(ns):
    """The guest's idle polling for this run (None: as it is); returns the
    value the run uses, None where the guest has no haltpoll."""
    if not HALT_POLL.exists():
        if ns is not None:
            sys.exit(f"--halt-poll-ns: {HALT_POLL} does not exist (the guest's cpuidle driver is not haltpoll)")
        return None
    before = int(HALT_POLL.read_text())
    if ns is not None and ns != before:
        HALT_POLL.write_text(str(ns))
        atexit.register(lambda: HALT_POLL.write_text(str(before)))
        log(f"guest_halt_poll_ns {before} → {ns} for this run")
        return ns
    return before


def save(args, results):
    """Keep what was measured so far: a later step's failure loses nothing."""
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", type=int, default=5, help="seconds per row (after a 1 s ramp)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every row on every target (medians)")
    ap.add_argument("--sweep-runtime", type=int, default=3, help="seconds per queue depth of the sweep")
    ap.add_argument("--size", default="1G", help="device size (fio syntax)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "tandem-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "bench")
    ap.add_argument("--port", type=int, default=22000)
    ap.add_argument("--no-build", action="store_true", help="use target/release as it is")
    ap.add_argument("--no-memory", action="store_true", help="skip the 1 TiB memory row")
    ap.add_argument("--min-rates", default="0,100M,40M",
                    help="c-min-rate values to repeat the resync under load with (comma-separated; '' for none)")
    ap.add_argument("--rows-only", action="store_true",
                    help="only the workload rows: no limits, sweep, resyncs, CPU or memory rows; prints a short "
                         "table (for trying a change)")
    ap.add_argument("--rows", default=",".join(k for k, _, _ in WORKLOADS),
                    help="with --rows-only: the rows to run (w1..w6)")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help="with --rows-only: the targets to run, of " + ", ".join(TARGETS + ["qemu-nbd-wb"]))
    ap.add_argument("--halt-poll-ns", type=int, default=None,
                    help="set the guest's cpuidle-haltpoll guest_halt_poll_ns for the run, restored after: an idle "
                         "vCPU then polls that long before it halts, and a wake-up within it costs no trip "
                         "through the host (see BENCHMARKS.md)")
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="with --rows-only: a directory with another build's tandemd and tandemadm, run as one more "
                         "replicated pair ('baseline', then 'baseline2', ...) interleaved with this build's, for an "
                         "A/B comparison; may be given more than once")
    args = ap.parse_args()
    args.rows = args.rows.split(",")
    args.min_rates = [r for r in args.min_rates.split(",") if r]
    args.targets = args.targets.split(",")
    unknown = [r for r in args.rows if r not in [k for k, _, _ in WORKLOADS]] + \
        [t for t in args.targets if t not in TARGETS + ["qemu-nbd-wb"]]
    if unknown:
        sys.exit(f"unknown rows or targets: {', '.join(unknown)}")
    if not args.rows_only and (args.rows != [k for k, _, _ in WORKLOADS] or args.targets != TARGETS
                               or args.baseline):
        sys.exit("--rows, --targets and --baseline need --rows-only: the full report needs every row on every "
                 "target")
    missing = [p for p in ("fio", "qemu-nbd", "qemu-storage-daemon", "nbdinfo", "iperf3") if not shutil.which(p)]
    if missing:
        sys.exit(f"missing programs: {', '.join(missing)}")
    args.bytes = int(run("numfmt", "--from=iec", args.size).stdout)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "loopback_rtt", "--example",
                        "lockstep_writes"], cwd=ROOT, check=True)
    w = args.workdir
    # Each target has its own files, all filled with the same random data,
    # so that every target stays up and the rows can be interleaved.
    files = {n: w / f"{n}.img" for n in ("file", "file-pair", "file-pair-b", "lockstep", "lockstep-b", "ram-peer", "qemu-nbd", "qemu-nbd-wb", "standalone", "alpha", "beta", "mirror",
                                           "mirror-target")}
    prepare(files["file"], args.bytes)
    for n, f in files.items():
        if n != "file":
            prepare(f, args.bytes, src=files["file"])
    # The copies that measure the disk have files of their own: the
    # targets' files move round them (rotate_files).
    for n in ("copy-src", "copy-dst"):
        prepare(w / f"{n}.img", args.bytes, src=files["file"])
    args.copy_files = (w / "copy-src.img", w / "copy-dst.img")
    results = {"machine": platform.node(), "size": args.size, "runtime": args.runtime, "repeat": args.repeat,
               "halt_poll_ns": set_halt_poll(args.halt_poll_ns)}
    try:
        if not args.rows_only:
            limits(args, results)
        port = args.port
        targets = [FileTarget(w, files["file"], args.size, port),
                   FilePairTarget(w, files["file-pair"], args.size, port, files["file-pair-b"]),
                   LockstepTarget(w, files["lockstep"], args.size, port, files["lockstep-b"]),
                   QemuNbd(w, files["qemu-nbd"], args.size, port + 1),
                   QemuNbdWriteback(w, files["qemu-nbd-wb"], args.size, port + 30),
                   Tandem(w, files["standalone"], args.size, port + 2),
                   Tandem(w, files["alpha"], args.size, port + 10, peer_img=files["beta"], name="replicated",
                          desc="two tandemd on loopback, protocol C"),
                   RamPeer(w, files["ram-peer"], args.size, port + 100, files["file"]),
                   Mirror(w, files["mirror"], args.size, port + 20, files["mirror-target"])]
        # qemu-nbd-wb (qemu-nbd's defaults: the page cache) runs only when
        # asked for by name: the report's bar is qemu-nbd with O_DIRECT, as
        # Tandem's data path.
        wanted = args.targets if args.rows_only else TARGETS
        targets = [t for t in targets if t.name in wanted]
        if args.rows_only:
            targets += baseline_targets(w, args.baseline, args.size, args.bytes, port, files["file"],
                                        ram_peer="ram-peer" in wanted)
        for t in targets:
            log(f"starting {t.name}: {t.desc}")
            t.start()
            results[t.name] = {"desc": t.desc, **t.extras}
        run_rows(targets, args, results)
        save(args, results)
        if args.rows_only:
            short_report(args, results, targets)
            return
        pair = next(t for t in targets if t.name == "replicated")
        results["replicated"]["identical_after_workloads"] = identical(pair.img, pair.peer_img)
        for t in targets:
            if t is not pair:
                t.stop()
        pair_extras(pair, args, results["replicated"])
        pair.stop()
        save(args, results)
        if not args.no_memory:
            memory(args, results)
    finally:
        PROCS.stop_all()
    save(args, results)
    report(args, results)
    plots(args, results)


if __name__ == "__main__":
    main()
