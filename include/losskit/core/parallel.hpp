#pragma once
/// Small parallel helpers: a column loop that sums a per-column result, run
/// with OpenMP when the translation unit is compiled with it (-fopenmp) and
/// serially otherwise. The combination order is fixed for a given thread
/// count (per-thread partial sums over contiguous column ranges, added in
/// thread order), so results are reproducible run to run and differ from the
/// serial result only by round-off.
#include <Eigen/Core>
#include <algorithm>
#include <array>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace losskit {
namespace detail {

/// Work (in elements touched) below which a loop stays serial: spawning a
/// team costs a few microseconds, worth it only for larger batches.
constexpr Eigen::Index kParallelMinWork = Eigen::Index(1) << 15;

/// Number of threads a loop over `n` columns of `work_per_column` elements uses.
inline int loop_threads(Eigen::Index n, Eigen::Index work_per_column) {
#ifdef _OPENMP
  if (n < 2 || n * std::max<Eigen::Index>(work_per_column, 1) < kParallelMinWork) return 1;
  return static_cast<int>(std::min<Eigen::Index>(std::min(omp_get_max_threads(), 64), n));
#else
  (void)n;
  (void)work_per_column;
  return 1;
#endif
}

/// Returns Σ_j f(j) for j in [0, n), where f returns an Acc (any type with a
/// zero initialiser Acc{} and operator+=). f must not throw.
template <class Acc, class F>
Acc column_sum(Eigen::Index n, Eigen::Index work_per_column, F&& f) {
  const int threads = loop_threads(n, work_per_column);
  if (threads <= 1) {
    Acc total{};
    for (Eigen::Index j = 0; j < n; ++j) total += f(j);
    return total;
  }
#ifdef _OPENMP
  std::array<Acc, 64> partial{};
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    const Eigen::Index begin = n * t / nt, end = n * (t + 1) / nt;
    Acc local{};
    for (Eigen::Index j = begin; j < end; ++j) local += f(j);
    partial[static_cast<std::size_t>(t)] = local;
  }
  Acc total{};
  for (int t = 0; t < threads; ++t) total += partial[static_cast<std::size_t>(t)];
  return total;
#else
  return Acc{};
#endif
}

/// Runs f(j) for j in [0, n), in parallel when worthwhile. f must not throw.
template <class F>
void column_for(Eigen::Index n, Eigen::Index work_per_column, F&& f) {
  const int threads = loop_threads(n, work_per_column);
  if (threads <= 1) {
    for (Eigen::Index j = 0; j < n; ++j) f(j);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
  for (Eigen::Index j = 0; j < n; ++j) f(j);
#endif
}

}  // namespace detail
}  // namespace losskit
