// Trains a small model with a 2^17-class output layer through the factored
// exact path (FactoredOutputLayer + ZLoss), and times its steps against the
// naive dense step on the same minibatches.
//
// Model: x (32) → h = tanh(A·x) (64) → o = W·h (131072 classes), Z-loss.
// Data: 512 prototype inputs, each assigned a random class among 2^17;
// samples are prototypes plus noise. The factored step costs O(d²) per
// example; the dense one O(D·d) — same loss, same gradients, same update.
//
// Run: ./example_large_output_layer          (2000 training steps)
//      ./example_large_output_layer --quick  (300 steps; used by CTest)
// Exit code 1 if a sanity check fails: the first steps of the factored and the
// dense path must agree, the loss must fall, and the prototypes must be
// classified far above chance (1/131072).
#include <Eigen/Dense>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <losskit/factored_output_layer.hpp>
#include <random>

namespace {

using Matrix = Eigen::MatrixXf;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const Eigen::Index classes = Eigen::Index(1) << 17, in = 32, d = 64, batch = 64, prototypes = 512;
  const int steps = quick ? 300 : 2000, compared_steps = 3;
  const float lr = 2.0f, lr_hidden = 0.5f;

  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto randn = [&](Eigen::Index r, Eigen::Index c, float scale) {
    Matrix m(r, c);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = scale * normal(gen);
    return m;
  };
  const Matrix protos = randn(in, prototypes, 1.0f);
  Eigen::VectorXi proto_class(prototypes);
  std::uniform_int_distribution<int> any_class(0, int(classes) - 1), any_proto(0, int(prototypes) - 1);
  for (Eigen::Index p = 0; p < prototypes; ++p) proto_class(p) = any_class(gen);

  Matrix a = randn(d, in, 1.0f / std::sqrt(float(in)));
  const Matrix w0 = randn(classes, d, 1.0f / std::sqrt(float(d)));
  losskit::FactoredOutputLayer<float> layer(w0);
  Matrix w_dense = w0;  // the dense path's copy of W, for the timing comparison
  losskit::ZLoss<float> zloss;
  zloss.b = 10;  // a margin of 10 standard deviations: pushes the target towards the top rank

  Matrix x(in, batch), h(d, batch), grad_h(d, batch), grad_h_dense(d, batch), outputs(classes, batch),
      grad_o(classes, batch);
  Eigen::VectorXi labels(batch);
  double factored_ms = 0, dense_ms = 0, first_loss = 0, last_loss = 0;
  float worst_w = 0, worst_grad = 0;
  for (int step = 0; step < steps; ++step) {
    for (Eigen::Index i = 0; i < batch; ++i) {
      const int p = any_proto(gen);
      x.col(i) = protos.col(p) + randn(in, 1, 0.1f);
      labels(i) = proto_class(p);
    }
    h = (a * x).array().tanh().matrix();

    Clock::time_point t0 = Clock::now();
    const float loss = layer.train_step(zloss, h, labels, grad_h, lr);
    factored_ms += ms_since(t0);

    if (step < compared_steps) {
      t0 = Clock::now();
      outputs.noalias() = w_dense * h;
      const float dense_loss = zloss.value_and_gradient(outputs, labels, grad_o);
      grad_h_dense.noalias() = w_dense.transpose() * grad_o;
      w_dense.noalias() -= lr * grad_o * h.transpose();
      dense_ms += ms_since(t0);
      worst_grad = std::max(worst_grad, (grad_h - grad_h_dense).cwiseAbs().maxCoeff() / grad_h_dense.cwiseAbs().maxCoeff());
      worst_w = std::max(worst_w, (layer.weights() - w_dense).cwiseAbs().maxCoeff() / w_dense.cwiseAbs().maxCoeff());
      std::printf("step %d: loss factored %.6f, dense %.6f\n", step, loss, dense_loss);
    }
    // Back through tanh into A (plain SGD).
    a -= lr_hidden * (grad_h.array() * (1.0f - h.array().square())).matrix() * x.transpose();

    if (step == 0) first_loss = loss;
    last_loss = loss;
    if (step % 100 == 0) std::printf("step %4d  z-loss %.5f\n", step, loss);
  }

  // Top-1 accuracy on the prototypes needs all 2^17 outputs: O(D·d) by nature.
  Eigen::Index correct = 0;
  for (Eigen::Index start = 0; start < prototypes; start += batch) {
    const Matrix hp = (a * protos.middleCols(start, batch)).array().tanh().matrix();
    const Matrix o = layer.outputs(hp);
    for (Eigen::Index i = 0; i < batch; ++i) {
      Eigen::Index best;
      o.col(i).maxCoeff(&best);
      correct += best == proto_class(start + i);
    }
  }
  const double accuracy = double(correct) / double(prototypes);
  const double per_factored = factored_ms / steps, per_dense = dense_ms / compared_steps;
  std::printf("per step (m = %ld, D = %ld, d = %ld): factored %.3f ms, dense %.1f ms, speed-up %.0fx\n",
              long(batch), long(classes), long(d), per_factored, per_dense, per_dense / per_factored);
  std::printf("factored vs dense over %d steps: max rel diff dL/dH %.2e, W %.2e\n", compared_steps, worst_grad, worst_w);
  std::printf("z-loss %.5f -> %.5f, prototype top-1 accuracy %.3f (chance %.1e)\n", first_loss, last_loss, accuracy,
              1.0 / double(classes));
  const bool ok = worst_w < 1e-3f && worst_grad < 1e-3f && last_loss < 0.7 * first_loss && accuracy > 0.5;
  if (!ok) std::printf("SANITY CHECK FAILED\n");
  return ok ? 0 : 1;
}
