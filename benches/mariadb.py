#!/usr/bin/env python3
"""What replication costs a database: MariaDB committing through each target.

    benches/mariadb.py [--threads 1,8] [--runtime 15] [--repeat 3] [--targets ...] [--out DIR]
    benches/mariadb.py --targets qemu-nbd,replicated,ram-peer --baseline OTHER/target/release   # an A/B

The fio rows of benches/run.py measure the block device; this measures what
the users of a pair run on it: MariaDB with every commit durable
(innodb_flush_log_at_trx_commit=1, sync_binlog=1, O_DIRECT, doublewrite),
on ext4, on a loop device, on nbdfuse, on the target's NBD export — the
stack the tests and the README use, since this kernel has no nbd module.
sysbench's oltp_write_only runs for --runtime seconds at each thread count:
with one thread every commit waits for its own flushes; with several, their
FLUSHes overlap and may share flushes (group commit, in InnoDB and in
Tandem).

Targets (those of benches/run.py, each on its own preallocated file):
  qemu-nbd    unreplicated, O_DIRECT: the bar
  standalone  one tandemd, no peer
  replicated  two tandemd on loopback, protocol C
  ram-peer    the pair with the Secondary's disk in RAM, as if the peer had a disk of its own
  mirror      qemu-storage-daemon's write-blocking mirror to a second qemu-nbd

Each target gets its own filesystem and database, prepared once; then every
(round, target) starts mariadbd, runs each thread count, and shuts it down,
the order of the targets rotating between rounds. The tables give medians of
the rounds. For the pairs it also records how Tandem answered the
application's FLUSHes (its metrics), and at the end compares the replicas
byte for byte.

Writes OUT/summary.md and OUT/results.json. Needs root, mariadb-server,
sysbench, libnbd-bin (nbdfuse), fuse3, qemu-utils, qemu-system-common.
"""

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).with_name("run.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
run, log, wait_for, PROCS = bench.run, bench.log, bench.wait_for, bench.PROCS

TARGETS = ["qemu-nbd", "standalone", "replicated", "ram-peer", "mirror"]
# Every application FLUSH (tandem_app_flushes_total), and Tandem's ways of
# answering one (tandem_app_flushes_*_total).
FLUSH_COUNTERS = ["all", "early", "covered", "peer_ahead", "grouped"]


def reap(proc, timeout):
    """Give `proc`, told to go, `timeout` seconds to exit by itself; then
    stop it as every daemon of the run is stopped."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    PROCS.stop([proc])


class Stack:
    """nbdfuse → loop device (direct I/O) → ext4, as an admin without the
    nbd module runs it. Taken down in the order that always works."""

    def __init__(self, uri, base):
        self.uri, self.base = uri, base
        self.fuse_dir, self.mnt = base / "fuse", base / "mnt"
        self.proc = self.dev = None
        self.mounted = False

    def up(self):
        self.fuse_dir.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        pid = self.base / "nbdfuse.pid"
        pid.unlink(missing_ok=True)
        self.proc = PROCS.spawn(["nbdfuse", "-P", pid, self.fuse_dir / "disk", self.uri], self.base / "nbdfuse.log")
        wait_for("nbdfuse", pid.exists, 20)
        self.dev = run("losetup", "--find", "--show", "--direct-io=on", self.fuse_dir / "disk").stdout.strip()

    def mkfs(self):
        # No discard: every target's file stays preallocated, as the fio rows'.
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", self.dev)

    def mount(self):
        run("mount", self.dev, self.mnt)
        self.mounted = True

    def down(self):
        if self.mounted:
            run("umount", self.mnt)
            self.mounted = False
        if self.dev:
            run("losetup", "-d", self.dev, check=False)
            self.dev = None
        if self.proc:
            run("fusermount3", "-u", self.fuse_dir, check=False)
            reap(self.proc, 20)
            self.proc = None


class Mariadb:
    """One mariadbd on the stack's filesystem, every commit durable."""

    def __init__(self, base, datadir):
        self.base, self.datadir = base, datadir
        self.sock = base / "mysqld.sock"
        self.cnf = base / "my.cnf"
        self.proc = None
        self.cnf.write_text(
            f"[client]\nsocket={self.sock}\nuser=root\n"
            f"[mariadbd]\nuser=root\ndatadir={datadir}\nsocket={self.sock}\nskip-networking\n"
            f"pid-file={base}/mysqld.pid\nlog-error={base}/mysqld.err\nskip-name-resolve\n"
            "innodb_buffer_pool_size=256M\ninnodb_log_file_size=64M\ninnodb_flush_log_at_trx_commit=1\n"
            "innodb_flush_method=O_DIRECT\ninnodb_doublewrite=1\nlog-bin=binlog\nsync_binlog=1\nserver-id=1\n"
            "max_connections=64\n")

    def install(self):
        run("mariadb-install-db", f"--defaults-file={self.cnf}", "--skip-test-db", "--auth-root-authentication-method=socket")

    def start(self):
        self.proc = PROCS.spawn(["mariadbd", f"--defaults-file={self.cnf}"], self.base / "mariadbd.out")
        wait_for("mariadbd", lambda: self.proc.poll() is not None or run(
            "mariadb-admin", f"--defaults-file={self.cnf}", "ping", check=False).returncode == 0, 120, 0.2)
        if self.proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited: see {self.base}/mysqld.err")

    def sql(self, q):
        return run("mariadb", f"--defaults-file={self.cnf}", "-N", "-e", q).stdout

    def stop(self):
        # A clean shutdown writes back the dirty pages, so the next run starts
        # from a checkpoint rather than from the last run's debt.
        run("mariadb-admin", f"--defaults-file={self.cnf}", "shutdown", check=False)
        reap(self.proc, 120)
        self.proc = None


def sysbench(db, args, *extra):
    return run("sysbench", "oltp_write_only", "--db-driver=mysql", f"--mysql-socket={db.sock}", "--mysql-user=root",
               "--mysql-db=sbtest", f"--tables={args.tables}", f"--table-size={args.table_size}", *extra).stdout


def parse_sysbench(out):
    """Transactions per second and the latency's mean and 95th percentile (ms)."""
    def num(pattern):
        m = re.search(pattern, out)
        if not m:
            raise RuntimeError(f"sysbench printed no {pattern!r}:\n{out}")
        return float(m.group(1))
    return {"transactions": num(r"transactions:\s+(\d+)"), "tps": num(r"transactions:\s+\d+\s+\(([\d.]+) per sec"),
            "mean_ms": num(r"avg:\s+([\d.]+)"), "p95_ms": num(r"95th percentile:\s+([\d.]+)")}


def flush_counters(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for c in FLUSH_COUNTERS:
        name = "tandem_app_flushes_total" if c == "all" else f"tandem_app_flushes_{c}_total"
        out[c] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith(name + "{") or line.startswith(name + " "))
    return out


def make_targets(args):
    w, size, port = args.workdir, args.size, args.port
    files = {n: w / f"{n}.img" for n in ("seed", "qemu-nbd", "standalone", "alpha", "beta", "ram-peer", "mirror",
                                         "mirror-target")}
    bench.prepare(files["seed"], args.bytes)
    for n, f in files.items():
        if n != "seed":
            bench.prepare(f, args.bytes, src=files["seed"])
    every = [bench.QemuNbd(w, files["qemu-nbd"], size, port + 1),
             bench.Tandem(w, files["standalone"], size, port + 2),
             bench.Tandem(w, files["alpha"], size, port + 10, peer_img=files["beta"], name="replicated",
                          desc="two tandemd on loopback, protocol C"),
             bench.RamPeer(w, files["ram-peer"], size, port + 100, files["seed"]),
             bench.Mirror(w, files["mirror"], size, port + 20, files["mirror-target"])]
    # Another build's pairs, beside this build's: an A/B of a change on
    # the workload it is for.
    return [t for t in every if t.name in args.targets] + bench.baseline_targets(
        w, args.baseline, size, args.bytes, port, files["seed"], ram_peer="ram-peer" in args.targets)


def report(args, results, names):
    lines = [f"Machine: {results['machine']}; {args.size} device per target, ext4 on nbdfuse and a loop device; "
             f"MariaDB {results['mariadb']}, innodb_flush_log_at_trx_commit=1, sync_binlog=1, O_DIRECT; sysbench "
             f"oltp_write_only, {args.tables} tables of {args.table_size:,} rows, {args.runtime} s per run; "
             f"{args.repeat} rounds, medians.", ""]
    lines += ["| threads | " + " | ".join(names) + " | " +
              " | ".join(f"{n} / qemu-nbd" for n in names if n != "qemu-nbd") + " |",
              "|---" * (1 + len(names) + len(names) - 1) + "|"]
    for th in args.threads:
        for key, label in (("tps", "transactions/s"), ("mean_ms", "mean latency (ms)"), ("p95_ms", "p95 (ms)")):
            vals = {n: bench.median([r[key] for r in results[n].get(str(th), [])]) for n in names}
            ref = vals.get("qemu-nbd")
            cells = [bench.fmt(vals[n], 0 if key == "tps" else 2) for n in names]
            ratios = [f"{vals[n] / ref:.2f}" if ref and vals[n] else "—" for n in names if n != "qemu-nbd"]
            lines.append(f"| {th}, {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    pairs = [n for n in names if "flushes" in results[n]]
    if pairs:
        lines += ["", "How the pairs answered the application's FLUSHes, per transaction (all rounds). On the "
                  "Primary's disk: covered = by a flush it had issued early, as the writes went quiet; grouped = "
                  "by a flush shared with other FLUSHes. From the peer: peer_ahead = the Secondary had said "
                  "`Flushed` (no barrier's round trip); barrier = it waited for a barrier's ack.", "",
                  "| pair, threads | FLUSHes | covered | grouped | peer_ahead | barrier |", "|---" * 6 + "|"]
        for n in pairs:
            for th in args.threads:
                got = results[n]["flushes"].get(str(th), {})
                txs = got.get("transactions") or 1
                per = [got.get("all", 0), got.get("covered", 0), got.get("grouped", 0), got.get("peer_ahead", 0),
                       got.get("all", 0) - got.get("peer_ahead", 0)]
                lines.append(f"| {n}, {th} | " + " | ".join(f"{v / txs:.2f}" for v in per) + " |")
    for n in names:
        if "identical" in results[n]:
            lines.append(f"\n{n}: the replicas after the run are "
                         f"{'identical' if results[n]['identical'] else 'DIFFERENT'}.")
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,8", help="sysbench thread counts, comma-separated")
    ap.add_argument("--runtime", type=int, default=15, help="seconds per sysbench run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds on every target (medians)")
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=50_000)
    ap.add_argument("--size", default="1G", help="device size")
    ap.add_argument("--targets", default=",".join(TARGETS), help="of " + ", ".join(TARGETS))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tandem-bench-mariadb"))
    ap.add_argument("--out", type=Path, default=bench.ROOT / "target" / "bench-mariadb")
    ap.add_argument("--port", type=int, default=23000)
    ap.add_argument("--no-build", action="store_true", help="use target/release as it is")
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="another build's target/release: its pair ('baseline', 'baseline2', ...; and its ram-peer "
                         "with ram-peer among the targets) runs beside this build's, an A/B in one run")
    ap.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                    help="run nothing: print (and write next to it) the summary of an earlier run's results.json")
    args = ap.parse_args()
    if args.report:
        results = json.loads(args.report.read_text())
        for k in ("threads", "runtime", "repeat", "tables", "table_size", "size"):
            setattr(args, k, results["args"][k])
        args.out = args.report.parent
        report(args, results, [n for n in results["args"]["targets"] if n in results])
        return
    args.threads = [int(t) for t in args.threads.split(",")]
    args.targets = args.targets.split(",")
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        sys.exit(f"unknown targets: {', '.join(unknown)}")
    missing = [p for p in ("mariadbd", "mariadb-install-db", "sysbench", "nbdfuse", "fusermount3", "qemu-nbd",
                           "qemu-storage-daemon", "nbdinfo") if not shutil.which(p)]
    if missing:
        sys.exit(f"missing programs: {', '.join(missing)}")
    args.bytes = int(run("numfmt", "--from=iec", args.size).stdout)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=bench.ROOT, check=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = make_targets(args)
    args.targets = [t.name for t in targets]
    results = {"machine": bench.platform.node(),
               "mariadb": run("mariadbd", "--version").stdout.split()[2], "args": {
                   k: [str(x) if isinstance(x, Path) else x for x in v] if isinstance(v, list) else v
                   for k, v in vars(args).items() if isinstance(v, (int, str, list))}}
    stacks, dbs = {}, {}
    try:
        for t in targets:
            log(f"starting {t.name}: {t.desc}")
            t.start()
            results[t.name] = {"desc": t.desc}
            base = args.workdir / f"{t.name}-stack"
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            s = stacks[t.name] = Stack(t.uri(), base)
            s.up()
            s.mkfs()
            s.mount()
            db = dbs[t.name] = Mariadb(base, s.mnt / "mysql")
            log(f"{t.name}: installing MariaDB and loading {args.tables} tables of {args.table_size:,} rows")
            db.install()
            db.start()
            db.sql("CREATE DATABASE sbtest")
            sysbench(db, args, "prepare")
            db.stop()
        for rnd in range(args.repeat):
            for t in targets[rnd % len(targets):] + targets[:rnd % len(targets)]:
                db = dbs[t.name]
                db.start()
                for th in args.threads:
                    before = flush_counters(t.metrics_port) if getattr(t, "metrics_port", None) else None
                    got = parse_sysbench(sysbench(db, args, f"--threads={th}", f"--time={args.runtime}", "run"))
                    results[t.name].setdefault(str(th), []).append(got)
                    if before is not None:
                        after = flush_counters(t.metrics_port)
                        acc = results[t.name].setdefault("flushes", {}).setdefault(str(th), {})
                        for c in FLUSH_COUNTERS:
                            acc[c] = acc.get(c, 0) + after[c] - before[c]
                        acc["transactions"] = acc.get("transactions", 0) + got["transactions"]
                    log(f"  round {rnd + 1} {t.name} {th} thread(s): {got['tps']:,.0f} tps, "
                        f"mean {got['mean_ms']:.2f} ms, p95 {got['p95_ms']:.2f} ms")
                db.stop()
                (args.out / "results.json").write_text(json.dumps(results, indent=1))
        for t in targets:
            stacks[t.name].down()
            if t.other and isinstance(t, bench.Tandem):
                # Protocol C: what the Primary's disk holds, the Secondary's does.
                results[t.name]["identical"] = bench.identical(t.img, t.peer_img)
    finally:
        for db in dbs.values():
            if db.proc:
                db.stop()
        for s in stacks.values():
            s.down()
        PROCS.stop_all()
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    report(args, results, [t.name for t in targets])
    if any(results[t.name].get("identical") is False for t in targets):
        sys.exit("the replicas differ")


if __name__ == "__main__":
    main()
