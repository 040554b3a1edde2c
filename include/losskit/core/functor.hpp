#pragma once
/// The public surface of every per-sample loss, written once.
///
/// A loss whose batch value is a (weighted) sum of per-sample terms derives
/// from ColumnLoss<Derived, Scalar> (CRTP, as manif's LieGroupBase) and gets
///   loss(pred, target)                                    reduced value
///   loss(pred, target, sample_weights)                    weighted reduced value
///   loss.value_and_gradient(pred, target, grad)           value, d(value)/d(pred)
///   loss.value_and_gradient(pred, target, sample_weights, grad)
///   loss.per_sample(pred, target)                         length-N unreduced values
/// with the contract's semantics: inputs evaluated at most once, every check
/// before anything is written, a plain Matrix gradient resized, a view
/// checked, no heap allocation once the gradient has its size, columns in
/// parallel under OpenMP, and
///   Sum  = Σ_i s_i·ℓ_i,   Mean = Σ_i s_i·ℓ_i / Σ_i s_i·n_i
/// where n_i is sample i's share of the unweighted normaliser (s_i = 1
/// without sample weights). A zero normaliser (all weights 0, every sample
/// ignored) gives loss 0 and a zero gradient. A sample of weight 0 is not
/// evaluated: it adds nothing (even where its loss would be NaN) and gets a
/// zero gradient column.
///
/// The family supplies (private, with `friend ColumnLoss`):
///   static constexpr const char* kName;
///   template <class X, class T> Context prepare(const X& pred, const T& target) const;
///       every check of options, shapes, labels and values (inputs already
///       evaluated); returns what the kernel needs per call (any type)
///   template <class T> Acc share(const T& target, Index j) const;      n_j (default 1)
///   template <class C, class X, class T, class G>
///   Part column(const C& context, const X& pred, const T& target, Index j, Scalar factor, G&& grad) const;
///       ℓ_j, unweighted and unreduced; unless G is NoGrad, writes
///       factor·∂ℓ_j/∂pred_j into grad (a writable column of the gradient)
/// and may hide these defaults: share (n_j = 1, one per sample), Part = Acc
/// (a struct with += , scaled() and total() for losses that report several
/// parts), column_work (elements a column touches, for the OpenMP
/// threshold), per_sample_value (what per_sample reports: ℓ_j by default)
/// and kUniformShare (n_j independent of j, so the normaliser needs no pass
/// over the targets).
#include <Eigen/Core>
#include <cmath>
#include <type_traits>

#include "checks.hpp"
#include "numerics.hpp"
#include "parallel.hpp"
#include "reduction.hpp"

