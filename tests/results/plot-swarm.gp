# Offload over virtual time against the optimum, from the swarm simulator's CSVs.
# Run from the workspace root: gnuplot tests/results/plot-swarm.gp
# Columns: 6 offload, 7 optimum with the once-a-client rule, 8 optimum without it.
set datafile separator ","
set terminal pngcairo size 1000,560 font "sans,10"
set key bottom right
set xlabel "virtual time (s)"
set ylabel "share of viewers fed by a host peer"
set yrange [0:0.7]
set grid
do for [n in "10000 100000"] {
  set output sprintf("tests/results/swarm-%s.png", n)
  set title sprintf("P2P plugin under churn, %s viewers target, k=2 (seed 1)", n)
  plot sprintf("tests/results/swarm-%s-balanced-seed1.csv", n) using 1:8 with lines dt 2 lw 2 title "optimum without the once-a-client rule", \
       sprintf("tests/results/swarm-%s-omerule-seed1.csv", n) using 1:7 with lines dt 3 lw 2 title "optimum with the once-a-client rule (MoveFormerClients false)", \
       sprintf("tests/results/swarm-%s-balanced-seed1.csv", n) using 1:6 with lines lw 2 title "plugin, defaults (moves, former clients too)", \
       sprintf("tests/results/swarm-%s-omerule-seed1.csv", n) using 1:6 with lines lw 2 title "plugin, MoveFormerClients false", \
       sprintf("tests/results/swarm-%s-nomoves-seed1.csv", n) using 1:6 with lines title "plugin, MoveEdgeViewers false", \
       sprintf("tests/results/swarm-%s-greedy-seed1.csv", n) using 1:6 with lines title "plugin, greedy matching (OME's rule)"
}
