// Reference kernels: the hardware limits that loss benchmarks are compared to.
#include "reference_kernels.hpp"

namespace {

// Memory-bandwidth reference: read two float arrays, write one (c = a − b),
// the same traffic as MSE's value_and_gradient. Items = elements.
void BM_ReferenceStream(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Eigen::ArrayXf a = lkbench::random_matrix<float>(n, 1).array(), b = lkbench::random_matrix<float>(n, 1).array();
  Eigen::ArrayXf c(n);
  for (auto _ : state) {
    c = a - b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(n), double(n));
}
BENCHMARK(BM_ReferenceStream)->RangeMultiplier(16)->Range(1 << 12, 1 << 24)->UseRealTime();

// Exp-throughput reference: one vectorised exp per element over a C×N float
// array, written to a second array (what a softmax pass cannot do without).
void BM_ReferenceExp(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::ArrayXXf x = lkbench::random_matrix<float>(c, n).array();
  Eigen::ArrayXXf y(c, n);
  for (auto _ : state) {
    y = x.exp();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_ReferenceExp)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

}  // namespace
