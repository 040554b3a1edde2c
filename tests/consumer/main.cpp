// Built by the package.* CTest tests against an installed / embedded losskit.
#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <losskit/losskit.hpp>

int main() {
  Eigen::MatrixXd pred(2, 2), target(2, 2), grad;
  pred << 1, 2, 3, 4;
  target << 0, 2, 3, 6;
  // Squared errors 1, 0, 0, 4 over 4 elements.
  const double value = losskit::MSE<double>{}.value_and_gradient(pred, target, grad);
  const bool ok = std::abs(value - 1.25) < 1e-15 && std::abs(grad(1, 1) + 1.0) < 1e-15;
  std::printf("consumer: MSE = %g (%s)\n", value, ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
