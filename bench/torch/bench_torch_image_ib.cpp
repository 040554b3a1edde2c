// libtorch peers of the SSIM / MS-SSIM and CS-IB benchmarks (same names with
// "Torch_" after "BM_", same arguments; see bench_torch.cpp).
// SSIM: separable 11-tap Gaussian as two grouped conv2d passes ("valid"), the
// five moment maps, autograd backward — how pytorch-msssim computes it.
// CS-IB: Gram matrices from GEMM distances, median-heuristic widths computed
// under no_grad (as losskit holds them constant), autograd backward.
#include "torch_peer.hpp"

namespace {

namespace F = torch::nn::functional;

struct TorchSSIM {
  torch::Tensor row_taps, col_taps;
  double c1 = 1e-4, c2 = 9e-4;  // data_range 1

  explicit TorchSSIM(int64_t channels) {
    torch::Tensor g = torch::arange(11, torch::kFloat) - 5.0f;
    g = (-g.square() / (2 * 1.5 * 1.5)).exp();
    g = g / g.sum();
    row_taps = g.view({1, 1, 1, 11}).expand({channels, 1, 1, 11}).contiguous();
    col_taps = g.view({1, 1, 11, 1}).expand({channels, 1, 11, 1}).contiguous();
  }

  torch::Tensor filter(const torch::Tensor& x) const {
    const auto opts = F::Conv2dFuncOptions().groups(x.size(1));
    return F::conv2d(F::conv2d(x, row_taps, opts), col_taps, opts);
  }

  std::pair<torch::Tensor, torch::Tensor> maps(const torch::Tensor& x, const torch::Tensor& y) const {
    const torch::Tensor mx = filter(x), my = filter(y);
    const torch::Tensor sxx = filter(x * x) - mx * mx, syy = filter(y * y) - my * my, sxy = filter(x * y) - mx * my;
    const torch::Tensor cs = (2 * sxy + c2) / (sxx + syy + c2);
    const torch::Tensor s = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs;
    return {s.mean({2, 3}), cs.mean({2, 3})};
  }

  torch::Tensor ssim_loss(const torch::Tensor& x, const torch::Tensor& y) const { return 1 - maps(x, y).first.mean(); }

  torch::Tensor ms_ssim_loss(torch::Tensor x, torch::Tensor y) const {
    static const double w[5] = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};
    torch::Tensor ms;
    for (int j = 0; j < 5; ++j) {
      const auto sc = maps(x, y);
      const torch::Tensor term = torch::relu(j < 4 ? sc.second : sc.first).pow(w[j] / 1.0001);
      ms = j == 0 ? term : ms * term;
      if (j < 4) {
        x = F::avg_pool2d(x, F::AvgPool2dFuncOptions(2).stride(2));
        y = F::avg_pool2d(y, F::AvgPool2dFuncOptions(2).stride(2));
      }
    }
    return 1 - ms.mean();
  }
};

template <bool MultiScale, bool WithGrad>
void ssim_peer(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const int64_t n = state.range(0), c = state.range(1), h = state.range(2), w = state.range(3);
  // Same images as bench_ssim.cpp.
  Eigen::MatrixXf pred = (lkbench::random_matrix<float>(c * h * w, n, 0.2, 5).array() + 0.5f).matrix();
  Eigen::MatrixXf target = pred + lkbench::random_matrix<float>(c * h * w, n, 0.05, 6);
  const torch::Tensor x = lkbench::as_rows(pred).view({n, c, w, h}), y = lkbench::as_rows(target).view({n, c, w, h});
  const TorchSSIM ssim(c);
  auto loss = [&](const torch::Tensor& p) { return MultiScale ? ssim.ms_ssim_loss(p, y) : ssim.ssim_loss(p, y); };
  if constexpr (WithGrad) {
    const torch::Tensor p = x.detach().requires_grad_(true);
    for (auto _ : state) {
      const torch::Tensor l = loss(p);
      benchmark::DoNotOptimize(lkbench::autograd_grad(l, p).data_ptr());
      benchmark::DoNotOptimize(l.template item<float>());
    }
  } else {
    torch::NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(loss(x).template item<float>());
  }
  const double pixels = double(n * c * h * w);
  lkbench::set_throughput(state, (WithGrad ? 3.0 : 2.0) * sizeof(float) * pixels, pixels);
}

void BM_Torch_SSIM_Value(benchmark::State& s) { ssim_peer<false, false>(s); }
void BM_Torch_SSIM_ValueGrad(benchmark::State& s) { ssim_peer<false, true>(s); }
void BM_Torch_MSSSIM_Value(benchmark::State& s) { ssim_peer<true, false>(s); }
void BM_Torch_MSSSIM_ValueGrad(benchmark::State& s) { ssim_peer<true, true>(s); }

void image_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "H", "W"})->Args({8, 3, 256, 256})->Args({1, 1, 1024, 1024})->Args({1, 3, 512, 768});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_Torch_SSIM_Value)->Apply(image_sizes);
BENCHMARK(BM_Torch_SSIM_ValueGrad)->Apply(image_sizes);
BENCHMARK(BM_Torch_MSSSIM_Value)->Apply(image_sizes);
BENCHMARK(BM_Torch_MSSSIM_ValueGrad)->Apply(image_sizes);

