#!/bin/bash
# ab.sh ROUNDS PEERIMG build... : w6 IOPS per build per round, interleaved
JOBS=${JOBS:---numjobs=4}
R=$1; shift; PI=$1; shift
for r in $(seq $R); do for build in "$@"; do
  B=$build PEERIMG=$PI $(dirname "$0")/pair.sh start >/dev/null
  iops=$(fio --name=t --ioengine=nbd --uri=nbd://127.0.0.1:7100/r0 --rw=randwrite --bs=4k --iodepth=1 --fsync=1 $JOBS --group_reporting --runtime=5 --time_based --ramp_time=1 --output-format=json 2>/dev/null | python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]["write"]; print(int(j["iops"]))')
  fl=$($build/tandemadm -c r0.conf --node alpha --run-dir alpha status --verbose r0 | grep -o "flushes:.*")
  echo "$r $build $iops $fl"
  B=$build $(dirname "$0")/pair.sh stop
done; done
