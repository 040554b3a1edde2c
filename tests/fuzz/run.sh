#!/bin/sh
# Builds losskit's libFuzzer harness with clang (ASan + UBSan) and runs a
# bounded campaign: RUNS executions per target (default 20000).
# Usage: sh tests/fuzz/run.sh [RUNS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build/fuzz"
runs=${1:-20000}
mkdir -p "$out"
CXX=${CXX_FUZZ:-clang++-14}
command -v "$CXX" >/dev/null || CXX=clang++
"$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$root/include" -isystem /usr/include/eigen3 "$here/fuzz_losses.cpp" -o "$out/losskit_fuzz"
targets=$(grep -o 'kTargets\[\] = {[^}]*}' "$here/fuzz_losses.cpp" | tr ',' '\n' | grep -c fuzz_)
i=0
while [ "$i" -lt "$targets" ]; do
  mkdir -p "$out/corpus$i"
  echo "== fuzz target $i: $runs runs"
  if ! LOSSKIT_FUZZ_TARGET=$i "$out/losskit_fuzz" -runs="$runs" -max_len=4096 -seed=$((i + 1)) \
      -print_final_stats=1 -artifact_prefix="$out/crash$i-" "$out/corpus$i" >"$out/log$i.txt" 2>&1; then
    tail -n 40 "$out/log$i.txt"
    echo "== fuzz target $i FAILED (log: $out/log$i.txt)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units" "$out/log$i.txt" || true
  i=$((i + 1))
done
echo "== fuzzing done: $targets targets x $runs runs, no findings"
