#pragma once
/// Softmax cross-entropy (with class weights, ignore_index, label smoothing
/// and the log²Z penalty) and binary cross-entropy with logits.
///
/// CrossEntropy<S> — logits x (C×N, samples are columns), p = softmax(x_i),
/// lse_i = log Σ_k exp(x_{k,i}) (max-shifted). Targets are either integer
/// labels y (length N, values in [0, C) or ignore_index) or probabilities q
/// (C×N). Class weights w (length C, default all 1), smoothing ε:
///
///   labels:        ℓ_i = (1−ε)·w_{y_i}·(lse_i − x_{y_i}) + (ε/C)·Σ_k w_k·(lse_i − x_{k,i})
///                  normaliser Σ_i w_{y_i} over samples with y_i != ignore_index
///   probabilities: q' = (1−ε)·q + ε/C,   ℓ_i = Σ_k w_k·q'_{k,i}·(lse_i − x_{k,i})
///                  normaliser N
///   penalty:       ℓz_i = z_loss · s_i · lse_i²,  s_i = w_{y_i} (labels) or 1 (probabilities)
///   Mean:          L = Σ_i (ℓ_i + ℓz_i) / normaliser     Sum: L = Σ_i (ℓ_i + ℓz_i)
///
/// This is PyTorch's cross_entropy exactly (weighted mean over non-ignored
/// samples; the smoothing term weighted per class k, not by w_{y_i}; soft
/// targets averaged over N). The penalty is the "z-loss" of PaLM (Chowdhery et
/// al., JMLR 2023) / Wortsman et al., "Small-scale proxies for large-scale
/// Transformer training instabilities", ICLR 2024; like T5X it is weighted
/// by the sample's weight and shares the cross-entropy normaliser. It is not
/// the spherical Z-loss of z_loss.hpp.
///
/// Gradient (t_i = the weighted target: (1−ε)w_y e_y + (ε/C)w, or w∘q'):
///   ∂L/∂x_i = f·[(Σ_k t_{k,i} + 2·z_loss·s_i·lse_i)·p_i − t_i],  f = 1/normaliser (Mean) or 1 (Sum).
///
/// Conventions: every sample ignored (or a zero normaliser) gives loss 0 and
/// a zero gradient (PyTorch gives NaN, Optax 0). Ignored columns are never
/// read, and get a zero gradient. For sharded / accumulated training use
/// Reduction::Sum and divide by the global normaliser: normaliser(target)
/// gives the local one, evaluate() returns it with the penalty's share.
///
/// Non-finite logits: −inf entries are valid: probability 0, and 0·log 0 = 0
/// where the target puts no mass there (+inf loss where it does). Their
/// gradient entries are ~3e-39 (float) / ~1e-308 (double) rather than 0,
/// because Eigen 3.4's vectorised exp floors there instead of underflowing.
/// A column whose largest logit is +inf or NaN, or whose logits are all −inf,
/// gives NaN loss and a NaN gradient column; any NaN logit gives NaN. Targets
/// are not checked for being a distribution: value and gradient hold for any q.
///
/// Cost: the logits are read once per column (chunked online max, Milakov &
/// Gimelshein 2018), one exp per element written into the gradient and
/// rescaled in place; columns run in parallel under OpenMP; no allocation.
///
/// BinaryCrossEntropyWithLogits<S> — logits x and targets t in [0, 1] (D×N),
/// optional pos_weight w_p (length D, default all 1), r = 1 + (w_p − 1)·t:
///   ℓ = (1 − t)·x + r·softplus(−x)      (PyTorch binary_cross_entropy_with_logits)
///   ∂ℓ/∂x = (1 − t) − r·σ(−x)            (= σ(x) − t without pos_weight)
///   Mean: (1/(D·N)) Σ ℓ;  Sum: Σ ℓ;  per_sample: column means (1/D) Σ_d ℓ.
/// Evaluated as r·log1p(e^{−|x|}) + [(1−t)·x if x ≥ 0 else w_p·t·(−x)], with
/// the gradient as ((1−t)·a − w_p·t·b)/(1 + e^{−|x|}), (a, b) = (1, e^{−|x|})
/// for x ≥ 0 and (e^{−|x|}, 1) otherwise: no cancellation, one exp per element,
/// finite for every finite x.
/// Infinite logits give the limits (not PyTorch's NaN): x = +inf → ℓ = +inf if
/// t < 1, 0 if t = 1, gradient 1 − t; x = −inf → ℓ = +inf if w_p·t > 0, else
/// 0, gradient −w_p·t. NaN logits give NaN. Targets outside [0, 1] or NaN
/// (checked), and pos_weight entries < 0 or non-finite, are an Error.
#include <Eigen/Core>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/checks.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"

