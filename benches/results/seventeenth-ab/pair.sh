#!/bin/bash
# usage (in a scratch directory): pair.sh start|stop  (alpha on a.img, beta on b.img)
B=${B:-target/release}
D=${D:-$PWD}  # holds a.img, b.img (1 GiB, preallocated); run dirs go here too
P=7100
conf() { cat <<C
resource r0 {
  protocol C;
  net { shared-secret "bench"; connect-int 1; }
  disk { c-max-rate 4G; }
  on alpha { device nbd://127.0.0.1:$P/r0; disk $D/a.img; address 127.0.0.1:$((P+1)); meta-disk $D/alpha.md; }
  on beta { device nbd://127.0.0.1:$((P+2))/r0; disk ${PEERIMG:-$D/b.img}; address 127.0.0.1:$((P+3)); meta-disk $D/beta.md; }
}
C
}
case $1 in
start)
  conf > $D/r0.conf
  for n in alpha beta; do mkdir -p $D/$n; $B/tandemadm -c $D/r0.conf --node $n --run-dir $D/$n create-md --force r0 >/dev/null; done
  for n in alpha beta; do TANDEM_LOG=warn setsid -f $B/tandemd -c $D/r0.conf --node $n --run-dir $D/$n </dev/null >$D/$n.log 2>&1; done
  sleep 1
  for n in alpha beta; do $B/tandemadm -c $D/r0.conf --node $n --run-dir $D/$n up r0; done
  sleep 2
  $B/tandemadm -c $D/r0.conf --node alpha --run-dir $D/alpha primary --force r0
  while ! grep -q UpToDate/UpToDate $D/alpha/drbd; do sleep 0.5; done
  ;;
stop)
  pkill -f "tandemd -c $D/r0.conf"; sleep 1 ;;
esac
