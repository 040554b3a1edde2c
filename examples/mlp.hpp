#pragma once
// A one-hidden-layer perceptron with hand-written backpropagation, shared by
// the examples (not part of losskit):
//
//   h = relu(W1·x + b1),   out = W2·h + b2        (samples are columns)
//
// All parameters live in one vector and their gradients in another, so an
// optimiser step, or an MPI all-reduce of the gradient, is one call on one
// contiguous buffer.
#include <Eigen/Core>
#include <cmath>
#include <random>

class Mlp {
 public:
  Mlp(Eigen::Index in, Eigen::Index hidden, Eigen::Index out, unsigned seed)
      : in_(in), hidden_(hidden), out_(out), theta_(Eigen::VectorXd::Zero(hidden * in + hidden + out * hidden + out)),
        grad_(Eigen::VectorXd::Zero(theta_.size())), velocity_(Eigen::VectorXd::Zero(theta_.size())) {
    // Glorot-uniform weights, zero biases.
    std::mt19937 gen(seed);
    auto init = [&](Eigen::Map<Eigen::MatrixXd> w) {
      std::uniform_real_distribution<double> u(-1.0, 1.0);
      const double limit = std::sqrt(6.0 / double(w.rows() + w.cols()));
      for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = limit * u(gen);
    };
    init(w1(theta_));
    init(w2(theta_));
  }

  /// The network's output for the columns of x; keeps x and h for backward().
  const Eigen::MatrixXd& forward(const Eigen::Ref<const Eigen::MatrixXd>& x) {
    x_ = x;
    h_ = ((w1(theta_) * x_).colwise() + b1(theta_)).cwiseMax(0.0);
    output_ = (w2(theta_) * h_).colwise() + b2(theta_);
    return output_;
  }

  /// Takes ∂L/∂out for the last forward(); sets gradient() to ∂L/∂θ and
  /// returns ∂L/∂x.
  Eigen::MatrixXd backward(const Eigen::MatrixXd& grad_output) {
    w2(grad_) = grad_output * h_.transpose();
    b2(grad_) = grad_output.rowwise().sum();
    const Eigen::MatrixXd grad_h =
        (w2(theta_).transpose() * grad_output).cwiseProduct((h_.array() > 0.0).cast<double>().matrix());
    w1(grad_) = grad_h * x_.transpose();
    b1(grad_) = grad_h.rowwise().sum();
    return w1(theta_).transpose() * grad_h;
  }

  /// Heavy-ball SGD: v ← momentum·v + ∂L/∂θ, θ ← θ − lr·v.
  void sgd_step(double lr, double momentum) {
    velocity_ = momentum * velocity_ + grad_;
    theta_ -= lr * velocity_;
  }

  Eigen::VectorXd& parameters() { return theta_; }
  Eigen::VectorXd& gradient() { return grad_; }

 private:
  // Views of one parameter-shaped vector: [W1 | b1 | W2 | b2].
  Eigen::Map<Eigen::MatrixXd> w1(Eigen::VectorXd& v) const { return {v.data(), hidden_, in_}; }
  Eigen::Map<Eigen::VectorXd> b1(Eigen::VectorXd& v) const { return {v.data() + hidden_ * in_, hidden_}; }
  Eigen::Map<Eigen::MatrixXd> w2(Eigen::VectorXd& v) const { return {v.data() + hidden_ * (in_ + 1), out_, hidden_}; }
  Eigen::Map<Eigen::VectorXd> b2(Eigen::VectorXd& v) const {
    return {v.data() + hidden_ * (in_ + 1) + out_ * hidden_, out_};
  }

  Eigen::Index in_, hidden_, out_;
  Eigen::VectorXd theta_, grad_, velocity_;
  Eigen::MatrixXd x_, h_, output_;
};
