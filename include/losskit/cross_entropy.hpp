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
///   penalty:       ℓz_i = z_penalty · s_i · lse_i²,  s_i = w_{y_i} (labels) or 1 (probabilities)
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
///   ∂L/∂x_i = f·[(Σ_k t_{k,i}·p_i − t_i) + 2·z_penalty·s_i·lse_i·p_i],  f = 1/normaliser (Mean) or 1 (Sum),
/// grouped so: the penalty's part survives next to a target mass many orders
/// larger (class weights ~1e30).
///
/// Sample weights r_i (see core/functor.hpp): Sum = Σ_i r_i·(ℓ_i + ℓz_i),
/// Mean = that / Σ_i r_i·n_i with n_i = w_{y_i} (0 if ignored) for labels and
/// 1 for probabilities; normaliser(target, sample_weights) gives Σ_i r_i·n_i.
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
/// Probability targets must be finite and >= 0 (an Error otherwise); their
/// sums are not checked: value and gradient hold for any such q.
/// Logits are C×N: labels whose length is C instead of N get a message that
/// says so (N×C logits are passed as logits.transpose()).
///
/// Cost: the logits are read once per column (chunked online max, Milakov &
/// Gimelshein 2018), one exp per element written into the gradient and
/// rescaled in place; columns run in parallel under OpenMP; no allocation.
/// With C <= 128 and contiguous logits, target and gradient (a plain Matrix
/// or Map; integer labels may be any vector), blocks of whole columns (2048
/// logits) are processed at once instead, with every option: column maxima,
/// one exp pass over the block, column sums, then the same closing formulas
/// per column (same values to round-off; a column with a non-finite logit is
/// done column-wise).
///
/// BinaryCrossEntropyWithLogits<S> — logits x and targets t in [0, 1] (D×N),
/// optional pos_weight w_p (length D, or 1 to use one value for every output
/// as PyTorch broadcasts it; default all 1), r = 1 + (w_p − 1)·t:
///   ℓ = (1 − t)·x + r·softplus(−x)      (PyTorch binary_cross_entropy_with_logits)
///   ∂ℓ/∂x = (1 − t) − r·σ(−x)            (= σ(x) − t without pos_weight)
///   Element weights u (option `weight`, PyTorch's `weight`: D×1 broadcast
///   over the samples, or D×N; default all 1) multiply each element: ℓ → u·ℓ.
///   Mean: (1/(D·N)) Σ u·ℓ;  Sum: Σ u·ℓ;  per_sample: (1/D) Σ_d u·ℓ.
///   u does not enter the Mean's denominator (as PyTorch's mean over elements).
///   Sample weights r_i: Sum = Σ_i r_i·Σ_d u·ℓ_{d,i}, Mean = that / (D·Σ_i r_i).
///   An element of weight 0 adds nothing and gets a zero gradient (even where
///   its ℓ would be inf or NaN).
/// Evaluated as r·log1p(e^{−|x|}) + [(1−t)·x if x ≥ 0 else w_p·t·(−x)], with
/// the gradient as ((1−t)·a − w_p·t·b)/(1 + e^{−|x|}), (a, b) = (1, e^{−|x|})
/// for x ≥ 0 and (e^{−|x|}, 1) otherwise: no cancellation, one exp per element,
/// finite for every finite x.
/// Infinite logits give the limits (not PyTorch's NaN): x = +inf → ℓ = +inf if
/// t < 1, 0 if t = 1, gradient 1 − t; x = −inf → ℓ = +inf if w_p·t > 0, else
/// 0, gradient −w_p·t. NaN logits give NaN. Targets outside [0, 1] or NaN
/// (checked), pos_weight or weight entries < 0 or non-finite, and a weight of
/// another shape than D×1 or D×N, are an Error. A contiguous call without
/// pos_weight, weight or sample weights runs as one flat array; with them,
/// D <= 512 runs in flat blocks of whole columns (pos_weight tiled, the
/// sample weight folded into the element weight), larger D column by column.
#include <Eigen/Core>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/checks.hpp"
#include "core/functor.hpp"
#include "core/numerics.hpp"
#include "core/options.hpp"

namespace losskit {
namespace detail {

/// CrossEntropy's options and their checks, shared with LinearCrossEntropy
/// (linear_cross_entropy.hpp) so that the two accept and mean the same.
template <class Scalar>
class CrossEntropyOptions {
 public:
  VectorOption<Scalar> class_weights;  ///< length C, finite, >= 0; empty (default) = all 1
  long long ignore_index = -100;       ///< label value whose samples are skipped (PyTorch's default)
  Scalar label_smoothing = 0;          ///< ε in [0, 1]
  Scalar z_penalty = 0;                ///< coefficient of the log²Z penalty, >= 0 (1e-4 is usual; 0 = off)

