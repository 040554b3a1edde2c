#pragma once
/// Comp-sum losses and smooth adversarial comp-sum losses
/// (Mao, Mohri, Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis
/// and Applications", ICML 2023).
///
/// CompSum<S> (option `tau` >= 0, default 1), per sample with logits h (a
/// column of C values), label y and p = softmax(h):
///   ℓ^τ = Φ^τ(Σ_{k≠y} exp(h_k − h_y)),  Φ^τ(u) = ((1+u)^{1−τ} − 1)/(1 − τ), Φ^1(u) = log(1+u)
///       = (1 − p_y^{τ−1})/(τ − 1)         (τ ≠ 1; since 1 + u = 1/p_y)
///       = −log p_y                       (τ = 1)
///   τ = 0: 1/p_y − 1 (sum-exponential); τ = 1: cross-entropy; τ in (1,2):
///   generalized cross-entropy with q = τ − 1 (Zhang & Sabuncu, NeurIPS 2018);
///   τ = 2: 1 − p_y (mean absolute error); τ > 2: bounded by 1/(τ − 1).
///   gradient  ∂ℓ^τ/∂h = p_y^{τ−1} · (p − e_y)      (every τ)
///
/// Evaluated through log p_y = h_y − lse(h) (max-shifted), as
/// ℓ = −log p_y · expm1(z)/z with z = (τ−1)·log p_y, so τ = 1 (z = 0) is
/// exactly lse(h) − h_y, the cross-entropy formula, and τ → 1 is continuous.
/// 1/p_y is never formed: for τ < 1 the value and gradient are finite
/// wherever the mathematical value is, and overflow to inf only where it does.
/// Softmax pass: one exp per logit (detail::shifted_exp); for C <= 128 on
/// contiguous logits, one exp pass over blocks of whole columns instead.
///
/// SmoothAdversarialCompSum<S> (options `tau`, `nu` >= 0, default 1 and 1)
/// takes clean logits h = h(x), perturbed logits h' = h(x') (the caller
/// finds x', e.g. by a PGD inner attack on this loss) and labels:
///   ℓ̃ = ℓ^τ(h, y) + ν·‖Δ' − Δ‖₂,   Δ_k = h_k − h_y,  Δ'_k = h'_k − h'_y
///   (the smooth term of the paper's smooth adversarial comp-sum loss with
///   its supremum over x' replaced by the given perturbed point).
/// With d = Δ' − Δ (computed as δ − δ_y, δ = h' − h, which is exact when the
/// perturbation is small) and n = ‖d‖₂:
///   ∂ℓ̃/∂h'_j = ν·(d_j/n − [j = y]·Σ_k d_k/n),   ∂ℓ̃/∂h = ∇ℓ^τ − ∂ℓ̃/∂h'.
/// At d = 0 the norm is not differentiable; the subgradient 0 is used
/// (then both gradients equal the comp-sum gradient and 0). The norm is
/// computed scaled by max|d_k|, so it neither overflows nor underflows.
///
/// Conventions: logits are C×N (samples are columns), labels an integer
/// vector of length N with values in [0, C) (no ignore_index). Reduction
/// Mean (default) divides the summed loss by N; Sum returns the sum.
/// Sample weights s_i (finite, >= 0; both functors, see core/functor.hpp):
/// Sum = Σ_i s_i·ℓ_i, Mean = Σ_i s_i·ℓ_i / Σ_i s_i (each sample's share of
/// the normaliser is n_i = 1); all weights 0 give 0 and zero gradients, and
/// a sample of weight 0 is not evaluated. per_sample gives the unweighted ℓ_i.
///
/// Non-finite logits never throw. −inf at a non-label class means
/// probability 0 (finite result); −inf at the label gives value +inf for
/// τ <= 1 and 1/(τ−1) with gradient 0 for τ > 1; +inf at a non-label class
/// gives +inf for τ <= 1 and 1/(τ−1) for τ > 1; NaN anywhere in a column, or
/// +inf at its label, makes that sample's value and gradient NaN. Where the
/// value is infinite the gradient may hold inf or NaN. In the smooth
/// adversarial loss a non-finite d makes the smooth term NaN or inf.
#include <Eigen/Core>
#include <cmath>
#include <limits>

