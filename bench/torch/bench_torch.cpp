// libtorch peers of losskit's benchmarks: same shapes, same inputs, float,
// value (under NoGradGuard: no graph is built) and value+gradient (forward
// with autograd recording, then backward). Names are the losskit benchmark's
// name with "Torch_" after "BM_" and the same arguments, which is how
// bench/ratios.py pairs them.
#include "torch_peer.hpp"

namespace {

// MSE: torch::mse_loss over the same 64×(n/64) floats as BM_MSE_*.
void BM_Torch_MSE_Value(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index n = state.range(0), d = 64;
  Eigen::MatrixXf pred = lkbench::random_matrix<float>(d, n / d), target = lkbench::random_matrix<float>(d, n / d, 1.0, 3);
  const torch::Tensor p = lkbench::as_rows(pred), t = lkbench::as_rows(target);
  torch::NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(torch::mse_loss(p, t).item<float>());
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(n), double(n));
}
BENCHMARK(BM_Torch_MSE_Value)->RangeMultiplier(16)->Range(1 << 12, 1 << 24)->UseRealTime();

void BM_Torch_MSE_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index n = state.range(0), d = 64;
  Eigen::MatrixXf pred = lkbench::random_matrix<float>(d, n / d), target = lkbench::random_matrix<float>(d, n / d, 1.0, 3);
  const torch::Tensor p = lkbench::as_rows(pred).requires_grad_(true), t = lkbench::as_rows(target);
  for (auto _ : state) {
    const torch::Tensor loss = torch::mse_loss(p, t);
    benchmark::DoNotOptimize(lkbench::autograd_grad(loss, p).data_ptr());
    benchmark::DoNotOptimize(loss.item<float>());
  }
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(n), double(n));
}
BENCHMARK(BM_Torch_MSE_ValueGrad)->RangeMultiplier(16)->Range(1 << 12, 1 << 24)->UseRealTime();

}  // namespace