namespace losskit {

template <class Scalar_>
class CrossEntropy {
 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static_assert(std::is_floating_point<Scalar>::value, "losskit::CrossEntropy: Scalar must be float or double");

  Reduction reduction = Reduction::Mean;
  Vector class_weights;            ///< length C, finite, >= 0; empty (default) = all 1
  long long ignore_index = -100;   ///< label value whose samples are skipped (PyTorch's default)
  Scalar label_smoothing = 0;      ///< ε in [0, 1]
  Scalar z_loss = 0;               ///< coefficient of the log²Z penalty, >= 0 (1e-4 is usual; 0 = off)

  /// The loss and its parts, each reduced like the loss.
  struct Result {
    Scalar loss = 0;           ///< cross_entropy + z_penalty: what operator() returns
    Scalar cross_entropy = 0;  ///< the cross-entropy part
    Scalar z_penalty = 0;      ///< the log²Z penalty's share (for logging)
    double normaliser = 0;     ///< Σ counted w_{y_i} (labels) or N (probabilities), whatever the reduction
  };

  /// target: integer labels (length N) or probabilities (C×N) of this Scalar.
  template <class X, class T>
  Scalar operator()(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& target) const {
    return evaluate(logits, target).loss;
  }

  template <class X, class T, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& target,
                            const Eigen::DenseBase<G>& grad) const {
    return evaluate(logits, target, grad).loss;
  }

  template <class X, class T>
  Result evaluate(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& target) const {
    check(logits, target);
    const detail::eval_t<X> x(logits.derived());
    const detail::eval_t<T> t(target.derived());
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> none;  // empty: no allocation
    return run<false>(x, t, none);
  }

  /// As above, and writes the gradient of result.loss into grad.
  template <class X, class T, class G>
  Result evaluate(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& target,
                  const Eigen::DenseBase<G>& grad) const {
    check(logits, target);
    detail::check_output("CrossEntropy", "grad", grad, logits.rows(), logits.cols());
    const detail::eval_t<X> x(logits.derived());
    const detail::eval_t<T> t(target.derived());
    G& g = detail::prepare_output("CrossEntropy", "grad", grad, logits.rows(), logits.cols());
    return run<true>(x, t, g);
  }