#include "core/checks.hpp"
#include "core/functor.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"

namespace losskit {
namespace detail {

/// ℓ^τ from log p_y. Written as −log p_y · expm1(z)/z, z = (τ−1)·log p_y, for
/// |z| < 1 so that τ near 1 loses nothing to (τ−1) underflowing in z/(τ−1);
/// z = 0 (τ = 1) is the cross-entropy −log p_y exactly.
template <class Scalar>
Scalar comp_sum_from_log_p(Scalar log_p, Scalar tau) {
  using std::expm1;
  const Scalar q = tau - Scalar(1);
  if (q == Scalar(0)) return Scalar(0) - log_p;
  const Scalar z = q * log_p;
  if (z == Scalar(0)) return Scalar(0) - log_p;
  if (std::abs(z) < Scalar(1)) return -log_p * (expm1(z) / z);
  return expm1(z) / -q;
}

template <class Scalar, class G>
Scalar comp_sum_close(Scalar log_p, Scalar sum_e, Eigen::Index y, Scalar tau, Scalar factor, G&& g);

/// One sample of a comp-sum loss: returns ℓ^τ of the logits column x with
/// label y and, unless g is NoGrad, writes factor·p_y^{τ−1}·(p − e_y) into g.
/// The gradient is w·e with w = factor·p_y^{τ−1}/Σe (e = exp(x − max x)),
/// and −w·Σ_{k≠y} e_k at the label; p_y^{τ−1} <= 1/p_y = 1 + ℓ^0 keeps it
/// finite wherever the value is.
template <class X, class G>
typename X::Scalar comp_sum_column(const Eigen::MatrixBase<X>& x, Eigen::Index y, typename X::Scalar tau,
                                   typename X::Scalar factor, G&& g) {
  using Scalar = typename X::Scalar;
  using std::exp;
  if constexpr (!wants_grad<G>) {
    (void)factor;
    const Scalar lse = log_sum_exp(x);
    return comp_sum_from_log_p(Scalar(x.coeff(y) - lse), tau);
  } else {
    Scalar sum_e;
    const Scalar lse = shifted_exp(x, g, sum_e);
    return comp_sum_close(Scalar(x.coeff(y) - lse), sum_e, y, tau, factor, g);
  }
}

/// comp_sum_column's last step, shared with CompSum's blocks of columns:
/// from log p_y and Σe (g holding e = exp(x − max x)), ℓ^τ, and g turned
/// into the gradient.
template <class Scalar, class G>
Scalar comp_sum_close(Scalar log_p, Scalar sum_e, Eigen::Index y, Scalar tau, Scalar factor, G&& g) {
  using std::exp;
  const Scalar q = tau - Scalar(1);
  // τ = 1 needs no exp and must not turn a log_p of −inf into 0·inf.
  const Scalar p_pow = q == Scalar(0) ? Scalar(1) : exp(q * log_p);
  const Scalar w = p_pow / sum_e * factor;
  const Scalar e_y = g.coeff(y);
  g *= w;
  g.coeffRef(y) = -w * (sum_e - e_y);
  return comp_sum_from_log_p(log_p, tau);
}

/// ‖d‖₂ of a vector expression, scaled by max|d_k| so that no finite d
/// overflows or underflows. Unless `unit` is NoGrad, writes d/‖d‖ into it
/// (0 when d = 0). Non-finite d gives NaN or inf.
template <class D, class U>
typename D::Scalar scaled_norm(const Eigen::MatrixBase<D>& d, U&& unit) {
  using Scalar = typename D::Scalar;
  constexpr bool kUnit = wants_grad<U>;
  const Scalar scale = d.cwiseAbs().template maxCoeff<Eigen::PropagateNaN>();
  if (scale == Scalar(0)) {
    if constexpr (kUnit) unit.setZero();
    return Scalar(0);
  }
  if (!(scale < std::numeric_limits<Scalar>::infinity())) {  // inf or NaN
    if constexpr (kUnit) unit.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    return std::isnan(d.sum()) ? std::numeric_limits<Scalar>::quiet_NaN() : scale;
  }
  const Scalar inv_scale = Scalar(1) / scale;
  if constexpr (kUnit) {
    unit = d * inv_scale;
    const Scalar r = unit.norm();  // in [1, sqrt(C)]
    unit /= r;
    return scale * r;
  } else {
    return scale * (d * inv_scale).norm();
  }
}

}  // namespace detail

/// Comp-sum loss ℓ^τ (see the file comment). `tau` >= 0, default 1
/// (cross-entropy). Named members: sum_exponential() (τ = 0),
/// cross_entropy() (τ = 1), generalized_cross_entropy(q) (τ = 1 + q),
/// mean_absolute_error() (τ = 2). The calls (logits, labels[, sample_weights])
/// come from detail::ColumnLoss (core/functor.hpp).
template <class Scalar_>
class CompSum : public detail::ColumnLoss<CompSum<Scalar_>, Scalar_> {
  friend detail::ColumnLoss<CompSum, Scalar_>;

