#pragma once
/// check_gradient(): compare an analytic gradient with finite differences.
///
/// Point it at any scalar function of a matrix, yours or losskit's:
///
///   Eigen::MatrixXd g;
///   ce.value_and_gradient(logits, labels, g);
///   auto r = losskit::check_gradient(
///       [&](const Eigen::MatrixXd& z) { return ce(z, labels); }, logits, g);
///   if (!r) std::cerr << r.report() << "\n";
///
/// Each derivative is estimated by central differences refined with Ridders'
/// polynomial extrapolation (Ridders 1982; Numerical Recipes §5.7): the step
/// is shrunk geometrically and the tableau entry with the smallest error
/// estimate is kept, which makes ~1e-9 relative agreement routine in double
/// for smooth functions. Steps are relative to max(|x_i|, 1) by default.
///
/// Tolerance: an entry passes when |a - n| <= rtol · max(|a|, |n|, atol/rtol)
/// (a: analytic, n: numeric), i.e. relative error with an absolute floor
/// `atol`. The defaults depend on the Scalar of x (gradient_check_defaults):
/// double rtol 1e-6, atol 1e-10, first step 1e-3; float rtol 3e-3,
/// atol 5e-5, first step 5e-2.
///
/// For large inputs check a random subset of coordinates (`max_coordinates`)
/// and/or directional derivatives along random unit directions v
/// (`directions`): (f(x + hv) - f(x - hv))/2h against gᵀv, which covers every
/// coordinate at the cost of one derivative per direction.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace losskit {

/// Defaults of GradientCheckOptions' rtol, atol and step, by the Scalar of x.
struct GradientCheckDefaults {
  double rtol, atol, step;
};

/// f is evaluated in Scalar, so the round-off of f (~ε·|f| per evaluation),
/// divided by the step, is what limits the numeric derivative: ~ε·|f|/h,
/// against a truncation error ~h²·f''' for a plain central difference, which
/// balance at h ≈ ε^(1/3). Ridders' tableau removes the h², h⁴, … terms, so it
/// starts well above that and shrinks the step by 1.4 per level.
/// - double (ε ≈ 2.2e-16): first step 1e-3; ~1e-9 relative agreement is
///   routine on smooth losses, so rtol 1e-6 leaves three digits of margin;
///   atol 1e-10 only matters for entries below 1e-4.
/// - float (ε ≈ 1.2e-7): ε^(1/3) ≈ 5e-3 is where the 8-level tableau ends if
///   it starts at 5e-2. On correct float gradients of nine losses (MSE, CE,
///   BCE, CompSum, LDR-KL, ALDR-KL, Z-loss, SSIM, CS divergence; 20 random
///   inputs each, |f| from 0.05 to 44) the numeric derivative is off by
///   3e-6–1.2e-5·|f| absolute from this step, 2.5 times more from 2e-2 (where
///   CE over 100 classes then fails 9 times in 20): round-off, not
///   truncation, dominates. atol 5e-5 covers it for losses up to ~10 (for Sum
///   reductions or larger values set atol to a few 1e-5·|f|). rtol 3e-3 is a
///   third of a 1% error, which is then caught in every entry above the floor
///   atol/rtol ≈ 0.017 (JAX checks float32 to 2e-3; PyTorch's gradcheck
///   demands double). Smaller entries cannot be resolved to 1% in float:
///   check those in double.
template <class Scalar>
constexpr GradientCheckDefaults gradient_check_defaults() {
  if constexpr (std::numeric_limits<Scalar>::epsilon() >= std::numeric_limits<float>::epsilon())
    return {3e-3, 5e-5, 5e-2};
  else
    return {1e-6, 1e-10, 1e-3};
}

/// rtol, atol and step left unset take gradient_check_defaults<Scalar>() for
/// the Scalar of the checked input, so a float check is not held to double's
/// tolerance (and setting one option does not reset the others).
struct GradientCheckOptions {
  std::optional<double> rtol;   ///< relative tolerance; default 1e-6 (double), 3e-3 (float)
  std::optional<double> atol;   ///< absolute floor of the relative error's denominator; 1e-10 / 5e-5
  std::optional<double> step;   ///< first (largest) step of the extrapolation; 1e-3 / 5e-2
  bool relative_step = true;    ///< step scaled by max(|x_i|, 1) (per coordinate)
  int extrapolation_levels = 8; ///< Ridders tableau size (1 = plain central difference)
  long max_coordinates = -1;    ///< check at most this many coordinates (random subset); -1 = all, 0 = none
  int directions = 0;           ///< number of random directional checks
  unsigned long long seed = 42; ///< for the random subset and directions
};

