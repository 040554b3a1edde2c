#pragma once
// Shared set-up for the libtorch peer benchmarks: the same random inputs as
// losskit's benchmarks, viewed as torch tensors (losskit's D×N column-major
// matrix is torch's N×D row-major tensor, same bytes), and torch's intra-op
// thread count pinned to OpenMP's (OMP_NUM_THREADS) so both sides of a
// ratio run on the same number of cores.
#include <torch/torch.h>

#include <Eigen/Core>

#include "../reference_kernels.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lkbench {

/// OMP_NUM_THREADS as seen at start-up (before torch could change it).
inline int omp_threads() {
#ifdef _OPENMP
  static const int n = omp_get_max_threads();
#else
  static const int n = 1;
#endif
  return n;
}

/// Call at the start of every torch benchmark. at::set_num_threads also
/// calls omp_set_num_threads with the same value, so losskit is unaffected.
inline void match_torch_threads(benchmark::State& state) {
  if (at::get_num_threads() != omp_threads()) at::set_num_threads(omp_threads());
  state.counters["omp_threads"] = at::get_num_threads();
}

/// A D×N Eigen matrix as an N×D tensor sharing its memory (the matrix must outlive it).
template <class Scalar>
torch::Tensor as_rows(Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& m) {
  return torch::from_blob(m.data(), {m.cols(), m.rows()}, c10::CppTypeToScalarType<Scalar>::value);
}

inline torch::Tensor as_labels(const Eigen::VectorXi& y) {
  return torch::from_blob(const_cast<int*>(y.data()), {y.size()}, torch::kInt).to(torch::kLong);
}

/// d(loss)/d(input) by autograd, without accumulating into input.grad()
/// (what a training step's backward costs, minus the optimizer).
inline torch::Tensor autograd_grad(const torch::Tensor& loss, const torch::Tensor& input) {
  return torch::autograd::grad({loss}, {input})[0];
}

}  // namespace lkbench
