#pragma once
/// Label-distributionally robust losses LDR-KL and ALDR-KL
/// (Zhu, Ying, Yang, "Label Distributionally Robust Losses for Multi-class
/// Classification: Consistency, Robustness and Adaptivity", ICML 2023).
///
/// Per sample (a column f of the C×N scores, label y, margin c):
///   z_k = c·[k ≠ y] + f_k − f_y                      (z_y = 0)
///   lse_u(v) = log((1/C)·Σ_k exp(v_k))               (log-mean-exp)
///
/// Layout: logits C×N (samples are columns), labels any integer vector of
/// length N in [0, C). Reduction Mean (default) divides by N, Sum adds.
/// Sample weights s_i (finite, >= 0; see core/functor.hpp): Sum = Σ_i s_i·ψ_i,
/// Mean = Σ_i s_i·ψ_i / Σ_i s_i (each sample's share of the normaliser is
/// n_i = 1); all weights 0 give 0 and a zero gradient, and a sample of weight
/// 0 is not evaluated. per_sample gives the unweighted ψ_i.
///
/// LDRKL<S> (options `lambda` > 0, default 1; `margin`, default 0.1):
///   ψ = λ·lse_u(z/λ) = max_{p ∈ Δ_C} Σ_k p_k z_k − λ·KL(p, uniform)
///   ∂ψ/∂f = softmax(z/λ) − e_y                        (no 1/λ factor)
///   Identities: c = 0, λ = 1 gives CrossEntropy − log C; λ → 0⁺ the
///   Crammer–Singer hinge max_k z_k; λ → ∞ the mean of z. ψ may be negative
///   (its infimum is −λ·log C). Evaluated max-shifted: ψ = max z +
///   λ·log((1/C)·Σ exp((z_k − max z)/λ)); for very large λ the absolute error
///   is about λ·ε·log C, since log((1/C)Σ…) → 0 is formed from a sum near C.
///   Without logit scaling, C <= 128 on contiguous logits runs in blocks of
///   whole columns (one exp pass per block; the same formulas, to round-off).
///
/// ALDRKL<S> (options `lambda0` > 0, default 10; `alpha` > 1, default 2;
/// `margin`, default 0.1; the paper code's defaults), with a = α·log C/λ0:
///   ψ = max_{λ ∈ I} g(λ),  g(λ) = λ·lse_u(z/λ) − (a/2)(λ − λ0)²,
///   I = [λ_lo, λ0],  λ_lo = λ0(1 − 1/α)
///   g'(λ) = −KL(softmax(z/λ), u) − a(λ − λ0) = a·(T(λ) − λ),
///   T(λ) = λ0·(1 − KL(softmax(z/λ), u)/(α·log C)) (paper's fixed point);
///   g' > 0 below I and g' < 0 above it, so the maximiser over λ > 0 lies in I.
///   g is NOT concave in general: λ·lse_u(z/λ) is the perspective of a convex
///   function, hence convex in λ, with g''(λ) = Var_{softmax(z/λ)}(z)/λ³ − a.
///   Several stationary points are possible; λ* is defined as the GLOBAL
///   maximiser of g over I (one of them if several tie within the value
///   tolerance; at an exact tie ψ is a max of two branches, not differentiable).
///   Gradient by the envelope theorem: ∂ψ/∂f = softmax(z/λ*) − e_y (the
///   dependence through λ* drops out at a maximum).
///   Solver, per sample (stateless, the default; the paper's code keeps one
///   λ per example and takes one fixed-point step per visit, which the
///   stateful calls below reproduce):
///   - if (max z − min z)²/4 ≤ a·λ_lo³ (Popoviciu's bound on the variance
///     makes g'' ≤ 0 on all of I) g is concave and λ* is its unique
///     stationary point: safeguarded Newton on T(λ) − λ from λ0 inside the
///     bracket [λ_lo, λ0] (bisection when a step leaves the bracket);
///   - otherwise branch and bound on I: a sub-interval is discarded when an
///     upper bound of g on it (from T being non-decreasing and from a bound
///     on g'') is within the value tolerance of the best value found; sub-intervals
///     proven concave (variance bound Var_λ ≤ exp(R·|1/λ − 1/λ'|)·Var_λ′,
///     R = max z − min z, as the softmax weights change by at most that factor)
///     are solved by the same Newton iteration.
///   Tolerances: Newton stops when its update is below 16·ε·λ0 (ε of the
///   Scalar); values are compared to 16·ε·(|max z| + (max z − min z) + λ0·log C).
///   At most 64 evaluations (one exp pass over the column each) per sample;
///   typically 2–4 in the concave case. λ* per sample: lambda_star().
///   Without logit scaling, C <= 128 on contiguous logits runs the concave
///   (and flat) case for a block of whole columns at once: one exp pass over
///   the block per Newton pass, the same steps per column (to round-off);
///   other columns go through the per-column solver.
///
/// Logit scaling, `logit_scaling` (LogitScaling, default None), the two
/// options of the paper's official code (Optimization-AI/ICML2023_LDR,
/// loss.py, ALDRLoss_V1's softplus=True / False; LDRLoss_V1 always does the
/// first): the loss is computed on scores f instead of the raw logits s,
/// per sample, m the mean over its C classes:
///   Softplus  f = softplus(s)/m,  m = mean_k softplus(s_k)
///             ∂ψ/∂s_j = σ(s_j)/m · (G_j − (1/C)·Σ_k G_k f_k),  G = ∂ψ/∂f;
///   MeanAbs   f = s/m,  m = mean_k |s_k|  (the code's s/(‖s‖₁/C); scale-invariant)
///             ∂ψ/∂s_j = (1/m) · (G_j − sign(s_j)·(1/C)·Σ_k G_k f_k)
///             (sign(0) = 0, the subgradient torch's abs uses). An all-zero
///             column (m = 0, where the code gives 0/0 = NaN) is given f ≡ 0,
///             i.e. z = c·[k ≠ y], and a zero gradient; the gradient grows as
///             1/m, so near-zero columns have huge gradients (infinite once
///             1/m overflows the Scalar).
///
/// Stateful ALDR-KL (the official ALDRLoss_V1): ALDRKLState<S> state(M, λ0)
/// keeps one λ per training example (all λ0 at first);
/// aldr(logits, labels, ids, state) and
/// aldr.value_and_gradient(logits, labels, ids, state, grad), ids an integer
/// vector of length N in [0, M), take one fixed-point step per sample from
/// the stored λ_old = state[ids_j]:
///   q = (softmax(f/λ_old) + δ)/(1 + C·δ),  δ = kl_smoothing (1e-5, the code's)
///   λ_new = λ0·(1 − KL(q, u)/(α·log C))    ∈ (λ0(1 − 1/α), λ0] for δ > 0
/// (the softmax is of the scores f without the margin, as in the code; C = 1
/// gives λ_new = λ0), store λ_new, and return the code's loss at the stored λ
///   ψ_j = λ·lse_u(z/λ) − (a/2)(λ − λ0)²,  λ = state[ids_j] after the writes,
/// with the gradient at λ held fixed (the code detaches λ):
/// ∂ψ/∂f = softmax(z/λ) − e_y, through the scaling as above. Reduction Mean
/// (the code's) divides by N, Sum adds; there are no weighted stateful calls.
/// A duplicated id in one batch: every step reads the old λ, the writes are
/// in batch order (the last sample's step is kept, as PyTorch's CPU
/// self.Lambda[ids] = ... does) and every sample with that id is then
/// evaluated at that stored λ, as the code reads self.Lambda[ids] back. A
/// non-finite step (NaN logits) is not stored: the example keeps its λ. The
/// state must have been built with the functor's lambda0, else Error; all
/// checks (ids, state, options, shapes) run before the state or the gradient
/// is written. The call allocates only when N exceeds every earlier batch of
/// that state; one state must not be used by concurrent calls.
///
/// Non-finite logits never throw or hang: NaN anywhere in a column, +inf on
/// a non-target class or −inf on the target make that sample's loss and
/// gradient NaN; −inf on a non-target class removes that class (its weight
/// is ≈ 1e-308 rather than 0: Eigen's vectorised exp(−inf) is a denormal);
/// +inf on the target with finite other classes gives the limit −λ·log C
/// (LDR-KL) with a zero gradient (up to those denormals). With Softplus
/// scaling, a column whose softplus values all underflow to 0 (every logit
/// below about −104 in float, −745 in double) gives NaN; with MeanAbs, any
/// non-finite logit makes the sample's loss and gradient NaN.
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <ostream>
#include <type_traits>

