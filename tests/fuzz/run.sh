#!/bin/sh
# Builds losskit's libFuzzer harness with clang (ASan + UBSan) and runs a
# bounded campaign: RUNS executions per target (default 20000), JOBS targets
# at a time (default 2). About 4 minutes on 2 cores at the default (the
# build takes half of it).
# Usage: sh tests/fuzz/run.sh [RUNS] [JOBS]
# Replaying a finding: LOSSKIT_FUZZ_TARGET=<i> LOSSKIT_FUZZ_VERBOSE=1 build/fuzz/losskit_fuzz <crash file>
# prints the drawn shapes, options and data.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build/fuzz"
runs=${1:-20000}
jobs=${2:-2}
mkdir -p "$out"
CXX=${CXX_FUZZ:-clang++-14}
command -v "$CXX" >/dev/null || CXX=clang++
"$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$root/include" -isystem /usr/include/eigen3 "$here/fuzz_losses.cpp" -o "$out/losskit_fuzz"
targets=$(grep -o 'kTargets\[\] = {[^}]*}' "$here/fuzz_losses.cpp" | tr ',' '\n' | grep -c fuzz_)

run_target() {
  mkdir -p "$out/corpus$1"
  LOSSKIT_FUZZ_TARGET=$1 "$out/losskit_fuzz" -runs="$runs" -max_len=4096 -seed=$(($1 + 1)) \
    -print_final_stats=1 -artifact_prefix="$out/crash$1-" "$out/corpus$1" >"$out/log$1.txt" 2>&1
}

failed=""
i=0
while [ "$i" -lt "$targets" ]; do
  pids=""
  j=0
  while [ "$j" -lt "$jobs" ] && [ "$i" -lt "$targets" ]; do
    run_target "$i" &
    pids="$pids $!:$i"
    i=$((i + 1))
    j=$((j + 1))
  done
  for p in $pids; do
    t=${p#*:}
    if wait "${p%%:*}"; then
      echo "== fuzz target $t: $(grep -o 'number_of_executed_units: [0-9]*' "$out/log$t.txt")"
    else
      tail -n 40 "$out/log$t.txt"
      echo "== fuzz target $t FAILED (log: $out/log$t.txt)"
      failed="$failed $t"
    fi
  done
done
[ -z "$failed" ] || { echo "== fuzzing: findings in targets$failed"; exit 1; }
echo "== fuzzing done: $targets targets x $runs runs, no findings"
