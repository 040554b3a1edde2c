#pragma once
// Shared pieces of losskit's libFuzzer harness: drawing shapes, options and
// data (with NaN/Inf/huge/tiny values) from the fuzzer's bytes, and the
// invariants every functor must satisfy.
#include <fuzzer/FuzzedDataProvider.h>

#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <losskit/gradcheck.hpp>

namespace lkfuzz {

using Mat = Eigen::MatrixXd;
using Fdp = FuzzedDataProvider;

/// A value: mostly moderate, sometimes special (NaN, ±inf, ±1e30, 1e-30, 0, ±1e4).
inline double value(Fdp& p, bool finite_only) {
  const int kind = p.ConsumeIntegralInRange<int>(0, 15);
  const double sign = p.ConsumeBool() ? 1.0 : -1.0;
  switch (kind) {
    case 0: return finite_only ? 0.5 : std::numeric_limits<double>::quiet_NaN();
    case 1: return finite_only ? 2.0 : sign * std::numeric_limits<double>::infinity();
    case 2: return finite_only ? sign * 30.0 : sign * 1e30;
    case 3: return sign * 1e-30;
    case 4: return 0.0;
    case 5: return finite_only ? sign * 20.0 : sign * 1e4;
    default: return p.ConsumeFloatingPointInRange<double>(-5.0, 5.0);
  }
}

inline Mat matrix(Fdp& p, Eigen::Index rows, Eigen::Index cols, bool finite_only) {
  Mat m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = value(p, finite_only);
  return m;
}

/// A dimension in [lo, hi]; with small probability 0 (empty input).
inline Eigen::Index dim(Fdp& p, Eigen::Index lo, Eigen::Index hi) {
  if (p.ConsumeIntegralInRange<int>(0, 15) == 0) return 0;
  return p.ConsumeIntegralInRange<Eigen::Index>(lo, hi);
}

/// Usually `n`, sometimes a neighbouring wrong size (shape mismatch).
inline Eigen::Index maybe_wrong(Fdp& p, Eigen::Index n) {
  const int k = p.ConsumeIntegralInRange<int>(0, 9);
  return k == 0 ? n + 1 : (k == 1 && n > 0 ? n - 1 : n);
}

[[noreturn]] inline void violation(const char* what, const char* detail = "") {
  std::fprintf(stderr, "losskit fuzz invariant violated: %s %s\n", what, detail);
  std::abort();
}

inline bool all_finite(const Mat& m) { return m.allFinite(); }

/// For finite, moderate inputs: the analytic gradient must match a directional
/// finite difference (Ridders-extrapolated) to `rtol` relative, with an
/// absolute floor scaled to the gradient's size.
template <class F>
void check_direction(const char* loss, F&& f, const Mat& x, const Mat& grad, double rtol = 1e-4) {
  if (x.size() == 0 || !all_finite(x) || x.cwiseAbs().maxCoeff() > 50) return;
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 0;
  opt.directions = 1;
  opt.rtol = rtol;
  opt.atol = 1e-7 * std::max(1.0, grad.norm());
  opt.step = 1e-4;
  const auto r = losskit::check_gradient(f, x, grad, opt);
  if (!r.passed) violation(loss, r.report().c_str());
}

}  // namespace lkfuzz
