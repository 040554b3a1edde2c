#pragma once
/// Spherical Z-loss (de Brébisson & Vincent, "The Z-loss: a shift and scale
/// invariant classification loss belonging to the Spherical Family", arXiv
/// 1604.08859, 2016).
///
///   per sample (outputs o ∈ R^D, one column; target class c)
///     μ = (1/D) Σ_k o_k,   σ² = (1/D) Σ_k (o_k − μ)²   (population variance)
///     z_k = (o_k − μ)/σ
///     L = (1/a)·softplus(a·(b − z_c))
///   gradient (g = sigmoid(a·(b − z_c)))
///     ∂L/∂o_k = −(g/σ)·[δ_kc − (1 + z_c·z_k)/D]
///   so Σ_k ∂L/∂o_k = 0 and Σ_k o_k ∂L/∂o_k = 0: L is invariant to
///   o → α·o + β (α > 0), and its gradient is orthogonal to both directions.
///   Mean: L = (1/N) Σ_i L_i (PyTorch-style mean over samples); Sum: Σ_i L_i.
///   Sample weights s_i (finite, >= 0; see core/functor.hpp): Sum = Σ_i s_i·L_i,
///   Mean = Σ_i s_i·L_i / Σ_i s_i (each sample's share of the normaliser is
///   n_i = 1); all weights 0 give 0 and a zero gradient, and a sample of
///   weight 0 is not evaluated. per_sample gives the unweighted L_i.
///
/// Options: `a` > 0 (sharpness; a → ∞ gives the hinge max(0, b − z_c)) and
/// `b` (margin, in standard deviations of the outputs). Defaults a = 1, b = 0:
/// the configuration of the authors' timing experiments, and b = 0 is
/// meaningful for every D ≥ 2 (z_c ranges over [−√(D−1), √(D−1)], so a
/// margin b ≥ √(D−1) can never be met). The paper tunes (a, b) per task for
/// top-k scores; tune them the same way.
///
/// outputs: D×N (samples are columns), D ≥ 2; labels: N integers in [0, D).
///
/// Numerics: the direct form centres every column on its target output
/// before the two-pass mean/variance, so σ keeps full relative accuracy when
/// |μ| ≫ σ, and a column whose outputs are all equal gives exactly σ = 0.
/// σ = 0 (all outputs equal, e.g. zero-initialised weights): the loss is not
/// differentiable there (every direction changes z_c by an unbounded amount);
/// z_c is taken as 0, the value is softplus(a·b)/a and the gradient of that
/// sample is 0. Initialise weights randomly.
/// Non-finite outputs: a column containing inf or NaN gives NaN loss and NaN
/// gradient for that sample (no exception).
/// Cost: two passes over each column and one over its gradient. With D <= 128
/// and contiguous outputs and gradient, blocks of whole columns take these
/// passes at once over the block, then close each column with the same
/// formulas (same values to round-off; a non-finite column is done alone).
///
/// The loss as a function of the spherical statistics (s = Σ o_k,
/// q = Σ o_k², o_c, D), used by the large-output layer in factored_output_layer.hpp:
///     μ = s/D,  σ² = max(q/D − μ², 0)
///     ∂L/∂o_c = −g/σ,  ∂L/∂s = (g/(Dσ))·(1 − z_c·μ/σ),  ∂L/∂q = g·z_c/(2Dσ²)
/// (chain rule on z_c = (o_c − s/D)/σ with σ² = q/D − s²/D²). Here σ² comes
/// from q/D − μ², which cancels when |μ| ≫ σ: relative error in σ² about
/// ε·μ²/σ²; feed it outputs with a moderate mean. σ = 0 as above.
#include <Eigen/Core>
#include <cmath>

#include "core/checks.hpp"
#include "core/functor.hpp"
#include "core/numerics.hpp"
#include "core/reduction.hpp"
#include "core/spherical_terms.hpp"

