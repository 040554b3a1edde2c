#pragma once
/// Mean squared error.
///
///   per element  e = pred - target
///   Mean:        L = (1/(D·N)) Σ_{d,i} e_{d,i}²     (PyTorch mse_loss 'mean', mlpack MeanSquaredError)
///   Sum:         L = Σ_{d,i} e_{d,i}²               (PyTorch 'sum')
///   gradient     ∂L/∂pred = 2·e·f,  f = 1/(D·N) (Mean) or 1 (Sum)
///   per_sample   column means (1/D) Σ_d e_{d,i}², so mean(per_sample) == Mean loss
///                (and Sum == D · Σ per_sample).
///   sample weights s_i: Sum = Σ_i s_i·Σ_d e_{d,i}², Mean = that / (D·Σ_i s_i)
///                (each sample's share of the element mean is D), i.e. the
///                s-weighted mean of per_sample.
///
/// pred and target are D×N (samples are columns), any Eigen dense expression
/// of the functor's Scalar. Non-finite inputs propagate: an inf difference
/// gives an inf loss, a NaN gives NaN (no exception).
#include <Eigen/Core>

#include "core/checks.hpp"
#include "core/functor.hpp"
#include "core/numerics.hpp"

namespace losskit {

template <class Scalar_>
class MSE : public detail::ColumnLoss<MSE<Scalar_>, Scalar_> {
  friend detail::ColumnLoss<MSE<Scalar_>, Scalar_>;

 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

 private:
  using Acc = detail::acc_t<Scalar>;
  using Part = Acc;
  static constexpr const char* kName = "MSE";
  static constexpr bool kElementwise = true;
  static constexpr Eigen::Index kChunk = 1024;

  struct Context {};

  template <class P, class T>
  static Context prepare(const P& pred, const T& target) {
    detail::require_scalar<Scalar, T>();
    detail::check_not_empty(kName, "pred", pred);
    detail::check_same_shape(kName, "target", pred, target);
    return {};
  }

  template <class T>
  static Acc share(const T& target, Eigen::Index) {
    return Acc(target.rows());
  }

  static Scalar per_sample_value(Acc loss, Acc share) { return static_cast<Scalar>(loss / share); }

  // Chunk by chunk (L1-sized): the squared sum of the difference, then the
  // gradient 2·factor·(p − t) written once from the inputs, still in L1
  // (cheaper than writing p − t, reading it back and scaling it in place;
  // the same roundings). Memory traffic is one read of each input and one
  // write of the gradient.
  template <class P, class T, class G>
  static Acc column(Context, const P& p, const T& t, Eigen::Index j, Scalar factor, G&& g) {
    const Eigen::Index rows = p.rows();
    Acc s(0);
    for (Eigen::Index start = 0; start < rows; start += kChunk) {
      const Eigen::Index len = std::min(kChunk, rows - start);
      const auto pc = p.matrix().col(j).segment(start, len);
      const auto tc = t.matrix().col(j).segment(start, len);
      if constexpr (detail::wants_grad<G>) {
        s += static_cast<Acc>((pc - tc).squaredNorm());
        g.segment(start, len) = (pc - tc) * (Scalar(2) * factor);
      } else {
        (void)factor;
        s += static_cast<Acc>((pc - tc).squaredNorm());
      }
    }
    return s;
  }
};

}  // namespace losskit