#include "core/checks.hpp"
#include "core/functor.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"

namespace losskit {

/// The map from logits s to the scores f the LDR losses see (per sample,
/// over the C classes of its column): None f = s; Softplus
/// f = softplus(s)/mean_k softplus(s_k); MeanAbs f = s/mean_k |s_k| (the
/// official code's two options, softplus=True / False).
enum class LogitScaling { None, Softplus, MeanAbs };

inline std::ostream& operator<<(std::ostream& os, LogitScaling s) {
  return os << (s == LogitScaling::None ? "None" : s == LogitScaling::Softplus ? "Softplus" : "MeanAbs");
}

template <class Scalar>
class ALDRKL;

namespace detail {
namespace ldr {

/// The checks both losses make after those of their λ options.
template <class Scalar, class X, class L>
void check_inputs(const char* loss, Scalar margin, LogitScaling scaling, const X& logits, const L& labels) {
  check_finite(loss, "margin", margin);
  if (scaling != LogitScaling::None && scaling != LogitScaling::Softplus && scaling != LogitScaling::MeanAbs)
    fail(loss, "logit_scaling", "is not a LogitScaling value, got ", static_cast<int>(scaling));
  check_not_empty(loss, "logits", logits);
  check_labels(loss, labels, logits.cols(), logits.rows());
}

/// Moments of e_k = exp(w_k/λ) over one column, w = z − max z ∈ [−R, 0]:
/// S0 = Σ e, S1 = Σ e·w, S2 = Σ e·w².
template <class Acc>
struct Moments {
  Acc s0 = 0, s1 = 0, s2 = 0;
};

/// One sample's shifted margin scores w_k = z_k − max z, produced block by
/// block from the logits column (through the optional normalisation) so the
/// exp pass stays in L1 and needs no heap workspace.
template <class Scalar, class Col>
class Column {
 public:
  using Acc = acc_t<Scalar>;
  static constexpr Eigen::Index kBlock = 256, kFastBlock = 2048;
  static constexpr Scalar kInf = std::numeric_limits<Scalar>::infinity();
  static constexpr Scalar kBig = Scalar(1e15);
  using Buffer = Eigen::Array<Scalar, Eigen::Dynamic, 1, 0, kBlock, 1>;

  /// need_range: also find min z (ALDR-KL's solver needs max z − min z).
  Column(const Col& logits, Eigen::Index label, Scalar margin, LogitScaling scaling, bool need_range)
      : s_(logits), y_(label), c_(logits.size()), scaling_(scaling) {
    using std::log;
    log_c_ = log(Acc(c_));
    if (scaling_ != LogitScaling::None) init_scaling();
    const Scalar f_y = score(s_.coeff(y_));
    Scalar hi_score = 0;
    if (c_ == 1) {
      zmax_ = zmin_ = 0;
    } else {
      // max/min over k ≠ y; both scalings are increasing, so they map the
      // raw extremes to the scaled ones.
      Scalar hi = -std::numeric_limits<Scalar>::infinity(), lo = std::numeric_limits<Scalar>::infinity();
      if (y_ > 0) {
        hi = s_.head(y_).maxCoeff();
        if (need_range) lo = s_.head(y_).minCoeff();
      }
      if (y_ + 1 < c_) {
        hi = std::max(hi, s_.tail(c_ - y_ - 1).maxCoeff());
        if (need_range) lo = std::min(lo, s_.tail(c_ - y_ - 1).minCoeff());
      }
      if (need_range && lo == -kInf) {
        // Classes at −inf carry no weight at any λ: the solver's range is over the others.
        lo = kInf;
        for (Eigen::Index k = 0; k < c_; ++k)
          if (k != y_ && s_.coeff(k) > -kInf) lo = std::min(lo, s_.coeff(k));
      }
      hi_score = score(hi);
      const Scalar zlo = score(lo) + margin - f_y;
      zmax_ = peak(hi_score, f_y, margin, scaling_ == LogitScaling::None).zmax;
      zmin_ = std::isnan(zlo) ? zlo : std::min(zlo, Scalar(0));
    }
    shift_ = c_ > 1 ? peak(hi_score, f_y, margin, scaling_ == LogitScaling::None).shift : f_y - margin;
    f_y_ = f_y;
  }

  /// z's maximum max(hi + c − f_y, 0) from hi = max_{k≠y} f_k (NaN-propagating:
  /// a NaN extreme must not be replaced by the 0 of z_y), and the exponent
  /// shift: hi itself when that is z's maximum on raw logits (not
  /// f_y + z_max − c, which rounds), so the arg-max class gets w = 0
  /// exactly; 1/λ would magnify the rounding. Shared with LDRKL's blocks.
  struct Peak {
    Scalar zmax, shift;
  };
  static Peak peak(Scalar hi, Scalar f_y, Scalar margin, bool raw) {
    const Scalar zhi = hi + margin - f_y;
    const Scalar zmax = std::isnan(zhi) ? zhi : std::max(zhi, Scalar(0));
    return {zmax, (zmax > Scalar(0) && zmax < kInf && raw) ? hi : f_y + zmax - margin};
  }

  /// ψ = max z + λ·(log S0 − log C).
  static Acc value(Scalar zmax, Scalar lambda, Acc s0, Acc log_c) {
    using std::log;
    return Acc(zmax) + Acc(lambda) * (log(s0) - log_c);
  }

  Eigen::Index classes() const { return c_; }
  Acc log_classes() const { return log_c_; }
  Scalar zmax() const { return zmax_; }
  Scalar range() const { return zmax_ - zmin_; }

  /// Moments at λ; writes e_k into `e_out` (a column of the gradient) unless
  /// it is NoGrad. With Full = false only S0 is formed.
  template <bool Full, class E>
  Moments<Acc> moments(Scalar lambda, E& e_out) const {
    const Scalar inv = Scalar(1) / lambda;
    if (scaling_ != LogitScaling::None) return scored_moments<Full>(inv, e_out);
    if constexpr (Full)
      return raw_moments(inv, e_out);
    else
      return raw_s0(inv, e_out);
  }