 public:
  using Scalar = Scalar_;

  Scalar tau = Scalar(1);                 ///< τ >= 0, finite

  CompSum() = default;
  explicit CompSum(Scalar tau_, Reduction reduction_ = Reduction::Mean) : tau(tau_) { this->reduction = reduction_; }

  /// τ = 0: 1/p_y − 1.
  static CompSum sum_exponential() { return CompSum(Scalar(0)); }
  /// τ = 1: −log p_y.
  static CompSum cross_entropy() { return CompSum(Scalar(1)); }
  /// τ = 1 + q: (1 − p_y^q)/q (Zhang & Sabuncu 2018 use q in (0, 1], default 0.7).
  static CompSum generalized_cross_entropy(Scalar q = Scalar(0.7)) { return CompSum(Scalar(1) + q); }
  /// τ = 2: 1 − p_y.
  static CompSum mean_absolute_error() { return CompSum(Scalar(2)); }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "CompSum";

  struct Context {};

  template <class X, class L>
  Context prepare(const X& logits, const L& labels) const {
    detail::require_integer_labels<L>();
    detail::check_non_negative(kName, "tau", tau);
    detail::check_not_empty(kName, "logits", logits);
    detail::check_vector_length(kName, "labels", labels, logits.cols());
    detail::check_labels(kName, labels, logits.cols(), logits.rows());
    return {};
  }

  template <class X, class L, class G>
  Acc column(Context, const X& logits, const L& labels, Eigen::Index j, Scalar factor, G&& grad) const {
    return Acc(detail::comp_sum_column(logits.matrix().col(j), Eigen::Index(labels.coeff(j)), tau, factor, grad));
  }

  static constexpr Eigen::Index kBlockRows = 128;

