#pragma once
/// Stable numerical building blocks shared by the losses: accumulation
/// precision, softplus / sigmoid / log1p-expm1 forms, log-sum-exp and the
/// shifted-exponential pass that softmax-type losses build on.
#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <type_traits>

/// Marks a hot per-block function whose Eigen expressions must all be
/// inlined into it (one loop nest per reduction). GCC's inliner otherwise
/// decides per translation unit: once a second loss instantiates the same
/// helpers, it left the evaluators and reductions out of line (ALDR-KL at
/// C = 1000 ran 1.15× slower in a TU that also used LDR-KL).
#if defined(__GNUC__) || defined(__clang__)
#define LOSSKIT_FLATTEN __attribute__((flatten))
#else
#define LOSSKIT_FLATTEN
#endif

namespace losskit {
namespace detail {

/// Type that long sums are accumulated in: double for float inputs (so a sum
/// over millions of float terms keeps float accuracy), the scalar otherwise.
template <class Scalar>
using acc_t = typename std::conditional<std::is_same<Scalar, float>::value, double, Scalar>::type;

/// Block length for blocked summation: a block is summed with Eigen's
/// vectorised (tree-shaped) reduction in the working precision, blocks are
/// added in acc_t. Relative error ~ eps(Scalar)·log2(block) + eps(acc)·n/block.
constexpr Eigen::Index kSumBlock = 4096;

/// Sum of a dense array expression's coefficients, blocked as above.
template <class Derived>
acc_t<typename Derived::Scalar> accurate_sum(const Eigen::ArrayBase<Derived>& a) {
  using Acc = acc_t<typename Derived::Scalar>;
  const Eigen::Index n = a.size();
  Acc total(0);
  for (Eigen::Index start = 0; start < n; start += kSumBlock) {
    const Eigen::Index len = std::min(kSumBlock, n - start);
    total += static_cast<Acc>(a.derived().reshaped().segment(start, len).sum());
  }
  return total;
}

/// softplus(x) = log(1 + exp(x)), exact for every finite x and +-inf.
template <class Scalar>
Scalar softplus(Scalar x) {
  using std::exp;
  using std::log1p;
  return std::max(x, Scalar(0)) + log1p(exp(-std::abs(x)));
}

/// Logistic sigmoid 1/(1 + exp(-x)) without overflow for any x, and exact
/// limits 0 and 1 at -inf and +inf.
template <class Scalar>
Scalar sigmoid(Scalar x) {
  using std::exp;
  if (x >= Scalar(0)) return Scalar(1) / (Scalar(1) + exp(-x));
  const Scalar e = exp(x);
  return e / (Scalar(1) + e);
}

/// log Σ_k exp(x_k) of a vector or array expression, max-shifted. Returns -inf
/// for an all -inf vector, NaN if any entry is NaN, else +inf if any entry is
/// +inf. The exps and their sum are in the working precision; `Result` (default:
/// the Scalar) is the type the log and the shift back are taken in — acc_t
/// where the result is itself a term of a longer sum (CS-IB's kernel sums).
template <class Result = void, class Derived>
std::conditional_t<std::is_void<Result>::value, typename Derived::Scalar, Result> log_sum_exp(
    const Eigen::DenseBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  using R = std::conditional_t<std::is_void<Result>::value, Scalar, Result>;
  using std::log;
  const Scalar m = x.maxCoeff();
  if (!(std::abs(m) < std::numeric_limits<Scalar>::infinity())) {
    // A sum would also be NaN for +inf next to -inf: test for NaN directly.
    if (x.derived().hasNaN()) return std::numeric_limits<R>::quiet_NaN();
    return R(m);
  }
  return R(m) + log(R((x.derived().array() - m).exp().sum()));
}

/// The shared pass of softmax-type losses: writes e_k = exp(x_k - max x)
/// into `e` (same length as x) and returns the log-sum-exp of x.
/// Afterwards softmax(x) = e / sum(e) with sum(e) = exp(lse - max) in [1, C].
/// Exactly one exp per element. Non-finite entries: see log_sum_exp.
template <class X, class E>
typename X::Scalar shifted_exp(const Eigen::MatrixBase<X>& x, Eigen::MatrixBase<E> const& e_out, typename X::Scalar& sum_e) {
  using Scalar = typename X::Scalar;
  using std::log;
  E& e = const_cast<E&>(e_out.derived());
  const Scalar m = x.maxCoeff();
  if (!(std::abs(m) < std::numeric_limits<Scalar>::infinity())) {
    // +inf max: the softmax puts all mass on the +inf entries; -inf max
    // (all entries -inf) or NaN: the result is NaN and the softmax undefined.
    if (m == std::numeric_limits<Scalar>::infinity() && !x.hasNaN()) {
      e = (x.array() == m).template cast<Scalar>().matrix();
      sum_e = e.sum();
      return m;
    }
    e.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    sum_e = std::numeric_limits<Scalar>::quiet_NaN();
    return std::numeric_limits<Scalar>::quiet_NaN();
  }
  e = (x.array() - m).exp().matrix();
  sum_e = e.sum();
  return m + log(sum_e);
}

}  // namespace detail
}  // namespace losskit