  /// Turns e (stored in `g` by moments()) into factor·∂ψ/∂logits, where
  /// ∂ψ/∂f = G = e/S0 − e_y. With a scaling f = t(s)/m, m = mean_k |t(s_k)|
  /// (Softplus: t = softplus, t' = σ, ∂m/∂s_j = σ(s_j)/C; MeanAbs: t = s,
  /// t' = 1, ∂m/∂s_j = sign(s_j)/C):
  ///   ∂ψ/∂s_j = (1/m)·(t'(s_j)·G_j − ∂m/∂s_j·Σ_k G_k f_k).
  template <class G>
  void finish_gradient(G&& g, Acc s0, Scalar factor) const {
    if (scaling_ == LogitScaling::None) {
      raw_gradient(g, y_, s0, factor);
      return;
    }
    // Σ_k G_k f_k = (Σ_k e_k f_k)/S0 − f_y.
    Buffer t;
    Acc ef = 0;
    for (Eigen::Index start = 0; start < c_; start += kBlock) {
      const Eigen::Index len = std::min(kBlock, c_ - start);
      unscaled_block(start, len, t);
      ef += static_cast<Acc>((g.segment(start, len).array() * t).sum());
    }
    const Scalar d = Scalar((ef * Acc(inv_mean_) / s0 - Acc(f_y_)) / Acc(c_));
    const Scalar p_scale = Scalar(Acc(1) / s0), outer = factor * pre_ * inv_mean_;
    for (Eigen::Index start = 0; start < c_; start += kBlock) {
      const Eigen::Index len = std::min(kBlock, c_ - start);
      auto gs = g.segment(start, len).array();
      if (scaling_ == LogitScaling::Softplus)
        gs = outer * s_.segment(start, len).array().logistic() * (gs * p_scale - d);
      else
        gs = outer * (gs * p_scale - sign_block(start, len) * d);
    }
    const Scalar sy = s_.coeff(y_);
    g.coeffRef(y_) -= outer * (scaling_ == LogitScaling::Softplus ? sigmoid(sy) : Scalar(1));
  }

  /// Without scaling: ∂ψ/∂s = e/S0 − e_y, times factor, from e in g.
  template <class G>
  static void raw_gradient(G&& g, Eigen::Index y, Acc s0, Scalar factor) {
    g.array() *= Scalar(Acc(factor) / s0);
    g.coeffRef(y) -= factor;
  }

  /// KL(q, u) of the official code's smoothed distribution
  /// q = (softmax(z/λ) + δ)/(1 + C·δ) (ALDRKLState's step), clamped to [0, log C].
  Acc smoothed_kl(Scalar lambda, Scalar delta) const {
    using std::exp;
    NoGrad none;
    const Acc s0 = moments<false>(lambda, none).s0;
    const Scalar inv = Scalar(1) / lambda, e_y = exp(-zmax_ * inv);
    const Scalar p_scale = Scalar(Acc(1) / s0), q_scale = Scalar(Acc(1) / (Acc(1) + Acc(c_) * Acc(delta)));
    const Scalar c = Scalar(c_);
    Acc kl = 0;
    Buffer e;
    for (Eigen::Index start = 0; start < c_; start += kBlock) {
      const Eigen::Index len = std::min(kBlock, c_ - start);
      e.resize(len);
      exp_block(start, len, inv, e_y, e);
      e = (e * p_scale + delta) * q_scale;  // q
      // 0·log 0 = 0 (q = 0 only with δ = 0): the log's argument is kept >= the
      // smallest normal number, which keeps the pass vectorised (no select).
      kl += static_cast<Acc>((e * (e * c).max(std::numeric_limits<Scalar>::min()).log()).sum());
    }
    return std::min(std::max(kl, Acc(0)), log_c_);
  }

 private:
  // Runs f(start, len, e) over the column block by block, e the block's
  // slice of the gradient column (kFastBlock long), or with NoGrad an
  // L1-sized buffer (kBlock long).
  template <class E, class F>
  void blocks(E& e_out, F&& f) const {
    if constexpr (wants_grad<E>) {
      for (Eigen::Index start = 0; start < c_; start += kFastBlock) {
        const Eigen::Index len = std::min(kFastBlock, c_ - start);
        f(start, len, e_out.segment(start, len).array());
      }
    } else {
      Buffer e;
      for (Eigen::Index start = 0; start < c_; start += kBlock) {
        const Eigen::Index len = std::min(kBlock, c_ - start);
        e.resize(len);
        f(start, len, e);
      }
    }
  }

  // LDR-KL on raw logits: exp straight from the logits into the gradient,
  // no score buffer (the hot path; as cheap as softmax).
  template <class E>
  Moments<Acc> raw_s0(Scalar inv, E& e_out) const {
    using std::exp;
    Moments<Acc> m;
    const Scalar e_y = exp(-zmax_ * inv);
    blocks(e_out,
           [&](Eigen::Index start, Eigen::Index len, auto&& e) { m.s0 += raw_block_exp(start, len, inv, e_y, e); });
    return m;
  }

  // ALDR-KL on raw logits: the same, with S1 and S2 formed while the block
  // is in L1. The target's entry is corrected afterwards.
  template <class E>
  Moments<Acc> raw_moments(Scalar inv, E& e_out) const {
    using std::exp;
    Moments<Acc> m;
    const Scalar e_y = exp(-zmax_ * inv);
    const Scalar w_y_wrong = std::max(s_.coeff(y_) - shift_, Scalar(-kBig));
    blocks(e_out, [&](Eigen::Index start, Eigen::Index len, auto&& e) { raw_block_moments(start, len, inv, e_y, e, m); });
    m.s1 += Acc(e_y) * (Acc(-zmax_) - Acc(w_y_wrong));
    m.s2 += Acc(e_y) * (Acc(zmax_) * Acc(zmax_) - Acc(w_y_wrong) * Acc(w_y_wrong));
    return m;
  }

  // One block of raw_moments: e (raw_block_fill), then S0, S1 and S2 while
  // the block is in L1. Flattened (see LOSSKIT_FLATTEN): without it GCC left
  // the reductions out of line, 1.15× slower at C = 1000. The moments use
  // w = s − shift for every entry, with −inf clamped to a finite stand-in so
  // that e·w stays 0, not NaN.
  template <class EB>
  LOSSKIT_FLATTEN void raw_block_moments(Eigen::Index start, Eigen::Index len, Scalar inv, Scalar e_y, EB& e,
                                         Moments<Acc>& m) const {
    const auto w = (s_.segment(start, len).array() - shift_).max(Scalar(-kBig));
    raw_block_fill(start, len, inv, e_y, e);
    m.s0 += static_cast<Acc>(e.sum());
    m.s1 += static_cast<Acc>((e * w).sum());
    m.s2 += static_cast<Acc>((e * w.square()).sum());
  }

  // e = exp(w/λ) over one block, whatever the scaling (a second pass over
  // e, as smoothed_kl makes).
  void exp_block(Eigen::Index start, Eigen::Index len, Scalar inv, Scalar e_y, Buffer& e) const {
    if (scaling_ == LogitScaling::None) {
      raw_block_fill(start, len, inv, e_y, e);
      return;
    }
    Buffer w;
    scores_block(start, len, w);
    e = (w * inv).exp();
  }

  // e = exp((s − shift)/λ) over one block with e_y = exp(−max z/λ) at the
  // target; returns Σ e. Every non-target w = s − shift is <= 0 (shift holds
  // max z), but its rounding error (about ε·|shift|) is multiplied by 1/λ:
  // the exponent is clamped at 0 so that a tiny λ cannot make exp overflow
  // (found by fuzzing, λ = 1e-30). raw_block_fill writes e, raw_block_exp
  // also returns its sum.
  template <class EB>
  LOSSKIT_FLATTEN Acc raw_block_exp(Eigen::Index start, Eigen::Index len, Scalar inv, Scalar e_y, EB& e) const {
    raw_block_fill(start, len, inv, e_y, e);
    return static_cast<Acc>(e.sum());
  }
  template <class EB>
  void raw_block_fill(Eigen::Index start, Eigen::Index len, Scalar inv, Scalar e_y, EB& e) const {
    e = ((s_.segment(start, len).array() - shift_).min(Scalar(0)) * inv).exp();
    if (y_ >= start && y_ < start + len) e(y_ - start) = e_y;
  }