// ---------------------------------------------------------------------------
// CS-IB, d_x = 8, d_y = 1, d_t = 128 as in bench_cs_ib.cpp (rows = samples).

torch::Tensor sq_dist(const torch::Tensor& a) {
  const torch::Tensor n2 = a.square().sum(1);
  return (n2.unsqueeze(1) + n2.unsqueeze(0) - 2 * a.matmul(a.t())).clamp_min(0);
}

torch::Tensor sq_dist(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.square().sum(1).unsqueeze(1) + b.square().sum(1).unsqueeze(0) - 2 * a.matmul(b.t())).clamp_min(0);
}

double median_width(const torch::Tensor& d2) {
  torch::NoGradGuard no_grad;
  const int64_t n = d2.size(0);
  const torch::Tensor upper = torch::ones({n, n}, torch::kBool).triu(1);
  return d2.masked_select(upper).sqrt().median().item<double>();
}

torch::Tensor kernel(const torch::Tensor& d2, double sigma) { return (-d2 / (2 * sigma * sigma)).exp(); }

// D̂_CS (paper weights) + β·Î_CS; widths 0 = median heuristic per call.
torch::Tensor torch_csib(const torch::Tensor& yhat, const torch::Tensor& y, const torch::Tensor& t,
                         const torch::Tensor& x, double beta, double sx, double sy, double st) {
  const torch::Tensor dx = sq_dist(x), dy = sq_dist(y), dt = sq_dist(t);
  const torch::Tensor k = kernel(dx, sx > 0 ? sx : median_width(dx));
  const double sig_y = sy > 0 ? sy : median_width(dy);
  const torch::Tensor w = k.sum(1).pow(-2).unsqueeze(1);
  const torch::Tensor wk = w * k;
  const torch::Tensor a = (wk * kernel(dy, sig_y)).sum();
  const torch::Tensor b = (wk * kernel(sq_dist(yhat), sig_y)).sum();
  const torch::Tensor c = (wk * kernel(sq_dist(yhat, y), sig_y)).sum();
  const torch::Tensor div = a.log() + b.log() - 2 * c.log();
  const torch::Tensor q = kernel(dt, st > 0 ? st : median_width(dt));
  const torch::Tensor mi = (k * q).sum().log() + q.sum().log() + k.sum().log() - 2 * (k.sum(1) * q.sum(1)).sum().log();
  return div + beta * mi;
}

template <bool WithGrad, bool Fixed>
void csib_peer(benchmark::State& state) {
  lkbench::match_torch_threads(state);
  const int64_t n = state.range(0);
  Eigen::MatrixXf x = lkbench::random_matrix<float>(8, n, 1.0, 1), y = lkbench::random_matrix<float>(1, n, 1.0, 2);
  Eigen::MatrixXf yhat = y + lkbench::random_matrix<float>(1, n, 0.3, 3), t = lkbench::random_matrix<float>(128, n, 1.0, 4);
  const torch::Tensor tx = lkbench::as_rows(x), ty = lkbench::as_rows(y);
  const double sx = Fixed ? 4.0 : 0.0, sy = Fixed ? 1.0 : 0.0, st = Fixed ? 16.0 : 0.0;
  if constexpr (WithGrad) {
    const torch::Tensor tyhat = lkbench::as_rows(yhat).requires_grad_(true), tt = lkbench::as_rows(t).requires_grad_(true);
    for (auto _ : state) {
      const torch::Tensor l = torch_csib(tyhat, ty, tt, tx, 0.01, sx, sy, st);
      const auto g = torch::autograd::grad({l}, {tyhat, tt});
      benchmark::DoNotOptimize(g[1].data_ptr());
      benchmark::DoNotOptimize(l.template item<float>());
    }
  } else {
    torch::NoGradGuard no_grad;
    const torch::Tensor tyhat = lkbench::as_rows(yhat), tt = lkbench::as_rows(t);
    for (auto _ : state) benchmark::DoNotOptimize(torch_csib(tyhat, ty, tt, tx, 0.01, sx, sy, st).item<float>());
  }
  const double pairs = double(n) * double(n);
  lkbench::set_throughput(state, 5.0 * sizeof(float) * pairs, pairs);
}

void BM_Torch_CSIB_Value(benchmark::State& s) { csib_peer<false, false>(s); }
void BM_Torch_CSIB_ValueGrad(benchmark::State& s) { csib_peer<true, false>(s); }
void BM_Torch_CSIB_ValueGrad_FixedWidths(benchmark::State& s) { csib_peer<true, true>(s); }
BENCHMARK(BM_Torch_CSIB_Value)->Arg(128)->Arg(512)->Arg(2048)->UseRealTime();
BENCHMARK(BM_Torch_CSIB_ValueGrad)->Arg(128)->Arg(512)->Arg(2048)->UseRealTime();
BENCHMARK(BM_Torch_CSIB_ValueGrad_FixedWidths)->Arg(128)->Arg(512)->Arg(2048)->UseRealTime();

}  // namespace
