#!/bin/sh
# Builds losskit's libFuzzer harness with clang (ASan + UBSan) and runs a
# bounded campaign: RUNS executions per target (default 20000), JOBS targets
# at a time (default 2), each target stopped after SECONDS (default 60) if
# its RUNS are not done by then (the slow CS-IB targets on a loaded machine).
# Usage: sh tests/fuzz/run.sh [--build-only | --no-build] [RUNS] [JOBS] [SECONDS]
#   --build-only builds the harness and stops; --no-build runs the campaign on
#   the harness a --build-only call made (CI builds it while the one-TU TSan
#   build uses the other core).
# Replaying a finding: LOSSKIT_FUZZ_TARGET=<i> LOSSKIT_FUZZ_VERBOSE=1 build/fuzz/losskit_fuzz <crash file>
# prints the drawn shapes, options and data.
set -eu
phase=all
case "${1:-}" in
  --build-only) phase=build; shift ;;
  --no-build) phase=run; shift ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build/fuzz"
runs=${1:-20000}
jobs=${2:-2}
seconds=${3:-60}
mkdir -p "$out"
CXX=${CXX_FUZZ:-clang++-14}
command -v "$CXX" >/dev/null || CXX=clang++
if [ "$phase" != run ]; then
  "$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$root/include" -isystem /usr/include/eigen3 "$here/fuzz_losses.cpp" -o "$out/losskit_fuzz"
  [ "$phase" = build ] && { echo "== fuzz harness built: $out/losskit_fuzz"; exit 0; }
elif [ ! -x "$out/losskit_fuzz" ]; then
  echo "== fuzz: --no-build, but $out/losskit_fuzz is missing (run with --build-only first)"; exit 1
fi
targets=$(grep -o 'kTargets\[\] = {[^}]*}' "$here/fuzz_losses.cpp" | tr ',' '\n' | grep -c fuzz_)

# Last targets first (the CS-IB kernels, O(N²) per call, are the slowest);
# xargs -P hands the next target to whichever job is free.
order=$(i=$((targets - 1)); while [ "$i" -ge 0 ]; do echo "$i"; i=$((i - 1)); done)
status=0
printf '%s\n' $order | xargs -P "$jobs" -I{} sh -c '
  i=$1; out=$2; runs=$3; seconds=$4
  mkdir -p "$out/corpus$i"
  if LOSSKIT_FUZZ_TARGET=$i "$out/losskit_fuzz" -runs="$runs" -max_total_time="$seconds" -max_len=4096 -seed=$((i + 1)) \
      -print_final_stats=1 -artifact_prefix="$out/crash$i-" "$out/corpus$i" >"$out/log$i.txt" 2>&1; then
    echo "== fuzz target $i: $(grep -o "number_of_executed_units: [0-9]*" "$out/log$i.txt")"
  else
    tail -n 40 "$out/log$i.txt"
    echo "== fuzz target $i FAILED (log: $out/log$i.txt)"
    exit 1
  fi' sh {} "$out" "$runs" "$seconds" || status=1
[ "$status" -eq 0 ] || { echo "== fuzzing: findings (see the FAILED lines above)"; exit 1; }
echo "== fuzzing done: $targets targets x up to $runs runs (at most ${seconds}s each), no findings"