  // Columns [j0, j0 + count) of contiguous logits (small C): the column
  // maxima, one exp pass over the block, the column sums, then
  // comp_sum_close per column; a column with a non-finite max or sum goes
  // through column() (shifted_exp's rules for +inf and NaN).
  template <class X, class L, class W, class G>
  Acc columns(Context ctx, const X& x, const L& labels, Eigen::Index j0, Eigen::Index count, const W& s,
              Scalar factor, G& g) const {
    using std::log;
    detail::ColumnBlock<Scalar, G> b(x, g, j0, count);
    const auto m = b.column_max();
    b.exp(m, Scalar(1));
    const auto sum_e = b.sums();
    auto exact = [&](Eigen::Index j) { return !(std::isfinite(m(j)) && std::isfinite(sum_e(j))); };
    auto by_column = [&](Eigen::Index col, Scalar f, auto&& grad) { return column(ctx, x, labels, col, f, grad); };
    auto close = [&](Eigen::Index j, Scalar f, auto&& grad) {
      const Eigen::Index y = Eigen::Index(labels.coeff(j0 + j));
      const Scalar log_p = b.x(y, j) - (m(j) + log(sum_e(j)));
      if constexpr (detail::wants_grad<decltype(grad)>)
        return Acc(detail::comp_sum_close(log_p, sum_e(j), y, tau, f, grad));
      else
        return Acc(detail::comp_sum_from_log_p(log_p, tau));
    };
    return b.template close_columns<Acc>(j0, s, factor, exact, by_column, close);
  }
};

/// Smooth adversarial comp-sum loss ℓ^τ(h, y) + ν·‖Δ(h') − Δ(h)‖₂ (see the
/// file comment). Call as (clean_logits, adv_logits, labels[, sample_weights]);
/// value_and_gradient(clean_logits, adv_logits, labels[, sample_weights],
/// grad_clean, grad_adv) writes the gradient for both logit matrices (two
/// distinct outputs). Three inputs and two gradients do not fit
/// detail::ColumnLoss; the calls are written on the same core pieces.
template <class Scalar_>
class SmoothAdversarialCompSum {
 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static_assert(std::is_floating_point<Scalar>::value,
                "losskit::SmoothAdversarialCompSum: Scalar must be float or double");

  Scalar tau = Scalar(1);                 ///< τ >= 0 of the comp-sum term
  Scalar nu = Scalar(1);                  ///< ν >= 0, weight of the smooth term
  Reduction reduction = Reduction::Mean;  ///< Mean divides by Σ s_i (N without weights)

  SmoothAdversarialCompSum() = default;
  SmoothAdversarialCompSum(Scalar tau_, Scalar nu_, Reduction reduction_ = Reduction::Mean)
      : tau(tau_), nu(nu_), reduction(reduction_) {}

  template <class P, class A, class L>
  Scalar operator()(const Eigen::DenseBase<P>& clean_logits, const Eigen::DenseBase<A>& adv_logits,
                    const Eigen::DenseBase<L>& labels) const {
    return total(clean_logits, adv_logits, labels, detail::UnitWeights{}, no_grad, no_grad);
  }

  template <class P, class A, class L, class W>
  Scalar operator()(const Eigen::DenseBase<P>& clean_logits, const Eigen::DenseBase<A>& adv_logits,
                    const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<W>& sample_weights) const {
    return total(clean_logits, adv_logits, labels, sample_weights, no_grad, no_grad);
  }

  template <class P, class A, class L, class GC, class GA>
  Scalar value_and_gradient(const Eigen::DenseBase<P>& clean_logits, const Eigen::DenseBase<A>& adv_logits,
                            const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<GC>& grad_clean,
                            const Eigen::DenseBase<GA>& grad_adv) const {
    return total(clean_logits, adv_logits, labels, detail::UnitWeights{}, grad_clean, grad_adv);
  }

  template <class P, class A, class L, class W, class GC, class GA>
  Scalar value_and_gradient(const Eigen::DenseBase<P>& clean_logits, const Eigen::DenseBase<A>& adv_logits,
                            const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<W>& sample_weights,
                            const Eigen::DenseBase<GC>& grad_clean, const Eigen::DenseBase<GA>& grad_adv) const {
    return total(clean_logits, adv_logits, labels, sample_weights, grad_clean, grad_adv);
  }