  /// Unreduced ℓ_i + ℓz_i (weighted as above; 0 for ignored samples), so that
  /// Σ per_sample / normaliser == the Mean loss.
  template <class X, class T>
  Vector per_sample(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& target) const {
    check(logits, target);
    const detail::eval_t<X> x(logits.derived());
    const detail::eval_t<T> t(target.derived());
    Vector out(x.cols());
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> none;
    const Acc total_w = weight_total(x.rows());
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      const Parts s = column<false>(x, t, none, j, Scalar(0), total_w);
      out(j) = static_cast<Scalar>(s.ce + s.z);
    }
    return out;
  }

  /// The local normaliser of a batch: Σ w_{y_i} over non-ignored labels, or
  /// the number of columns of probability targets. Labels are checked
  /// against class_weights' length when weights are set.
  template <class T>
  double normaliser(const Eigen::DenseBase<T>& target) const {
    if constexpr (std::is_integral<typename T::Scalar>::value) {
      const detail::eval_t<T> y(target.derived());
      detail::check_vector_length("CrossEntropy", "labels", y, y.size());
      check_weights(-1);
      if (class_weights.size() > 0) {
        detail::check_labels("CrossEntropy", y, y.size(), class_weights.size(), true, ignore_index);
      } else {
        for (Eigen::Index i = 0; i < y.size(); ++i) {
          const long long l = static_cast<long long>(y.coeff(i));
          if (l < 0 && l != ignore_index)
            detail::fail("CrossEntropy", "labels", "label ", l, " at sample ", i,
                         " is negative and is not ignore_index (", ignore_index, ")");
        }
      }
      return label_normaliser(y);
    } else {
      return static_cast<double>(target.cols());
    }
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr Eigen::Index kChunk = 1024;
  static constexpr Eigen::Index kMaxChunks = 64;

  struct Parts {
    Acc ce = 0, z = 0;
    Parts& operator+=(const Parts& o) {
      ce += o.ce;
      z += o.z;
      return *this;
    }
  };

  void check_weights(Eigen::Index classes) const {
    if (!(label_smoothing >= Scalar(0) && label_smoothing <= Scalar(1)))
      detail::fail("CrossEntropy", "label_smoothing", "must be in [0, 1], got ", label_smoothing);
    detail::check_non_negative("CrossEntropy", "z_loss", z_loss);
    if (class_weights.size() == 0) return;
    if (classes >= 0) detail::check_vector_length("CrossEntropy", "class_weights", class_weights, classes);
    for (Eigen::Index k = 0; k < class_weights.size(); ++k)
      if (!(class_weights(k) >= Scalar(0)) || !std::isfinite(class_weights(k)))
        detail::fail("CrossEntropy", "class_weights", "weight ", class_weights(k), " of class ", k,
                     " must be finite and >= 0");
  }

  template <class X, class T>
  void check(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& target) const {
    detail::require_scalar<Scalar, X>();
    detail::check_not_empty("CrossEntropy", "logits", logits);
    check_weights(logits.rows());
    if constexpr (std::is_integral<typename T::Scalar>::value) {
      detail::check_labels("CrossEntropy", target, logits.cols(), logits.rows(), true, ignore_index);
    } else {
      detail::require_scalar<Scalar, T>();
      detail::check_same_shape("CrossEntropy", "target", logits, target);
    }
  }

  /// Σ_k w_k (C without weights): the smoothing term's share of the target mass.
  Acc weight_total(Eigen::Index classes) const {
    return class_weights.size() > 0 ? Acc(class_weights.sum()) : Acc(classes);
  }

  template <class Y>
  double label_normaliser(const Y& y) const {
    Acc total(0);
    for (Eigen::Index i = 0; i < y.size(); ++i) {
      const long long l = static_cast<long long>(y.coeff(i));
      if (l == ignore_index) continue;
      total += class_weights.size() > 0 ? Acc(class_weights(static_cast<Eigen::Index>(l))) : Acc(1);
    }
    return static_cast<double>(total);
  }

  template <bool WithGrad, class X, class T, class G>
  Result run(const X& x, const T& t, G& g) const {
    Result r;
    if constexpr (std::is_integral<typename T::Scalar>::value)
      r.normaliser = label_normaliser(t);
    else
      r.normaliser = static_cast<double>(x.cols());
    const Scalar factor = detail::reduction_factor<Scalar>(reduction, Acc(r.normaliser));
    const Acc total_w = weight_total(x.rows());
    const Parts total = detail::column_sum<Parts>(x.cols(), x.rows(), [&](Eigen::Index j) {
      return column<WithGrad>(x, t, g, j, factor, total_w);
    });
    r.cross_entropy = static_cast<Scalar>(total.ce * Acc(factor));
    r.z_penalty = static_cast<Scalar>(total.z * Acc(factor));
    r.loss = static_cast<Scalar>((total.ce + total.z) * Acc(factor));
    return r;
  }

  /// Chunk length for a column of C logits: L1-sized, but at most kMaxChunks chunks.
  static Eigen::Index chunk_length(Eigen::Index C) {
    if (C <= kChunk * kMaxChunks) return kChunk;
    const Eigen::Index spread = ((C + kMaxChunks - 1) / kMaxChunks + 15) / 16 * 16;
    return std::max(kChunk, spread);
  }

  /// Asks for xc[begin, begin + len) to be brought into cache while the
  /// current chunk's exps run: the chunked max would otherwise wait on memory
  /// with nothing to overlap it. Only for inputs with direct access.
  template <class XC>
  static void prefetch(const XC& xc, Eigen::Index begin, Eigen::Index len) {
#if defined(__GNUC__) || defined(__clang__)
    if constexpr (bool(Eigen::internal::evaluator<XC>::Flags & Eigen::DirectAccessBit) &&
                  XC::InnerStrideAtCompileTime == 1) {
      const Eigen::Index end = std::min(begin + len, xc.size());
      constexpr Eigen::Index kLine = 64 / Eigen::Index(sizeof(Scalar));
      for (Eigen::Index i = begin; i < end; i += kLine) __builtin_prefetch(xc.data() + i, 0, 3);
    }
#else
    (void)xc;
    (void)begin;
    (void)len;
#endif
  }

  /// Σ_k u_k·(x_k − m) with 0·(−inf) taken as 0 (no target mass on a −inf
  /// logit contributes nothing); the scalar path for chunks holding −inf.
  template <class U, class XS>
  static Acc guarded_dot(const U& u, const XS& xs, Scalar m) {
    Acc d(0);
    for (Eigen::Index k = 0; k < xs.size(); ++k)
      if (u.coeff(k) != Scalar(0)) d += Acc(u.coeff(k)) * Acc(xs.coeff(k) - m);
    return d;
  }

  // One column, one read of the logits: chunk by chunk (L1-sized), the chunk
  // max updates a running max m (online softmax, Milakov & Gimelshein 2018),
  // exp(x − m) is written into the gradient (the element's only exp) and
  // summed, together with the target-weighted shifted logits Σ u_k(x_k − m);
  // when m grows, the sums are rescaled. A final in-place pass turns the
  // chunk's exponentials into the gradient, with the chunk's own shift.
  // Fusing the max into the exp pass lets memory loads overlap the exp work;
  // the loss is formed from shifted logits (mass·log Σe − Σ t_k(x_k − m)) so
  // it stays accurate when |x| is large and the loss small.
  template <bool WithGrad, class X, class T, class G>
  Parts column(const X& x, const T& target, G& g, Eigen::Index j, Scalar factor, Acc weight_total) const {
    using std::exp;
    using std::log;
    constexpr bool kLabels = std::is_integral<typename T::Scalar>::value;
    constexpr Scalar kNaN = std::numeric_limits<Scalar>::quiet_NaN();
    const Eigen::Index C = x.rows();
    const bool weighted = class_weights.size() > 0;
    const Scalar eps = label_smoothing, eps_c = label_smoothing / Scalar(C);
    Scalar w_y = 1;
    Eigen::Index y = 0;
    if constexpr (kLabels) {
      const long long l = static_cast<long long>(target.coeff(j));
      if (l == ignore_index) {
        if constexpr (WithGrad) g.matrix().col(j).setZero();
        return {};
      }
      y = static_cast<Eigen::Index>(l);
      if (weighted) w_y = class_weights(y);
    }
    // u: the per-class factor of the shifted-logit sum — w∘q' (probabilities),
    // w or 1 (labels with smoothing; the ε/C factor is applied at the end).
    const bool need_dot = !kLabels || eps > Scalar(0);
    const auto xc = x.matrix().col(j);
    const Eigen::Index len_max = chunk_length(C);
    std::array<Scalar, kMaxChunks> shift;
    // Running max starts at the lowest finite value, not −inf, so that a
    // chunk of −inf logits gives exp(−inf) = 0 instead of NaN.
    Scalar m = std::numeric_limits<Scalar>::lowest();
    Acc sum_e(0), u_seen(0), dot(0);
    Eigen::Index c = 0;
    for (Eigen::Index start = 0; start < C; start += len_max, ++c) {
      const Eigen::Index len = std::min(len_max, C - start);
      const auto xs = xc.segment(start, len).array();
      prefetch(xc, start + len_max, len_max);
      const Scalar cm = xs.maxCoeff();
      if (cm > m) {
        // (Skipped for the first chunk: exp(lowest − cm) takes libm's slow underflow path.)
        if (sum_e != Acc(0)) sum_e *= static_cast<Acc>(exp(m - cm));
        if (u_seen != Acc(0)) dot -= (Acc(cm) - Acc(m)) * u_seen;
        m = cm;
      }
      shift[static_cast<std::size_t>(c)] = m;
      if constexpr (WithGrad) {
        auto gs = g.matrix().col(j).segment(start, len).array();
        gs = (xs - m).exp();
        sum_e += static_cast<Acc>(gs.sum());
      } else {
        sum_e += static_cast<Acc>((xs - m).exp().sum());
      }
      if (!need_dot) continue;
      Acc chunk_dot(0);
      if constexpr (kLabels) {
        if (weighted) {
          const auto ws = class_weights.segment(start, len).array();
          u_seen += static_cast<Acc>(ws.sum());
          chunk_dot = static_cast<Acc>((ws * (xs - m)).sum());
          if (std::isnan(chunk_dot)) chunk_dot = guarded_dot(ws, xs, m);
        } else {
          u_seen += Acc(len);
          chunk_dot = static_cast<Acc>((xs - m).sum());
        }
      } else {
        const auto qs = (Scalar(1) - eps) * target.matrix().col(j).segment(start, len).array() + eps_c;
        if (weighted) {
          const auto us = class_weights.segment(start, len).array() * qs;
          u_seen += static_cast<Acc>(us.sum());
          chunk_dot = static_cast<Acc>((us * (xs - m)).sum());
          if (std::isnan(chunk_dot)) chunk_dot = guarded_dot(us, xs, m);
        } else {
          u_seen += static_cast<Acc>(qs.sum());
          chunk_dot = static_cast<Acc>((qs * (xs - m)).sum());
          if (std::isnan(chunk_dot)) chunk_dot = guarded_dot(qs, xs, m);
        }
      }
      dot += chunk_dot;
    }
    // +inf or NaN logits (sum NaN, or m infinite), or every logit −inf (m
    // never left its start value).
    if (!(sum_e > Acc(0)) || !(m > std::numeric_limits<Scalar>::lowest()) ||
        !(m < std::numeric_limits<Scalar>::infinity())) {
      if constexpr (WithGrad) g.matrix().col(j).setConstant(kNaN);
      return {std::numeric_limits<Acc>::quiet_NaN(), std::numeric_limits<Acc>::quiet_NaN()};
    }

    // mass = Σ_k t_k and shifted = Σ_k t_k·(x_k − m) for the weighted target t.
    Acc mass = u_seen, shifted = dot, s(1);
    if constexpr (kLabels) {
      mass = Acc(Scalar(1) - eps) * Acc(w_y) + (eps > Scalar(0) ? Acc(eps_c) * weight_total : Acc(0));
      shifted = Acc(Scalar(1) - eps) * Acc(w_y) * (Acc(xc(y)) - Acc(m)) + Acc(eps_c) * dot;
      s = Acc(w_y);
    } else {
      (void)weight_total;
    }
    const Acc log_sum = log(sum_e);
    const Acc lse = Acc(m) + log_sum;
    Parts out;
    out.ce = mass * log_sum - shifted;
    out.z = Acc(z_loss) * s * lse * lse;

    if constexpr (WithGrad) {
      const Acc k = Acc(factor) * (mass + Acc(2) * Acc(z_loss) * s * lse) / sum_e;
      c = 0;
      for (Eigen::Index start = 0; start < C; start += len_max, ++c) {
        const Eigen::Index len = std::min(len_max, C - start);
        auto gs = g.matrix().col(j).segment(start, len).array();
        const Scalar shift_c = shift[static_cast<std::size_t>(c)];
        const Scalar kc = static_cast<Scalar>(shift_c == m ? k : k * static_cast<Acc>(exp(shift_c - m)));
        if constexpr (kLabels) {
          if (eps > Scalar(0)) {
            if (weighted)
              gs = gs * kc - (factor * eps_c) * class_weights.segment(start, len).array();
            else
              gs = gs * kc - factor * eps_c;
          } else {
            gs *= kc;
          }
        } else {
          const auto qs = (Scalar(1) - eps) * target.matrix().col(j).segment(start, len).array() + eps_c;
          if (weighted)
            gs = gs * kc - factor * (class_weights.segment(start, len).array() * qs);
          else
            gs = gs * kc - factor * qs;
        }
      }
      if constexpr (kLabels) g.matrix().col(j)(y) -= factor * (Scalar(1) - eps) * w_y;
    }
    return out;
  }
};

