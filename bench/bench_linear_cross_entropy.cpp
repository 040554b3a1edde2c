// LinearCrossEntropy (float) against the materialised path in the same
// binary, at language-model head sizes: C ∈ {32768, 131072} classes,
// d ∈ {512, 1024}, N = 2048 tokens. For each shape, in a row (so all three
// see the same machine load):
//   BM_LCE_ValueGrad      LinearCrossEntropy::value_and_gradient
//   BM_LCE_Materialised   logits = W·H (Eigen GEMM), CrossEntropy value and
//                         gradient G, grad_H = Wᵀ·G, grad_W = G·Hᵀ (GEMMs)
//   BM_LCE_GemmReference  logits = W·H alone: Eigen's own GEMM rate there
//   BM_LCE_Value          LinearCrossEntropy value only
// Counters: GFLOP/s over the GEMM flops of the task (6·C·d·N for value and
// gradient, 2·C·d·N for the value and the reference; LinearCrossEntropy
// really does 8·C·d·N, recomputing each logits block), and heap_MiB, the
// heap a call needs, from the workspace sizes (analytic: block·N + a few
// N-vectors for LinearCrossEntropy, the C×N logits and their gradient for
// the materialised path; Eigen's GEMM packing buffers, a few MiB at most,
// left out of both; tests/test_linear_cross_entropy.cpp measures the real
// peak with a counting allocator). Each call is 0.1–2 TFLOP: one iteration.
//   OMP_NUM_THREADS=1 build/bench/bench/losskit_bench --benchmark_filter=LCE
#include <losskit/cross_entropy.hpp>
#include <losskit/linear_cross_entropy.hpp>

#include <string>

#include "reference_kernels.hpp"

namespace {

constexpr Eigen::Index kTokens = 2048;
constexpr double kMiB = 1024.0 * 1024.0;

struct Head {
  Eigen::MatrixXf h, w;
  Eigen::VectorXf b;
  Eigen::VectorXi y;
  Head(Eigen::Index c, Eigen::Index d)
      : h(lkbench::random_matrix<float>(d, kTokens, 1.0)),
        w(lkbench::random_matrix<float>(c, d, 1.0 / std::sqrt(double(d)), 3)),
        b(lkbench::random_matrix<float>(c, 1, 0.1, 4)),
        y(lkbench::random_labels(kTokens, int(c))) {}
};

void flops(benchmark::State& state, double gemm_flops) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(gemm_flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

void value_grad(benchmark::State& state, Eigen::Index c, Eigen::Index d) {
  const Head head(c, d);
  losskit::LinearCrossEntropy<float> lce;
  Eigen::MatrixXf gh = Eigen::MatrixXf::Zero(d, kTokens), gw = Eigen::MatrixXf::Zero(c, d);
  Eigen::VectorXf gb = Eigen::VectorXf::Zero(c);
  for (auto _ : state) {
    benchmark::DoNotOptimize(lce.value_and_gradient(head.h, head.w, head.b, head.y, gh, gw, gb));
    benchmark::ClobberMemory();
  }
  flops(state, 6.0 * double(c) * double(d) * double(kTokens));
  const double per_column = 2 * sizeof(float) + 2 * sizeof(double) + 4 * sizeof(double) + 1;
  state.counters["heap_MiB"] =
      (double(std::min(lce.block_size, c)) * kTokens * sizeof(float) + per_column * kTokens) / kMiB;
}

void value(benchmark::State& state, Eigen::Index c, Eigen::Index d) {
  const Head head(c, d);
  losskit::LinearCrossEntropy<float> lce;
  for (auto _ : state) benchmark::DoNotOptimize(lce(head.h, head.w, head.b, head.y));
  flops(state, 2.0 * double(c) * double(d) * double(kTokens));
}

void materialised(benchmark::State& state, Eigen::Index c, Eigen::Index d) {
  const Head head(c, d);
  losskit::CrossEntropy<float> ce;
  // Touched before timing: no page faults in the timed loop.
  Eigen::MatrixXf logits = Eigen::MatrixXf::Zero(c, kTokens), g = Eigen::MatrixXf::Zero(c, kTokens);
  Eigen::MatrixXf gh = Eigen::MatrixXf::Zero(d, kTokens), gw = Eigen::MatrixXf::Zero(c, d);
  Eigen::VectorXf gb = Eigen::VectorXf::Zero(c);
  for (auto _ : state) {
    logits.noalias() = head.w * head.h;
    logits.colwise() += head.b;
    benchmark::DoNotOptimize(ce.value_and_gradient(logits, head.y, g));
    gh.noalias() = head.w.transpose() * g;
    gw.noalias() = g * head.h.transpose();
    gb = g.rowwise().sum();
    benchmark::ClobberMemory();
  }
  flops(state, 6.0 * double(c) * double(d) * double(kTokens));
  state.counters["heap_MiB"] = 2.0 * double(c) * kTokens * sizeof(float) / kMiB;
}

void gemm_reference(benchmark::State& state, Eigen::Index c, Eigen::Index d) {
  const Head head(c, d);
  Eigen::MatrixXf logits = Eigen::MatrixXf::Zero(c, kTokens);
  for (auto _ : state) {
    logits.noalias() = head.w * head.h;
    benchmark::ClobberMemory();
  }
  flops(state, 2.0 * double(c) * double(d) * double(kTokens));
}

[[maybe_unused]] const bool registered = [] {
  for (const Eigen::Index c : {Eigen::Index(32768), Eigen::Index(131072)})
    for (const Eigen::Index d : {Eigen::Index(512), Eigen::Index(1024)}) {
      const std::string shape = "/" + std::to_string(c) + "/" + std::to_string(d) + "/" + std::to_string(kTokens);
      using Fn = void (*)(benchmark::State&, Eigen::Index, Eigen::Index);
      for (const auto& [name, fn] : {std::pair<const char*, Fn>{"BM_LCE_ValueGrad", value_grad},
                                     std::pair<const char*, Fn>{"BM_LCE_Materialised", materialised},
                                     std::pair<const char*, Fn>{"BM_LCE_GemmReference", gemm_reference},
                                     std::pair<const char*, Fn>{"BM_LCE_Value", value}})
        benchmark::RegisterBenchmark((name + shape).c_str(), [fn = fn, c, d](benchmark::State& s) { fn(s, c, d); })
            ->Iterations(1)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
  return true;
}();

}  // namespace
