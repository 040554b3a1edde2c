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

/// m = the list as one column.
template <class M, class Scalar>
void assign_column(M& m, std::initializer_list<Scalar> values) {
  m.resize(Eigen::Index(values.size()), 1);
  Eigen::Index i = 0;
  for (const Scalar v : values) m.coeffRef(i++) = v;
}

}  // namespace detail

template <class Scalar>
class VectorOption : public Eigen::Matrix<Scalar, Eigen::Dynamic, 1> {
  using Base = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

 public:
  VectorOption() = default;
  VectorOption(std::initializer_list<Scalar> values) { detail::assign_column(*this, values); }
  template <class D>
  VectorOption(const Eigen::MatrixBase<D>& v) : Base(v) {}  // NOLINT: implicit, like Eigen's own vectors

  VectorOption& operator=(std::initializer_list<Scalar> values) {
    detail::assign_column(*this, values);
    return *this;
  }
  template <class D>
  VectorOption& operator=(const Eigen::MatrixBase<D>& v) {
    Base::operator=(v);
    return *this;
  }
};

/// A matrix-valued option (BinaryCrossEntropyWithLogits::weight): any Eigen
/// matrix expression, or a braced list as one column.
template <class Scalar>
class MatrixOption : public Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> {
  using Base = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

 public:
  MatrixOption() = default;
  MatrixOption(std::initializer_list<Scalar> values) { detail::assign_column(*this, values); }
  template <class D>
  MatrixOption(const Eigen::MatrixBase<D>& m) : Base(m) {}  // NOLINT: implicit, like Eigen's own matrices

  MatrixOption& operator=(std::initializer_list<Scalar> values) {
    detail::assign_column(*this, values);
    return *this;
  }
  template <class D>
  MatrixOption& operator=(const Eigen::MatrixBase<D>& m) {
    Base::operator=(m);
    return *this;
  }
};

}  // namespace losskit
