// FactoredOutputLayer: one exact training step (Z-loss value + ∂L/∂H + SGD
// update of W) for a D×d output layer and m = 64 examples, factored O(d²)
// per example against the naive dense step on the same data (outputs D×m,
// dense ∂L/∂O, ∂L/∂H = Wᵀ·∂L/∂O, W ← W − η·∂L/∂O·Hᵀ: three D×d×m products).
// items = examples; the speed-up is items/s(factored) / items/s(dense) at the
// same (D, d); counter `target` = 0.5·D/(4d), the requirement.
// The dense step is run for a few iterations only (at D = 2^17, d = 256 it is
// ~6.4 GFlop). BM_Spherical_Unfactorize is the periodic O(D·d²) refresh,
// which the default unfactorize_period = 1000 amortises over 1000 steps.
#include <losskit/factored_output_layer.hpp>

#include "reference_kernels.hpp"

namespace {

constexpr Eigen::Index kBatch = 64;

Eigen::MatrixXf initial_weights(Eigen::Index classes, Eigen::Index d) {
  return lkbench::random_matrix<float>(classes, d, 1.0 / std::sqrt(double(d)), 11);
}

void set_counters(benchmark::State& state, Eigen::Index classes, Eigen::Index d) {
  lkbench::set_throughput(state, 0.0, double(kBatch));
  state.counters["target"] = 0.5 * double(classes) / (4.0 * double(d));
}

void BM_Spherical_FactoredStep(benchmark::State& state) {
  const Eigen::Index classes = state.range(0), d = state.range(1);
  losskit::FactoredOutputLayer<float> layer(initial_weights(classes, d));
  const Eigen::MatrixXf h = lkbench::random_matrix<float>(d, kBatch, 1.0, 12);
  const Eigen::VectorXi labels = lkbench::random_labels(kBatch, int(classes), 13);
  Eigen::MatrixXf grad_h(d, kBatch);
  losskit::ZLoss<float> z;
  for (auto _ : state) {
    benchmark::DoNotOptimize(layer.train_step(z, h, labels, grad_h, 1e-3f));
    benchmark::ClobberMemory();
  }
  set_counters(state, classes, d);
}
BENCHMARK(BM_Spherical_FactoredStep)
    ->ArgsProduct({{1 << 14, 1 << 17}, {128, 256}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Spherical_DenseStep(benchmark::State& state) {
  const Eigen::Index classes = state.range(0), d = state.range(1);
  Eigen::MatrixXf w = initial_weights(classes, d);
  const Eigen::MatrixXf h = lkbench::random_matrix<float>(d, kBatch, 1.0, 12);
  const Eigen::VectorXi labels = lkbench::random_labels(kBatch, int(classes), 13);
  Eigen::MatrixXf outputs(classes, kBatch), grad_o(classes, kBatch), grad_h(d, kBatch);
  losskit::ZLoss<float> z;
  for (auto _ : state) {
    outputs.noalias() = w * h;
    benchmark::DoNotOptimize(z.value_and_gradient(outputs, labels, grad_o));
    grad_h.noalias() = w.transpose() * grad_o;
    w.noalias() -= 1e-3f * grad_o * h.transpose();
    benchmark::ClobberMemory();
  }
  set_counters(state, classes, d);
}
BENCHMARK(BM_Spherical_DenseStep)
    ->ArgsProduct({{1 << 14, 1 << 17}, {128, 256}})
    ->Iterations(4)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Spherical_Unfactorize(benchmark::State& state) {
  const Eigen::Index classes = state.range(0), d = state.range(1);
  losskit::FactoredOutputLayer<float> layer(initial_weights(classes, d));
  for (auto _ : state) {
    layer.unfactorize();
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Spherical_Unfactorize)->Args({1 << 17, 256})->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
