#pragma once
/// Shape, label and option checks shared by every loss, and the helpers that
/// turn any Eigen expression into something that is read once, and any
/// writable Eigen object into a gradient output.
///
/// Every check runs before anything is written to an output, so a call that
/// throws leaves its outputs untouched.
#include <Eigen/Core>
#include <cmath>
#include <type_traits>

#include "error.hpp"

namespace losskit {
namespace detail {

/// The type an input expression is read through: the expression itself when
/// reading it is as cheap as reading a matrix (Matrix, Map, Block, transpose),
/// otherwise a temporary holding its value (products, costly array
/// expressions). Either way it is evaluated at most once.
template <class Derived>
using eval_t = typename Eigen::internal::nested_eval<Derived, Eigen::Dynamic>::type;

template <class Scalar, class Derived>
constexpr void require_scalar() {
  static_assert(std::is_same<typename Derived::Scalar, Scalar>::value,
                "losskit: input scalar type must equal the loss's Scalar "
                "(use .template cast<Scalar>() to convert)");
}

template <class Derived>
constexpr void require_integer_labels() {
  static_assert(std::is_integral<typename Derived::Scalar>::value,
                "losskit: labels must be an integer vector expression");
}

template <class A>
void check_not_empty(const char* loss, const char* arg, const Eigen::DenseBase<A>& a) {
  if (a.rows() == 0 || a.cols() == 0)
    fail(loss, arg, "empty input (", a.rows(), "x", a.cols(), "); at least one sample and one value are needed");
}

template <class A, class B>
void check_same_shape(const char* loss, const char* arg, const Eigen::DenseBase<A>& ref,
                      const Eigen::DenseBase<B>& b) {
  if (ref.rows() != b.rows() || ref.cols() != b.cols())
    fail(loss, arg, "shape ", b.rows(), "x", b.cols(), " does not match ", ref.rows(), "x", ref.cols());
}

template <class V>
void check_vector_length(const char* loss, const char* arg, const Eigen::DenseBase<V>& v, Eigen::Index n) {
  if ((v.rows() != 1 && v.cols() != 1) || v.size() != n)
    fail(loss, arg, "expected a vector of length ", n, ", got ", v.rows(), "x", v.cols());
}

/// Labels must lie in [0, classes); `ignore_index` (when allowed) is skipped.
/// n is the logits' column count and classes their row count: labels as
/// long as the row count are the sign of N×C logits, and the message says so.
template <class L>
void check_labels(const char* loss, const Eigen::DenseBase<L>& labels, Eigen::Index n, Eigen::Index classes,
                  bool allow_ignore = false, long long ignore_index = 0) {
  require_integer_labels<L>();
  if ((labels.rows() == 1 || labels.cols() == 1) && labels.size() != n && labels.size() == classes)
    fail(loss, "labels", "expected a vector of length N = ", n, " (one label per column of the logits), got ", labels.size(),
         ", the logits' row count: logits are C×N with classes as rows and samples as columns "
         "(pass N×C logits as logits.transpose())");
  check_vector_length(loss, "labels", labels, n);
  for (Eigen::Index i = 0; i < n; ++i) {
    const long long y = static_cast<long long>(labels.derived().coeff(i));
    if (allow_ignore && y == ignore_index) continue;
    if (y < 0 || y >= static_cast<long long>(classes)) {
      if (allow_ignore)
        fail(loss, "labels", "label ", y, " at sample ", i, " is outside [0, ", classes, ") and is not ignore_index (",
             ignore_index, ")");
      fail(loss, "labels", "label ", y, " at sample ", i, " is outside [0, ", classes, ")");
    }
  }
}

/// A floating-point vector where labels would go: say what is expected
/// instead of reporting a shape mismatch against C×N probabilities.
template <class X, class T>
void check_float_labels(const char* loss, const Eigen::DenseBase<X>& logits, const Eigen::DenseBase<T>& target) {
  const bool vector = target.rows() == 1 || target.cols() == 1;
  if (vector && (target.rows() != logits.rows() || target.cols() != logits.cols()))
    fail(loss, "target", "a floating-point vector of shape ", target.rows(), "x", target.cols(),
         " is neither integer labels nor probabilities: pass labels as an integer vector of length N = ",
         logits.cols(), " (e.g. Eigen::VectorXi, or labels.cast<int>()) or probabilities as a C×N matrix (",
         logits.rows(), "x", logits.cols(), ")");
}

template <class Scalar>
void check_positive(const char* loss, const char* option, Scalar value) {
  if (!(value > Scalar(0)) || !std::isfinite(static_cast<double>(value)))
    fail(loss, option, "must be finite and > 0, got ", value);
}

template <class Scalar>
void check_non_negative(const char* loss, const char* option, Scalar value) {
  if (!(value >= Scalar(0)) || !std::isfinite(static_cast<double>(value)))
    fail(loss, option, "must be finite and >= 0, got ", value);
}

template <class Scalar>
void check_finite(const char* loss, const char* option, Scalar value) {
  if (!std::isfinite(static_cast<double>(value))) fail(loss, option, "must be finite, got ", value);
}

/// Makes `out` a rows x cols writable output: a resizable plain object
/// (Matrix, Array) is resized if needed (no allocation when already the right
/// size); a fixed view (Map, Block, Ref) must already have that shape.
/// Returns the writable object. Call only after every input check passed.
template <class Out>
Out& prepare_output(const char* loss, const char* arg, const Eigen::DenseBase<Out>& out, Eigen::Index rows,
                    Eigen::Index cols) {
  Out& o = const_cast<Out&>(out.derived());
  if constexpr (std::is_base_of<Eigen::PlainObjectBase<Out>, Out>::value) {
    if (o.rows() != rows || o.cols() != cols) o.resize(rows, cols);
  } else {
    if (o.rows() != rows || o.cols() != cols)
      fail(loss, arg, "output view has shape ", o.rows(), "x", o.cols(), ", expected ", rows, "x", cols);
  }
  return o;
}

/// Checks the shape an output will have before anything is written: for
/// views whose size cannot change, a mismatch is an error reported up front.
template <class Out>
void check_output(const char* loss, const char* arg, const Eigen::DenseBase<Out>& out, Eigen::Index rows,
                  Eigen::Index cols) {
  if constexpr (!std::is_base_of<Eigen::PlainObjectBase<Out>, Out>::value) {
    if (out.rows() != rows || out.cols() != cols)
      fail(loss, arg, "output view has shape ", out.rows(), "x", out.cols(), ", expected ", rows, "x", cols);
  } else {
    (void)loss;
    (void)arg;
    if ((Out::RowsAtCompileTime != Eigen::Dynamic && Out::RowsAtCompileTime != rows) ||
        (Out::ColsAtCompileTime != Eigen::Dynamic && Out::ColsAtCompileTime != cols))
      fail(loss, arg, "fixed-size output cannot hold ", rows, "x", cols);
  }
}

}  // namespace detail
}  // namespace losskit
