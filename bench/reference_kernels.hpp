#pragma once
// Hardware reference kernels that losskit's benchmarks are measured against
// in the same binary and run: a streaming kernel (memory bandwidth) and a
// vectorised exp pass (exp throughput). Speed is reported as a ratio to
// these, because absolute times on a shared machine are noisy.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <random>

namespace lkbench {

/// Fills a matrix with N(0, stddev²) values from a fixed seed.
template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> random_matrix(Eigen::Index rows, Eigen::Index cols,
                                                                    double stddev = 1.0, unsigned seed = 1) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> d(0.0, stddev);
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(d(gen));
  return m;
}

inline Eigen::VectorXi random_labels(Eigen::Index n, int classes, unsigned seed = 2) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, classes - 1);
  Eigen::VectorXi y(n);
  for (Eigen::Index i = 0; i < n; ++i) y(i) = d(gen);
  return y;
}

/// Sets bytes/s and items/s counters for `bytes` and `items` per iteration.
inline void set_throughput(benchmark::State& state, double bytes, double items) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes * double(state.iterations())));
  state.SetItemsProcessed(static_cast<int64_t>(items * double(state.iterations())));
}

}  // namespace lkbench
