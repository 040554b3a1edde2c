// SSIM / MS-SSIM: value and value+gradient on float image batches.
// Args are {N, channels, height, width}; items/s = pixels/s (N·C·H·W per
// iteration). Targets (issue 7): value+gradient within 2.5x of value alone,
// MS-SSIM within 1.6x of SSIM. {1, 3, 512, 768} is the size of the CPU
// anchors in the reference sheet (pytorch-msssim README: 768×512 RGB).
#include <losskit/ssim.hpp>

#include <type_traits>

#include "reference_kernels.hpp"

namespace {

struct Images {
  Eigen::MatrixXf pred, target;
  Images(Eigen::Index rows, Eigen::Index cols) {
    pred = (lkbench::random_matrix<float>(rows, cols, 0.2, 5).array() + 0.5f).matrix();
    target = pred + lkbench::random_matrix<float>(rows, cols, 0.05, 6);
  }
};

// The timed loop of every SSIM benchmark: value, or value and gradient into grad.
template <bool WithGrad, class Loss>
void time_calls(benchmark::State& state, const Loss& loss, const Images& im, Eigen::MatrixXf& grad) {
  for (auto _ : state) {
    if constexpr (WithGrad) {
      benchmark::DoNotOptimize(loss.value_and_gradient(im.pred, im.target, grad));
      benchmark::ClobberMemory();
    } else {
      benchmark::DoNotOptimize(loss(im.pred, im.target));
    }
  }
}

// `configure` sets the options of the loss under test (none by default).
struct Defaults {
  template <class Loss>
  void operator()(Loss&) const {}
};

template <class Loss, bool WithGrad, class Configure = Defaults>
void run(benchmark::State& state) {
  const Eigen::Index n = state.range(0), c = state.range(1), h = state.range(2), w = state.range(3);
  const Images im(c * h * w, n);
  Loss loss(h, w, c);
  Configure{}(loss);
  Eigen::MatrixXf grad(c * h * w, n);
  time_calls<WithGrad>(state, loss, im, grad);
  const double pixels = double(n * c * h * w);
  lkbench::set_throughput(state, (WithGrad ? 3.0 : 2.0) * sizeof(float) * pixels, pixels);
}

void BM_SSIM_Value(benchmark::State& s) { run<losskit::SSIMLoss<float>, false>(s); }
void BM_SSIM_ValueGrad(benchmark::State& s) { run<losskit::SSIMLoss<float>, true>(s); }
void BM_MSSSIM_Value(benchmark::State& s) { run<losskit::MSSSIMLoss<float>, false>(s); }
void BM_MSSSIM_ValueGrad(benchmark::State& s) { run<losskit::MSSSIMLoss<float>, true>(s); }

void BM_MSSSIML1_Value(benchmark::State& s) { run<losskit::MSSSIML1Loss<float>, false>(s); }
void BM_MSSSIML1_ValueGrad(benchmark::State& s) { run<losskit::MSSSIML1Loss<float>, true>(s); }

// The options of the peers (docs/ssim.md), each against BM_SSIM_ValueGrad at
// the same size: scikit-image's defaults (uniform 7×7 window, sample
// covariance), pytorch-msssim's nonnegative_ssim, piq's downsample (a 2×2
// block average first at 512×768: a quarter of the pixels).
struct SkimageDefaults {
  template <class Loss>
  void operator()(Loss& l) const {
    l.window = losskit::SSIMWindow::Uniform;
    l.window_size = 7;
    l.sample_covariance = true;
  }
};
struct Nonnegative {
  template <class Loss>
  void operator()(Loss& l) const { l.nonnegative_ssim = true; }
};
struct Downsample {
  template <class Loss>
  void operator()(Loss& l) const { l.downsample = true; }
};
void BM_SSIM_ValueGrad_Skimage(benchmark::State& s) { run<losskit::SSIMLoss<float>, true, SkimageDefaults>(s); }
void BM_SSIM_ValueGrad_Nonnegative(benchmark::State& s) { run<losskit::SSIMLoss<float>, true, Nonnegative>(s); }
void BM_SSIM_ValueGrad_Downsample(benchmark::State& s) { run<losskit::SSIMLoss<float>, true, Downsample>(s); }
void BM_MSSSIM_ValueGrad_Downsample(benchmark::State& s) { run<losskit::MSSSIMLoss<float>, true, Downsample>(s); }

void image_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "H", "W"})->Args({8, 3, 256, 256})->Args({1, 1, 1024, 1024})->Args({1, 3, 512, 768});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_SSIM_Value)->Apply(image_sizes);
BENCHMARK(BM_SSIM_ValueGrad)->Apply(image_sizes);
BENCHMARK(BM_MSSSIM_Value)->Apply(image_sizes);
BENCHMARK(BM_MSSSIM_ValueGrad)->Apply(image_sizes);
BENCHMARK(BM_MSSSIML1_Value)->Apply(image_sizes);
BENCHMARK(BM_MSSSIML1_ValueGrad)->Apply(image_sizes);
BENCHMARK(BM_SSIM_ValueGrad_Skimage)->Apply(image_sizes);
BENCHMARK(BM_SSIM_ValueGrad_Nonnegative)->Apply(image_sizes);
BENCHMARK(BM_SSIM_ValueGrad_Downsample)->Apply(image_sizes);
BENCHMARK(BM_MSSSIM_ValueGrad_Downsample)->Apply(image_sizes);

// ---- Volumes (issue 15): SSIM3DLoss / MSSSIM3DLoss, Args {N, C, D, H, W}; items/s =
// voxels/s. {1, 1, 64, 128, 128} has 2^20 voxels, the pixel count of the
// {1, 1, 1024, 1024} lines above, so the per-voxel rate compares with the 2-D
// per-pixel one (the 3-D window has 11³ taps, applied separably: 3 passes
// instead of 2). MS-SSIM3D uses fit_scales: with 11 taps a side of 64 holds 3 scales.
template <class Loss, bool WithGrad>
void run_volume(benchmark::State& state) {
  const Eigen::Index n = state.range(0), c = state.range(1), d = state.range(2), h = state.range(3),
                     w = state.range(4);
  const Images im(c * d * h * w, n);
  Loss loss(d, h, w, c);
  if constexpr (std::is_same<Loss, losskit::MSSSIM3DLoss<float>>::value) loss.fit_scales = true;
  Eigen::MatrixXf grad(c * d * h * w, n);
  time_calls<WithGrad>(state, loss, im, grad);
  const double voxels = double(n * c * d * h * w);
  lkbench::set_throughput(state, (WithGrad ? 3.0 : 2.0) * sizeof(float) * voxels, voxels);
}

void BM_SSIM3D_Value(benchmark::State& s) { run_volume<losskit::SSIM3DLoss<float>, false>(s); }
void BM_SSIM3D_ValueGrad(benchmark::State& s) { run_volume<losskit::SSIM3DLoss<float>, true>(s); }
void BM_MSSSIM3D_Value(benchmark::State& s) { run_volume<losskit::MSSSIM3DLoss<float>, false>(s); }
void BM_MSSSIM3D_ValueGrad(benchmark::State& s) { run_volume<losskit::MSSSIM3DLoss<float>, true>(s); }

void volume_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "D", "H", "W"})->Args({1, 1, 64, 128, 128});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_SSIM3D_Value)->Apply(volume_sizes);
BENCHMARK(BM_SSIM3D_ValueGrad)->Apply(volume_sizes);
BENCHMARK(BM_MSSSIM3D_Value)->Apply(volume_sizes);
BENCHMARK(BM_MSSSIM3D_ValueGrad)->Apply(volume_sizes);

}  // namespace
