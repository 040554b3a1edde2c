// MSE: value and value+gradient from cache-resident sizes to 2^24 elements.
// Compare items/s with BM_ReferenceStream at the same size (same traffic:
// two arrays read, one written).
#include <losskit/mse.hpp>

#include "reference_kernels.hpp"

namespace {

void BM_MSE_Value(benchmark::State& state) {
  const Eigen::Index n = state.range(0), d = 64;
  const Eigen::MatrixXf pred = lkbench::random_matrix<float>(d, n / d), target = lkbench::random_matrix<float>(d, n / d, 1.0, 3);
  losskit::MSE<float> mse;
  for (auto _ : state) benchmark::DoNotOptimize(mse(pred, target));
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(n), double(n));
}
BENCHMARK(BM_MSE_Value)->RangeMultiplier(16)->Range(1 << 12, 1 << 24)->UseRealTime();

void BM_MSE_ValueGrad(benchmark::State& state) {
  const Eigen::Index n = state.range(0), d = 64;
  const Eigen::MatrixXf pred = lkbench::random_matrix<float>(d, n / d), target = lkbench::random_matrix<float>(d, n / d, 1.0, 3);
  Eigen::MatrixXf grad(d, n / d);
  losskit::MSE<float> mse;
  for (auto _ : state) {
    benchmark::DoNotOptimize(mse.value_and_gradient(pred, target, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(n), double(n));
}
BENCHMARK(BM_MSE_ValueGrad)->RangeMultiplier(16)->Range(1 << 12, 1 << 24)->UseRealTime();

}  // namespace