namespace losskit {

/// The calls (outputs, labels[, sample_weights]) come from detail::ColumnLoss
/// (core/functor.hpp).
template <class Scalar_>
class ZLoss : public detail::ColumnLoss<ZLoss<Scalar_>, Scalar_> {
  friend detail::ColumnLoss<ZLoss, Scalar_>;

 public:
  using Scalar = Scalar_;

  Scalar a = Scalar(1);  ///< sharpness, > 0
  Scalar b = Scalar(0);  ///< margin in standard deviations, finite

  /// One sample's loss written on the spherical statistics: s = Σ_k o_k,
  /// q = Σ_k o_k², the target output o_c, and the number of classes D.
  /// Returns the unreduced value and ∂L/∂s, ∂L/∂q, ∂L/∂o_c (see the header
  /// comment for the formulas and for σ = 0).
  SphericalTerms<Scalar> spherical_terms(Scalar sum, Scalar sum_squares, Scalar target_output,
                                         Eigen::Index classes) const {
    check_options();
    check_classes(classes);
    return terms_unchecked(sum, sum_squares, target_output, classes);
  }

  /// As spherical_terms() without the option checks, for callers that
  /// validated the options once per batch.
  SphericalTerms<Scalar> terms_unchecked(Scalar sum, Scalar sum_squares, Scalar target_output,
                                         Eigen::Index classes) const {
    using std::sqrt;
    const Scalar d = Scalar(classes);
    const Scalar mean = sum / d;
    const Scalar var = std::max(sum_squares / d - mean * mean, Scalar(0));
    SphericalTerms<Scalar> t;
    if (var == Scalar(0)) {  // NaN falls through and propagates
      t.value = detail::softplus(a * b) / a;
      return t;
    }
    const Scalar sigma = sqrt(var);
    const Scalar z = (target_output - mean) / sigma;
    const Scalar g = detail::sigmoid(a * (b - z));
    t.value = detail::softplus(a * (b - z)) / a;
    t.d_target = -g / sigma;
    t.d_sum = g / (d * sigma) * (Scalar(1) - z * mean / sigma);
    t.d_sum_squares = g * z / (Scalar(2) * d * var);
    return t;
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "ZLoss";

  struct Context {};

  void check_options() const {
    detail::check_positive(kName, "a", a);
    detail::check_finite(kName, "b", b);
  }

  static void check_classes(Eigen::Index classes) {
    if (classes < 2) detail::fail(kName, "outputs", "needs at least 2 classes (rows), got ", classes);
  }

  template <class O, class L>
  Context prepare(const O& outputs, const L& labels) const {
    check_options();
    detail::check_not_empty(kName, "outputs", outputs);
    check_classes(outputs.rows());
    detail::check_labels(kName, labels, outputs.cols(), outputs.rows());
    return {};
  }

  // Two passes over the column and one over the gradient.
  template <class O>
  static Eigen::Index column_work(const O& outputs) {
    return 3 * outputs.rows();
  }

  // One column: value, and (unless g is NoGrad) factor·∂L/∂o written into g.
  // Centring on o_c first: o_k − o_c is exact when o_k is within a factor 2
  // of o_c (Sterbenz), so equal outputs give exactly zero spread.
  template <class O, class L, class G>
  Acc column(Context, const O& outputs, const L& labels, Eigen::Index j, Scalar factor, G&& g) const {
    const auto o = outputs.matrix().col(j);
    const Eigen::Index c = Eigen::Index(labels.coeff(j)), dim = o.rows();
    const Scalar oc = o(c);
    const Acc inv_d = Acc(1) / Acc(dim);
    // Blocked sums over contiguous segments (vectorised within a block,
    // accumulated in acc_t across blocks; see detail::accurate_sum).
    Acc sum(0), sum_sq(0);
    for (Eigen::Index start = 0; start < dim; start += detail::kSumBlock) {
      const Eigen::Index len = std::min(detail::kSumBlock, dim - start);
      sum += Acc((o.segment(start, len).array() - oc).sum());
    }
    const Scalar mean = Scalar(sum * inv_d);
    for (Eigen::Index start = 0; start < dim; start += detail::kSumBlock) {
      const Eigen::Index len = std::min(detail::kSumBlock, dim - start);
      sum_sq += Acc((o.segment(start, len).array() - oc - mean).square().sum());
    }
    const Close k = close_column<detail::wants_grad<G>>(mean, sum_sq * inv_d, dim, factor);
    if constexpr (detail::wants_grad<G>) {
      g.array() = k.base + k.slope * (o.array() - oc - mean);
      g(c) -= k.gs;
    }
    return k.value;
  }

  /// One column's close from its centred mean (of o − o_c) and variance:
  /// the value and, when kGrad, the gradient's coefficients
  /// ∂L/∂o = base + slope·(o − o_c − mean) − gs·e_c (factor included).
  /// σ = 0: softplus(a·b)/a and a zero gradient (see the header).
  struct Close {
    Acc value;
    Scalar gs = 0, base = 0, slope = 0;
  };
  template <bool kGrad>
  Close close_column(Scalar mean, Acc var_acc, Eigen::Index dim, Scalar factor) const {
    if (var_acc == Acc(0)) return {Acc(detail::softplus(a * b) / a)};
    const Scalar sigma = Scalar(std::sqrt(var_acc));
    const Scalar z = -mean / sigma;
    const Scalar arg = a * (b - z);
    Close k{Acc(detail::softplus(arg) / a)};
    if constexpr (kGrad) {
      k.gs = factor * detail::sigmoid(arg) / sigma;
      k.base = k.gs / Scalar(dim);
      k.slope = k.base * z / sigma;
    }
    (void)factor;
    return k;
  }

  static constexpr Eigen::Index kBlockRows = 128;

  // Columns [j0, j0 + count) of contiguous outputs (small D): the centring,
  // the two sums and the gradient's affine map as passes over the whole
  // block (e holds o − o_c − mean), then close_column per column. A column
  // with a non-finite output goes through column().
  template <class O, class L, class W, class G>
  Acc columns(Context ctx, const O& outputs, const L& labels, Eigen::Index j0, Eigen::Index count, const W& s,
              Scalar factor, G& g) const {
    using Block = detail::ColumnBlock<Scalar, G>;
    using Row = typename Block::Row;
    Block blk(outputs, g, j0, count);
    auto label = [&](Eigen::Index j) { return Eigen::Index(labels.coeff(j0 + j)); };
    const Eigen::Index dim = outputs.rows();
    const Acc inv_d = Acc(1) / Acc(dim);
    Row oc(count);
    for (Eigen::Index j = 0; j < count; ++j) oc(j) = blk.x(label(j), j);
    blk.e.array() = blk.x.array().rowwise() - oc;
    const Row mean = (blk.e.array().colwise().sum().template cast<Acc>() * inv_d).template cast<Scalar>();
    blk.e.array().rowwise() -= mean;
    const Row sum_sq = blk.e.array().square().colwise().sum();
    auto exact = [&](Eigen::Index j) { return !std::isfinite(sum_sq(j)); };
    auto by_column = [&](Eigen::Index col, Scalar f, auto&& grad) { return column(ctx, outputs, labels, col, f, grad); };
    auto close = [&](Eigen::Index j, Scalar f, auto&& grad) {
      constexpr bool kGrad = detail::wants_grad<decltype(grad)>;
      const Close k = close_column<kGrad>(mean(j), Acc(sum_sq(j)) * inv_d, dim, f);
      if constexpr (kGrad) {
        grad.array() = k.base + k.slope * grad.array();
        grad(label(j)) -= k.gs;
      }
      return k.value;
    };
    return blk.template close_columns<Acc>(j0, s, factor, exact, by_column, close);
  }
};

}  // namespace losskit
