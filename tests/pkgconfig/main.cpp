// Built by the package.pkg_config test with `pkg-config --cflags losskit` only.
#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <losskit/losskit.hpp>

int main() {
  Eigen::MatrixXf logits(3, 2);
  logits << 1, 0, 0, 0, 0, 0;
  Eigen::VectorXi labels(2);
  labels << 0, 2;
  // Column 0: −log(e/(e+2)); column 1: equal logits, −log(1/3).
  const float expected = 0.5f * (std::log(std::exp(1.0f) + 2.0f) - 1.0f + std::log(3.0f));
  const float value = losskit::CrossEntropy<float>{}(logits, labels);
  const bool ok = std::abs(value - expected) < 1e-6f;
  std::printf("pkg-config consumer: CrossEntropy = %g (%s)\n", double(value), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
