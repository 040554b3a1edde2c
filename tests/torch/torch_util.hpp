#pragma once
// Moving data between losskit (samples are columns of a column-major D×N
// matrix) and libtorch (samples are rows of a row-major N×D tensor). The two
// layouts are the same bytes, so no transpose is ever materialised: a D×N
// Eigen matrix is viewed as an N×D tensor and back.
#include <torch/torch.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>

#include "test_util.hpp"

namespace lktorch {

/// D×N Eigen matrix → N×D double tensor (a copy; row i = sample i).
inline torch::Tensor rows(const Eigen::MatrixXd& m, bool requires_grad = false) {
  torch::Tensor t =
      torch::from_blob(const_cast<double*>(m.data()), {m.cols(), m.rows()}, torch::kDouble).clone();
  return requires_grad ? t.requires_grad_(true) : t;
}

/// N×D tensor → D×N Eigen matrix.
inline Eigen::MatrixXd columns(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kDouble).contiguous();
  REQUIRE(c.dim() == 2);
  Eigen::MatrixXd m(c.size(1), c.size(0));
  std::memcpy(m.data(), c.data_ptr<double>(), sizeof(double) * std::size_t(m.size()));
  return m;
}

/// A 1-D tensor → Eigen vector.
inline Eigen::VectorXd vector(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kDouble).contiguous().reshape({-1});
  Eigen::VectorXd v(c.size(0));
  std::memcpy(v.data(), c.data_ptr<double>(), sizeof(double) * std::size_t(v.size()));
  return v;
}

inline torch::Tensor vector(const Eigen::VectorXd& v) {
  return torch::from_blob(const_cast<double*>(v.data()), {v.size()}, torch::kDouble).clone();
}

inline torch::Tensor labels(const Eigen::VectorXi& y) {
  return torch::from_blob(const_cast<int*>(y.data()), {y.size()}, torch::kInt).to(torch::kLong);
}

inline double item(const torch::Tensor& t) { return t.item<double>(); }

/// Entrywise relative error of a gradient, where entries below 1e-3 of the
/// largest |reference| entry count relative to that floor: such entries are
/// sums of much larger terms that cancel (p_y − 1 with p_y ≈ 1; MS-SSIM's
/// chain over five scales), so their round-off is relative to the large terms.
template <class A, class B>
double grad_err(const Eigen::MatrixBase<A>& got, const Eigen::MatrixBase<B>& ref) {
  return lktest::max_rel_err(got, ref, 1e-3 * std::max(ref.cwiseAbs().maxCoeff(), 1e-300));
}

/// The ~1e-10 relative agreement the cross-checks require in double.
constexpr double kTol = 1e-10;

}  // namespace lktorch
