// Fits a linear model y = W x + b with MSE by full-batch gradient descent.
//
// Demonstrates the pattern every losskit example follows: data as columns,
// one value_and_gradient call per step, the chain rule through the model by
// hand (a product with the inputs), and a plain SGD update.
//
// Run: ./example_linear_regression          (prints the loss every 50 steps)
//      ./example_linear_regression --quick  (fewer steps; used by CTest)
#include <Eigen/Dense>
#include <cstdio>
#include <cstring>
#include <losskit/mse.hpp>
#include <random>

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int steps = quick ? 200 : 1000;
  const Eigen::Index in = 5, out = 2, n = 512;

  // Synthetic data: a known W_true, b_true and Gaussian noise of std 0.01.
  std::mt19937 gen(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto randn = [&](Eigen::Index r, Eigen::Index c) {
    Eigen::MatrixXd m(r, c);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
    return m;
  };
  const Eigen::MatrixXd w_true = randn(out, in), b_true = randn(out, 1);
  const Eigen::MatrixXd x = randn(in, n);
  const Eigen::MatrixXd y = (w_true * x).colwise() + b_true.col(0) + 0.01 * randn(out, n);

  Eigen::MatrixXd w = Eigen::MatrixXd::Zero(out, in);
  Eigen::VectorXd b = Eigen::VectorXd::Zero(out);
  losskit::MSE<double> mse;
  Eigen::MatrixXd grad_pred(out, n);
  const double lr = 0.5;
  double loss = 0;
  for (int step = 0; step < steps; ++step) {
    // pred = W x + b, evaluated once inside the loss.
    loss = mse.value_and_gradient((w * x).colwise() + b, y, grad_pred);
    w -= lr * grad_pred * x.transpose();      // ∂L/∂W = ∂L/∂pred · xᵀ
    b -= lr * grad_pred.rowwise().sum();      // ∂L/∂b = Σ_i ∂L/∂pred_i
    if (step % 50 == 0) std::printf("step %4d  mse %.6e\n", step, loss);
  }
  const double w_err = (w - w_true).cwiseAbs().maxCoeff();
  std::printf("final mse %.6e, max |W - W_true| = %.2e\n", loss, w_err);
  // Noise variance is 1e-4: a converged fit sits near it.
  return (loss < 2e-4 && w_err < 5e-3) ? 0 : 1;
}