namespace losskit {

/// The one spelling of "no gradient wanted", wherever a kernel or a call
/// takes an optional gradient output (e.g. CrossEntropy::evaluate with
/// sample weights and no gradient: `ce.evaluate(x, y, s, losskit::no_grad)`).
struct NoGrad {
  template <class... I>
  NoGrad col(I...) const {
    return {};
  }
  template <class... I>
  NoGrad segment(I...) const {
    return {};
  }
  NoGrad matrix() const { return {}; }
};
inline constexpr NoGrad no_grad{};

namespace detail {

template <class G>
constexpr bool wants_grad = !std::is_same<std::decay_t<G>, NoGrad>::value;

/// "Every sample weighs 1": the unweighted calls go through the weighted code
/// with this stand-in, which the compiler folds away.
struct UnitWeights {};

template <class W>
constexpr bool is_weighted = !std::is_same<std::decay_t<W>, UnitWeights>::value;

/// Sample weights are a length-n vector, finite and >= 0.
template <class Scalar, class W>
void check_sample_weights(const char* loss, const Eigen::DenseBase<W>& w, Eigen::Index n) {
  static_assert(std::is_same<typename W::Scalar, Scalar>::value,
                "losskit: sample_weights must have the loss's Scalar (use .template cast<Scalar>())");
  check_vector_length(loss, "sample_weights", w, n);
  // One vectorised reduction; the loop only runs to name the offender.
  if (n == 0 || (w.template minCoeff<Eigen::PropagateNaN>() >= Scalar(0) &&
                 w.template maxCoeff<Eigen::PropagateNaN>() < std::numeric_limits<Scalar>::infinity()))
    return;
  for (Eigen::Index i = 0; i < n; ++i) {
    const Scalar s = w.derived().coeff(i);
    if (!(s >= Scalar(0)) || !std::isfinite(s))
      fail(loss, "sample_weights", "weight ", s, " of sample ", i, " must be finite and >= 0");
  }
}

/// True when X's coefficients are one contiguous column-major array (and
/// for NoGrad, which has none).
template <class X>
constexpr bool is_contiguous() {
  using Ev = std::decay_t<X>;
  if constexpr (std::is_same<Ev, NoGrad>::value) {
    return true;
  } else {
    constexpr int flags = int(Eigen::internal::evaluator<Ev>::Flags);
    return (flags & Eigen::LinearAccessBit) && (flags & Eigen::DirectAccessBit) && !(flags & Eigen::RowMajorBit) &&
           Ev::InnerStrideAtCompileTime == 1;
  }
}

template <class Part, class Acc>
Acc part_total(const Part& p) {
  if constexpr (std::is_arithmetic<Part>::value)
    return Acc(p);
  else
    return p.total();
}

template <class Part, class Acc>
Part part_scaled(const Part& p, Acc s) {
  if constexpr (std::is_arithmetic<Part>::value)
    return p * s;
  else
    return p.scaled(s);
}

/// What a reduced call produced: the summed (weighted, unreduced) parts, the
/// normaliser and the factor that reduces them (1/normaliser or 1).
template <class Part, class Acc, class Scalar>
struct Totals {
  Part sum{};
  Acc normaliser = 0;
  Scalar factor = 0;
  Scalar value() const { return static_cast<Scalar>(part_total<Part, Acc>(sum) * Acc(factor)); }
};

/// Sample weights read once (UnitWeights passes through).
inline UnitWeights eval_weights(UnitWeights w) { return w; }
template <class W>
eval_t<W> eval_weights(const Eigen::DenseBase<W>& w) {
  return w.derived();
}

/// s_j, or 1 without weights.
template <class Scalar, class W>
Scalar sample_weight_at(const W& s, Eigen::Index j) {
  if constexpr (is_weighted<W>)
    return s.coeff(j);
  else
    return Scalar(1);
}

/// Σ_j s_j, or n without weights: the normaliser when every n_j = 1.
template <class Acc, class W>
Acc weight_total(const W& s, Eigen::Index n) {
  if constexpr (is_weighted<W>)
    return Acc(accurate_sum(s.array()));
  else
    return Acc(n);
}

/// The writable gradient output (checked beforehand), or NoGrad.
template <class G>
decltype(auto) prepare_grad(const char* loss, const char* arg, const G& grad, Eigen::Index rows, Eigen::Index cols) {
  if constexpr (wants_grad<G>)
    return prepare_output(loss, arg, grad, rows, cols);
  else
    return NoGrad{};
}

/// s_j·column(j, factor·s_j) for one column (s_j = 1 without weights, and
/// column(j, factor) is taken as it is). A column of weight 0 is not
/// evaluated: skip(j) zeroes its gradient columns instead. The one home of
/// these rules, for the column loop and for blocks of columns.
template <class Part, class Scalar, class W, class F, class Skip>
Part weighted_part(const W& s, Eigen::Index j, Scalar factor, F&& column, Skip&& skip) {
  if constexpr (is_weighted<W>) {
    const Scalar sj = s.coeff(j);
    if (sj == Scalar(0)) {
      skip(j);
      return Part{};
    }
    return part_scaled(Part(column(j, factor * sj)), acc_t<Scalar>(sj));
  } else {
    return Part(column(j, factor));
  }
}

/// Σ_j weighted_part(j) over n columns in parallel.
template <class Part, class Scalar, class W, class F, class Skip>
Part weighted_column_sum(Eigen::Index n, Eigen::Index work, const W& s, Scalar factor, F&& column, Skip&& skip) {
  return column_sum<Part>(n, work, [&](Eigen::Index j) { return weighted_part<Part>(s, j, factor, column, skip); });
}

/// Elements in one block of whole columns (see ColumnLoss::kBlockRows).
constexpr Eigen::Index kColumnBlockElements = 2048;

/// Columns [j0, j0 + count) of a contiguous C×N input, for a family's
/// `columns` kernel: the input block `x`, and `e`, the same block of the
/// gradient (or of a stack buffer when there is none), for the
/// exponentials. Built in place (e may point into the object).
template <class Scalar, class G>
class ColumnBlock {
  Eigen::Array<Scalar, wants_grad<G> ? 1 : kColumnBlockElements, 1> scratch_;  // before e, which may point here