struct GradientCheckResult {
  bool passed = true;
  double max_abs_error = 0;     ///< max |a - n| over every checked entry
  double max_rel_error = 0;     ///< max |a - n| / max(|a|, |n|, atol/rtol)
  long worst_row = -1, worst_col = -1;  ///< coordinate of the worst entry (-1 if a direction)
  long worst_direction = -1;            ///< index of the worst direction, if it was one
  double analytic_at_worst = 0, numeric_at_worst = 0;
  long checked = 0;             ///< coordinates + directions checked
  long evaluations = 0;         ///< function evaluations spent
  double rtol = 0, atol = 0, step = 0;  ///< the tolerances and first step used

  explicit operator bool() const { return passed; }

  /// Adds one comparison of an analytic value a with a numeric one n.
  void record(double a, double n, long row, long col, long direction) {
    const double abs_err = std::abs(a - n);
    const double rel_err = abs_err / std::max({std::abs(a), std::abs(n), atol / rtol});
    max_abs_error = std::max(max_abs_error, abs_err);
    ++checked;
    const double err = std::isnan(rel_err) ? HUGE_VAL : rel_err;
    if (checked == 1 || err > max_rel_error) {
      max_rel_error = err;
      worst_row = row;
      worst_col = col;
      worst_direction = direction;
      analytic_at_worst = a;
      numeric_at_worst = n;
    }
  }

  std::string report() const {
    std::ostringstream os;
    os.precision(10);
    os << (passed ? "gradient check passed" : "gradient check FAILED") << ": " << checked
       << " entries, max rel error " << max_rel_error << " (rtol " << rtol << ", atol " << atol << ", step " << step
       << "), max abs error " << max_abs_error;
    if (worst_row >= 0)
      os << "; worst at (" << worst_row << ", " << worst_col << ")";
    else if (worst_direction >= 0)
      os << "; worst along direction " << worst_direction;
    os << ": analytic " << analytic_at_worst << " vs numeric " << numeric_at_worst;
    return os.str();
  }
};

namespace detail {

/// Ridders' extrapolation of central(h), a central difference with step h,
/// from the first step h down.
template <class Central>
double ridders_derivative(Central&& central, double h, int levels) {
  constexpr double shrink = 1.4, shrink2 = shrink * shrink, safe = 2.0;
  levels = std::max(levels, 1);
  std::vector<double> prev(static_cast<std::size_t>(levels)), cur(static_cast<std::size_t>(levels));
  prev[0] = central(h);
  double best = prev[0], err = HUGE_VAL;
  for (int i = 1; i < levels; ++i) {
    h /= shrink;
    cur[0] = central(h);
    double fac = shrink2;
    for (int j = 1; j <= i; ++j) {
      cur[static_cast<std::size_t>(j)] =
          (cur[static_cast<std::size_t>(j - 1)] * fac - prev[static_cast<std::size_t>(j - 1)]) / (fac - 1);
      fac *= shrink2;
      const double e = std::max(std::abs(cur[static_cast<std::size_t>(j)] - cur[static_cast<std::size_t>(j - 1)]),
                                std::abs(cur[static_cast<std::size_t>(j)] - prev[static_cast<std::size_t>(j - 1)]));
      if (e <= err) {
        err = e;
        best = cur[static_cast<std::size_t>(j)];
      }
    }
    if (std::abs(cur[static_cast<std::size_t>(i)] - prev[static_cast<std::size_t>(i - 1)]) >= safe * err) break;
    std::swap(prev, cur);
  }
  return best;
}

/// The coordinates to check: all of them (max < 0 or >= size), none
/// (max = 0), or max of them drawn at random, in increasing order.
inline std::vector<long> checked_coordinates(long size, long max, std::mt19937_64& rng) {
  std::vector<long> all(static_cast<std::size_t>(size));
  for (long i = 0; i < size; ++i) all[static_cast<std::size_t>(i)] = i;
  if (max < 0 || max >= size) return all;
  if (max == 0) return {};
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(static_cast<std::size_t>(max));
  std::sort(all.begin(), all.end());
  return all;
}

/// The directional part of check_gradient: opt.directions random unit
/// directions v, each comparing Σ g∘v with a derivative of f along v.
template <class F, class Mat>
void check_directions(F& f, Mat& point, const Mat& x0, const Mat& g, const GradientCheckOptions& opt, double step,
                      GradientCheckResult& res, std::mt19937_64& rng) {
  using Scalar = typename Mat::Scalar;
  const long size = static_cast<long>(point.size());
  std::normal_distribution<double> normal;
  for (int d = 0; d < opt.directions; ++d) {
    Mat v(point.rows(), point.cols());
    for (long i = 0; i < size; ++i) v.data()[i] = static_cast<Scalar>(normal(rng));
    v /= v.norm();
    const double scale = opt.relative_step ? std::max(1.0, double(x0.cwiseAbs().maxCoeff())) : 1.0;
    auto at = [&](double s) {
      point = x0 + static_cast<Scalar>(s) * v;
      const double val = static_cast<double>(f(static_cast<const Mat&>(point)));
      point = x0;
      return val;
    };
    auto central = [&](double s) {
      res.evaluations += 2;
      return (at(s) - at(-s)) / (2 * s);
    };
    const double n = detail::ridders_derivative(central, step * scale, opt.extrapolation_levels);
    res.record(double((g.array() * v.array()).sum()), n, -1, -1, d);
  }
}

}  // namespace detail

