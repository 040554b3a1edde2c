#pragma once
/// How a batch of per-sample losses is reduced to one number.
#include <ostream>

namespace losskit {

/// Mean (the default of every functor) divides the summed loss by the
/// functor's documented normaliser (for most losses the number of counted
/// samples; see each functor). Sum returns the plain sum; with Sum a loss can
/// be accumulated across shards or micro-batches and divided by a global
/// normaliser by the caller.
enum class Reduction { Mean, Sum };

inline std::ostream& operator<<(std::ostream& os, Reduction r) {
  return os << (r == Reduction::Mean ? "Mean" : "Sum");
}

namespace detail {

/// Factor applied to a summed loss (and its gradient). A zero normaliser
/// (nothing counted) gives factor 0: the loss and gradient are then 0.
template <class Scalar, class Acc>
Scalar reduction_factor(Reduction r, Acc normaliser) {
  if (r == Reduction::Sum) return Scalar(1);
  return normaliser > Acc(0) ? Scalar(Acc(1) / normaliser) : Scalar(0);
}

}  // namespace detail
}  // namespace losskit
