#pragma once
/// The type of every vector-valued option (class_weights, pos_weight, ...):
/// an Eigen column vector that is also assignable from a braced list, so
/// `ce.class_weights = {1.f, 1.f, 5.f};` works as `= some_eigen_vector;` does.
#include <Eigen/Core>
#include <initializer_list>

namespace losskit {

template <class Scalar>
class VectorOption : public Eigen::Matrix<Scalar, Eigen::Dynamic, 1> {
  using Base = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

 public:
  VectorOption() = default;
  VectorOption(std::initializer_list<Scalar> values) { assign(values); }
  template <class D>
  VectorOption(const Eigen::MatrixBase<D>& v) : Base(v) {}  // NOLINT: implicit, like Eigen's own vectors

  VectorOption& operator=(std::initializer_list<Scalar> values) {
    assign(values);
    return *this;
  }
  template <class D>
  VectorOption& operator=(const Eigen::MatrixBase<D>& v) {
    Base::operator=(v);
    return *this;
  }

 private:
  void assign(std::initializer_list<Scalar> values) {
    this->resize(Eigen::Index(values.size()));
    Eigen::Index i = 0;
    for (const Scalar v : values) this->coeffRef(i++) = v;
  }
};

}  // namespace losskit
