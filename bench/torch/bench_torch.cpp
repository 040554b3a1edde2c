// libtorch peers of losskit's benchmarks: same shapes, same inputs, float,
// value (under NoGradGuard: no graph is built) and value+gradient (forward
// with autograd recording, then backward). Names are the losskit benchmark's
// name with "Torch_" after "BM_" and the same arguments, which is how
// bench/ratios.py pairs them.
#include <losskit/torch.hpp>

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


// ---------------------------------------------------------------------------
// Softmax family (CE, BCE, comp-sum, Z-loss). losskit's C×N logits are
// torch's N×C, the layout torch's kernels expect. Value+gradient is forward
// with autograd recording plus torch::autograd::grad.

namespace F = torch::nn::functional;

template <class Loss>
void torch_value(benchmark::State& state, const torch::Tensor& x, Loss&& loss) {
  torch::NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(loss(x).template item<float>());
}

template <class Loss>
void torch_value_grad(benchmark::State& state, const torch::Tensor& x, Loss&& loss) {
  for (auto _ : state) {
    const torch::Tensor l = loss(x);
    benchmark::DoNotOptimize(lkbench::autograd_grad(l, x).data_ptr());
    benchmark::DoNotOptimize(l.template item<float>());
  }
}

void BM_Torch_CE_Value(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c)));
  torch_value(state, lkbench::as_rows(logits), [&](const torch::Tensor& x) { return F::cross_entropy(x, y); });
  lkbench::set_throughput(state, sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_CE_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

void BM_Torch_CE_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c)));
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true),
                   [&](const torch::Tensor& x) { return F::cross_entropy(x, y); });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_CE_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

// Weights, smoothing, ignore_index and the PaLM log²Z penalty (torch has no
// built-in: logsumexp, square, weighted sum — what a PyTorch user writes).
void BM_Torch_CE_ValueGrad_AllOptions(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  Eigen::VectorXi labels = lkbench::random_labels(n, int(c));
  for (Eigen::Index i = 0; i < n; i += 7) labels(i) = -100;
  Eigen::MatrixXf weights = lkbench::random_matrix<float>(c, 1).cwiseAbs();
  const torch::Tensor y = lkbench::as_labels(labels), w = lkbench::as_rows(weights).reshape({c});
  const torch::Tensor counted = y.ne(-100);
  const torch::Tensor w_y = torch::where(counted, w.index({y.clamp_min(0)}), torch::zeros({n}));
  const torch::Tensor norm = w_y.sum();
  const auto opts = F::CrossEntropyFuncOptions().weight(w).label_smoothing(0.1);
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true), [&](const torch::Tensor& x) {
    const torch::Tensor lse = torch::logsumexp(x, 1);
    return F::cross_entropy(x, y, opts) + 1e-4 * (w_y * lse.square()).sum() / norm;
  });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_CE_ValueGrad_AllOptions)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

void BM_Torch_CE_ValueGrad_Probabilities(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  Eigen::MatrixXf q = lkbench::random_matrix<float>(c, n, 1.0, 5).cwiseAbs();
  for (Eigen::Index j = 0; j < n; ++j) q.col(j) /= q.col(j).sum();
  const torch::Tensor target = lkbench::as_rows(q);
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true),
                   [&](const torch::Tensor& x) { return F::cross_entropy(x, target); });
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_CE_ValueGrad_Probabilities)->ArgsProduct({{1000, 32000}, {256}})->UseRealTime();

void BM_Torch_BCE_Value(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index d = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(d, n, 3.0);
  Eigen::MatrixXf targets = (lkbench::random_matrix<float>(d, n, 1.0, 4).array() > 0.0f).cast<float>();
  const torch::Tensor t = lkbench::as_rows(targets);
  torch_value(state, lkbench::as_rows(logits),
              [&](const torch::Tensor& x) { return F::binary_cross_entropy_with_logits(x, t); });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_Torch_BCE_Value)->ArgsProduct({{10, 1000, 32000}, {256}})->UseRealTime();

void BM_Torch_BCE_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index d = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(d, n, 3.0);
  Eigen::MatrixXf targets = (lkbench::random_matrix<float>(d, n, 1.0, 4).array() > 0.0f).cast<float>();
  const torch::Tensor t = lkbench::as_rows(targets), pos_weight = torch::full({d}, 2.0f);
  const auto opts = F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(pos_weight);
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true),
                   [&](const torch::Tensor& x) { return F::binary_cross_entropy_with_logits(x, t, opts); });
  lkbench::set_throughput(state, 3.0 * sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_Torch_BCE_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256}})->UseRealTime();

