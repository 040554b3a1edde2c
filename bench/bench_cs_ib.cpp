// CS-IB: value and value+gradient of CSIB<float> at N in {128, 512, 2048}
// with d_x = 8, d_y = 1, d_t = 128 (median-heuristic widths, the defaults).
// Items = N² sample pairs; bytes = the five N×N float Gram matrices written
// once. The per-call time should grow as N² (the BigO line fits it).
// Compare items/s with BM_ReferenceExp (one exp per element: CS-IB spends
// ~10 exps per pair with the gradient) and with BM_CSIB_GramReference below,
// the one product no implementation avoids: the d_t = 128 Gram matrix TᵀT.
// CSDivergence and CSQuadraticMI, the two terms, are timed on their own too.
#include <losskit/cs_ib.hpp>

#include "reference_kernels.hpp"

namespace {

constexpr Eigen::Index kDx = 8, kDy = 1, kDt = 128;

struct Inputs {
  Eigen::MatrixXf x, y, yhat, t;
  explicit Inputs(Eigen::Index n)
      : x(lkbench::random_matrix<float>(kDx, n, 1.0, 1)),
        y(lkbench::random_matrix<float>(kDy, n, 1.0, 2)),
        yhat(y + lkbench::random_matrix<float>(kDy, n, 0.3, 3)),
        t(lkbench::random_matrix<float>(kDt, n, 1.0, 4)) {}
};

void finish(benchmark::State& state, Eigen::Index n) {
  const double pairs = double(n) * double(n);
  lkbench::set_throughput(state, 5.0 * sizeof(float) * pairs, pairs);
  state.SetComplexityN(n);
}

void BM_CSIB_Value(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Inputs in(n);
  losskit::CSIB<float> ib;
  for (auto _ : state) benchmark::DoNotOptimize(ib(in.yhat, in.y, in.t, in.x));
  finish(state, n);
}
BENCHMARK(BM_CSIB_Value)->Arg(128)->Arg(512)->Arg(2048)->Complexity(benchmark::oNSquared)->UseRealTime();

void BM_CSIB_ValueGrad(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Inputs in(n);
  losskit::CSIB<float> ib;
  Eigen::MatrixXf grad_yhat(kDy, n), grad_t(kDt, n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ib.value_and_gradient(in.yhat, in.y, in.t, in.x, grad_yhat, grad_t));
    benchmark::ClobberMemory();
  }
  finish(state, n);
}
BENCHMARK(BM_CSIB_ValueGrad)->Arg(128)->Arg(512)->Arg(2048)->Complexity(benchmark::oNSquared)->UseRealTime();

// Fixed widths: the same call without the three median-heuristic selections.
void BM_CSIB_ValueGrad_FixedWidths(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Inputs in(n);
  losskit::CSIB<float> ib;
  ib.sigma_x = 4.0f;
  ib.sigma_y = 1.0f;
  ib.sigma_t = 16.0f;
  Eigen::MatrixXf grad_yhat(kDy, n), grad_t(kDt, n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ib.value_and_gradient(in.yhat, in.y, in.t, in.x, grad_yhat, grad_t));
    benchmark::ClobberMemory();
  }
  finish(state, n);
}
BENCHMARK(BM_CSIB_ValueGrad_FixedWidths)->Arg(128)->Arg(512)->Arg(2048)->Complexity(benchmark::oNSquared)->UseRealTime();

// width_rule = OfficialCode: the official code's sigma=None widths for the three
// variables, read off the same N×N distances by the same selection (against
// BM_CSIB_ValueGrad: the cost of the rule against the median heuristic).
void BM_CSIB_ValueGrad_OfficialWidths(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Inputs in(n);
  losskit::CSIB<float> ib;
  ib.width_rule = losskit::CSWidth::OfficialCode;
  Eigen::MatrixXf grad_yhat(kDy, n), grad_t(kDt, n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ib.value_and_gradient(in.yhat, in.y, in.t, in.x, grad_yhat, grad_t));
    benchmark::ClobberMemory();
  }
  finish(state, n);
}
BENCHMARK(BM_CSIB_ValueGrad_OfficialWidths)->Arg(128)->Arg(512)->Arg(2048)->Complexity(benchmark::oNSquared)->UseRealTime();

// The prediction term alone: conditional CS divergence and ∂/∂ŷ.
void BM_CSDivergence_ValueGrad(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Inputs in(n);
  losskit::CSDivergence<float> div;
  Eigen::MatrixXf grad_yhat(kDy, n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(div.value_and_gradient(in.yhat, in.y, in.x, grad_yhat));
    benchmark::ClobberMemory();
  }
  finish(state, n);
}
BENCHMARK(BM_CSDivergence_ValueGrad)->Arg(128)->Arg(512)->Arg(2048)->Complexity(benchmark::oNSquared)->UseRealTime();

// The compression term alone: CS quadratic mutual information and ∂/∂t.
void BM_CSQuadraticMI_ValueGrad(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Inputs in(n);
  losskit::CSQuadraticMI<float> mi;
  Eigen::MatrixXf grad_t(kDt, n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(mi.value_and_gradient(in.t, in.x, grad_t));
    benchmark::ClobberMemory();
  }
  finish(state, n);
}
BENCHMARK(BM_CSQuadraticMI_ValueGrad)->Arg(128)->Arg(512)->Arg(2048)->Complexity(benchmark::oNSquared)->UseRealTime();

// Lower bound: the N×N Gram matrix of the d_t = 128 representation (one GEMM).
void BM_CSIB_GramReference(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Inputs in(n);
  Eigen::MatrixXf gram(n, n);
  for (auto _ : state) {
    gram.noalias() = in.t.transpose() * in.t;
    benchmark::DoNotOptimize(gram.data());
    benchmark::ClobberMemory();
  }
  finish(state, n);
}
BENCHMARK(BM_CSIB_GramReference)->Arg(128)->Arg(512)->Arg(2048)->Complexity(benchmark::oNSquared)->UseRealTime();

}  // namespace