  // Normalised scores: formed block by block into a buffer, then the
  // moments (and e into the gradient when wanted).
  template <bool Full, class E>
  Moments<Acc> scored_moments(Scalar inv, E& e_out) const {
    Moments<Acc> m;
    Buffer w, e;
    for (Eigen::Index start = 0; start < c_; start += kBlock) {
      const Eigen::Index len = std::min(kBlock, c_ - start);
      scores_block(start, len, w);
      e = (w * inv).exp();
      // A −inf score has weight 0 at every λ; finite stand-in keeps e·w and e·w² at 0, not NaN.
      if constexpr (Full) w = (w == -kInf).select(Scalar(-kBig), w);
      m.s0 += static_cast<Acc>(e.sum());
      if constexpr (Full) {
        m.s1 += static_cast<Acc>((e * w).sum());
        m.s2 += static_cast<Acc>((e * w.square()).sum());
      }
      if constexpr (wants_grad<E>) e_out.segment(start, len).array() = e;
    }
    (void)e_out;
    return m;
  }

  // The scaling's mean m (as inv_mean_ = 1/m): softplus, or |s| prescaled
  // by the power of two pre_ that brings max |s| into [1, 2), so the sum
  // neither overflows nor loses denormal columns. MeanAbs: an all-zero
  // column gives inv_mean_ = 0 (f ≡ 0), a non-finite logit NaN.
  void init_scaling() {
    if (scaling_ == LogitScaling::MeanAbs) {
      // A NaN that maxCoeff skips still makes the total below NaN.
      const Scalar amax = s_.cwiseAbs().maxCoeff();
      if (amax == Scalar(0)) {
        inv_mean_ = 0;
        return;
      }
      if (!(amax < kInf)) {
        inv_mean_ = std::numeric_limits<Scalar>::quiet_NaN();
        return;
      }
      const int e = std::min(-std::ilogb(amax), std::numeric_limits<Scalar>::max_exponent - 1);
      pre_ = std::ldexp(Scalar(1), e);
    }
    Acc total = 0;
    Buffer buf;
    for (Eigen::Index start = 0; start < c_; start += kBlock) {
      const Eigen::Index len = std::min(kBlock, c_ - start);
      unscaled_block(start, len, buf);
      total += static_cast<Acc>(buf.abs().sum());
    }
    inv_mean_ = Scalar(Acc(c_) / total);
  }

  Scalar score(Scalar s) const {
    switch (scaling_) {
      case LogitScaling::Softplus: return softplus(s) * inv_mean_;
      case LogitScaling::MeanAbs: return s * pre_ * inv_mean_;
      default: return s;
    }
  }

  // sign(s) over a block, vectorised: clamp(s·K·K, −1, 1) with K = 2^(emax − 1)
  // is ±1 for every nonzero finite s (even the smallest denormal) and 0 at 0
  // (Eigen's sign() is a scalar loop).
  auto sign_block(Eigen::Index start, Eigen::Index len) const {
    constexpr Scalar k = Scalar(1) / (std::numeric_limits<Scalar>::min() * Scalar(2));
    return (s_.segment(start, len).array() * k * k).max(Scalar(-1)).min(Scalar(1));
  }

  // t(s) over a block: softplus(s), or pre·s (f = t·inv_mean_).
  void unscaled_block(Eigen::Index start, Eigen::Index len, Buffer& out) const {
    if (scaling_ == LogitScaling::Softplus)
      out = s_.segment(start, len).array().max(Scalar(0)) + (-s_.segment(start, len).array().abs()).exp().log1p();
    else
      out = s_.segment(start, len).array() * pre_;
  }

  void scores_block(Eigen::Index start, Eigen::Index len, Buffer& w) const {
    if (scaling_ != LogitScaling::None) {
      unscaled_block(start, len, w);
      w = w * inv_mean_ - shift_;
    } else {
      w = s_.segment(start, len).array() - shift_;
    }
    w = w.min(Scalar(0));
    // z_y = 0 exactly (the margin is not applied to the target class).
    if (y_ >= start && y_ < start + len) w(y_ - start) = -zmax_;
  }

  const Col& s_;
  Eigen::Index y_, c_;
  LogitScaling scaling_;
  Acc log_c_ = 0;
  Scalar inv_mean_ = 1, pre_ = 1, zmax_ = 0, zmin_ = 0, shift_ = 0, f_y_ = 0;
};

/// λ·lse_u(z/λ) of one column at a given λ; unless grad is NoGrad,
/// factor·∂/∂logits of it into grad (LDR-KL, and ALDR-KL's stateful calls).
template <class Scalar, class Col, class G>
acc_t<Scalar> fixed_lambda_close(const Column<Scalar, Col>& col, Scalar lambda, acc_t<Scalar> s0, Scalar factor,
                                 G&& grad);

template <class Scalar, class Col, class G>
acc_t<Scalar> fixed_lambda(const Column<Scalar, Col>& col, Scalar lambda, Scalar factor, G&& grad) {
  using std::log;
  using Acc = acc_t<Scalar>;
  const Moments<Acc> m = col.template moments<false>(lambda, grad);
  return fixed_lambda_close(col, lambda, m.s0, factor, grad);
}

/// fixed_lambda's last step, shared with LDRKL's blocks of columns: ψ from
/// S0, and the stored e turned into the gradient.
template <class Scalar, class Col, class G>
acc_t<Scalar> fixed_lambda_close(const Column<Scalar, Col>& col, Scalar lambda, acc_t<Scalar> s0, Scalar factor,
                                 G&& grad) {
  if constexpr (wants_grad<G>) col.finish_gradient(grad, s0, factor);
  (void)factor;
  return Column<Scalar, Col>::value(col.zmax(), lambda, s0, col.log_classes());
}

/// ALDR-KL's objective at one λ, and the safeguarded Newton step on
/// φ = T − λ: the one home of both, for AdaptiveSolver and for ALDRKL's
/// blocks of columns (which run the concave case for many columns at once).
template <class Scalar>
struct Objective {
  using Acc = acc_t<Scalar>;
  static constexpr int kMaxNewton = 40;

  struct Point {
    Acc lam, g, phi, var;  // λ, g(λ), T(λ) − λ, Var_{softmax(z/λ)}(z)
  };
  /// How a column is solved: g flat in λ's sense (KL ≡ 0: all z equal or
  /// C = 1, so T ≡ λ0 and λ* = λ0), concave on I (Popoviciu), or neither.
  enum class Shape { Flat, Concave, General };

  Objective(Scalar lambda0_, Scalar alpha, Acc log_classes)
      : lambda0(lambda0_), log_c(log_classes), a(Acc(alpha) * log_classes / Acc(lambda0_)),
        lo(Acc(lambda0_) * (Acc(1) - Acc(1) / Acc(alpha))),
        tol_lam(16 * Acc(std::numeric_limits<Scalar>::epsilon()) * Acc(lambda0_)) {}

  Scalar lambda0;
  Acc log_c, a, lo, tol_lam;