// Comp-sum as a PyTorch user writes it: log_softmax, gather the label's
// log-probability, then (1 − p_y^{τ−1})/(τ − 1) (cross_entropy for τ = 1).
torch::Tensor torch_comp_sum(const torch::Tensor& x, const torch::Tensor& y, double tau) {
  if (tau == 1.0) return F::cross_entropy(x, y);
  const torch::Tensor log_p_y = torch::log_softmax(x, 1).gather(1, y.unsqueeze(1));
  return ((1.0 - ((tau - 1.0) * log_p_y).exp()) / (tau - 1.0)).mean();
}

void BM_Torch_CompSum_Value(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  const double tau = double(state.range(2)) / 1000.0;
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c)));
  torch_value(state, lkbench::as_rows(logits), [&](const torch::Tensor& x) { return torch_comp_sum(x, y, tau); });
  lkbench::set_throughput(state, sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_CompSum_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}, {1000}})->UseRealTime();

void BM_Torch_CompSum_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  const double tau = double(state.range(2)) / 1000.0;
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c)));
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true),
                   [&](const torch::Tensor& x) { return torch_comp_sum(x, y, tau); });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_CompSum_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}, {1000, 500, 1700}})->UseRealTime();

void BM_Torch_SmoothAdversarialCompSum_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf clean = lkbench::random_matrix<float>(c, n);
  Eigen::MatrixXf adv = clean + lkbench::random_matrix<float>(c, n, 0.1, 7);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c))).unsqueeze(1);
  const torch::Tensor h = lkbench::as_rows(clean).requires_grad_(true), ha = lkbench::as_rows(adv).requires_grad_(true);
  for (auto _ : state) {
    const torch::Tensor d = (ha - ha.gather(1, y)) - (h - h.gather(1, y));
    const torch::Tensor l = F::cross_entropy(h, y.squeeze(1)) + d.square().sum(1).sqrt().mean();
    const auto g = torch::autograd::grad({l}, {h, ha});
    benchmark::DoNotOptimize(g[0].data_ptr());
    benchmark::DoNotOptimize(l.item<float>());
  }
  lkbench::set_throughput(state, 4.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_SmoothAdversarialCompSum_ValueGrad)->ArgsProduct({{10, 1000}, {256, 4096}})->UseRealTime();

// Spherical Z-loss: per-row mean and population std, z of the target, softplus.
torch::Tensor torch_z_loss(const torch::Tensor& o, const torch::Tensor& y) {
  const torch::Tensor mu = o.mean(1, true);
  const torch::Tensor sigma = (o - mu).square().mean(1, true).sqrt();
  const torch::Tensor z_c = (o.gather(1, y) - mu) / sigma;
  return torch::softplus(-z_c).mean();  // a = 1, b = 0 (losskit's defaults)
}

void BM_Torch_ZLoss_Value(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index d = state.range(0), n = state.range(1);
  Eigen::MatrixXf outputs = lkbench::random_matrix<float>(d, n);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(d))).unsqueeze(1);
  torch_value(state, lkbench::as_rows(outputs), [&](const torch::Tensor& o) { return torch_z_loss(o, y); });
  lkbench::set_throughput(state, sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_Torch_ZLoss_Value)->Args({1024, 64})->Args({4096, 256})->Args({131072, 128})->UseRealTime();

void BM_Torch_ZLoss_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index d = state.range(0), n = state.range(1);
  Eigen::MatrixXf outputs = lkbench::random_matrix<float>(d, n);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(d))).unsqueeze(1);
  torch_value_grad(state, lkbench::as_rows(outputs).requires_grad_(true),
                   [&](const torch::Tensor& o) { return torch_z_loss(o, y); });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(d * n), double(d * n));
}
BENCHMARK(BM_Torch_ZLoss_ValueGrad)->Args({1024, 64})->Args({4096, 256})->Args({131072, 128})->UseRealTime();

// LDR-KL (λ = 1, margin 0.1, losskit's defaults): z = c·[k ≠ y] + f − f_y,
// ψ = λ·(logsumexp(z/λ) − log C).
torch::Tensor torch_ldr_kl(const torch::Tensor& f, const torch::Tensor& y, double lambda, double margin) {
  const torch::Tensor others = torch::ones_like(f).scatter(1, y, 0.0f);
  const torch::Tensor z = margin * others + f - f.gather(1, y);
  return (lambda * (torch::logsumexp(z / lambda, 1) - std::log(double(f.size(1))))).mean();
}

void BM_Torch_LDRKL_Value(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c))).unsqueeze(1);
  torch_value(state, lkbench::as_rows(logits), [&](const torch::Tensor& f) { return torch_ldr_kl(f, y, 1.0, 0.1); });
  lkbench::set_throughput(state, sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_LDRKL_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

void BM_Torch_LDRKL_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c))).unsqueeze(1);
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true),
                   [&](const torch::Tensor& f) { return torch_ldr_kl(f, y, 1.0, 0.1); });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_LDRKL_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