 public:
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Array<Scalar, 1, Eigen::Dynamic, Eigen::RowMajor, 1, kColumnBlockElements>;

  template <class X>
  ColumnBlock(const X& x_all, G& g, Eigen::Index j0, Eigen::Index count)
      : x(x_all.data() + x_all.rows() * j0, x_all.rows(), count), e(e_data(g, x_all.rows() * j0), x_all.rows(), count) {}
  ColumnBlock(const ColumnBlock&) = delete;
  ColumnBlock& operator=(const ColumnBlock&) = delete;

  const Eigen::Map<const Mat> x;
  Eigen::Map<Mat> e;

  /// The column maxima of x.
  Row column_max() const { return x.array().colwise().maxCoeff(); }

  /// e = exp(scale·(x − shift_j)) in one pass over the block, the exponent
  /// clamped at 0 when kClamp (for a shift that is the maximum only up to
  /// rounding).
  template <bool kClamp = false>
  void exp(const Row& shift, Scalar scale) {
    if constexpr (kClamp)
      e.array() = (x.array().rowwise() - shift).min(Scalar(0)) * scale;
    else
      e.array() = (x.array().rowwise() - shift) * scale;
    exp_in_place();
  }

  /// The same with a scale per column, e = exp(scale_j·min(x − shift_j, 0)).
  void exp_clamped(const Row& shift, const Row& scale) {
    e.array() = (x.array().rowwise() - shift).min(Scalar(0)).rowwise() * scale;
    exp_in_place();
  }

  /// Σ_k e_kj of every column.
  Row sums() const { return e.array().colwise().sum(); }

  /// The closing loop of a family's `columns`, Σ_j s_j·ℓ_j over the block
  /// (block column j is batch column j0 + j): a column of weight 0 is zeroed
  /// and skipped; one that exact(j) names (a non-finite one, say) goes
  /// through the family's column kernel, column(j0 + j, f, grad); the others
  /// through close(j, f, grad). f = factor·s_j, grad = e.col(j) or NoGrad.
  template <class Part, class W, class Exact, class Column, class Close>
  Part close_columns(Eigen::Index j0, const W& s, Scalar factor, Exact&& exact, Column&& column, Close&& close) {
    auto one = [&](Eigen::Index col, Scalar f) -> Part {
      const Eigen::Index j = col - j0;
      auto run = [&](auto&& grad) -> Part {
        if (exact(j)) return column(col, f, grad);
        return close(j, f, grad);
      };
      if constexpr (wants_grad<G>)
        return run(e.col(j));
      else
        return run(NoGrad{});
    };
    auto skip = [&](Eigen::Index col) {
      if constexpr (wants_grad<G>) e.col(col - j0).setZero();
    };
    Part total{};
    for (Eigen::Index j = 0; j < e.cols(); ++j) total += weighted_part<Part>(s, j0 + j, factor, one, skip);
    return total;
  }

 private:
  void exp_in_place() {
    Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>> flat(e.data(), e.size());
    flat = flat.exp();
  }

  Scalar* e_data(G& g, Eigen::Index offset) {
    if constexpr (wants_grad<G>) {
      return g.data() + offset;
    } else {
      (void)g;
      (void)offset;
      return scratch_.data();
    }
  }
};

template <class Derived, class Scalar_>
class ColumnLoss {
 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static_assert(std::is_floating_point<Scalar>::value, "losskit: a loss's Scalar must be float or double");

  /// Mean (default) divides by Σ s_i·n_i, Sum adds (see the file comment).
  Reduction reduction = Reduction::Mean;

  template <class P, class T>
  Scalar operator()(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) const {
    return totals(pred, target, UnitWeights{}, NoGrad{}).value();
  }

  template <class P, class T, class W>
  Scalar operator()(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target,
                    const Eigen::DenseBase<W>& sample_weights) const {
    return totals(pred, target, sample_weights, NoGrad{}).value();
  }

  template <class P, class T, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target,
                            const Eigen::DenseBase<G>& grad) const {
    return totals(pred, target, UnitWeights{}, grad).value();
  }

  template <class P, class T, class W, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target,
                            const Eigen::DenseBase<W>& sample_weights, const Eigen::DenseBase<G>& grad) const {
    return totals(pred, target, sample_weights, grad).value();
  }

