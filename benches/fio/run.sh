#!/usr/bin/env bash
# Tandem (standalone) against qemu-nbd on the same preallocated file, and
# against the file itself (the physical limit), in one run, with fio.
#
#   benches/fio/run.sh [--runtime SECS] [--size 1G] [--workdir DIR] [--out FILE]
#
# Rows: 4k random write QD1 (mean and p99 latency), 4k random write QD32
# (IOPS), 1M sequential write QD8 (MB/s), 4k random read QD32 (IOPS), 4k
# write + flush QD1 (IOPS and latency). Prints a markdown table with the
# ratios Tandem / qemu-nbd, and writes it to --out (default
# target/bench/summary.md). Needs fio, qemu-utils, python3; run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNTIME=10
SIZE=1G
WORK=${TMPDIR:-/tmp}/tandem-bench
OUT=$ROOT/target/bench/summary.md
while [ $# -gt 0 ]; do
  case $1 in
    --runtime) RUNTIME=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --workdir) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$WORK" "$(dirname "$OUT")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

cargo build --release --quiet
BIN=$ROOT/target/release
IMG=$WORK/backing.img
BYTES=$(numfmt --from=iec "$SIZE")
if [ ! -f "$IMG" ] || [ "$(stat -c %s "$IMG")" != "$BYTES" ]; then
  echo "preparing $SIZE of random data in $IMG (once)" >&2
  # Filled, not fallocated: unwritten extents read as zeroes without I/O.
  head -c "$BYTES" /dev/urandom >"$IMG"
  sync
fi