  Shape shape(Scalar range_s, Eigen::Index classes) const {
    const Acc range = Acc(range_s);
    if (!(range > 0) || classes == 1) return Shape::Flat;
    return range * range / 4 <= a * lo * lo * lo ? Shape::Concave : Shape::General;
  }

  /// The point at λ (as the exp pass used it, rounded to Scalar) from the
  /// moments there; zmax is the column's max z.
  Point at(Acc lam, const Moments<Acc>& m, Scalar zmax) const {
    using std::log;
    lam = Acc(Scalar(lam));
    const Acc ls = log(m.s0), mean = m.s1 / m.s0;
    const Acc var = std::max(m.s2 / m.s0 - mean * mean, Acc(0));
    const Acc kl = std::min(std::max(log_c - ls + mean / lam, Acc(0)), log_c);
    const Acc d = lam - Acc(lambda0);
    return {lam, Acc(zmax) + lam * (ls - log_c) - a / 2 * d * d, Acc(lambda0) - kl / a - lam, var};
  }

  /// One Newton step from p inside the bracket [l, r] (φ(l) ≥ 0 ≥ φ(r)),
  /// which p narrows: the next λ to evaluate, or NaN when p is the answer
  /// (φ = 0, or the step or the bracket below tol_lam). Bisects when the
  /// step leaves the bracket.
  Acc newton_step(const Point& p, Acc& l, Acc& r) const {
    const Acc stop = std::numeric_limits<Acc>::quiet_NaN();
    if (p.phi > 0)
      l = p.lam;
    else if (p.phi < 0)
      r = p.lam;
    else
      return stop;
    const Acc slope = p.var / (a * p.lam * p.lam * p.lam) - 1;  // φ'(λ)
    Acc next = slope < 0 ? p.lam - p.phi / slope : l - 1;
    if (!(next > l && next < r)) next = (l + r) / 2;
    if (!(std::abs(next - p.lam) > tol_lam) || !(r - l > tol_lam)) return stop;
    return next;
  }
};

/// Solves max_{λ ∈ [λ0(1 − 1/α), λ0]} g(λ) for one column (see ALDRKL).
template <class Scalar, class Col, class E>
class AdaptiveSolver {
 public:
  using Acc = acc_t<Scalar>;
  using Obj = Objective<Scalar>;
  using Point = typename Obj::Point;
  static constexpr int kMaxEvaluations = 64;

  struct Result {
    Acc lambda, value, s0;
  };

  AdaptiveSolver(const Column<Scalar, Col>& col, Scalar lambda0, Scalar alpha, E& e_out)
      : col_(col), e_(e_out), obj_(lambda0, alpha, col.log_classes()) {
    const Acc eps = Acc(std::numeric_limits<Scalar>::epsilon());
    tol_g_ = 16 * eps * (std::abs(Acc(col.zmax())) + Acc(col.range()) + Acc(lambda0) * obj_.log_c);
  }

  Result solve() {
    Point best;
    switch (obj_.shape(col_.range(), col_.classes())) {
      case Obj::Shape::Flat: best = evaluate(Acc(obj_.lambda0)); break;
      case Obj::Shape::Concave: best = newton(obj_.lo, Acc(obj_.lambda0), Acc(obj_.lambda0), nullptr); break;
      default: best = branch_and_bound();
    }
    if (best.lam != last_lam_) evaluate(best.lam);  // leaves e of λ* in the gradient column
    return {best.lam, best.g, last_s0_};
  }

 private:
  Point evaluate(Acc lam) {
    ++evaluations_;
    const Moments<Acc> m = col_.template moments<true>(Scalar(lam), e_);
    const Point p = obj_.at(lam, m, col_.zmax());
    last_lam_ = p.lam;
    last_s0_ = m.s0;
    return p;
  }

  /// Safeguarded Newton on φ = T − λ inside [l, r] with φ(l) ≥ 0 ≥ φ(r),
  /// from x (already evaluated if `at_x` is given). Returns the last point
  /// evaluated, a down-crossing of φ (a local maximum of g) to tolerance.
  Point newton(Acc l, Acc r, Acc x, const Point* at_x) {
    Point p = at_x ? *at_x : evaluate(x);
    for (int it = 0; it < Obj::kMaxNewton; ++it) {
      const Acc next = obj_.newton_step(p, l, r);
      if (std::isnan(next) || evaluations_ >= kMaxEvaluations) return p;
      p = evaluate(next);
    }
    return p;
  }

  // Upper bound of g'' on [u.lam, v.lam]: Var_λ ≤ exp(R·(1/u − 1/v))·Var at
  // either end (the softmax weights change by at most that factor), and
  // Var ≤ R²/4 (Popoviciu).
  Acc curvature_bound(const Point& u, const Point& v) const {
    using std::exp;
    const Acc range = Acc(col_.range());
    const Acc spread = range * (1 / u.lam - 1 / v.lam);
    Acc var = range * range / 4;
    if (spread < 50) var = std::min(var, exp(spread) * std::min(u.var, v.var));
    return var / (u.lam * u.lam * u.lam) - obj_.a;
  }

  // Upper bound of g on [u, v] from g' = a(T − λ) with T non-decreasing
  // (T(u) ≤ T ≤ T(v) inside) and from g'' ≤ m.
  Acc upper_bound(const Point& u, const Point& v, Acc m) const {
    const Acc w = v.lam - u.lam, tu = u.phi + u.lam, tv = v.phi + v.lam;
    const Acc xl = std::min(std::max(tv, u.lam), v.lam), xr = std::min(std::max(tu, u.lam), v.lam);
    Acc ub = std::min(u.g + obj_.a * (xl - u.lam) * (tv - (xl + u.lam) / 2),
                      v.g + obj_.a * (v.lam - xr) * ((v.lam + xr) / 2 - tu));
    const Acc du = obj_.a * u.phi, dv = obj_.a * v.phi;  // g'(u), g'(v)
    if (m < 0) {
      const Acc tu_peak = du > 0 ? std::min(du / -m, w) : Acc(0);
      const Acc tv_peak = dv < 0 ? std::min(-dv / -m, w) : Acc(0);
      ub = std::min(ub, u.g + du * tu_peak + m / 2 * tu_peak * tu_peak);
      ub = std::min(ub, v.g - dv * tv_peak + m / 2 * tv_peak * tv_peak);
    } else {
      ub = std::min(ub, std::max(u.g, u.g + du * w + m / 2 * w * w));
      ub = std::min(ub, std::max(v.g, v.g - dv * w + m / 2 * w * w));
    }
    return ub;
  }

  Point branch_and_bound() {
    struct Node {
      Point u, v;
    };
    std::array<Node, 2 * kMaxEvaluations + 2> stack;
    std::size_t top = 0;
    const Point lo = evaluate(obj_.lo), hi = evaluate(Acc(obj_.lambda0));
    Point best = lo.g >= hi.g ? lo : hi;
    stack[top++] = {lo, hi};
    while (top > 0) {
      const Node node = stack[--top];
      const Point &u = node.u, &v = node.v;
      if (!(v.lam - u.lam > obj_.tol_lam)) continue;
      const Acc m = curvature_bound(u, v);
      const Acc ub = upper_bound(u, v, m);
      if (!(ub > best.g + tol_g_)) {
        // Nothing better than `best` here, but a down-crossing of φ next to
        // it is the stationary point `best` approximates: land on it.
        if (u.phi > 0 && v.phi < 0 && (u.lam == best.lam || v.lam == best.lam) && evaluations_ < kMaxEvaluations) {
          const Point p = newton(u.lam, v.lam, best.lam, &best);
          if (p.g >= best.g - tol_g_) best = p;
        }
        continue;
      }
      if (m <= 0) {
        // Concave here: the only candidate is the stationary point inside.
        if (u.phi > 0 && v.phi < 0) {
          const Point p = newton(u.lam, v.lam, u.g >= v.g ? u.lam : v.lam, u.g >= v.g ? &u : &v);
          if (p.g > best.g) best = p;
        }
        continue;
      }
      if (evaluations_ >= kMaxEvaluations) continue;
      const Point mid = evaluate((u.lam + v.lam) / 2);
      if (mid.g > best.g) best = mid;
      stack[top++] = {mid, v};
      stack[top++] = {u, mid};
    }
    return best;
  }

