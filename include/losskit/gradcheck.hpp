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
/// `atol`. Defaults rtol = 1e-6, atol = 1e-10: meant for double. Checking in
/// float is possible but needs rtol around 1e-2.
///
/// For large inputs check a random subset of coordinates (`max_coordinates`)
/// and/or directional derivatives along random unit directions v
/// (`directions`): (f(x + hv) - f(x - hv))/2h against gᵀv, which covers every
/// coordinate at the cost of one derivative per direction.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace losskit {

struct GradientCheckOptions {
  double rtol = 1e-6;           ///< relative tolerance
  double atol = 1e-10;          ///< absolute floor of the relative error's denominator
  double step = 1e-3;           ///< first (largest) step of the extrapolation
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
  double rtol = 0;

  explicit operator bool() const { return passed; }

  std::string report() const {
    std::ostringstream os;
    os.precision(10);
    os << (passed ? "gradient check passed" : "gradient check FAILED") << ": " << checked
       << " entries, max rel error " << max_rel_error << " (rtol " << rtol << "), max abs error " << max_abs_error;
    if (worst_row >= 0)
      os << "; worst at (" << worst_row << ", " << worst_col << ")";
    else if (worst_direction >= 0)
      os << "; worst along direction " << worst_direction;
    os << ": analytic " << analytic_at_worst << " vs numeric " << numeric_at_worst;
    return os.str();
  }
};

namespace detail {

/// Ridders' extrapolated central difference of phi at 0 with first step h.
template <class Phi>
double ridders_derivative(Phi&& phi, double h, int levels, long& evaluations) {
  constexpr double shrink = 1.4, shrink2 = shrink * shrink, safe = 2.0;
  levels = std::max(levels, 1);
  std::vector<double> prev(static_cast<std::size_t>(levels)), cur(static_cast<std::size_t>(levels));
  auto central = [&](double step) {
    evaluations += 2;
    return (phi(step) - phi(-step)) / (2 * step);
  };
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
  if (!(opt.rtol > 0) || !(opt.atol >= 0) || !(opt.step > 0))
    detail::fail("check_gradient", "options", "need rtol > 0, atol >= 0, step > 0; got rtol ", opt.rtol, ", atol ",
                 opt.atol, ", step ", opt.step);

  Mat point = x.derived().template cast<Scalar>();
  const Mat g = analytic.derived().template cast<Scalar>();
  const Mat x0 = point;
  GradientCheckResult res;
  res.rtol = opt.rtol;
  const double floor = opt.atol / opt.rtol;

  auto record = [&](double a, double n, long row, long col, long dir) {
    const double abs_err = std::abs(a - n);
    const double rel_err = abs_err / std::max({std::abs(a), std::abs(n), floor});
    res.max_abs_error = std::max(res.max_abs_error, abs_err);
    ++res.checked;
    const double err = std::isnan(rel_err) ? HUGE_VAL : rel_err;
    if (res.checked == 1 || err > res.max_rel_error) {
      res.max_rel_error = err;
      res.worst_row = row;
      res.worst_col = col;
      res.worst_direction = dir;
      res.analytic_at_worst = a;
      res.numeric_at_worst = n;
    }
  };

  std::mt19937_64 rng(opt.seed);
  const long size = static_cast<long>(point.size());
  std::vector<long> coords;
  if (opt.max_coordinates < 0 || opt.max_coordinates >= size) {
    coords.resize(static_cast<std::size_t>(size));
    for (long i = 0; i < size; ++i) coords[static_cast<std::size_t>(i)] = i;
  } else if (opt.max_coordinates > 0) {
    std::vector<long> all(static_cast<std::size_t>(size));
    for (long i = 0; i < size; ++i) all[static_cast<std::size_t>(i)] = i;
    std::shuffle(all.begin(), all.end(), rng);
    coords.assign(all.begin(), all.begin() + opt.max_coordinates);
    std::sort(coords.begin(), coords.end());
  }

  for (long idx : coords) {
    const Scalar xi = x0.data()[idx];
    const double h = opt.step * (opt.relative_step ? std::max(1.0, std::abs(double(xi))) : 1.0);
    auto phi = [&](double s) {
      point.data()[idx] = static_cast<Scalar>(double(xi) + s);
      const double v = static_cast<double>(f(static_cast<const Mat&>(point)));
      point.data()[idx] = xi;
      return v;
    };
    const double n = detail::ridders_derivative(phi, h, opt.extrapolation_levels, res.evaluations);
    record(double(g.data()[idx]), n, idx % static_cast<long>(point.rows()), idx / static_cast<long>(point.rows()),
           -1);
  }

  std::normal_distribution<double> normal;
  for (int d = 0; d < opt.directions; ++d) {
    Mat v(point.rows(), point.cols());
    for (long i = 0; i < size; ++i) v.data()[i] = static_cast<Scalar>(normal(rng));
    v /= v.norm();
    const double scale = opt.relative_step ? std::max(1.0, double(x0.cwiseAbs().maxCoeff())) : 1.0;
    auto phi = [&](double s) {
      point = x0 + static_cast<Scalar>(s) * v;
      const double val = static_cast<double>(f(static_cast<const Mat&>(point)));
      point = x0;
      return val;
    };
    const double n = detail::ridders_derivative(phi, opt.step * scale, opt.extrapolation_levels, res.evaluations);
    record(double((g.array() * v.array()).sum()), n, -1, -1, d);
  }
  res.passed = res.max_rel_error <= opt.rtol;
  return res;
}

}  // namespace losskit
