
set terminal pngcairo size 900,560 font ',11'
set output '/work/scratch/full17/iops-by-queue-depth.png'
set title '4k random write IOPS by queue depth (fio, nbd engine; file: io\_uring O\_DIRECT)'
set xlabel 'queue depth'; set ylabel 'IOPS'; set logscale x 2; set grid; set key top left
plot '/work/scratch/full17/sweep.dat' using 1:2 with linespoints lw 2 title 'file', '/work/scratch/full17/sweep.dat' using 1:3 with linespoints lw 2 title 'file-pair', '/work/scratch/full17/sweep.dat' using 1:4 with linespoints lw 2 title 'lockstep', '/work/scratch/full17/sweep.dat' using 1:5 with linespoints lw 2 title 'qemu-nbd', '/work/scratch/full17/sweep.dat' using 1:6 with linespoints lw 2 title 'standalone', '/work/scratch/full17/sweep.dat' using 1:7 with linespoints lw 2 title 'replicated', '/work/scratch/full17/sweep.dat' using 1:8 with linespoints lw 2 title 'ram-peer', '/work/scratch/full17/sweep.dat' using 1:9 with linespoints lw 2 title 'mirror'
set output '/work/scratch/full17/latency-cdf.png'
set title '4k random write QD1: latency distribution'
unset logscale x; set logscale x 10
set xlabel 'latency (µs)'; set ylabel 'percentile'; set key bottom right; set yrange [0:100]
plot '/work/scratch/full17/cdf-file.dat' using 1:2 with linespoints lw 2 title 'file', '/work/scratch/full17/cdf-file-pair.dat' using 1:2 with linespoints lw 2 title 'file-pair', '/work/scratch/full17/cdf-lockstep.dat' using 1:2 with linespoints lw 2 title 'lockstep', '/work/scratch/full17/cdf-qemu-nbd.dat' using 1:2 with linespoints lw 2 title 'qemu-nbd', '/work/scratch/full17/cdf-standalone.dat' using 1:2 with linespoints lw 2 title 'standalone', '/work/scratch/full17/cdf-replicated.dat' using 1:2 with linespoints lw 2 title 'replicated', '/work/scratch/full17/cdf-ram-peer.dat' using 1:2 with linespoints lw 2 title 'ram-peer', '/work/scratch/full17/cdf-mirror.dat' using 1:2 with linespoints lw 2 title 'mirror'