  const Column<Scalar, Col>& col_;
  E& e_;
  Obj obj_;
  Acc tol_g_ = 0;
  Acc last_lam_ = std::numeric_limits<Acc>::quiet_NaN(), last_s0_ = 1;
  int evaluations_ = 0;
};

}  // namespace ldr
}  // namespace detail

// ---------------------------------------------------------------------------

/// LDR-KL: ψ = λ·log((1/C)·Σ_k exp(z_k/λ)), z_k = c·[k ≠ y] + f_k − f_y.
/// See the top of this file for the gradient, limits and non-finite
/// behaviour; the calls (logits, labels[, sample_weights]) come from
/// detail::ColumnLoss (core/functor.hpp).
template <class Scalar_>
class LDRKL : public detail::ColumnLoss<LDRKL<Scalar_>, Scalar_> {
  friend detail::ColumnLoss<LDRKL, Scalar_>;

 public:
  using Scalar = Scalar_;

  Scalar lambda = Scalar(1);    ///< λ > 0: weight of the KL regulariser (softmax temperature)
  Scalar margin = Scalar(0.1);  ///< c: added to every non-target score (the paper's experiments use 0.1)
  LogitScaling logit_scaling = LogitScaling::None;  ///< map from logits s to scores f (see the top of the file)

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "LDRKL";

  struct Context {
    bool raw;  ///< no logit scaling
  };

  template <class X, class L>
  Context prepare(const X& logits, const L& labels) const {
    detail::check_positive(kName, "lambda", lambda);
    detail::ldr::check_inputs(kName, margin, logit_scaling, logits, labels);
    return {logit_scaling == LogitScaling::None};
  }

  template <class X, class L, class G>
  Acc column(Context, const X& logits, const L& labels, Eigen::Index j, Scalar factor, G&& grad) const {
    const auto sc = logits.col(j);
    const detail::ldr::Column<Scalar, decltype(sc)> col(sc, Eigen::Index(labels.coeff(j)), margin, logit_scaling,
                                                        false);
    return detail::ldr::fixed_lambda(col, lambda, factor, grad);
  }

  static constexpr Eigen::Index kBlockRows = 128;
  static bool blocked(Context ctx) { return ctx.raw; }

  // Columns [j0, j0 + count) of contiguous logits without scaling (small C),
  // what fixed_lambda does per column, vectorised over the block: hi = the
  // column maxima with the labels set to −inf, Column::peak per column, one
  // exp pass (the exponent clamped at 0 as in raw_block_exp), e_y =
  // exp(−max z/λ) put at the labels, S0 = the column sums. A column with a
  // non-finite logit goes through column() (Column's NaN and inf rules).
  template <class X, class L, class W, class G>
  Acc columns(Context ctx, const X& x, const L& labels, Eigen::Index j0, Eigen::Index count, const W& s,
              Scalar factor, G& g) const {
    using Block = detail::ColumnBlock<Scalar, G>;
    using Col = detail::ldr::Column<Scalar, decltype(x.col(0))>;
    Block b(x, g, j0, count);
    const typename Block::Row x_sums = b.x.array().colwise().sum();  // non-finite iff a logit is
    b.e = b.x;
    for (Eigen::Index j = 0; j < count; ++j) b.e(Eigen::Index(labels.coeff(j0 + j)), j) = -Col::kInf;
    const typename Block::Row hi = b.e.array().colwise().maxCoeff();
    typename Block::Row shift(count), zmax(count);
    for (Eigen::Index j = 0; j < count; ++j) {
      const auto p = Col::peak(hi(j), b.x(Eigen::Index(labels.coeff(j0 + j)), j), margin, true);
      zmax(j) = p.zmax;  // (C = 1: hi = −inf, so zmax = 0 and shift = f_y − margin, as Column has)
      shift(j) = p.shift;
    }
    const Scalar inv = Scalar(1) / lambda;
    b.template exp<true>(shift, inv);
    const typename Block::Row e_y = (-zmax * inv).exp();
    for (Eigen::Index j = 0; j < count; ++j) b.e(Eigen::Index(labels.coeff(j0 + j)), j) = e_y(j);
    const typename Block::Row s0 = b.sums();
    const Acc log_c = std::log(Acc(x.rows()));
    auto exact = [&](Eigen::Index j) { return !std::isfinite(x_sums(j)); };
    auto by_column = [&](Eigen::Index col, Scalar f, auto&& grad) { return column(ctx, x, labels, col, f, grad); };
    auto close = [&](Eigen::Index j, Scalar f, auto&& grad) {
      if constexpr (detail::wants_grad<decltype(grad)>)
        Col::raw_gradient(grad, Eigen::Index(labels.coeff(j0 + j)), Acc(s0(j)), f);
      (void)f;
      return Col::value(zmax(j), lambda, Acc(s0(j)), log_c);
    };
    return b.template close_columns<Acc>(j0, s, factor, exact, by_column, close);
  }
};

/// One λ per training example for ALDRKL's stateful calls, the official
/// code's ALDRLoss_V1 buffer: every λ starts at lambda0, and each call
/// `aldr(logits, labels, ids, state)` replaces λ of the batch's examples by
/// one fixed-point step. A state is mutated by the calls that take it: one
/// state must not be used by concurrent calls (the functor may be).
template <class Scalar_>
class ALDRKLState {
 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static_assert(std::is_floating_point<Scalar>::value, "losskit: ALDRKLState's Scalar must be float or double");

  /// num_examples >= 1 examples, each λ = lambda0 (finite, > 0).
  ALDRKLState(Eigen::Index num_examples, Scalar lambda0) : lambda0_(lambda0) {
    if (num_examples < 1) detail::fail(kName, "num_examples", "must be >= 1, got ", num_examples);
    detail::check_positive(kName, "lambda0", lambda0);
    lambdas_ = Vector::Constant(num_examples, lambda0);
  }

  Eigen::Index num_examples() const { return lambdas_.size(); }
  Scalar lambda0() const { return lambda0_; }
  /// λ of every example (the value the last call that visited it stored).
  const Vector& lambdas() const { return lambdas_; }

  /// Restores saved λs (a checkpoint): length num_examples, each finite and > 0.
  template <class V>
  void set_lambdas(const Eigen::DenseBase<V>& lambdas) {
    detail::check_vector_length(kName, "lambdas", lambdas, num_examples());
    for (Eigen::Index i = 0; i < num_examples(); ++i) {
      const Scalar v = lambdas.derived().coeff(i);
      if (!(v > Scalar(0)) || !std::isfinite(v))
        detail::fail(kName, "lambdas", "lambda ", v, " of example ", i, " must be finite and > 0");
    }
    lambdas_ = lambdas.derived().template cast<Scalar>();
  }