/// Checks `analytic` (same shape as x) against finite differences of f at x.
/// f takes `const Eigen::Matrix<Scalar, Dynamic, Dynamic>&` and returns a
/// scalar. Throws losskit::Error if the shapes differ or options are invalid.
template <class F, class X, class G>
GradientCheckResult check_gradient(F&& f, const Eigen::DenseBase<X>& x, const Eigen::DenseBase<G>& analytic,
                                   const GradientCheckOptions& opt = {}) {
  using Scalar = typename X::Scalar;
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  if (x.rows() != analytic.rows() || x.cols() != analytic.cols())
    detail::fail("check_gradient", "analytic", "shape ", analytic.rows(), "x", analytic.cols(),
                 " does not match x ", x.rows(), "x", x.cols());
  constexpr GradientCheckDefaults defaults = gradient_check_defaults<Scalar>();
  const double rtol = opt.rtol.value_or(defaults.rtol), atol = opt.atol.value_or(defaults.atol),
               step = opt.step.value_or(defaults.step);
  if (!(rtol > 0) || !(atol >= 0) || !(step > 0))
    detail::fail("check_gradient", "options", "need rtol > 0, atol >= 0, step > 0; got rtol ", rtol, ", atol ", atol,
                 ", step ", step);

  Mat point = x.derived().template cast<Scalar>();
  const Mat g = analytic.derived().template cast<Scalar>();
  const Mat x0 = point;
  GradientCheckResult res;
  res.rtol = rtol;
  res.atol = atol;
  res.step = step;
  std::mt19937_64 rng(opt.seed);
  const long size = static_cast<long>(point.size());
  const std::vector<long> coords = detail::checked_coordinates(size, opt.max_coordinates, rng);

  for (long idx : coords) {
    const Scalar xi = x0.data()[idx];
    const double h = step * (opt.relative_step ? std::max(1.0, std::abs(double(xi))) : 1.0);
    auto at = [&](Scalar xv) {
      point.data()[idx] = xv;
      const double v = static_cast<double>(f(static_cast<const Mat&>(point)));
      point.data()[idx] = xi;
      return v;
    };
    // Divide by the steps actually taken: x ± s rounded to Scalar (in float
    // that rounding would otherwise be a relative error ~1e-7·|x|/s).
    auto central = [&](double s) {
      const Scalar up = static_cast<Scalar>(double(xi) + s), down = static_cast<Scalar>(double(xi) - s);
      res.evaluations += 2;
      return (at(up) - at(down)) / (double(up) - double(down));
    };
    const double n = detail::ridders_derivative(central, h, opt.extrapolation_levels);
    const long rows = static_cast<long>(point.rows());
    res.record(double(g.data()[idx]), n, idx % rows, idx / rows, -1);
  }

  detail::check_directions(f, point, x0, g, opt, step, res, rng);
  res.passed = res.max_rel_error <= rtol;
  return res;
}

}  // namespace losskit
