#pragma once
/// Separable Gaussian filtering in "valid" mode and its exact adjoint, the
/// building blocks of windowed image statistics (SSIM, MS-SSIM).
///
///   window      g_k = exp(-(k - r)² / (2σ²)) / Σ_m exp(-(m - r)² / (2σ²)),
///               k = 0..size-1, r = (size-1)/2 (odd size, so the taps are
///               symmetric: g_k = g_{size-1-k})
///   valid       y_i = Σ_k g_k x_{i+k},       i = 0..n-size   (length n - size + 1)
///   adjoint     x̄_m = Σ_k g_k ȳ_{m-k},       m = 0..n-1      ("full" correlation
///               with the flipped taps, equal to the taps since they are symmetric)
///
/// The 2-D window is the outer product g gᵀ, so a 2-D valid filter is a
/// valid pass along each axis, and its adjoint is the adjoint pass along each
/// axis. The taps are computed in double and rounded once to the working
/// precision, then renormalised there, so their sum is 1 to the working
/// precision's rounding (a float window built from float exp() shifts SSIM by
/// ~1e-6, which 1/C2 amplifies in flat regions).
#include <Eigen/Core>
#include <cmath>

namespace losskit {
namespace detail {

/// The `size`-tap normalised Gaussian window of standard deviation `sigma`.
/// Requires an odd size >= 1 and sigma > 0 (checked by the callers, which
/// report errors with their own names).
template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, 1> gaussian_window(Eigen::Index size, double sigma) {
  Eigen::Matrix<double, Eigen::Dynamic, 1> taps(size);
  const double r = double(size - 1) / 2;
  for (Eigen::Index k = 0; k < size; ++k) taps(k) = std::exp(-(double(k) - r) * (double(k) - r) / (2 * sigma * sigma));
  taps /= taps.sum();
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> out = taps.cast<Scalar>();
  return out / out.sum();
}

/// Valid correlation of a contiguous vector with symmetric taps:
/// y_i = Σ_k g_k x_{i+k}, y of length x.size() - g.size() + 1. Symmetric taps
/// are paired (g_k (x_{i+k} + x_{i+size-1-k})), which halves the multiplies.
template <class G, class X, class Y>
void correlate_valid(const Eigen::MatrixBase<G>& taps, const Eigen::MatrixBase<X>& x,
                     const Eigen::MatrixBase<Y>& y_out) {
  Y& y = const_cast<Y&>(y_out.derived());
  const Eigen::Index size = taps.size(), half = size / 2, n = y.size();
  y = taps(half) * x.segment(half, n);
  for (Eigen::Index k = 0; k < half; ++k) y += taps(k) * (x.segment(k, n) + x.segment(size - 1 - k, n));
}

/// Adjoint of correlate_valid: x̄_m = Σ_k g_k ȳ_{m-k} (terms with m-k outside
/// [0, ȳ.size()) are zero), x̄ of length ȳ.size() + g.size() - 1.
template <class G, class Yb, class Xb>
void correlate_valid_adjoint(const Eigen::MatrixBase<G>& taps, const Eigen::MatrixBase<Yb>& ybar,
                             const Eigen::MatrixBase<Xb>& xbar_out) {
  Xb& xbar = const_cast<Xb&>(xbar_out.derived());
  const Eigen::Index size = taps.size(), n = ybar.size();
  xbar.setZero();
  for (Eigen::Index k = 0; k < size; ++k) xbar.segment(k, n) += taps(k) * ybar;
}

}  // namespace detail
}  // namespace losskit