 private:
  template <class>
  friend class ALDRKL;
  static constexpr const char* kName = "ALDRKLState";
  Vector lambdas_, pending_;  // pending_: the batch's new λ before they are stored
  Scalar lambda0_;
};

/// ALDR-KL: ψ = max_{λ ∈ [λ0(1 − 1/α), λ0]} λ·lse_u(z/λ) − (a/2)(λ − λ0)²,
/// a = α·log C/λ0. See the top of this file for the solver and its
/// tolerance, and for the stateful calls (ids, ALDRKLState) that follow the
/// official code's per-example λ instead; the stateless calls come from
/// detail::ColumnLoss, as for LDRKL.
template <class Scalar_>
class ALDRKL : public detail::ColumnLoss<ALDRKL<Scalar_>, Scalar_> {
  friend detail::ColumnLoss<ALDRKL, Scalar_>;
  using Base = detail::ColumnLoss<ALDRKL<Scalar_>, Scalar_>;

 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using State = ALDRKLState<Scalar>;

  Scalar lambda0 = Scalar(10);  ///< λ0 > 0: upper end of λ's range and centre of its penalty
  Scalar alpha = Scalar(2);     ///< α > 1: penalty strength; λ* ∈ [λ0(1 − 1/α), λ0]
  Scalar margin = Scalar(0.1);  ///< c: added to every non-target score
  LogitScaling logit_scaling = LogitScaling::None;  ///< map from logits s to scores f (see the top of the file)
  /// δ >= 0: the stateful step's smoothing softmax + δ, renormalised (official code: 1e-5); unused otherwise.
  Scalar kl_smoothing = Scalar(1e-5);

  using Base::operator();
  using Base::value_and_gradient;

  /// Stateful call (official code): one fixed-point step of λ for each
  /// sample's example ids(j), stored in `state`, and the loss at those λ.
  template <class P, class L, class I>
  Scalar operator()(const Eigen::DenseBase<P>& logits, const Eigen::DenseBase<L>& labels,
                    const Eigen::DenseBase<I>& ids, State& state) const {
    return stateful(logits, labels, ids, state, NoGrad{});
  }

  /// The same, and its gradient with the new λ held fixed (the code detaches λ).
  template <class P, class L, class I, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<P>& logits, const Eigen::DenseBase<L>& labels,
                            const Eigen::DenseBase<I>& ids, State& state, const Eigen::DenseBase<G>& grad) const {
    return stateful(logits, labels, ids, state, grad);
  }

  /// The per-sample maximiser λ* (diagnostics): λ* ∈ [λ0(1 − 1/α), λ0],
  /// the weight the adversarial label distribution was regularised with.
  template <class P, class L>
  Vector lambda_star(const Eigen::DenseBase<P>& logits, const Eigen::DenseBase<L>& labels) const {
    detail::require_scalar<Scalar, P>();
    const detail::eval_t<P> x(logits.derived());
    const detail::eval_t<L> y(labels.derived());
    prepare(x, y);
    Vector out(x.cols());
    detail::column_for(x.cols(), x.rows(), [&](Eigen::Index j) {
      out(j) = static_cast<Scalar>(solve(x, y, j, Scalar(1), NoGrad{}).lambda);
    });
    return out;
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "ALDRKL";

  struct Context {
    bool raw;  ///< no logit scaling
  };

  template <class X, class L>
  Context prepare(const X& logits, const L& labels) const {
    detail::check_positive(kName, "lambda0", lambda0);
    if (!(alpha > Scalar(1)) || !std::isfinite(static_cast<double>(alpha)))
      detail::fail(kName, "alpha", "must be finite and > 1 (else λ's range reaches 0), got ", alpha);
    detail::ldr::check_inputs(kName, margin, logit_scaling, logits, labels);
    return {logit_scaling == LogitScaling::None};
  }

  template <class X, class L, class G>
  Acc column(Context, const X& logits, const L& labels, Eigen::Index j, Scalar factor, G&& grad) const {
    return solve(logits, labels, j, factor, grad).value;
  }

  static constexpr Eigen::Index kBlockRows = 128;
  static bool blocked(Context ctx) { return ctx.raw; }

  // One column's state in a block: the Newton bracket, g and S0 at its last
  // λ, and whether it still steps (or goes through column() instead).
  struct BlockColumn {
    Acc l, r, g, s0;
    bool stepping, flat, exact;
  };

  // Columns [j0, j0 + count) of contiguous logits without scaling (small C):
  // the solver's Flat and Concave cases (the usual ones) for the whole block
  // at once. Each pass is one exp over the block at every column's current
  // λ, the moments S0, S1, S2 as column sums, then each stepping column's
  // Newton step (Objective, the solver's own); a column that has stopped
  // keeps its λ, so later passes give it the same e. Columns of General
  // shape or with a non-finite logit go through column().
  template <class X, class L, class W, class G>
  Acc columns(Context ctx, const X& x, const L& labels, Eigen::Index j0, Eigen::Index count, const W& s,
              Scalar factor, G& g) const {
    using Block = detail::ColumnBlock<Scalar, G>;
    using Row = typename Block::Row;
    using Col = detail::ldr::Column<Scalar, decltype(x.col(0))>;
    const detail::ldr::Objective<Scalar> obj(lambda0, alpha, std::log(Acc(x.rows())));
    Block b(x, g, j0, count);
    auto label = [&](Eigen::Index j) { return Eigen::Index(labels.coeff(j0 + j)); };
    Row zmax(count), shift(count);
    Eigen::Array<Scalar, detail::kColumnBlockElements, 1> w_store;
    Eigen::Map<typename Block::Mat> w(w_store.data(), x.rows(), count);
    std::array<BlockColumn, detail::kColumnBlockElements> cols;
    const int stepping = block_start(obj, b, label, zmax, shift, w, cols);
    block_newton(obj, b, label, zmax, shift, w.array(), cols, stepping);
    auto exact = [&](Eigen::Index j) { return cols[std::size_t(j)].exact; };
    auto by_column = [&](Eigen::Index col, Scalar f, auto&& grad) { return column(ctx, x, labels, col, f, grad); };
    auto close = [&](Eigen::Index j, Scalar f, auto&& grad) {
      if constexpr (detail::wants_grad<decltype(grad)>) Col::raw_gradient(grad, label(j), cols[std::size_t(j)].s0, f);
      (void)f;
      return cols[std::size_t(j)].g;
    };
    return b.template close_columns<Acc>(j0, s, factor, exact, by_column, close);
  }

  // Per column of the block: max z and the exponent shift (Column::peak),
  // the range max z − min z and from it the shape, w = x − shift with the
  // label's entry −max z (Column's moments: z_y = 0), the initial bracket.
  // Returns the number of stepping columns.
  template <class Obj, class Block, class Label, class Row, class Wm, class Cols>
  int block_start(const Obj& obj, Block& b, Label&& label, Row& zmax, Row& shift, Wm& w, Cols& cols) const {
    using Col = detail::ldr::Column<Scalar, decltype(b.x.col(0))>;
    const Eigen::Index count = b.x.cols();
    const Row x_sums = b.x.array().colwise().sum();  // non-finite iff a logit is
    b.e = b.x;
    for (Eigen::Index j = 0; j < count; ++j) b.e(label(j), j) = -Col::kInf;
    const Row hi = b.e.array().colwise().maxCoeff();
    for (Eigen::Index j = 0; j < count; ++j) b.e(label(j), j) = Col::kInf;
    const Row lo = b.e.array().colwise().minCoeff();  // (+inf at C = 1, so min z = 0 as Column has)
    int stepping = 0;
    for (Eigen::Index j = 0; j < count; ++j) {
      const Scalar f_y = b.x(label(j), j);
      const auto p = Col::peak(hi(j), f_y, margin, true);
      zmax(j) = p.zmax;
      shift(j) = p.shift;
      const Scalar range = p.zmax - std::min(lo(j) + margin - f_y, Scalar(0));
      const auto shape = obj.shape(range, b.x.rows());
      const bool exact = !std::isfinite(x_sums(j)) || shape == Obj::Shape::General;
      cols[std::size_t(j)] = {obj.lo, Acc(lambda0), 0, 1, !exact, shape == Obj::Shape::Flat, exact};
      stepping += exact ? 0 : 1;
    }
    w.array() = (b.x.array().rowwise() - shift).max(Scalar(-Col::kBig));
    for (Eigen::Index j = 0; j < count; ++j) w(label(j), j) = -zmax(j);
    return stepping;
  }

  // The passes: every column starts at λ0 (the solver's Newton start; Flat
  // columns stop after it) and takes at most Objective::kMaxNewton steps.
  template <class Obj, class Block, class Label, class Row, class Wa, class Cols>
  void block_newton(const Obj& obj, Block& b, Label&& label, const Row& zmax, const Row& shift, const Wa& w,
                    Cols& cols, int stepping) const {
    Row lam = Row::Constant(b.x.cols(), lambda0);
    for (int pass = 0; stepping > 0; ++pass) {
      const Row inv = lam.inverse();
      b.exp_clamped(shift, inv);
      const Row e_y = (-zmax * inv).exp();
      for (Eigen::Index j = 0; j < b.x.cols(); ++j) b.e(label(j), j) = e_y(j);
      const Row s0 = b.sums(), s1 = (b.e.array() * w).colwise().sum(), s2 = (b.e.array() * w.square()).colwise().sum();
      for (Eigen::Index j = 0; j < b.x.cols(); ++j) {
        BlockColumn& c = cols[std::size_t(j)];
        if (!c.stepping) continue;
        const auto p = obj.at(Acc(lam(j)), {Acc(s0(j)), Acc(s1(j)), Acc(s2(j))}, zmax(j));
        c.g = p.g;
        c.s0 = Acc(s0(j));
        const Acc next = c.flat || pass == Obj::kMaxNewton ? Acc(NAN) : obj.newton_step(p, c.l, c.r);
        if (std::isnan(next)) {
          c.stepping = false;
          --stepping;
        } else {
          lam(j) = Scalar(next);
        }
      }
    }
  }

  // λ* and ψ of column j by the adaptive solver; unless grad is NoGrad,
  // factor·∂ψ/∂logits (the envelope gradient) into grad.
  template <class X, class L, class G>
  auto solve(const X& logits, const L& labels, Eigen::Index j, Scalar factor, G&& grad) const {
    const auto sc = logits.col(j);
    using Col = decltype(sc);
    const detail::ldr::Column<Scalar, Col> col(sc, Eigen::Index(labels.coeff(j)), margin, logit_scaling, true);
    detail::ldr::AdaptiveSolver<Scalar, Col, std::remove_reference_t<G>> solver(col, lambda0, alpha, grad);
    const auto r = solver.solve();
    if constexpr (detail::wants_grad<G>) col.finish_gradient(grad, r.s0, factor);
    (void)factor;
    return r;
  }

  // Every check of a stateful call, before anything (state included) is written.
  template <class X, class L, class I, class G>
  void check_stateful(const X& x, const L& y, const I& ids, const State& state, const G& grad) const {
    static_assert(std::is_integral<typename I::Scalar>::value, "losskit: ids must be an integer vector expression");
    prepare(x, y);
    detail::check_non_negative(kName, "kl_smoothing", kl_smoothing);
    if (state.lambda0() != lambda0)
      detail::fail(kName, "state", "was initialised with lambda0 = ", state.lambda0(), ", the loss has lambda0 = ",
                   lambda0);
    detail::check_vector_length(kName, "ids", ids, x.cols());
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      const long long id = static_cast<long long>(ids.coeff(j));
      if (id < 0 || id >= static_cast<long long>(state.num_examples()))
        detail::fail(kName, "ids", "id ", id, " at sample ", j, " is outside [0, ", state.num_examples(),
                     ") (the state's num_examples)");
    }
    if constexpr (detail::wants_grad<G>) detail::check_output(kName, "grad", grad, x.rows(), x.cols());
  }