 protected:
  /// classes < 0: class_weights' length is not checked.
  void check_options(const char* loss, Eigen::Index classes) const {
    if (!(label_smoothing >= Scalar(0) && label_smoothing <= Scalar(1)))
      fail(loss, "label_smoothing", "must be in [0, 1], got ", label_smoothing);
    check_non_negative(loss, "z_penalty", z_penalty);
    if (class_weights.size() == 0) return;
    if (classes >= 0) check_vector_length(loss, "class_weights", class_weights, classes);
    for (Eigen::Index k = 0; k < class_weights.size(); ++k)
      if (!(class_weights(k) >= Scalar(0)) || !std::isfinite(class_weights(k)))
        fail(loss, "class_weights", "weight ", class_weights(k), " of class ", k, " must be finite and >= 0");
  }

  /// n_j of an integer label: w_y (1 without class weights), 0 if ignored.
  acc_t<Scalar> label_share(long long label) const {
    using Acc = acc_t<Scalar>;
    if (label == ignore_index) return Acc(0);
    return class_weights.size() > 0 ? Acc(class_weights(static_cast<Eigen::Index>(label))) : Acc(1);
  }
};

/// The per-class factor u of the smoothing mass with integer labels:
/// t = (ε/C)·u + (1−ε)·w_y·e_y, u = 1 (no class weights) or w.
template <class Scalar>
struct UnitMass {
  auto segment(Eigen::Index, Eigen::Index len) const {
    return Eigen::Array<Scalar, Eigen::Dynamic, 1>::Constant(len, Scalar(1));
  }
};
template <class Scalar>
struct ClassWeightMass {
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& w;
  auto segment(Eigen::Index start, Eigen::Index len) const { return w.segment(start, len).array(); }
};

/// The cross-entropy and penalty parts of a loss, summed over columns.
template <class Acc>
struct CrossEntropyParts {
  Acc ce = 0, z = 0;
  CrossEntropyParts& operator+=(const CrossEntropyParts& o) {
    ce += o.ce;
    z += o.z;
    return *this;
  }
  CrossEntropyParts scaled(Acc s) const { return {ce * s, z * s}; }
  Acc total() const { return ce + z; }
};

/// One column's closing formulas, shared by CrossEntropy and
/// LinearCrossEntropy: from the column's max logit m, sum_e = Σ_k e_k with
/// e_k = exp(x_k − m), the target mass Σ_k t_k and shifted = Σ_k t_k·(x_k − m),
///   ce = mass·log(sum_e) − shifted,   z = z_penalty·s·lse²,   lse = m + log(sum_e),
///   ∂/∂x_k = (k_ce·e_k − f·t_k) + k_z·e_k,
///   k_ce = f·mass/sum_e,   k_z = f·2·z_penalty·s·lse/sum_e
/// (f the reduction factor, s the penalty's weight). The cross-entropy and
/// penalty coefficients stay apart: summed first, a penalty term far below
/// the target mass (class weights ~1e30) would be rounded away.
template <class Scalar>
struct CrossEntropyColumn {
  using Acc = acc_t<Scalar>;
  Acc ce = 0, z = 0, k_ce = 0, k_z = 0;

  static CrossEntropyColumn close(Acc mass, Acc shifted, Acc s, Scalar m, Acc sum_e, Scalar z_penalty, Scalar factor) {
    const Acc log_sum = std::log(sum_e), lse = Acc(m) + log_sum;
    return {mass * log_sum - shifted, Acc(z_penalty) * s * lse * lse, Acc(factor) * mass / sum_e,
            Acc(factor) * Acc(2) * Acc(z_penalty) * s * lse / sum_e};
  }

  /// +inf or NaN logits (sum NaN, or m infinite), or every logit −inf (m
  /// never left its start value, the lowest finite Scalar).
  static bool finite(Scalar m, Acc sum_e) {
    return sum_e > Acc(0) && m > std::numeric_limits<Scalar>::lowest() && m < std::numeric_limits<Scalar>::infinity();
  }

  /// With an integer label y of weight w_y (keep = 1 − ε, spread = ε/C,
  /// weight_total = Σ_k w_k, dot = Σ_k u_k·(x_k − m)): t_y = keep·w_y, the
  /// mass and the shifted dot of t = spread·u + t_y·e_y.
  struct LabelMass {
    Acc t_y, mass, shifted;
  };
  static LabelMass label_mass(Scalar keep, Scalar spread, Acc weight_total, Scalar w_y, Scalar x_y, Scalar m, Acc dot) {
    const Acc t_y = Acc(keep) * Acc(w_y);
    return {t_y, t_y + (spread > Scalar(0) ? Acc(spread) * weight_total : Acc(0)),
            t_y * (Acc(x_y) - Acc(m)) + Acc(spread) * dot};
  }

