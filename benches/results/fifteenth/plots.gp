
set terminal pngcairo size 900,560 font ',11'
set output '/tmp/s15-full/iops-by-queue-depth.png'
set title '4k random write IOPS by queue depth (fio, nbd engine; file: io\_uring O\_DIRECT)'
set xlabel 'queue depth'; set ylabel 'IOPS'; set logscale x 2; set grid; set key top left
plot '/tmp/s15-full/sweep.dat' using 1:2 with linespoints lw 2 title 'file', '/tmp/s15-full/sweep.dat' using 1:3 with linespoints lw 2 title 'file-pair', '/tmp/s15-full/sweep.dat' using 1:4 with linespoints lw 2 title 'lockstep', '/tmp/s15-full/sweep.dat' using 1:5 with linespoints lw 2 title 'qemu-nbd', '/tmp/s15-full/sweep.dat' using 1:6 with linespoints lw 2 title 'standalone', '/tmp/s15-full/sweep.dat' using 1:7 with linespoints lw 2 title 'replicated', '/tmp/s15-full/sweep.dat' using 1:8 with linespoints lw 2 title 'ram-peer', '/tmp/s15-full/sweep.dat' using 1:9 with linespoints lw 2 title 'mirror'
set output '/tmp/s15-full/latency-cdf.png'
set title '4k random write QD1: latency distribution'
unset logscale x; set logscale x 10
set xlabel 'latency (µs)'; set ylabel 'percentile'; set key bottom right; set yrange [0:100]
plot '/tmp/s15-full/cdf-file.dat' using 1:2 with linespoints lw 2 title 'file', '/tmp/s15-full/cdf-file-pair.dat' using 1:2 with linespoints lw 2 title 'file-pair', '/tmp/s15-full/cdf-lockstep.dat' using 1:2 with linespoints lw 2 title 'lockstep', '/tmp/s15-full/cdf-qemu-nbd.dat' using 1:2 with linespoints lw 2 title 'qemu-nbd', '/tmp/s15-full/cdf-standalone.dat' using 1:2 with linespoints lw 2 title 'standalone', '/tmp/s15-full/cdf-replicated.dat' using 1:2 with linespoints lw 2 title 'replicated', '/tmp/s15-full/cdf-ram-peer.dat' using 1:2 with linespoints lw 2 title 'ram-peer', '/tmp/s15-full/cdf-mirror.dat' using 1:2 with linespoints lw 2 title 'mirror'
