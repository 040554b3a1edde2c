// Reference kernels: the hardware limits that loss benchmarks are compared to.
#include <losskit/core/parallel.hpp>

#include "reference_kernels.hpp"

namespace {

// Memory-bandwidth reference: read two float arrays, write one (c = a − b),
// the same traffic as MSE's value_and_gradient. Items = elements. Split in
// 1024-element chunks over the same OpenMP threads as the losses use (set
// OMP_NUM_THREADS to compare at a given thread count).
void BM_ReferenceStream(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Eigen::ArrayXf a = lkbench::random_matrix<float>(n, 1).array(), b = lkbench::random_matrix<float>(n, 1).array();
  Eigen::ArrayXf c = Eigen::ArrayXf::Zero(n);
  for (auto _ : state) {
    losskit::detail::column_for((n + 1023) / 1024, 1024, [&](Eigen::Index k) {
      const Eigen::Index start = k * 1024, len = std::min<Eigen::Index>(1024, n - start);
      c.segment(start, len) = a.segment(start, len) - b.segment(start, len);
    });
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(n), double(n));
}
BENCHMARK(BM_ReferenceStream)->RangeMultiplier(16)->Range(1 << 12, 1 << 24)->UseRealTime();

// Exp-throughput reference: one vectorised exp per element over a C×N float
// array, written to a second array (what a softmax pass cannot do without):
// one loop over the whole contiguous array, split in 4096-element chunks
// over the OpenMP threads, with no per-column work (issue 19: the losses'
// per-column costs are measured against this).
void BM_ReferenceExp(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1), size = c * n, chunk = 4096;
  const Eigen::ArrayXXf x = lkbench::random_matrix<float>(c, n).array();
  Eigen::ArrayXXf y = Eigen::ArrayXXf::Zero(c, n);  // touched once, so no page faults are timed
  const Eigen::Map<const Eigen::ArrayXf> xs(x.data(), size);
  Eigen::Map<Eigen::ArrayXf> ys(y.data(), size);
  for (auto _ : state) {
    losskit::detail::column_for((size + chunk - 1) / chunk, chunk, [&](Eigen::Index k) {
      const Eigen::Index start = k * chunk, len = std::min(chunk, size - start);
      ys.segment(start, len) = xs.segment(start, len).exp();
    });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(size), double(size));
}

// The same exp column by column (the reference before issue 19; kept to show
// the per-column overhead at small C: it hid the losses' fixed cost there).
void BM_ReferenceExpColumns(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::ArrayXXf x = lkbench::random_matrix<float>(c, n).array();
  Eigen::ArrayXXf y = Eigen::ArrayXXf::Zero(c, n);
  for (auto _ : state) {
    losskit::detail::column_for(n, c, [&](Eigen::Index j) { y.col(j) = x.col(j).exp(); });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}

// (32000×65536 would be 8 GiB per array: left out.)
void exp_shapes(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{10, 100, 1000}, {256, 4096, 65536}})->ArgsProduct({{32000}, {256, 4096}})->UseRealTime();
}
BENCHMARK(BM_ReferenceExp)->Apply(exp_shapes);
BENCHMARK(BM_ReferenceExpColumns)->Apply(exp_shapes);

}  // namespace