wait_nbd() { for _ in $(seq 100); do nbdinfo --size "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

# fio JOBNAME URI|FILE EXTRA... -> JSON in $WORK/TARGET-JOB.json
run_fio() {
  local target=$1 job=$2 where=$3; shift 3
  local io=(--ioengine=nbd "--uri=$where")
  [ "${where#file:}" != "$where" ] && io=(--ioengine=io_uring --direct=1 "--filename=${where#file:}")
  fio --name="$job" "${io[@]}" --size="$SIZE" --time_based --runtime="$RUNTIME" --ramp_time=1 \
      --lat_percentiles=1 --output-format=json "$@" >"$WORK/$target-$job.json"
}

workloads() {
  local t=$1 w=$2
  run_fio "$t" w1 "$w" --rw=randwrite --bs=4k --iodepth=1
  run_fio "$t" w2 "$w" --rw=randwrite --bs=4k --iodepth=32
  run_fio "$t" w3 "$w" --rw=write --bs=1M --iodepth=8
  run_fio "$t" w4 "$w" --rw=randread --bs=4k --iodepth=32
  run_fio "$t" w5 "$w" --rw=randwrite --bs=4k --iodepth=1 --fsync=1
}

echo "target: file (io_uring, O_DIRECT)" >&2
workloads file "file:$IMG"

echo "target: qemu-nbd --cache=none --aio=io_uring" >&2
PORT=$((20000 + RANDOM % 5000))
qemu-nbd -t -p "$PORT" -b 127.0.0.1 -f raw -x r0 --cache=none --aio=io_uring --discard=unmap --shared=8 "$IMG" \
  </dev/null >"$WORK/qemu-nbd.log" 2>&1 &
PIDS+=($!)
wait_nbd "nbd://127.0.0.1:$PORT/r0"
workloads qemu "nbd://127.0.0.1:$PORT/r0"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "target: tandem standalone (external metadata, same file)" >&2
PORT=$((PORT + 1))
T=$WORK/tandem; rm -rf "$T"; mkdir -p "$T"
cat >"$T/tandem.conf" <<EOF
resource r0 {
  on bench { device nbd://127.0.0.1:$PORT/r0; disk $IMG; meta-disk $T/r0.md; }
}
EOF
A=("$BIN/tandemadm" -c "$T/tandem.conf" --node bench --run-dir "$T/run")
"${A[@]}" create-md --force r0 >/dev/null
TANDEM_LOG=warn "$BIN/tandemd" -c "$T/tandem.conf" --node bench --run-dir "$T/run" </dev/null >"$T/tandemd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$T/run/tandemd.sock" ] && break; sleep 0.05; done
"${A[@]}" up r0
"${A[@]}" primary --force r0
wait_nbd "nbd://127.0.0.1:$PORT/r0"
workloads tandem "nbd://127.0.0.1:$PORT/r0"
"${A[@]}" status --verbose r0 >&2 || true
"${A[@]}" secondary r0
"${A[@]}" down r0
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "target: tandem replicated (protocol C, two nodes on loopback)" >&2
R=$WORK/tandem-pair; rm -rf "$R"; mkdir -p "$R"
PEER_IMG=$WORK/peer.img
cp --sparse=never "$IMG" "$PEER_IMG"
P0=$((PORT + 1))
cat >"$R/tandem.conf" <<EOF
resource r0 {
  protocol C;
  net { shared-secret "bench"; connect-int 1; }
  disk { c-max-rate 4G; }
  on alpha { device nbd://127.0.0.1:$P0/r0; disk $IMG; address 127.0.0.1:$((P0 + 1)); meta-disk $R/alpha.md; }
  on beta  { device nbd://127.0.0.1:$((P0 + 2))/r0; disk $PEER_IMG; address 127.0.0.1:$((P0 + 3)); meta-disk $R/beta.md; }
}
EOF
for n in alpha beta; do
  B=("$BIN/tandemadm" -c "$R/tandem.conf" --node $n --run-dir "$R/$n")
  "${B[@]}" create-md --force r0 >/dev/null
  TANDEM_LOG=warn "$BIN/tandemd" -c "$R/tandem.conf" --node $n --run-dir "$R/$n" </dev/null >"$R/$n.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$R/$n/tandemd.sock" ] && break; sleep 0.05; done
  "${B[@]}" up r0
done
for _ in $(seq 200); do grep -q "cs:Connected" "$R/alpha/drbd" 2>/dev/null && break; sleep 0.05; done
t0=$(date +%s.%N)
"$BIN/tandemadm" -c "$R/tandem.conf" --node alpha --run-dir "$R/alpha" primary --force r0
for _ in $(seq 1200); do grep -q "ds:UpToDate/UpToDate" "$R/alpha/drbd" 2>/dev/null && break; sleep 0.05; done
t1=$(date +%s.%N)
echo "initial full sync of $SIZE over loopback: $(python3 -c "print(f'{$t1-$t0:.2f}')") s" | tee "$WORK/fullsync.txt" >&2
wait_nbd "nbd://127.0.0.1:$P0/r0"
workloads replicated "nbd://127.0.0.1:$P0/r0"
if cmp -s "$IMG" "$PEER_IMG"; then echo "replicas identical after the run (cmp)" | tee "$WORK/cmp.txt" >&2; else echo "REPLICAS DIFFER (cmp)" | tee "$WORK/cmp.txt" >&2; fi

# 1%-dirty resync: disconnect beta, dirty 1% of the device in scattered 4 KiB
# blocks, reconnect, and count what crossed the link.
BA=("$BIN/tandemadm" -c "$R/tandem.conf" --node beta --run-dir "$R/beta")
"${BA[@]}" disconnect r0
for _ in $(seq 100); do grep -q "cs:WFConnection" "$R/alpha/drbd" && break; sleep 0.05; done
fio --name=dirty --ioengine=nbd "--uri=nbd://127.0.0.1:$P0/r0" --size="$SIZE" --rw=randwrite --bs=4k \
    --number_ios=$((BYTES / 4096 / 100)) --norandommap=0 --randrepeat=0 --output-format=terse >/dev/null
ns0=$(grep -o 'ns:[0-9]*' "$R/alpha/drbd" | cut -d: -f2)
oos=$(grep -o 'oos:[0-9]*' "$R/alpha/drbd" | cut -d: -f2)
t0=$(date +%s.%N)
"${BA[@]}" connect r0
for _ in $(seq 1200); do grep -q "oos:0" "$R/alpha/drbd" && grep -q "ds:UpToDate/UpToDate" "$R/alpha/drbd" && break; sleep 0.02; done
t1=$(date +%s.%N)
ns1=$(grep -o 'ns:[0-9]*' "$R/alpha/drbd" | cut -d: -f2)
python3 -c "
moved=($ns1-$ns0)*1024; dev=$BYTES
print(f'1%-dirty resync: {$oos} KiB out of sync, {moved/2**20:.1f} MiB moved = {100*moved/dev:.2f}% of the device, in {$t1-$t0:.2f} s')" | tee "$WORK/dirty.txt" >&2
if cmp -s "$IMG" "$PEER_IMG"; then echo "replicas identical after the 1%-dirty resync (cmp)" | tee -a "$WORK/dirty.txt" >&2; else echo "REPLICAS DIFFER after resync" | tee -a "$WORK/dirty.txt" >&2; fi
for p in "${PIDS[@]: -2}"; do kill "$p" 2>/dev/null || true; done; sleep 2

echo "target: qemu-storage-daemon write-blocking mirror (replicated peer)" >&2
Q=$WORK/qsd; rm -rf "$Q"; mkdir -p "$Q"
MIRROR_IMG=$WORK/mirror.img
cp --sparse=never "$IMG" "$MIRROR_IMG"
TP=$((P0 + 5)); QP=$((P0 + 6))
qemu-nbd -t -p "$TP" -b 127.0.0.1 -f raw -x r0b --cache=none --aio=io_uring --shared=8 "$MIRROR_IMG" </dev/null >"$Q/target.log" 2>&1 &
PIDS+=($!)
wait_nbd "nbd://127.0.0.1:$TP/r0b"
qemu-storage-daemon \
  --blockdev driver=file,filename="$IMG",node-name=file0,cache.direct=on,aio=io_uring \
  --blockdev driver=raw,file=file0,node-name=src \
  --blockdev driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$TP,export=r0b,node-name=tgt \
  --chardev socket,path="$Q/qmp.sock",server=on,wait=off,id=qmp0 --monitor chardev=qmp0 \
  --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port=$QP \
  --export type=nbd,id=exp0,node-name=src,name=r0,writable=on </dev/null >"$Q/qsd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$Q/qmp.sock" ] && break; sleep 0.05; done
python3 - "$Q/qmp.sock" <<'QMP'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
def cmd(c, a=None):
    f.write(json.dumps({"execute": c, **({"arguments": a} if a else {})}) + "\n"); f.flush()
    while True:
        m = json.loads(f.readline())
        if "return" in m or "error" in m: return m
f.readline()
cmd("qmp_capabilities")
print(cmd("blockdev-mirror", {"job-id": "m0", "device": "src", "target": "tgt", "sync": "full", "copy-mode": "write-blocking"}), file=sys.stderr)
for _ in range(1200):
    jobs = cmd("query-block-jobs")["return"]
    if jobs and jobs[0].get("ready"): break
    time.sleep(0.1)
QMP
wait_nbd "nbd://127.0.0.1:$QP/r0"
workloads mirror "nbd://127.0.0.1:$QP/r0"

python3 - "$WORK" "$OUT" "$RUNTIME" "$SIZE" <<'PY'
import json, sys, os, platform, subprocess
work, out, runtime, size = sys.argv[1:5]
def job(t, w):
    text = open(os.path.join(work, f"{t}-{w}.json")).read()
    # fio's nbd engine prints "fio: connected to NBD server" before the JSON.
    d = json.loads(text[text.index("{"):])["jobs"][0]
    return d
def wr(t, w, key):
    d = job(t, w)
    side = d["read"] if w == "w4" else d["write"]
    if key == "iops": return side["iops"]
    if key == "mbs": return side["bw_bytes"] / 1e6
    if key == "mean": return side["lat_ns"]["mean"] / 1000
    if key == "p99": return side["lat_ns"]["percentile"]["99.000000"] / 1000
    if key == "sync": return (side["lat_ns"]["mean"] + d["sync"]["lat_ns"]["mean"]) / 1000
rows = [
    ("4k randwrite QD1, mean latency (µs)", "w1", "mean", False),
    ("4k randwrite QD1, p99 latency (µs)", "w1", "p99", False),
    ("4k randwrite QD32, IOPS", "w2", "iops", True),
    ("1M seq write QD8, MB/s", "w3", "mbs", True),
    ("4k randread QD32, IOPS", "w4", "iops", True),
    ("4k write + flush QD1, IOPS", "w5", "iops", True),
    ("4k write + flush QD1, write+flush latency (µs)", "w5", "sync", False),
]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [f"Machine: {platform.node()}, {os.cpu_count()} vCPU ({cpu}), kernel {platform.release()}; "
         f"{size} preallocated random-filled file; fio {runtime} s per row, 1 s ramp.", "",
         "| workload | file (O_DIRECT, the limit) | qemu-nbd (cache=none, io_uring) | Tandem standalone | standalone / qemu-nbd | Tandem replicated (C) | replicated / qemu-nbd | qemu write-blocking mirror | mirror / qemu-nbd |",
         "|---|---|---|---|---|---|---|---|---|"]
for name, w, key, higher in rows:
    f, q, t, r, m = (wr(x, w, key) for x in ("file", "qemu", "tandem", "replicated", "mirror"))
    ratio = t / q if q else float("nan")
    ok = ratio >= 1.0 if higher else ratio <= 1.0
    ahead = r > m if higher else r < m
    lines.append(f"| {name} | {f:,.0f} | {q:,.0f} | {t:,.0f} | {ratio:.2f} {'✓' if ok else '✗'} | {r:,.0f}{' (ahead of mirror)' if ahead else ''} | {r / q:.2f} | {m:,.0f} | {m / q:.2f} |")
for extra in ("fullsync.txt", "cmp.txt", "dirty.txt"):
    path = os.path.join(work, extra)
    if os.path.exists(path):
        lines.append("")
        lines.append(open(path).read().strip())
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