  /// gs holds e·rescale's exponentials (e taken at a shift rescale below
  /// m); turns them in place into (k_ce·e − t_scale·u) + k_z·e.
  template <class GS, class US>
  void gradient(GS&& gs, const US& u, Acc rescale, Scalar t_scale) const {
    const Scalar kc = static_cast<Scalar>(k_ce * rescale), kz = static_cast<Scalar>(k_z * rescale);
    // Without a target term nothing cancels, so the coefficients may be summed.
    if (t_scale == Scalar(0))
      gs *= static_cast<Scalar>((k_ce + k_z) * rescale);
    else if (kz == Scalar(0))
      gs = gs * kc - t_scale * u;
    else
      gs = (gs * kc - t_scale * u) + gs * kz;
  }

  /// The label's entry, formed once from its own exponential e_y (at m) and
  /// its whole scaled target t_full with the same grouping.
  Scalar label_gradient(Acc e_y, Acc t_full) const { return static_cast<Scalar>((e_y * k_ce - t_full) + e_y * k_z); }
};

}  // namespace detail

template <class Scalar_>
class CrossEntropy : public detail::ColumnLoss<CrossEntropy<Scalar_>, Scalar_>,
                     public detail::EvaluateCalls<CrossEntropy<Scalar_>>,
                     public detail::CrossEntropyOptions<Scalar_> {
  using Base = detail::ColumnLoss<CrossEntropy<Scalar_>, Scalar_>;
  using Options = detail::CrossEntropyOptions<Scalar_>;
  friend Base;
  friend detail::EvaluateCalls<CrossEntropy<Scalar_>>;

 public:
  using Scalar = Scalar_;
  using typename Base::Vector;
  using Options::class_weights;
  using Options::ignore_index;
  using Options::label_smoothing;
  using Options::z_penalty;

  /// The loss and its parts, each reduced like the loss.
  struct Result {
    Scalar loss = 0;           ///< cross_entropy + z_penalty: what operator() returns
    Scalar cross_entropy = 0;  ///< the cross-entropy part
    Scalar z_penalty = 0;      ///< the log²Z penalty's share (for logging)
    double normaliser = 0;     ///< Σ s_i·n_i (see the file comment), whatever the reduction
  };

  /// evaluate(logits, target[, sample_weights], grad): the Result; target is
  /// integer labels (length N) or probabilities (C×N) of this Scalar.
  using detail::EvaluateCalls<CrossEntropy<Scalar_>>::evaluate;

  /// The local normaliser of a batch: Σ w_{y_i} over non-ignored labels, or
  /// the number of columns of probability targets. Labels are checked
  /// against class_weights' length when weights are set.
  template <class T>
  double normaliser(const Eigen::DenseBase<T>& target) const {
    const detail::eval_t<T> t(target.derived());
    check_target_alone(t);
    return static_cast<double>(this->normaliser_of(t, detail::UnitWeights{}, kLabels<T> ? t.size() : t.cols()));
  }

  /// Σ_i s_i·n_i: the normaliser of a weighted batch, to be all-reduced
  /// across shards as above.
  template <class T, class W>
  double normaliser(const Eigen::DenseBase<T>& target, const Eigen::DenseBase<W>& sample_weights) const {
    const detail::eval_t<T> t(target.derived());
    check_target_alone(t);
    const Eigen::Index n = kLabels<T> ? t.size() : t.cols();
    const detail::eval_t<W> s(sample_weights.derived());
    detail::check_sample_weights<Scalar>(kName, s, n);
    return static_cast<double>(this->normaliser_of(t, s, n));
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "CrossEntropy";
  static constexpr bool kUniformShare = false;
  static constexpr Eigen::Index kChunk = 1024;
  static constexpr Eigen::Index kMaxChunks = 64;
  template <class T>
  static constexpr bool kLabels = std::is_integral<typename T::Scalar>::value;

  using Part = detail::CrossEntropyParts<Acc>;

  /// Per-call constants of the kernel.
  struct Context {
    Scalar keep, spread;  ///< 1 − ε and ε/C: q' = keep·q + spread
    Acc weight_total;     ///< Σ_k w_k (C without weights)
    Eigen::Index chunk;   ///< chunk length for a column of C logits
  };
  static constexpr Eigen::Index kBlockRows = 128;

  template <class Totals>
  static Result result(const Totals& t) {
    Result r;
    r.cross_entropy = static_cast<Scalar>(t.sum.ce * Acc(t.factor));
    r.z_penalty = static_cast<Scalar>(t.sum.z * Acc(t.factor));
    r.loss = t.value();
    r.normaliser = static_cast<double>(t.normaliser);
    return r;
  }

  void check_options(Eigen::Index classes) const { Options::check_options(kName, classes); }

  /// The checks normaliser() can make without the logits.
  template <class T>
  void check_target_alone(const T& t) const {
    check_options(-1);
    if constexpr (kLabels<T>) {
      detail::check_vector_length(kName, "labels", t, t.size());
      if (class_weights.size() > 0) {
        detail::check_labels(kName, t, t.size(), class_weights.size(), true, ignore_index);
        return;
      }
      for (Eigen::Index i = 0; i < t.size(); ++i) {
        const long long l = static_cast<long long>(t.coeff(i));
        if (l < 0 && l != ignore_index)
          detail::fail(kName, "labels", "label ", l, " at sample ", i, " is negative and is not ignore_index (",
                       ignore_index, ")");
      }
    } else {
      detail::require_scalar<Scalar, T>();
      check_probabilities(t);
    }
  }

  // One read of q, chunk by chunk in L1: a vectorised min (negatives) and a
  // sum (NaN, ±inf; its overflow only sends the chunk to the exact loop).
  template <class T>
  static void check_probabilities(const T& q) {
    for (Eigen::Index j = 0; j < q.cols(); ++j)
      for (Eigen::Index start = 0; start < q.rows(); start += kChunk) {
        const Eigen::Index len = std::min(kChunk, q.rows() - start);
        const auto qs = q.matrix().col(j).segment(start, len).array();
        if (qs.minCoeff() >= Scalar(0) && std::isfinite(qs.sum())) continue;
        for (Eigen::Index k = start; k < start + len; ++k)
          if (!(q.coeff(k, j) >= Scalar(0)) || !std::isfinite(q.coeff(k, j)))
            detail::fail(kName, "target", "probability ", q.coeff(k, j), " at (", k, ", ", j,
                         ") must be finite and >= 0 (sums are not checked)");
      }
  }

  template <class X, class T>
  Context prepare(const X& logits, const T& target) const {
    detail::check_not_empty(kName, "logits", logits);
    check_options(logits.rows());
    if constexpr (kLabels<T>) {
      detail::check_labels(kName, target, logits.cols(), logits.rows(), true, ignore_index);
    } else {
      detail::check_float_labels(kName, logits, target);
      detail::require_scalar<Scalar, T>();
      detail::check_same_shape(kName, "target", logits, target);
      check_probabilities(target);
    }
    const Eigen::Index C = logits.rows();
    Eigen::Index chunk = kChunk;
    if (C > kChunk * kMaxChunks) chunk = std::max(kChunk, ((C + kMaxChunks - 1) / kMaxChunks + 15) / 16 * 16);
    const Acc weight_total = class_weights.size() > 0 ? Acc(class_weights.sum()) : Acc(C);
    return {Scalar(1) - label_smoothing, label_smoothing / Scalar(C), weight_total, chunk};
  }

  /// n_j: w_{y_j} (0 if ignored) with labels, 1 with probabilities.
  template <class T>
  Acc share(const T& target, Eigen::Index j) const {
    if constexpr (kLabels<T>) {
      return this->label_share(static_cast<long long>(target.coeff(j)));
    } else {
      (void)target;
      (void)j;
      return Acc(1);
    }
  }

  // The per-class factor u of the target mass, chosen once per column (not
  // per element): t = (ε/C)·u + (1−ε)·w_y·e_y with labels, t = u with
  // probabilities; u is w or 1 (labels), w∘q' or q' (probabilities).
  using Unit = detail::UnitMass<Scalar>;
  using ClassWeights = detail::ClassWeightMass<Scalar>;
  template <class Q>
  struct Soft {
    const Q& q;
    Scalar keep, spread;
    auto segment(Eigen::Index start, Eigen::Index len) const { return keep * q.segment(start, len).array() + spread; }
  };
  template <class Q>
  struct WeightedSoft {
    const Vector& w;
    Soft<Q> soft;
    auto segment(Eigen::Index start, Eigen::Index len) const {
      return w.segment(start, len).array() * soft.segment(start, len);
    }
  };

  template <class C, class X, class T, class G>
  Part column(const C& ctx, const X& x, const T& target, Eigen::Index j, Scalar factor, G&& g) const {
    const auto xc = x.matrix().col(j);
    return with_mass(ctx, target, j, g, [&](const auto& u, const auto& label) {
      return column_with(ctx, xc, u, label, factor, g);
    });
  }

  /// Column j's target mass factor u and label (see Soft), handed to f(u,
  /// label); an ignored label gets a zero gradient and no loss instead.
  template <class T, class G, class F>
  Part with_mass(const Context& ctx, const T& target, Eigen::Index j, G& g, F&& f) const {
    const bool weighted = class_weights.size() > 0;
    if constexpr (kLabels<T>) {
      const long long l = static_cast<long long>(target.coeff(j));
      if (l == ignore_index) {
        if constexpr (detail::wants_grad<G>) g.setZero();
        return {};
      }
      const Label label{static_cast<Eigen::Index>(l), weighted ? class_weights(Eigen::Index(l)) : Scalar(1)};
      if (weighted) return f(ClassWeights{class_weights}, label);
      return f(Unit{}, label);
    } else {
      const auto qc = target.matrix().col(j);
      const Soft<decltype(qc)> soft{qc, ctx.keep, ctx.spread};
      if (weighted) return f(WeightedSoft<decltype(qc)>{class_weights, soft}, NoLabel{});
      return f(soft, NoLabel{});
    }
  }

  /// What one read of a column gathers: the running max m, Σ exp(x − m),
  /// Σ u, Σ u·(x − m), and the shift each chunk's exponentials were taken at.
  struct Scan {
    Scalar m = std::numeric_limits<Scalar>::lowest();
    Acc sum_e = 0, u_seen = 0, dot = 0;
    std::array<Scalar, kMaxChunks> shift;
  };

  /// Columns [j0, j0 + count) of a contiguous batch (small C, see
  /// ColumnLoss::kBlockRows), every option included: the column maxima, then
  /// exp(x − m) over the whole block in one pass (into the gradient, or a
  /// stack block for the value alone) and the column sums; each column then
  /// closes as column_with() does, from that Scan (its target sums formed
  /// from the column, without a second exp). A column that is not finite
  /// (or holds NaN) goes through column() and gets its NaN.
  template <class X, class T, class W, class G>
  Part columns(const Context& ctx, const X& x, const T& target, Eigen::Index j0, Eigen::Index count, const W& s,
               Scalar factor, G& g) const {
    detail::ColumnBlock<Scalar, G> b(x, g, j0, count);
    const auto m = b.column_max();
    b.exp(m, Scalar(1));
    const auto sum_e = b.sums();
    auto exact = [&](Eigen::Index j) { return !Column::finite(m(j), Acc(sum_e(j))); };
    auto by_column = [&](Eigen::Index col, Scalar f, auto&& grad) { return column(ctx, x, target, col, f, grad); };
    auto close = [&](Eigen::Index j, Scalar f, auto&& grad) -> Part {
      const auto xc = b.x.col(j);
      return with_mass(ctx, target, j0 + j, grad, [&](const auto& u, const auto& label) {
        Scan sc;
        sc.m = m(j);
        sc.sum_e = Acc(sum_e(j));
        sc.shift[0] = m(j);
        if (needs_dot<std::decay_t<decltype(label)>>(ctx)) add_target(sc, u.segment(0, xc.size()), xc.array());
        return close_scan(ctx, xc, u, label, f, sc, grad);
      });
    };
    return b.template close_columns<Part>(j0, s, factor, exact, by_column, close);
  }

  struct Label {
    Eigen::Index y;
    Scalar w_y;
  };
  struct NoLabel {};

  /// One column's pass: what scan() accumulated turned into the loss parts
  /// and, if wanted, the gradient. The loss is formed from shifted logits
  /// (mass·log Σe − Σ t_k(x_k − m)) so it stays accurate when |x| is large
  /// and the loss small.
  template <class XC, class U, class L, class G>
  Part column_with(const Context& ctx, const XC& xc, const U& u, const L& label, Scalar factor, G& g) const {
    return close_scan(ctx, xc, u, label, factor, scan(ctx, xc, u, needs_dot<L>(ctx), g), g);
  }

  /// Whether a column's scan needs Σu and Σu·(x − m): always with
  /// probabilities, with a label only under label smoothing.
  template <class L>
  static bool needs_dot(const Context& ctx) {
    return !std::is_same<L, Label>::value || ctx.spread > Scalar(0);
  }

  /// column_with's close from the column's Scan (g holds its exponentials).
  template <class XC, class U, class L, class G>
  Part close_scan(const Context& ctx, const XC& xc, const U& u, const L& label, Scalar factor, const Scan& sc,
                  G& g) const {
    constexpr bool kHasLabel = std::is_same<L, Label>::value;
    if (!Column::finite(sc.m, sc.sum_e)) {
      if constexpr (detail::wants_grad<G>) g.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
      return {std::numeric_limits<Acc>::quiet_NaN(), std::numeric_limits<Acc>::quiet_NaN()};
    }
    // mass = Σ_k t_k, shifted = Σ_k t_k·(x_k − m), s = the penalty's weight.
    Acc mass = sc.u_seen, shifted = sc.dot, s(1), t_y(0);
    if constexpr (kHasLabel) {
      const auto lm = Column::label_mass(ctx.keep, ctx.spread, ctx.weight_total, label.w_y, xc(label.y), sc.m, sc.dot);
      t_y = lm.t_y;
      mass = lm.mass;
      shifted = lm.shifted;
      s = Acc(label.w_y);
    }
    const Column col = Column::close(mass, shifted, s, sc.m, sc.sum_e, z_penalty, factor);
    if constexpr (detail::wants_grad<G>) {
      const Scalar t_scale = kHasLabel ? factor * ctx.spread : factor;
      finish_gradient(ctx, xc.size(), sc, u, col, t_scale, g);
      if constexpr (kHasLabel) {
        const Acc e_y = std::exp(Acc(xc(label.y)) - Acc(sc.m));
        g(label.y) = col.label_gradient(e_y, Acc(factor) * (t_y + Acc(ctx.spread) * Acc(u.segment(label.y, 1)(0))));
      }
    }
    return {col.ce, col.z};
  }
  using Column = detail::CrossEntropyColumn<Scalar>;

  // Chunk by chunk (L1-sized), the chunk max updates a running max m
  // (online softmax, Milakov & Gimelshein 2018), exp(x − m) is written into
  // the gradient (the element's only exp) and summed, together with the
  // target-weighted shifted logits; when m grows, the sums are rescaled.
  // Fusing the max into the exp pass lets memory loads overlap the exp work.
  // The running max starts at the lowest finite value, not −inf, so that a
  // chunk of −inf logits gives exp(−inf) = 0 instead of NaN.
  template <class XC, class U, class G>
  LOSSKIT_FLATTEN static Scan scan(const Context& ctx, const XC& xc, const U& u, bool need_dot, G& g) {
    Scan sc;
    const Eigen::Index C = xc.size();
    Eigen::Index c = 0;
    for (Eigen::Index start = 0; start < C; start += ctx.chunk, ++c) {
      const Eigen::Index len = std::min(ctx.chunk, C - start);
      const auto xs = xc.segment(start, len).array();
      prefetch(xc, start + ctx.chunk, ctx.chunk);
      const Scalar cm = xs.maxCoeff();
      if (cm > sc.m) {
        // (Skipped for the first chunk: exp(lowest − cm) takes libm's slow underflow path.)
        if (sc.sum_e != Acc(0)) sc.sum_e *= static_cast<Acc>(std::exp(sc.m - cm));
        if (sc.u_seen != Acc(0)) sc.dot -= (Acc(cm) - Acc(sc.m)) * sc.u_seen;
        sc.m = cm;
      }
      sc.shift[static_cast<std::size_t>(c)] = sc.m;
      if constexpr (detail::wants_grad<G>) {
        auto gs = g.segment(start, len).array();
        gs = (xs - sc.m).exp();
        sc.sum_e += static_cast<Acc>(gs.sum());
      } else {
        sc.sum_e += static_cast<Acc>((xs - sc.m).exp().sum());
      }
      if (need_dot) add_target(sc, u.segment(start, len), xs);
    }
    return sc;
  }

  /// Adds one chunk's Σ u and Σ u·(x − m) (at the scan's current m) to sc.
  template <class US, class XS>
  static void add_target(Scan& sc, const US& us, const XS& xs) {
    sc.u_seen += static_cast<Acc>(us.sum());
    Acc chunk_dot = static_cast<Acc>((us * (xs - sc.m)).sum());
    if (std::isnan(chunk_dot)) chunk_dot = guarded_dot(us, xs, sc.m);
    sc.dot += chunk_dot;
  }

  /// Turns the stored exponentials into the gradient, chunk by chunk with
  /// the chunk's own shift.
  template <class U, class G>
  LOSSKIT_FLATTEN static void finish_gradient(const Context& ctx, Eigen::Index C, const Scan& sc, const U& u,
                                              const Column& col, Scalar t_scale, G& g) {
    Eigen::Index c = 0;
    for (Eigen::Index start = 0; start < C; start += ctx.chunk, ++c) {
      const Eigen::Index len = std::min(ctx.chunk, C - start);
      const Scalar shift_c = sc.shift[static_cast<std::size_t>(c)];
      const Acc rescale = shift_c == sc.m ? Acc(1) : static_cast<Acc>(std::exp(shift_c - sc.m));
      col.gradient(g.segment(start, len).array(), u.segment(start, len), rescale, t_scale);
    }
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
  template <class US, class XS>
  static Acc guarded_dot(const US& u, const XS& xs, Scalar m) {
    Acc d(0);
    for (Eigen::Index k = 0; k < xs.size(); ++k)
      if (u.coeff(k) != Scalar(0)) d += Acc(u.coeff(k)) * Acc(xs.coeff(k) - m);
    return d;
  }
};

template <class Scalar_>
class BinaryCrossEntropyWithLogits
    : public detail::ColumnLoss<BinaryCrossEntropyWithLogits<Scalar_>, Scalar_> {
  using Base = detail::ColumnLoss<BinaryCrossEntropyWithLogits<Scalar_>, Scalar_>;
  friend Base;

 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  VectorOption<Scalar> pos_weight;  ///< length D (or 1: the same for every output), finite, >= 0; empty = all 1
  /// Element weights u (PyTorch's `weight`), finite, >= 0: empty (default) = all 1, D×1 (one per
  /// output, broadcast over the samples; a braced list is one) or D×N (one per element).
  MatrixOption<Scalar> weight;

 private:
  using Acc = detail::acc_t<Scalar>;
  using Part = Acc;
  static constexpr Eigen::Index kChunk = 1024;
  static constexpr const char* kName = "BinaryCrossEntropyWithLogits";
  static constexpr bool kElementwise = true;

  /// pos_weight as used: empty (all 1), one value for every row, or one per row;
  /// weight: 0 (none), 1 (D×1) or N (D×N) columns.
  struct Context {
    Eigen::Index pos_weights, weight_cols;
  };
  static bool elementwise(const Context& ctx) { return ctx.pos_weights == 0 && ctx.weight_cols == 0; }
  static constexpr Eigen::Index kBlockRows = 512;

  template <class X, class T>
  Context prepare(const X& logits, const T& targets) const {
    detail::require_scalar<Scalar, T>();
    detail::check_not_empty(kName, "logits", logits);
    detail::check_same_shape(kName, "targets", logits, targets);
    if (pos_weight.size() > 0) {
      if (pos_weight.size() != 1) detail::check_vector_length(kName, "pos_weight", pos_weight, logits.rows());
      for (Eigen::Index d = 0; d < pos_weight.size(); ++d)
        if (!(pos_weight(d) >= Scalar(0)) || !std::isfinite(pos_weight(d)))
          detail::fail(kName, "pos_weight", "weight ", pos_weight(d), " of row ", d, " must be finite and >= 0");
    }
    check_weight(logits.rows(), logits.cols());
    check_targets(targets);
    return {pos_weight.size(), weight.size() == 0 ? Eigen::Index(0) : weight.cols()};
  }

  void check_weight(Eigen::Index d, Eigen::Index n) const {
    if (weight.size() == 0) return;
    if (weight.rows() != d || (weight.cols() != 1 && weight.cols() != n))
      detail::fail(kName, "weight", "shape ", weight.rows(), "x", weight.cols(), " is neither ", d, "x1 nor ", d, "x",
                   n, " (the logits' rows x 1 or their shape)");
    if (weight.template minCoeff<Eigen::PropagateNaN>() >= Scalar(0) &&
        weight.template maxCoeff<Eigen::PropagateNaN>() < std::numeric_limits<Scalar>::infinity())
      return;
    for (Eigen::Index j = 0; j < weight.cols(); ++j)
      for (Eigen::Index i = 0; i < weight.rows(); ++i)
        if (!(weight(i, j) >= Scalar(0)) || !std::isfinite(weight(i, j)))
          detail::fail(kName, "weight", "weight ", weight(i, j), " at (", i, ", ", j, ") must be finite and >= 0");
  }

  template <class T>
  static Acc share(const T& targets, Eigen::Index) {
    return Acc(targets.rows());
  }

  static Scalar per_sample_value(Acc loss, Acc share) { return static_cast<Scalar>(loss / share); }

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

  template <class X, class T, class G>
  Acc column(const Context& ctx, const X& x, const T& t, Eigen::Index j, Scalar factor, G&& g) const {
    const Eigen::Index D = x.rows();
    Acc sum(0);
    for (Eigen::Index start = 0; start < D; start += kChunk) {
      const Eigen::Index len = std::min(kChunk, D - start);
      const auto xs = x.matrix().col(j).segment(start, len).array();
      const auto ts = t.matrix().col(j).segment(start, len).array();
      auto gs = g.segment(start, len);
      auto with_weight = [&](const auto& wp) {
        if (ctx.weight_cols == 0) return chunk_or_exact(xs, ts, wp, detail::UnitWeights{}, gs, factor);
        const auto u = weight.col(ctx.weight_cols == 1 ? 0 : j).segment(start, len).array();
        return chunk_or_exact(xs, ts, wp, u, gs, factor);
      };
      if (ctx.pos_weights > 1)
        sum += with_weight(pos_weight.segment(start, len).array());
      else
        sum += with_weight(Eigen::Array<Scalar, Eigen::Dynamic, 1>::Constant(
            len, ctx.pos_weights == 1 ? pos_weight(0) : Scalar(1)));
    }
    return sum;
  }

  /// Columns [j0, j0 + count) of contiguous data (D <= kBlockRows) as one
  /// flat array: pos_weight tiled over the block, and the element weights
  /// times the sample weights (s_j·u_{d,j}) as one flat weight, so that what
  /// column() does per column runs in chunks of whole columns.
  template <class X, class T, class W, class G>
  Acc columns(const Context& ctx, const X& x, const T& t, Eigen::Index j0, Eigen::Index count, const W& s,
              Scalar factor, G& g) const {
    using Flat = Eigen::Array<Scalar, Eigen::Dynamic, 1, 0, detail::kColumnBlockElements, 1>;
    using Seg = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
    const Eigen::Index D = x.rows(), size = D * count, offset = D * j0;
    Flat pw, u;
    if (ctx.pos_weights > 1) pw = pos_weight.array().replicate(count, 1);
    const bool has_u = ctx.weight_cols > 0 || detail::is_weighted<W>;
    if (has_u) {
      u.resize(size);
      for (Eigen::Index j = 0; j < count; ++j) {
        const Scalar sj = detail::sample_weight_at<Scalar>(s, j0 + j);
        if (ctx.weight_cols == 0)
          u.segment(j * D, D).setConstant(sj);
        else
          u.segment(j * D, D) = sj * weight.col(ctx.weight_cols == 1 ? 0 : j0 + j).array();
      }
    }
    Acc sum(0);
    for (Eigen::Index start = 0; start < size; start += kChunk) {
      const Eigen::Index len = std::min(kChunk, size - start);
      const Seg xs(x.data() + offset + start, len), ts(t.data() + offset + start, len);
      auto in_chunk = [&](auto&& gs) {
        auto with_u = [&](const auto& wp) {
          if (!has_u) return chunk_or_exact(xs, ts, wp, detail::UnitWeights{}, gs, factor);
          return chunk_or_exact(xs, ts, wp, u.segment(start, len), gs, factor);
        };
        if (ctx.pos_weights > 1) return with_u(pw.segment(start, len));
        return with_u(Eigen::Array<Scalar, Eigen::Dynamic, 1>::Constant(
            len, ctx.pos_weights == 1 ? pos_weight(0) : Scalar(1)));
      };
      if constexpr (detail::wants_grad<G>) {
        Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, 1>> gs(g.data() + offset + start, len);
        sum += in_chunk(gs);
      } else {
        sum += in_chunk(NoGrad{});
      }
    }
    return sum;
  }

  /// u·e for element weights u, e itself for UnitWeights (the unweighted code unchanged).
  template <class US, class E>
  static auto weighted(const US& u, const E& e) {
    if constexpr (std::is_same<US, detail::UnitWeights>::value)
      return e;
    else
      return u * e;
  }
  template <class US>
  static Scalar weight_at(const US& u, Eigen::Index i) {
    if constexpr (std::is_same<US, detail::UnitWeights>::value)
      return Scalar(1);
    else
      return u.coeff(i);
  }

  template <class XS, class TS, class WS, class US, class GS>
  static Acc chunk_or_exact(const XS& xs, const TS& ts, const WS& wp, const US& u, GS& gs, Scalar factor) {
    const Acc part = chunk(xs, ts, wp, u, gs, factor);
    return std::isnan(part) ? exact_chunk(xs, ts, wp, u, gs, factor) : part;
  }

  // Branch-free form for the vectorised path (Eigen 3.4 does not vectorise
  // select()): neg = 1 for x < 0 and 0 for x >= 0, computed by clamping; in
  // the sliver |x| < 1/kBig where it is fractional, e^{-|x|} = 1 in the
  // working precision and every term is unaffected.
  template <class XS, class TS, class WS, class US, class GS>
  static Acc chunk(const XS& xs, const TS& ts, const WS& wp, const US& u, GS& gs, Scalar factor) {
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
    const Acc value = static_cast<Acc>(weighted(u, (one_minus_t + wt) * e.log1p() + coef * xs.abs()).sum());
    if constexpr (detail::wants_grad<GS>) {
      const auto a = Scalar(1) + (e - Scalar(1)) * neg;  // 1 for x >= 0, e^{-|x|} for x < 0
      const auto b = e + (Scalar(1) - e) * neg;          // e^{-|x|} for x >= 0, 1 for x < 0
      gs.array() = factor * weighted(u, (one_minus_t * a - wt * b) / (Scalar(1) + e));
    } else {
      (void)factor;
    }
    return value;
  }

  // Element by element with the limits at ±inf spelled out; used only for a
  // chunk whose vectorised value came out NaN (an infinite or NaN logit). An
  // element of weight 0 adds nothing and gets a zero gradient.
  template <class XS, class TS, class WS, class US, class GS>
  static Acc exact_chunk(const XS& xs, const TS& ts, const WS& wp, const US& u, GS& gs, Scalar factor) {
    using std::exp;
    using std::log1p;
    Acc value(0);
    for (Eigen::Index i = 0; i < xs.size(); ++i) {
      const Scalar ui = weight_at(u, i);
      if (ui == Scalar(0)) {
        if constexpr (detail::wants_grad<GS>) gs(i) = Scalar(0);
        continue;
      }
      const Scalar x = xs.coeff(i), t = ts.coeff(i), wt = wp.coeff(i) * t, one_minus_t = Scalar(1) - t;
      const Scalar ax = std::abs(x), e = exp(-ax);
      const Scalar coef = x >= Scalar(0) ? one_minus_t : wt;
      const Scalar lin = coef == Scalar(0) && !std::isnan(x) ? Scalar(0) : coef * ax;
      value += Acc(ui * ((one_minus_t + wt) * log1p(e) + lin));
      if constexpr (detail::wants_grad<GS>) {
        const Scalar a = x >= Scalar(0) ? Scalar(1) : e, b = x >= Scalar(0) ? e : Scalar(1);
        gs(i) = factor * ui * ((one_minus_t * a - wt * b) / (Scalar(1) + e));
      } else {
        (void)factor;
      }
    }
    return value;
  }
};

}  // namespace losskit
