# The scaling curves of scripts/bench.sh, from the CSV files beside this one:
#   gnuplot docs/perf/plot.gp   (run from the repository root)
set datafile separator ","
set terminal pngcairo size 1500,450 font ",10"
set output "docs/perf/scaling.png"
set multiplot layout 1,3
set key top left
set grid
set logscale x 2

set title "W1 lifecycle vs sessions in flight"
set xlabel "sessions in flight"
set ylabel "sessions/s"
plot "docs/perf/w1-scaling.csv" skip 1 using 1:2 with linespoints title "Sessionbox", \
     ""                         skip 1 using 1:3 with linespoints title "bare wasmtime"

set title "W2 dispatch vs live sessions"
set xlabel "live sessions"
set ylabel "events/s"
plot "docs/perf/w2-scaling.csv" skip 1 using 1:2 with linespoints title "Sessionbox", \
     ""                         skip 1 using 1:3 with linespoints title "bare wasmtime"

set title "W3 memory vs idle sessions"
set logscale x 10
set xrange [500:200000]
set key right center
set xlabel "idle live sessions"
set ylabel "KiB per session"
set yrange [0:*]
plot "docs/perf/w3-density.csv"      skip 1 using 1:2 with linespoints title "Sessionbox RSS", \
     "docs/perf/w3-density-bare.csv" skip 1 using 1:2 with linespoints title "bare wasmtime RSS", \
     "docs/perf/w3-density.csv"      skip 1 using 1:3 with linespoints title "Sessionbox page tables", \
     "docs/perf/w3-density-bare.csv" skip 1 using 1:3 with linespoints title "bare page tables"
unset multiplot
