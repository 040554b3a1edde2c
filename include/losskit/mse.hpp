#pragma once
/// Mean squared error.
///
///   per element  e = pred - target
///   Mean:        L = (1/(D·N)) Σ_{d,i} e_{d,i}²     (PyTorch mse_loss 'mean', mlpack MeanSquaredError)
///   Sum:         L = Σ_{d,i} e_{d,i}²               (PyTorch 'sum')
///   gradient     ∂L/∂pred = 2·e·f,  f = 1/(D·N) (Mean) or 1 (Sum)
///   per_sample   column means (1/D) Σ_d e_{d,i}², so mean(per_sample) == Mean loss
///                (and Sum == D · Σ per_sample).
///
/// pred and target are D×N (samples are columns), any Eigen dense expression
/// of the functor's Scalar. Non-finite inputs propagate: an inf difference
/// gives an inf loss, a NaN gives NaN (no exception).
#include <Eigen/Core>

#include "core/checks.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"

namespace losskit {

template <class Scalar_>
class MSE {
 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static_assert(std::is_floating_point<Scalar>::value, "losskit::MSE: Scalar must be float or double");

  Reduction reduction = Reduction::Mean;

  template <class P, class T>
  Scalar operator()(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) const {
    check(pred, target);
    const detail::eval_t<P> p(pred.derived());
    const detail::eval_t<T> t(target.derived());
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> none;  // empty: no allocation
    return run<false>(p, t, none);
  }

  template <class P, class T, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target,
                            const Eigen::DenseBase<G>& grad) const {
    check(pred, target);
    detail::check_output("MSE", "grad", grad, pred.rows(), pred.cols());
    const detail::eval_t<P> p(pred.derived());
    const detail::eval_t<T> t(target.derived());
    G& g = detail::prepare_output("MSE", "grad", grad, pred.rows(), pred.cols());
    return run<true>(p, t, g);
  }

  template <class P, class T>
  Vector per_sample(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) const {
    check(pred, target);
    const detail::eval_t<P> p(pred.derived());
    const detail::eval_t<T> t(target.derived());
    const Scalar inv_d = Scalar(1) / Scalar(p.rows());
    Vector out(p.cols());
    for (Eigen::Index j = 0; j < p.cols(); ++j)
      out(j) = Scalar(detail::accurate_sum((p.matrix().col(j) - t.matrix().col(j)).array().square()) * inv_d);
    return out;
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr Eigen::Index kChunk = 1024;

  template <class P, class T>
  static void check(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) {
    detail::require_scalar<Scalar, P>();
    detail::require_scalar<Scalar, T>();
    detail::check_not_empty("MSE", "pred", pred);
    detail::check_same_shape("MSE", "target", pred, target);
  }

  template <class X>
  static constexpr bool linear_col_major() {
    using Ev = typename std::decay<X>::type;
    constexpr int flags = int(Eigen::internal::evaluator<Ev>::Flags);
    return (flags & Eigen::LinearAccessBit) && !(flags & Eigen::RowMajorBit) &&
           (flags & Eigen::DirectAccessBit) && Ev::InnerStrideAtCompileTime == 1;
  }

  // Processes `len` elements: the difference is written into the gradient
  // (if wanted), squared-summed while hot in L1, then scaled. Memory traffic
  // is one read of each input and one write of the gradient.
  template <bool WithGrad, class PS, class TS, class GS>
  static Acc chunk(const PS& p, const TS& t, GS&& g, Scalar factor) {
    if constexpr (WithGrad) {
      g = p - t;
      const Acc s = static_cast<Acc>(g.squaredNorm());
      g *= Scalar(2) * factor;
      return s;
    } else {
      (void)g;
      (void)factor;
      return static_cast<Acc>((p - t).squaredNorm());
    }
  }

  template <bool WithGrad, class P, class T, class G>
  Scalar run(const P& p, const T& t, G& g) const {
    const Eigen::Index rows = p.rows(), cols = p.cols(), size = rows * cols;
    const Scalar factor = detail::reduction_factor<Scalar>(reduction, Acc(size));
    Acc total;
    if constexpr (linear_col_major<P>() && linear_col_major<T>() &&
                  (!WithGrad || linear_col_major<G>())) {
      const Eigen::Index chunks = (size + kChunk - 1) / kChunk;
      total = detail::column_sum<Acc>(chunks, kChunk, [&](Eigen::Index c) {
        const Eigen::Index start = c * kChunk, len = std::min(kChunk, size - start);
        auto pc = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>(p.data() + start, len);
        auto tc = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>(t.data() + start, len);
        if constexpr (WithGrad) {
          Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, 1>> gc(g.data() + start, len);
          return chunk<true>(pc, tc, gc, factor);
        } else {
          return chunk<false>(pc, tc, 0, factor);
        }
      });
    } else {
      total = detail::column_sum<Acc>(cols, rows, [&](Eigen::Index j) {
        Acc s(0);
        for (Eigen::Index start = 0; start < rows; start += kChunk) {
          const Eigen::Index len = std::min(kChunk, rows - start);
          auto pc = p.matrix().col(j).segment(start, len);
          auto tc = t.matrix().col(j).segment(start, len);
          if constexpr (WithGrad)
            s += chunk<true>(pc, tc, g.matrix().col(j).segment(start, len), factor);
          else
            s += chunk<false>(pc, tc, 0, factor);
        }
        return s;
      });
    }
    return static_cast<Scalar>(total * static_cast<Acc>(factor));
  }
};

}  // namespace losskit
