// CompSum and SmoothAdversarialCompSum: value and value+gradient at the
// cross-entropy shapes, C ∈ {10, 1000, 32000} classes × N ∈ {256, 4096}
// samples, float. The second argument of BM_CompSum_* is 1000·τ, so the
// τ = 1 (cross-entropy) path and a τ ≠ 1 path (τ = 0.5, GCE q = 0.7) are
// timed separately. Compare with BM_ReferenceExp (one exp per element, the
// floor of any softmax pass) at the same C×N, and with BM_CrossEntropy_* when
// bench_ce.cpp is built into the same binary.
#include <losskit/comp_sum.hpp>

#include "reference_kernels.hpp"

namespace {

void BM_CompSum_Value(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  const losskit::CompSum<float> loss(float(state.range(2)) / 1000.0f);
  for (auto _ : state) benchmark::DoNotOptimize(loss(logits, labels));
  lkbench::set_throughput(state, sizeof(float) * double(c * n), double(c * n));
}

void BM_CompSum_ValueGrad(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  Eigen::MatrixXf grad(c, n);
  const losskit::CompSum<float> loss(float(state.range(2)) / 1000.0f);
  for (auto _ : state) {
    benchmark::DoNotOptimize(loss.value_and_gradient(logits, labels, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}

// Value + both gradients: reads two logit matrices, writes two gradients.
void BM_SmoothAdversarialCompSum_ValueGrad(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf clean = lkbench::random_matrix<float>(c, n);
  const Eigen::MatrixXf adv = clean + lkbench::random_matrix<float>(c, n, 0.1, 7);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  Eigen::MatrixXf grad_clean(c, n), grad_adv(c, n);
  const losskit::SmoothAdversarialCompSum<float> loss(1.0f, 1.0f);
  for (auto _ : state) {
    benchmark::DoNotOptimize(loss.value_and_gradient(clean, adv, labels, grad_clean, grad_adv));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 4.0 * sizeof(float) * double(c * n), double(c * n));
}

BENCHMARK(BM_CompSum_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}, {1000}})->UseRealTime();
BENCHMARK(BM_CompSum_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}, {1000, 500, 1700}})->UseRealTime();
BENCHMARK(BM_SmoothAdversarialCompSum_ValueGrad)->ArgsProduct({{10, 1000}, {256, 4096}})->UseRealTime();

}  // namespace
