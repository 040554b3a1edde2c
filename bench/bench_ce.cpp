// CrossEntropy and BinaryCrossEntropyWithLogits, float. Shapes C×N match
// BM_ReferenceExp (one vectorised exp per element, read x / write y): the
// ratio of items/s to BM_ReferenceExp at the same shape is the figure to
// read, since both are bound by exp throughput and memory bandwidth.
#include <losskit/cross_entropy.hpp>

#include "reference_kernels.hpp"

namespace {

// Labels, default options: the plain softmax cross-entropy.
void BM_CE_Value(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  losskit::CrossEntropy<float> ce;
  for (auto _ : state) benchmark::DoNotOptimize(ce(logits, labels));
  lkbench::set_throughput(state, sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_CE_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

void BM_CE_ValueGrad(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(c, n);  // touched: no page faults in the timing
  losskit::CrossEntropy<float> ce;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ce.value_and_gradient(logits, labels, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_CE_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

// Every option on: class weights, label smoothing (an extra weighted sum in
// the exp pass) and the log²Z penalty — the cost of the general path.
void BM_CE_ValueGrad_AllOptions(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  for (Eigen::Index i = 0; i < n; i += 7) labels(i) = -100;
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(c, n);  // touched: no page faults in the timing
  losskit::CrossEntropy<float> ce;
  ce.class_weights = lkbench::random_matrix<float>(c, 1).cwiseAbs();
  ce.label_smoothing = 0.1f;
  ce.z_penalty = 1e-4f;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ce.value_and_gradient(logits, labels, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_CE_ValueGrad_AllOptions)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

// Sample weights on top of plain labels: one more scale per column.
void BM_CE_ValueGrad_SampleWeights(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  const Eigen::VectorXf weights = lkbench::random_matrix<float>(n, 1, 1.0, 7).cwiseAbs();
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(c, n);  // touched: no page faults in the timing
  losskit::CrossEntropy<float> ce;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ce.value_and_gradient(logits, labels, weights, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_CE_ValueGrad_SampleWeights)->ArgsProduct({{10, 1000, 32000}, {256}})->UseRealTime();

// Soft targets: one more C×N array read.
void BM_CE_ValueGrad_Probabilities(benchmark::State& state) {
  const Eigen::Index c = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  Eigen::MatrixXf q = lkbench::random_matrix<float>(c, n, 1.0, 5).cwiseAbs();
  for (Eigen::Index j = 0; j < n; ++j) q.col(j) /= q.col(j).sum();
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(c, n);  // touched: no page faults in the timing
  losskit::CrossEntropy<float> ce;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ce.value_and_gradient(logits, q, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_CE_ValueGrad_Probabilities)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

// BCE with logits on D×N (same shapes as BM_ReferenceExp): one exp and one
// log1p per element; targets read as well.
void BM_BCE_Value(benchmark::State& state) {
  const Eigen::Index d = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(d, n, 3.0);
  const Eigen::MatrixXf targets = (lkbench::random_matrix<float>(d, n, 1.0, 4).array() > 0.0f).cast<float>();
  losskit::BinaryCrossEntropyWithLogits<float> bce;
  for (auto _ : state) benchmark::DoNotOptimize(bce(logits, targets));
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_BCE_Value)->ArgsProduct({{10, 1000, 32000}, {256}})->UseRealTime();

void BM_BCE_ValueGrad(benchmark::State& state) {
  const Eigen::Index d = state.range(0), n = state.range(1);
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(d, n, 3.0);
  const Eigen::MatrixXf targets = (lkbench::random_matrix<float>(d, n, 1.0, 4).array() > 0.0f).cast<float>();
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(d, n);
  losskit::BinaryCrossEntropyWithLogits<float> bce;
  bce.pos_weight = Eigen::VectorXf::Constant(d, 2.0f);
  for (auto _ : state) {
    benchmark::DoNotOptimize(bce.value_and_gradient(logits, targets, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_BCE_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256}})->UseRealTime();

// Element weight (PyTorch's weight): D×1 (broadcast) and D×N (one more D×N
// read), no pos_weight; runs the column path. Against BM_BCE_ValueGrad and the
// unweighted flat path of BM_BCE_Value's shapes.
void BM_BCE_ValueGrad_Weight(benchmark::State& state) {
  const Eigen::Index d = state.range(0), n = state.range(1);
  const bool per_element = state.range(2) != 0;
  const Eigen::MatrixXf logits = lkbench::random_matrix<float>(d, n, 3.0);
  const Eigen::MatrixXf targets = (lkbench::random_matrix<float>(d, n, 1.0, 4).array() > 0.0f).cast<float>();
  Eigen::MatrixXf grad = Eigen::MatrixXf::Zero(d, n);
  losskit::BinaryCrossEntropyWithLogits<float> bce;
  bce.weight = (lkbench::random_matrix<float>(d, per_element ? n : 1, 1.0, 5).array().abs() + 0.5f).matrix();
  for (auto _ : state) {
    benchmark::DoNotOptimize(bce.value_and_gradient(logits, targets, grad));
    benchmark::ClobberMemory();
  }
  lkbench::set_throughput(state, (per_element ? 4.0 : 3.0) * sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_BCE_ValueGrad_Weight)->ArgsProduct({{10, 1000, 32000}, {256}, {0, 1}})->UseRealTime();

}  // namespace