  /// The unreduced, unweighted per-sample values (see the family's header).
  template <class P, class T>
  Vector per_sample(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) const {
    require_scalar<Scalar, P>();
    const eval_t<P> x(pred.derived());
    const eval_t<T> t(target.derived());
    const auto context = self().prepare(x, t);
    Vector out(x.cols());
    column_for(x.cols(), self().column_work(x), [&](Eigen::Index j) {
      out(j) = self().per_sample_value(self().column(context, x, t, j, Scalar(1), NoGrad{}), self().share(t, j));
    });
    return out;
  }

 protected:
  using Acc = acc_t<Scalar>;
  using Part = Acc;
  static constexpr bool kUniformShare = true;

  template <class T>
  static Acc share(const T& /*target*/, Eigen::Index /*j*/) {
    return Acc(1);
  }

  template <class X>
  static Eigen::Index column_work(const X& x) {
    return x.rows();
  }

  /// kElementwise: ℓ is a sum over elements with nothing depending on the
  /// row (MSE; BCE without pos_weight, which elementwise(context) tells): an
  /// unweighted call on contiguous data then runs as if the D×N array were
  /// one long column cut into chunks, so small D pays no per-column cost.
  static constexpr bool kElementwise = false;
  template <class C>
  static bool elementwise(const C& /*context*/) {
    return true;
  }

  /// kBlockRows > 0: the family also has a kernel over a block of whole
  /// columns, `Part columns(context, x, t, j0, count, s, factor, grad)`,
  /// which the call uses on contiguous data of at most kBlockRows rows (when
  /// blocked(context) agrees): a few classes then pay per block of columns
  /// (one exp pass over the block), not per column. It must give what
  /// `column` gives, column by column, to round-off, with the weighted sum's
  /// rules (s_j·ℓ_j, a column of weight 0 not evaluated and zeroed).
  static constexpr Eigen::Index kBlockRows = 0;
  template <class C>
  static bool blocked(const C& /*context*/) {
    return true;
  }

  template <class P>
  static Scalar per_sample_value(const P& part, Acc /*share*/) {
    return static_cast<Scalar>(part_total<P, Acc>(part));
  }

  /// The whole reduced call; families with extra results (CrossEntropy's
  /// parts) build on it. W is UnitWeights or a weight vector, G NoGrad or a
  /// writable gradient.
  template <class P, class T, class W, class G>
  auto totals(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target, const W& sample_weights,
              const G& grad) const {
    using D = Derived;
    using DPart = typename D::Part;
    require_scalar<Scalar, P>();
    if constexpr (wants_grad<G>)
      static_assert(std::is_same<typename G::Scalar, Scalar>::value,
                    "losskit: the gradient output must have the loss's Scalar (e.g. a Matrix<Scalar, ...>)");
    const eval_t<P> x(pred.derived());
    const eval_t<T> t(target.derived());
    const auto context = self().prepare(x, t);
    const Eigen::Index n = x.cols();
    decltype(auto) s = eval_weights(sample_weights);
    if constexpr (is_weighted<W>) check_sample_weights<Scalar>(D::kName, s, n);
    if constexpr (wants_grad<G>) check_output(D::kName, "grad", grad, x.rows(), n);
    Totals<DPart, Acc, Scalar> out;
    out.normaliser = normaliser_of(t, s, n);
    return run(context, x, t, s, grad, out);
  }

  /// Σ_j s_j·n_j (s_j = 1 without weights).
  template <class T, class W>
  Acc normaliser_of(const T& t, const W& s, Eigen::Index n) const {
    if constexpr (Derived::kUniformShare) {
      const Acc share = n > 0 ? self().share(t, 0) : Acc(0);
      return share * weight_total<Acc>(s, n);
    } else {
      Acc total(0);
      for (Eigen::Index j = 0; j < n; ++j) {
        if constexpr (is_weighted<W>)
          total += Acc(s.coeff(j)) * self().share(t, j);
        else
          total += self().share(t, j);
      }
      return total;
    }
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }

