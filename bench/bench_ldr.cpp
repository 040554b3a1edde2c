// LDR-KL and ALDR-KL, float, at the CrossEntropy / BM_ReferenceExp shapes
// C×N. Read the ratio of items/s to BM_CE_ValueGrad (bench_ce.cpp, same
// binary when built together) and to BM_ReferenceExp at the same shape.
// LDR-KL needs one exp per element like CE; ALDR-KL one exp pass per solver
// evaluation (typically 3–5 per sample, see ldr.hpp).
#include <losskit/ldr.hpp>

#include "reference_kernels.hpp"

namespace {

template <class Loss>
void value(benchmark::State& state, Loss loss) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  for (auto _ : state) benchmark::DoNotOptimize(loss(logits, labels));
  lkbench::set_throughput(state, sizeof(float) * double(c * n), double(c * n));
}

template <class Loss>
void value_grad(benchmark::State& state, Loss loss) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(c, n);  // touched: no page faults inside the timing
  for (auto _ : state) {
    benchmark::DoNotOptimize(loss.value_and_gradient(logits, labels, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}

// Defaults: λ = 1, margin 0.1.
void BM_LDRKL_Value(benchmark::State& state) { value(state, losskit::LDRKL<float>{}); }
BENCHMARK(BM_LDRKL_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

void BM_LDRKL_ValueGrad(benchmark::State& state) { value_grad(state, losskit::LDRKL<float>{}); }
BENCHMARK(BM_LDRKL_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

// Defaults: λ0 = 10, α = 2, margin 0.1 (the paper code's defaults).
void BM_ALDRKL_Value(benchmark::State& state) { value(state, losskit::ALDRKL<float>{}); }
BENCHMARK(BM_ALDRKL_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

void BM_ALDRKL_ValueGrad(benchmark::State& state) { value_grad(state, losskit::ALDRKL<float>{}); }
BENCHMARK(BM_ALDRKL_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

// λ0 = 1 with these logits leaves the concavity certificate: the branch-and-bound path.
void BM_ALDRKL_ValueGrad_Lambda0_1(benchmark::State& state) {
  losskit::ALDRKL<float> aldr;
  aldr.lambda0 = 1.0f;
  value_grad(state, aldr);
}
BENCHMARK(BM_ALDRKL_ValueGrad_Lambda0_1)->ArgsProduct({{10, 1000}, {256}})->UseRealTime();

// The official code's softplus/mean normalisation: softplus costs an exp and a log1p per element.
void BM_LDRKL_ValueGrad_Normalized(benchmark::State& state) {
  losskit::LDRKL<float> ldr;
  ldr.normalize_logits = true;
  value_grad(state, ldr);
}
BENCHMARK(BM_LDRKL_ValueGrad_Normalized)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

void BM_ALDRKL_ValueGrad_Normalized(benchmark::State& state) {
  losskit::ALDRKL<float> aldr;
  aldr.normalize_logits = true;
  value_grad(state, aldr);
}
BENCHMARK(BM_ALDRKL_ValueGrad_Normalized)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

}  // namespace