  /// The unreduced, unweighted per-sample values.
  template <class P, class A, class L>
  Vector per_sample(const Eigen::DenseBase<P>& clean_logits, const Eigen::DenseBase<A>& adv_logits,
                    const Eigen::DenseBase<L>& labels) const {
    const detail::eval_t<P> c(clean_logits.derived());
    const detail::eval_t<A> a(adv_logits.derived());
    const detail::eval_t<L> y(labels.derived());
    check(c, a, y);
    Vector out(c.cols());
    detail::column_for(c.cols(), 2 * c.rows(), [&](Eigen::Index j) {
      out(j) = column(c, a, Eigen::Index(y.coeff(j)), j, Scalar(1), no_grad, no_grad);
    });
    return out;
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "SmoothAdversarialCompSum";

  template <class C, class A, class L>
  void check(const C& clean_logits, const A& adv_logits, const L& labels) const {
    detail::require_scalar<Scalar, C>();
    detail::require_scalar<Scalar, A>();
    detail::require_integer_labels<L>();
    detail::check_non_negative(kName, "tau", tau);
    detail::check_non_negative(kName, "nu", nu);
    detail::check_not_empty(kName, "clean_logits", clean_logits);
    detail::check_same_shape(kName, "adv_logits", clean_logits, adv_logits);
    detail::check_vector_length(kName, "labels", labels, clean_logits.cols());
    detail::check_labels(kName, labels, clean_logits.cols(), clean_logits.rows());
  }

  // Every check, then Σ_j s_j·ℓ̃_j reduced; W is UnitWeights or a weight
  // vector, GC and GA NoGrad or writable gradients (both or neither).
  template <class P, class A, class L, class W, class GC, class GA>
  Scalar total(const Eigen::DenseBase<P>& clean_logits, const Eigen::DenseBase<A>& adv_logits,
               const Eigen::DenseBase<L>& labels, const W& sample_weights, const GC& grad_clean,
               const GA& grad_adv) const {
    const detail::eval_t<P> c(clean_logits.derived());
    const detail::eval_t<A> a(adv_logits.derived());
    const detail::eval_t<L> y(labels.derived());
    check(c, a, y);
    const Eigen::Index rows = c.rows(), n = c.cols();
    decltype(auto) s = detail::eval_weights(sample_weights);
    if constexpr (detail::is_weighted<W>) detail::check_sample_weights<Scalar>(kName, s, n);
    if constexpr (detail::wants_grad<GC>) {
      detail::check_output(kName, "grad_clean", grad_clean, rows, n);
      detail::check_output(kName, "grad_adv", grad_adv, rows, n);
    }
    const Scalar factor = detail::reduction_factor<Scalar>(reduction, detail::weight_total<Acc>(s, n));
    auto&& gc = detail::prepare_grad(kName, "grad_clean", grad_clean, rows, n);
    auto&& ga = detail::prepare_grad(kName, "grad_adv", grad_adv, rows, n);
    const Acc sum = detail::weighted_column_sum<Acc>(
        n, 2 * rows, s, factor,
        [&](Eigen::Index j, Scalar f) {
          return column(c, a, Eigen::Index(y.coeff(j)), j, f, gc.matrix().col(j), ga.matrix().col(j));
        },
        [&](Eigen::Index j) {
          if constexpr (detail::wants_grad<GC>) {
            gc.matrix().col(j).setZero();
            ga.matrix().col(j).setZero();
          }
        });
    return static_cast<Scalar>(sum * static_cast<Acc>(factor));
  }

  // One sample: ℓ̃_j and, unless the gradients are NoGrad, factor·∂ℓ̃_j/∂h
  // into g_clean and factor·∂ℓ̃_j/∂h' into g_adv.
  template <class C, class A, class GC, class GA>
  Scalar column(const C& c, const A& a, Eigen::Index label, Eigen::Index j, Scalar factor, GC&& g_clean,
                GA&& g_adv) const {
    const Scalar shift = a.coeff(label, j) - c.coeff(label, j);
    const auto d = ((a.matrix().col(j) - c.matrix().col(j)).array() - shift).matrix();
    const Scalar n = detail::scaled_norm(d, g_adv);  // g_adv = d/n
    if constexpr (detail::wants_grad<GA>) {
      const Scalar s = g_adv.sum();
      const Scalar nf = nu * factor;
      g_adv *= nf;
      g_adv.coeffRef(label) = -nf * s;  // d_y = 0
    }
    const Scalar loss = detail::comp_sum_column(c.matrix().col(j), label, tau, factor, g_clean);
    if constexpr (detail::wants_grad<GC>) g_clean -= g_adv;
    return loss + nu * n;
  }
};

}  // namespace losskit