  template <class C, class X, class T, class W, class G, class Out>
  Out run(const C& context, const X& x, const T& t, const W& s, const G& grad, Out& out) const {
    using DPart = typename Derived::Part;
    out.factor = reduction_factor<Scalar>(self().reduction, out.normaliser);
    const Scalar factor = out.factor;
    auto&& g = prepare_grad(Derived::kName, "grad", grad, x.rows(), x.cols());
    if constexpr (Derived::kElementwise && !is_weighted<W> && is_contiguous<X>() && is_contiguous<T>() &&
                  is_contiguous<std::decay_t<decltype(g)>>()) {
      if (self().elementwise(context)) {
        out.sum = run_flat(context, x, t, g, factor);
        return out;
      }
    }
    // (Integer labels are read by coefficient; other targets must be contiguous too.)
    if constexpr (Derived::kBlockRows > 0 && is_contiguous<X>() &&
                  (is_contiguous<T>() || std::is_integral<typename T::Scalar>::value) &&
                  is_contiguous<std::decay_t<decltype(g)>>()) {
      if (x.rows() <= Derived::kBlockRows && self().blocked(context)) {
        out.sum = run_blocks(context, x, t, s, g, factor);
        return out;
      }
    }
    out.sum = weighted_column_sum<DPart>(
        x.cols(), self().column_work(x), s, factor,
        [&](Eigen::Index j, Scalar f) { return self().column(context, x, t, j, f, g.matrix().col(j)); },
        [&](Eigen::Index j) {
          if constexpr (wants_grad<G>) g.matrix().col(j).setZero();
        });
    return out;
  }

  static constexpr Eigen::Index kFlatChunk = 1024;

  // Blocks of kColumnBlockElements / rows whole columns, in parallel over blocks.
  template <class C, class X, class T, class W, class G>
  auto run_blocks(const C& context, const X& x, const T& t, const W& s, G& g, Scalar factor) const {
    using DPart = typename Derived::Part;
    const Eigen::Index n = x.cols(), rows = std::max<Eigen::Index>(x.rows(), 1);
    const Eigen::Index per = std::max<Eigen::Index>(1, kColumnBlockElements / rows), blocks = (n + per - 1) / per;
    return column_sum<DPart>(blocks, per * rows, [&](Eigen::Index b) {
      const Eigen::Index j0 = b * per;
      return self().columns(context, x, t, j0, std::min(per, n - j0), s, factor, g);
    });
  }

  // The D×N array seen as kFlatChunk×(size/kFlatChunk) plus one short
  // column for the remainder; the kernel runs on those columns.
  template <class C, class X, class T, class G>
  auto run_flat(const C& context, const X& x, const T& t, G& g, Scalar factor) const {
    using DPart = typename Derived::Part;
    using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
    const Eigen::Index size = x.size(), full = size / kFlatChunk, rem = size - full * kFlatChunk;
    auto flat = [&](Eigen::Index offset, Eigen::Index rows, Eigen::Index cols) {
      const Eigen::Map<const Mat> xs(x.data() + offset, rows, cols), ts(t.data() + offset, rows, cols);
      return column_sum<DPart>(cols, rows, [&](Eigen::Index j) {
        if constexpr (wants_grad<G>) {
          Eigen::Map<Mat> gs(g.data() + offset, rows, cols);
          return self().column(context, xs, ts, j, factor, gs.col(j));
        } else {
          return self().column(context, xs, ts, j, factor, NoGrad{});
        }
      });
    };
    DPart sum = flat(0, kFlatChunk, full);
    if (rem > 0) sum += flat(full * kFlatChunk, rem, 1);
    return sum;
  }
};

/// evaluate(): the reduced call with the family's parts, for families with a
/// Result (CrossEntropy, the MS-SSIM losses). Derived (or the family base that
/// declares `static Result result(const Totals&)`) befriends this class.
template <class Derived>
class EvaluateCalls {
 public:
  template <class P, class T>
  auto evaluate(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) const {
    return call(pred, target, UnitWeights{}, NoGrad{});
  }

  /// As above, and writes the gradient of result.loss into grad.
  template <class P, class T, class G>
  auto evaluate(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target,
                const Eigen::DenseBase<G>& grad) const {
    return call(pred, target, UnitWeights{}, grad);
  }

  /// With sample weights; grad may be losskit::no_grad.
  template <class P, class T, class W, class G>
  auto evaluate(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target,
                const Eigen::DenseBase<W>& sample_weights, const G& grad) const {
    return call(pred, target, sample_weights, grad);
  }

 private:
  template <class P, class T, class W, class G>
  auto call(const P& pred, const T& target, const W& sample_weights, const G& grad) const {
    const Derived& self = static_cast<const Derived&>(*this);
    return Derived::result(self.totals(pred, target, sample_weights, grad));
  }
};

}  // namespace detail
}  // namespace losskit
