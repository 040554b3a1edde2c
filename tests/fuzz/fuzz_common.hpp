#pragma once
// Shared pieces of losskit's libFuzzer harness: drawing shapes, options and
// data (with NaN/Inf/huge/tiny values) from the fuzzer's bytes, and the
// invariants every functor must satisfy.
#include <fuzzer/FuzzedDataProvider.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
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

/// With LOSSKIT_FUZZ_VERBOSE set (when replaying a crash file), every target
/// prints what it drew, so a finding can be turned into a regression test.
inline bool verbose() {
  static const bool v = std::getenv("LOSSKIT_FUZZ_VERBOSE") != nullptr;
  return v;
}

template <class M>
void show(const char* name, const M& m) {
  if (!verbose()) return;
  std::cerr.precision(17);
  std::cerr << name << " (" << m.rows() << "x" << m.cols() << "):\n" << m << "\n";
}

inline void show_value(const char* name, double v) {
  if (verbose()) std::cerr << name << " = " << v << "\n";
}

/// Runs a float evaluation; false if it threw (options rounded to float may
/// become invalid, e.g. alpha = 1 + 1e-9 -> 1).
template <class Call>
bool float_value(Call&& call, float& out) {
  try {
    out = call();
  } catch (const losskit::Error&) {
    return false;
  }
  return true;
}

[[noreturn]] inline void violation(const char* what, const char* detail = "") {
  std::fprintf(stderr, "losskit fuzz invariant violated: %s %s\n", what, detail);
  std::abort();
}

inline bool all_finite(const Mat& m) { return m.allFinite(); }

/// An option value: usually in [lo, hi], sometimes invalid or extreme
/// (negative, 0, NaN, ±inf, 1e30, 1e-30) so every option check is exercised.
inline double option(Fdp& p, double lo, double hi) {
  switch (p.ConsumeIntegralInRange<int>(0, 19)) {
    case 0: return -1.0;
    case 1: return 0.0;
    case 2: return std::numeric_limits<double>::quiet_NaN();
    case 3: return p.ConsumeBool() ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
    case 4: return 1e30;
    case 5: return 1e-30;
    default: return p.ConsumeFloatingPointInRange<double>(lo, hi);
  }
}

/// Labels in [0, classes), sometimes out of range (-1, classes) or a given
/// extra value (ignore_index), length usually n.
inline Eigen::VectorXi labels(Fdp& p, Eigen::Index n, Eigen::Index classes, int extra = -1) {
  Eigen::VectorXi y(maybe_wrong(p, n));
  for (Eigen::Index i = 0; i < y.size(); ++i) {
    const int k = p.ConsumeIntegralInRange<int>(0, 24);
    if (k == 0) y(i) = -1;
    else if (k == 1) y(i) = int(classes);
    else if (k == 2) y(i) = extra;
    else y(i) = classes > 0 ? p.ConsumeIntegralInRange<int>(0, int(classes) - 1) : 0;
  }
  return y;
}

inline double max_abs(const Mat& m) { return m.size() ? m.cwiseAbs().maxCoeff() : 0.0; }

/// Finite, moderate data (the range the directional check is meant for).
inline bool moderate(const Mat& m, double bound = 50) { return all_finite(m) && max_abs(m) <= bound; }

/// A gradient output pre-filled with a sentinel: a call that throws must
/// leave every entry as it was.
inline Mat sentinel(Eigen::Index rows, Eigen::Index cols) { return Mat::Constant(rows, cols, -12345.5); }

inline void require_untouched(const char* loss, const Mat& g, Eigen::Index rows, Eigen::Index cols) {
  if (g.rows() != rows || g.cols() != cols || !(g.array() == -12345.5).all())
    violation(loss, "an output was written by a call that threw");
}

/// operator() and value_and_gradient must agree (both NaN counts as agreeing).
inline void require_same_value(const char* loss, double a, double b, double rtol = 1e-9) {
  if (std::isnan(a) && std::isnan(b)) return;
  if (a == b) return;
  if (!(std::abs(a - b) <= rtol * std::max({1.0, std::abs(a), std::abs(b)})))
    violation(loss, "operator() and value_and_gradient disagree");
}

/// float on the same (moderate) inputs: finite and close to the double result
/// (skipped when the options rounded to float are invalid).
template <class Call>
void require_float_close(const char* loss, double d, Call&& call, double rtol = 1e-2) {
  float f = 0;
  if (!float_value(call, f)) return;
  if (!std::isfinite(f)) violation(loss, "float result not finite for moderate input");
  if (!(std::abs(double(f) - d) <= rtol * std::max(1.0, std::abs(d)))) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "float %.9g vs double %.17g", double(f), d);
    violation(loss, buf);
  }
}


/// For finite, moderate inputs: the analytic gradient must match a directional
/// finite difference (Ridders-extrapolated) to `rtol` relative, with an
/// absolute floor scaled to the gradient's and the value's size.
template <class F>
void check_direction(const char* loss, F&& f, const Mat& x, const Mat& grad, double rtol = 1e-4, double step = 1e-4) {
  if (x.size() == 0 || !all_finite(x) || x.cwiseAbs().maxCoeff() > 50) return;
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 0;
  opt.directions = 1;
  opt.rtol = rtol;
  // Absolute floor: the gradient's size, and the round-off of f itself
  // magnified by the step (a large loss with a small varying part).
  opt.atol = std::max(1e-7 * std::max(1.0, grad.norm()), 1e-14 * std::abs(double(f(x))) / step);
  opt.step = step;
  const auto r = losskit::check_gradient(f, x, grad, opt);
  if (!r.passed) violation(loss, r.report().c_str());
}

}  // namespace lkfuzz