// ALDR-KL (λ0 = 10, α = 2, margin 0.1) as a PyTorch user would write it:
// λ* by five batched fixed-point steps λ ← T(λ) = λ0(1 − KL(softmax(z/λ), u)/(α log C))
// from λ0 under no_grad (the paper's iteration; losskit instead solves for the
// global maximiser), then g(λ*) with λ* held constant and autograd backward.
torch::Tensor torch_aldr_kl(const torch::Tensor& f, const torch::Tensor& y) {
  const double lambda0 = 10, alpha = 2, log_c = std::log(double(f.size(1)));
  const double a = alpha * log_c / lambda0;
  const torch::Tensor others = torch::ones_like(f).scatter(1, y, 0.0f);
  const torch::Tensor z = 0.1 * others + f - f.gather(1, y);
  torch::Tensor lambda = torch::full({f.size(0), 1}, lambda0, f.options().requires_grad(false));
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor zd = z.detach();
    for (int step = 0; step < 5; ++step) {
      const torch::Tensor logp = torch::log_softmax(zd / lambda, 1);
      const torch::Tensor kl = (logp.exp() * logp).sum(1, true) + log_c;
      lambda = (lambda0 * (1 - kl / (alpha * log_c))).clamp(lambda0 * (1 - 1 / alpha), lambda0);
    }
  }
  const torch::Tensor psi = lambda.squeeze(1) * (torch::logsumexp(z / lambda, 1) - log_c);
  return (psi - 0.5 * a * (lambda.squeeze(1) - lambda0).square()).mean();
}

void BM_Torch_ALDRKL_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c))).unsqueeze(1);
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true),
                   [&](const torch::Tensor& f) { return torch_aldr_kl(f, y); });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_ALDRKL_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

// ---------------------------------------------------------------------------
// The adapter (losskit/torch.hpp): losskit's functor called through
// losskit::torch on the same tensors as the torch peers above. Its time
// against BM_CE_* / BM_SSIM_* (the bare functor, same arguments) is the
// adapter's own overhead (checks, the gradient tensor's allocation, the
// autograd node and grad_output·gradient in backward); against
// BM_Torch_CE_* / BM_Torch_SSIM_* it is what a libtorch user gains. Named
// BM_Torch_Adapter_* so that bench/ratios.py leaves them out of its pairing.

void BM_Torch_Adapter_CE_Value(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c)));
  const losskit::CrossEntropy<float> ce;
  torch_value(state, lkbench::as_rows(logits), [&](const torch::Tensor& x) { return losskit::torch::cross_entropy(x, y, ce); });
  lkbench::set_throughput(state, sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_Adapter_CE_Value)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

void BM_Torch_Adapter_CE_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const Eigen::Index c = state.range(0), n = state.range(1);
  Eigen::MatrixXf logits = lkbench::random_matrix<float>(c, n, 2.0);
  const torch::Tensor y = lkbench::as_labels(lkbench::random_labels(n, int(c)));
  const losskit::CrossEntropy<float> ce;
  torch_value_grad(state, lkbench::as_rows(logits).requires_grad_(true),
                   [&](const torch::Tensor& x) { return losskit::torch::cross_entropy(x, y, ce); });
  lkbench::set_throughput(state, 2.0 * sizeof(float) * double(c * n), double(c * n));
}
BENCHMARK(BM_Torch_Adapter_CE_ValueGrad)->ArgsProduct({{10, 1000, 32000}, {256, 4096}})->UseRealTime();

// SSIM value+gradient on the images of BM_SSIM_ValueGrad (N×C×H×W).
void BM_Torch_Adapter_SSIM_ValueGrad(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const int64_t n = state.range(0), c = state.range(1), h = state.range(2), w = state.range(3);
  Eigen::MatrixXf pred = (lkbench::random_matrix<float>(c * h * w, n, 0.2, 5).array() + 0.5f).matrix();
  Eigen::MatrixXf target = pred + lkbench::random_matrix<float>(c * h * w, n, 0.05, 6);
  const torch::Tensor x = lkbench::as_rows(pred).view({n, c, h, w}), y = lkbench::as_rows(target).view({n, c, h, w});
  const losskit::SSIMLoss<float> ssim(h, w, c);
  torch_value_grad(state, x.detach().requires_grad_(true),
                   [&](const torch::Tensor& p) { return losskit::torch::ssim_loss(p, y, ssim); });
  const double pixels = double(n * c * h * w);
  lkbench::set_throughput(state, 3.0 * sizeof(float) * pixels, pixels);
}
BENCHMARK(BM_Torch_Adapter_SSIM_ValueGrad)
    ->ArgNames({"N", "C", "H", "W"})
    ->Args({8, 3, 256, 256})
    ->Args({1, 1, 1024, 1024})
    ->Args({1, 3, 512, 768})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

