#!/bin/sh
# Regenerates the losskit-vs-libtorch table and chart (README, docs/torch.md):
# builds the benchmark binary with the libtorch peers, runs the value+gradient
# benchmarks, their reference kernels and their libtorch peers at 1 and 2
# OpenMP threads, then prints the ratio table and writes the PNG chart.
#   sh bench/torch/compare.sh [build-dir] [png]
# Needs libtorch-dev, libbenchmark-dev, gnuplot-nox (Debian 12).
set -eu
cd "$(dirname "$0")/../.."
build=${1:-build/torch-bench}
png=${2:-docs/img/torch_speedup.png}
cmake --preset bench -B "$build" -DLOSSKIT_WITH_TORCH=ON -DLOSSKIT_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j2 --target losskit_bench
filter='^BM_(Torch_)?(MSE_ValueGrad/(65536|16777216)|CE_ValueGrad/(10/4096|1000/256|1000/4096|32000/256)|BCE_ValueGrad/1000/256|CompSum_ValueGrad/1000/256/(500|1000)|A?LDRKL_ValueGrad/(1000|32000)/256|ZLoss_ValueGrad/4096/256|(MS)?SSIM_ValueGrad/N:8/C:3/H:256/W:256|CSIB_ValueGrad(_FixedWidths)?/512)|^BM_CE_ValueGrad/32000/4096|^BM_ReferenceExp/32000/4096|^BM_ReferenceStream/(65536|1048576|16777216)|^BM_ReferenceExp/(10/4096|1000/256|1000/4096|32000/256)|^BM_CSIB_GramReference/512'
for t in 1 2; do
  OMP_NUM_THREADS=$t "$build/bench/losskit_bench" --benchmark_filter="$filter" --benchmark_repetitions=7 --benchmark_enable_random_interleaving=true \
    --benchmark_min_time=0.05 --benchmark_out="$build/torch_t$t.json" --benchmark_out_format=json >/dev/null
done
python3 bench/ratios.py 1="$build/torch_t1.json" 2="$build/torch_t2.json" --plot "$png"
