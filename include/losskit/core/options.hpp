#pragma once
/// The types of vector- and matrix-valued options (class_weights, pos_weight,
/// BCE's element weight): Eigen objects that are also assignable from a braced
/// list, so `ce.class_weights = {1.f, 1.f, 5.f};` works as `= some_eigen_vector;`
/// does. A braced list is always one column: a VectorOption of that length, a
/// MatrixOption of that many rows and one column (a D×N matrix option is
/// assigned from an Eigen matrix; nested braces do not compile, so a list is
/// never read as rows or as sizes).
#include <Eigen/Core>
#include <initializer_list>

namespace losskit {
namespace detail {

/// An Eigen object with Cols columns (1 or Dynamic) that is also assignable
/// from a braced list, read as one column.
template <class Scalar, int Cols>
class ListAssignable : public Eigen::Matrix<Scalar, Eigen::Dynamic, Cols> {
  using Base = Eigen::Matrix<Scalar, Eigen::Dynamic, Cols>;

 public:
  ListAssignable() = default;
  ListAssignable(std::initializer_list<Scalar> values) { assign(values); }
  template <class D>
  ListAssignable(const Eigen::MatrixBase<D>& m) : Base(m) {}  // NOLINT: implicit, like Eigen's own matrices

  ListAssignable& operator=(std::initializer_list<Scalar> values) {
    assign(values);
    return *this;
  }
  template <class D>
  ListAssignable& operator=(const Eigen::MatrixBase<D>& m) {
    Base::operator=(m);
    return *this;
  }

 private:
  void assign(std::initializer_list<Scalar> values) {
    this->resize(Eigen::Index(values.size()), 1);
    Eigen::Index i = 0;
    for (const Scalar v : values) this->coeffRef(i++) = v;
  }
};

}  // namespace detail

/// A vector-valued option (class_weights, pos_weight): any Eigen vector
/// expression, or a braced list.
template <class Scalar>
using VectorOption = detail::ListAssignable<Scalar, 1>;

/// A matrix-valued option (BinaryCrossEntropyWithLogits::weight): any Eigen
/// matrix expression, or a braced list as one column.
template <class Scalar>
using MatrixOption = detail::ListAssignable<Scalar, Eigen::Dynamic>;

}  // namespace losskit
