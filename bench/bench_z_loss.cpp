// ZLoss: value and value+gradient over D×N outputs (D classes per column).
// Sizes D·N ∈ {2^16, 2^20, 2^24} match BM_ReferenceStream's arguments: the
// value reads the outputs (twice, the second time from cache for these D),
// value+grad also writes the gradient — compare items/s with the stream kernel.
#include <losskit/z_loss.hpp>

#include "reference_kernels.hpp"

namespace {

void BM_ZLoss_Value(benchmark::State& state) {
  const Eigen::Index d = state.range(0), n = state.range(1);
  const Eigen::MatrixXf outputs = lkbench::random_matrix<float>(d, n);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(d));
  losskit::ZLoss<float> z;
  for (auto _ : state) benchmark::DoNotOptimize(z(outputs, labels));
  lkbench::set_throughput(state, sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_ZLoss_Value)->Args({1024, 64})->Args({4096, 256})->Args({131072, 128})->UseRealTime();

void BM_ZLoss_ValueGrad(benchmark::State& state) {
  const Eigen::Index d = state.range(0), n = state.range(1);
  const Eigen::MatrixXf outputs = lkbench::random_matrix<float>(d, n);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(d));
  Eigen::MatrixXf grad(d, n);
  losskit::ZLoss<float> z;
  for (auto _ : state) {
    benchmark::DoNotOptimize(z.value_and_gradient(outputs, labels, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_ZLoss_ValueGrad)->Args({1024, 64})->Args({4096, 256})->Args({131072, 128})->UseRealTime();

}  // namespace