  // The official step λ ← λ0·(1 − KL(q, u)/(α·log C)), q the smoothed
  // softmax(f/λ_old) of the scores without the margin (as the code does).
  template <class X, class L>
  Scalar step(const X& x, const L& y, Eigen::Index j, Scalar lambda_old) const {
    const auto sc = x.col(j);
    const detail::ldr::Column<Scalar, decltype(sc)> col(sc, Eigen::Index(y.coeff(j)), Scalar(0), logit_scaling, false);
    if (col.classes() == 1) return lambda0;  // KL ≡ 0 (the code's 0/0)
    const Acc kl = col.smoothed_kl(lambda_old, kl_smoothing);
    return Scalar(Acc(lambda0) * (Acc(1) - kl / (Acc(alpha) * col.log_classes())));
  }

  template <class P, class L, class I, class G>
  Scalar stateful(const Eigen::DenseBase<P>& logits, const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<I>& ids,
                  State& state, const G& grad) const {
    detail::require_scalar<Scalar, P>();
    if constexpr (detail::wants_grad<G>)
      static_assert(std::is_same<typename G::Scalar, Scalar>::value,
                    "losskit: the gradient output must have the loss's Scalar");
    const detail::eval_t<P> x(logits.derived());
    const detail::eval_t<L> y(labels.derived());
    const detail::eval_t<I> id(ids.derived());
    check_stateful(x, y, id, state, grad);
    const Eigen::Index n = x.cols();
    auto&& g = detail::prepare_grad(kName, "grad", grad, x.rows(), n);
    if (state.pending_.size() < n) state.pending_.resize(n);
    // Every step reads the old λ; then the writes in batch order, so a
    // duplicated id keeps its last sample's step (as self.Lambda[ids] = ...).
    detail::column_for(n, x.rows(), [&](Eigen::Index j) {
      state.pending_(j) = step(x, y, j, state.lambdas_(Eigen::Index(id.coeff(j))));
    });
    for (Eigen::Index j = 0; j < n; ++j)
      if (std::isfinite(state.pending_(j))) state.lambdas_(Eigen::Index(id.coeff(j))) = state.pending_(j);
    const Scalar factor = detail::reduction_factor<Scalar>(this->reduction, Acc(n));
    const Acc sum = detail::column_sum<Acc>(n, x.rows(), [&](Eigen::Index j) {
      const auto sc = x.col(j);
      const detail::ldr::Column<Scalar, decltype(sc)> col(sc, Eigen::Index(y.coeff(j)), margin, logit_scaling, false);
      const Acc lam = state.lambdas_(Eigen::Index(id.coeff(j))), a = Acc(alpha) * col.log_classes() / Acc(lambda0);
      return detail::ldr::fixed_lambda(col, Scalar(lam), factor, g.matrix().col(j)) -
             a / 2 * (lam - Acc(lambda0)) * (lam - Acc(lambda0));
    });
    return Scalar(sum * Acc(factor));
  }
};

}  // namespace losskit