template <class Scalar_>
class BinaryCrossEntropyWithLogits {
 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static_assert(std::is_floating_point<Scalar>::value,
                "losskit::BinaryCrossEntropyWithLogits: Scalar must be float or double");

  Reduction reduction = Reduction::Mean;
  Vector pos_weight;  ///< length D, finite, >= 0; empty (default) = all 1

  template <class X, class T>
  Scalar operator()(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& targets) const {
    check(logits, targets);
    const detail::eval_t<X> x(logits.derived());
    const detail::eval_t<T> t(targets.derived());
    check_targets(t);
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> none;
    return run<false>(x, t, none);
  }

  template <class X, class T, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& targets,
                            const Eigen::DenseBase<G>& grad) const {
    check(logits, targets);
    detail::check_output(kName, "grad", grad, logits.rows(), logits.cols());
    const detail::eval_t<X> x(logits.derived());
    const detail::eval_t<T> t(targets.derived());
    check_targets(t);
    G& g = detail::prepare_output(kName, "grad", grad, logits.rows(), logits.cols());
    return run<true>(x, t, g);
  }

  /// Column means (1/D) Σ_d ℓ_{d,i}: mean(per_sample) == the Mean loss.
  template <class X, class T>
  Vector per_sample(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& targets) const {
    check(logits, targets);
    const detail::eval_t<X> x(logits.derived());
    const detail::eval_t<T> t(targets.derived());
    check_targets(t);
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> none;
    Vector out(x.cols());
    for (Eigen::Index j = 0; j < x.cols(); ++j)
      out(j) = static_cast<Scalar>(column<false>(x, t, none, j, Scalar(0)) / Acc(x.rows()));
    return out;
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr Eigen::Index kChunk = 1024;
  static constexpr const char* kName = "BinaryCrossEntropyWithLogits";

  template <class X, class T>
  void check(const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& targets) const {
    detail::require_scalar<Scalar, X>();
    detail::require_scalar<Scalar, T>();
    detail::check_not_empty(kName, "logits", logits);
    detail::check_same_shape(kName, "targets", logits, targets);
    if (pos_weight.size() == 0) return;
    detail::check_vector_length(kName, "pos_weight", pos_weight, logits.rows());
    for (Eigen::Index d = 0; d < pos_weight.size(); ++d)
      if (!(pos_weight(d) >= Scalar(0)) || !std::isfinite(pos_weight(d)))
        detail::fail(kName, "pos_weight", "weight ", pos_weight(d), " of row ", d, " must be finite and >= 0");
  }

  template <class T>
  static void check_targets(const T& t) {
    // Vectorised reductions (comparisons are not vectorised in Eigen 3.4);
    // PropagateNaN so that a NaN target is caught.
    if (t.template minCoeff<Eigen::PropagateNaN>() >= Scalar(0) && t.template maxCoeff<Eigen::PropagateNaN>() <= Scalar(1))
      return;
    for (Eigen::Index j = 0; j < t.cols(); ++j)
      for (Eigen::Index i = 0; i < t.rows(); ++i)
        if (!(t.coeff(i, j) >= Scalar(0) && t.coeff(i, j) <= Scalar(1)))
          detail::fail(kName, "targets", "target ", t.coeff(i, j), " at (", i, ", ", j, ") is not in [0, 1]");
  }

  template <bool WithGrad, class X, class T, class G>
  Scalar run(const X& x, const T& t, G& g) const {
    const Scalar factor = detail::reduction_factor<Scalar>(reduction, Acc(x.rows()) * Acc(x.cols()));
    const Acc total = detail::column_sum<Acc>(x.cols(), x.rows(),
                                              [&](Eigen::Index j) { return column<WithGrad>(x, t, g, j, factor); });
    return static_cast<Scalar>(total * Acc(factor));
  }

  template <bool WithGrad, class X, class T, class G>
  Acc column(const X& x, const T& t, G& g, Eigen::Index j, Scalar factor) const {
    const Eigen::Index D = x.rows();
    Acc sum(0);
    for (Eigen::Index start = 0; start < D; start += kChunk) {
      const Eigen::Index len = std::min(kChunk, D - start);
      const auto xs = x.matrix().col(j).segment(start, len).array();
      const auto ts = t.matrix().col(j).segment(start, len).array();
      Acc part;
      if (pos_weight.size() > 0) {
        const auto ws = pos_weight.segment(start, len).array();
        part = chunk<WithGrad>(xs, ts, ws, g, j, start, factor);
        if (std::isnan(part)) part = exact_chunk<WithGrad>(xs, ts, ws, g, j, start, factor);
      } else {
        const auto ones = Eigen::Array<Scalar, Eigen::Dynamic, 1>::Ones(len);
        part = chunk<WithGrad>(xs, ts, ones, g, j, start, factor);
        if (std::isnan(part)) part = exact_chunk<WithGrad>(xs, ts, ones, g, j, start, factor);
      }
      sum += part;
    }
    return sum;
  }

  // Branch-free form for the vectorised path (Eigen 3.4 does not vectorise
  // select()): neg = 1 for x < 0 and 0 for x >= 0, computed by clamping; in
  // the sliver |x| < 1/kBig where it is fractional, e^{-|x|} = 1 in the
  // working precision and every term is unaffected.
  template <bool WithGrad, class XS, class TS, class WS, class G>
  static Acc chunk(const XS& xs, const TS& ts, const WS& wp, G& g, Eigen::Index j, Eigen::Index start,
                   Scalar factor) {
    constexpr Scalar kBig = std::is_same<Scalar, float>::value ? Scalar(1e30) : Scalar(1e300);
    Eigen::Array<Scalar, kChunk, 1> e_buf, neg_buf;
    auto e = e_buf.head(xs.size());
    auto neg = neg_buf.head(xs.size());
    e = (-xs.abs()).exp();
    neg = (-kBig * xs).max(Scalar(0)).min(Scalar(1));
    const auto one_minus_t = Scalar(1) - ts;
    const auto wt = wp * ts;
    // 0·inf (a zero linear coefficient at an infinite logit) is NaN here;
    // the caller then redoes the chunk with exact_chunk.
    const auto coef = one_minus_t + (wt - one_minus_t) * neg;
    const Acc value = static_cast<Acc>(((one_minus_t + wt) * e.log1p() + coef * xs.abs()).sum());
    if constexpr (WithGrad) {
      const auto a = Scalar(1) + (e - Scalar(1)) * neg;  // 1 for x >= 0, e^{-|x|} for x < 0
      const auto b = e + (Scalar(1) - e) * neg;          // e^{-|x|} for x >= 0, 1 for x < 0
      g.matrix().col(j).segment(start, xs.size()).array() = factor * (one_minus_t * a - wt * b) / (Scalar(1) + e);
    } else {
      (void)g;
      (void)j;
      (void)start;
      (void)factor;
    }
    return value;
  }

  // Element by element with the limits at ±inf spelled out; used only for a
  // chunk whose vectorised value came out NaN (an infinite or NaN logit).
  template <bool WithGrad, class XS, class TS, class WS, class G>
  static Acc exact_chunk(const XS& xs, const TS& ts, const WS& wp, G& g, Eigen::Index j, Eigen::Index start,
                         Scalar factor) {
    using std::exp;
    using std::log1p;
    Acc value(0);
    for (Eigen::Index i = 0; i < xs.size(); ++i) {
      const Scalar x = xs.coeff(i), t = ts.coeff(i), wt = wp.coeff(i) * t, one_minus_t = Scalar(1) - t;
      const Scalar ax = std::abs(x), e = exp(-ax);
      const Scalar coef = x >= Scalar(0) ? one_minus_t : wt;
      const Scalar lin = coef == Scalar(0) && !std::isnan(x) ? Scalar(0) : coef * ax;
      value += Acc((one_minus_t + wt) * log1p(e) + lin);
      if constexpr (WithGrad) {
        const Scalar a = x >= Scalar(0) ? Scalar(1) : e, b = x >= Scalar(0) ? e : Scalar(1);
        g.matrix().col(j)(start + i) = factor * (one_minus_t * a - wt * b) / (Scalar(1) + e);
      } else {
        (void)g;
        (void)j;
        (void)start;
        (void)factor;
      }
    }
    return value;
  }
};

}  // namespace losskit
