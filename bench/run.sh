#!/bin/sh
# Runs the benchmark binary once (1 thread unless OMP_NUM_THREADS is set),
# keeps its JSON next to it and prints the summary table: every loss against
# its reference kernel from the same run and, in a build with
# -DLOSSKIT_WITH_TORCH=ON, against its libtorch peer (bench/ratios.py).
# Usage: sh bench/run.sh [BENCH_BINARY] [extra losskit_bench arguments...]
set -eu
bin=${1:-build/bench/bench/losskit_bench}
[ $# -gt 0 ] && shift
out="$(dirname "$bin")/losskit_bench.json"
threads=${OMP_NUM_THREADS:-1}
OMP_NUM_THREADS=$threads "$bin" --benchmark_out="$out" --benchmark_out_format=json "$@"
echo
echo "Summary ($out; x ref = items/s over the reference kernel of the same run, x torch = libtorch time / losskit time):"
python3 "$(dirname "$0")/ratios.py" --all "$threads=$out"
