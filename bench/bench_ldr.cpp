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

// The official code's two scalings: Softplus (softplus(s)/mean softplus: an
// exp and a log1p per element, and the logistic for the gradient) and
// MeanAbs (s/mean|s|: one extra pass for the mean, no transcendental).
void BM_LDRKL_ValueGrad_Softplus(benchmark::State& state) {
  losskit::LDRKL<float> ldr;
  ldr.logit_scaling = losskit::LogitScaling::Softplus;
  value_grad(state, ldr);
}
BENCHMARK(BM_LDRKL_ValueGrad_Softplus)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

void BM_ALDRKL_ValueGrad_Softplus(benchmark::State& state) {
  losskit::ALDRKL<float> aldr;
  aldr.logit_scaling = losskit::LogitScaling::Softplus;
  value_grad(state, aldr);
}
BENCHMARK(BM_ALDRKL_ValueGrad_Softplus)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

void BM_LDRKL_ValueGrad_MeanAbs(benchmark::State& state) {
  losskit::LDRKL<float> ldr;
  ldr.logit_scaling = losskit::LogitScaling::MeanAbs;
  value_grad(state, ldr);
}
BENCHMARK(BM_LDRKL_ValueGrad_MeanAbs)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

void BM_ALDRKL_ValueGrad_MeanAbs(benchmark::State& state) {
  losskit::ALDRKL<float> aldr;
  aldr.logit_scaling = losskit::LogitScaling::MeanAbs;
  value_grad(state, aldr);
}
BENCHMARK(BM_ALDRKL_ValueGrad_MeanAbs)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

// The stateful call as the official code runs it (MeanAbs, one fixed-point
// step per sample from its stored λ, then the loss at the new λ): a state of
// 16·N examples, each batch a different slice of it.
void BM_ALDRKL_Stateful_ValueGrad_MeanAbs(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  losskit::ALDRKL<float> aldr;
  aldr.logit_scaling = losskit::LogitScaling::MeanAbs;
  losskit::ALDRKLState<float> lambdas(16 * n, aldr.lambda0);
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(c, n);
  Eigen::VectorXi ids = Eigen::VectorXi::LinSpaced(n, 0, int(n) - 1);
  aldr.value_and_gradient(logits, labels, ids, lambdas, grad);  // sizes the state's batch buffer
  for (auto _ : state) {
    ids.array() = (ids.array() + int(n)) - (ids.array() + int(n) >= int(16 * n)).cast<int>() * int(16 * n);
    benchmark::DoNotOptimize(aldr.value_and_gradient(logits, labels, ids, lambdas, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_ALDRKL_Stateful_ValueGrad_MeanAbs)->ArgsProduct({{10, 1000, 32000}, {256}})->UseRealTime();

}  // namespace
