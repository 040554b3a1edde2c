// The README's usage snippet, compiled and run as a test (example.quickstart).
#include <Eigen/Core>
#include <iostream>
#include <losskit/losskit.hpp>

int main() {
  // 3 samples (columns) with 4 outputs each.
  Eigen::MatrixXf pred = Eigen::MatrixXf::Random(4, 3);
  Eigen::MatrixXf target = Eigen::MatrixXf::Zero(4, 3);

  losskit::MSE<float> mse;              // options are public members
  mse.reduction = losskit::Reduction::Mean;

  Eigen::MatrixXf grad;                 // resized once, then reused
  float loss = mse.value_and_gradient(pred, target, grad);  // one fused pass
  pred -= 0.1f * grad;                  // your optimiser step

  std::cout << "loss " << loss << ", after one step " << mse(pred, target) << "\n";
  return mse(pred, target) < loss ? 0 : 1;
}
