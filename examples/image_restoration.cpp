// Image restoration with MSE, SSIM and MS-SSIM as the training loss.
//
// A 192×192 grey photograph (data/README.md) is blurred (Gaussian, σ = 1 px)
// and corrupted with Gaussian noise (σ = 0.05 on [0, 1] pixels). A 7×7
// restoration filter plus a bias, starting from the identity, is fitted by
// Adam so that filter ⊛ degraded ≈ clean, once with each loss. The loss's
// gradient with respect to the restored image (one value_and_gradient call)
// is chained by hand into the 50 filter parameters: each tap's gradient is
// the correlation of that gradient with the shifted degraded image.
//
// Prints PSNR, SSIM and MS-SSIM of each result against the clean image, and
// writes clean | degraded | MSE | SSIM | MS-SSIM side by side as
// restoration.png (8-bit grey PNG).
//
// Then the same fit from random starts (taps drawn N(0, 1/49), so their sum,
// the filter's gain, is N(0, 1): about half the starts invert the image).
// An inverted start has a negative MS-SSIM contrast-structure term, which the
// loss clamps to 0 with a zero gradient (docs/ssim.md): printed per loss are
// the starts clamped under the default MS-SSIM, the results still clamped
// after training, and the median MS-SSIM / PSNR of the results, for MS-SSIM
// with k2 = 0.03 (default) and a larger k2, and for MSSSIML1Loss (Zhao et al.
// 2017: 0.84·(1 − MS-SSIM) + 0.16·Gaussian-weighted L1).
//
// Run from examples/:  ./example_image_restoration [output_dir]           (300 Adam steps; 20 random starts)
//                      ./example_image_restoration --quick [output_dir]   (CTest: 40 steps; 4 random starts)
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <losskit/mse.hpp>
#include <losskit/ssim.hpp>
#include <random>
#include <string>
#include <vector>

#include "example_io.hpp"

using Image = Eigen::MatrixXd;  // H×W, column-major: the losses read it with ImageLayout::ColumnMajor

// out(i, j) = Σ_{u,v} k(u, v)·in(i + u − r, j + v − r) + bias, edges replicated
// (r = radius); `padded` is the input with r replicated pixels on every side.
Image pad(const Image& in, Eigen::Index r) {
  Image p(in.rows() + 2 * r, in.cols() + 2 * r);
  for (Eigen::Index j = 0; j < p.cols(); ++j)
    for (Eigen::Index i = 0; i < p.rows(); ++i)
      p(i, j) = in(std::clamp<Eigen::Index>(i - r, 0, in.rows() - 1), std::clamp<Eigen::Index>(j - r, 0, in.cols() - 1));
  return p;
}

Image filter(const Image& padded, const Eigen::MatrixXd& k, double bias) {
  const Eigen::Index h = padded.rows() - k.rows() + 1, w = padded.cols() - k.cols() + 1;
  Image out = Image::Constant(h, w, bias);
  for (Eigen::Index v = 0; v < k.cols(); ++v)
    for (Eigen::Index u = 0; u < k.rows(); ++u) out += k(u, v) * padded.block(u, v, h, w);
  return out;
}

Eigen::MatrixXd gaussian_kernel(Eigen::Index radius, double sigma) {
  Eigen::MatrixXd k(2 * radius + 1, 2 * radius + 1);
  for (Eigen::Index v = 0; v < k.cols(); ++v)
    for (Eigen::Index u = 0; u < k.rows(); ++u)
      k(u, v) = std::exp(-double((u - radius) * (u - radius) + (v - radius) * (v - radius)) / (2 * sigma * sigma));
  return k / k.sum();
}

double psnr(const Image& x, const Image& clean) {
  return 10 * std::log10(1.0 / ((x - clean).squaredNorm() / double(x.size())));
}

constexpr Eigen::Index kRadius = 3;  // 7×7 restoration filter

// Filter parameters: the taps (column-major), then the bias.
Eigen::VectorXd identity_filter() {
  const Eigen::Index side = 2 * kRadius + 1;
  Eigen::VectorXd theta = Eigen::VectorXd::Zero(side * side + 1);
  theta(kRadius * side + kRadius) = 1;
  return theta;
}

Eigen::VectorXd random_filter(std::mt19937& gen) {
  const Eigen::Index side = 2 * kRadius + 1;
  std::normal_distribution<double> tap(0.0, 1.0 / double(side));
  Eigen::VectorXd theta = Eigen::VectorXd::Zero(side * side + 1);
  for (Eigen::Index t = 0; t + 1 < theta.size(); ++t) theta(t) = tap(gen);
  return theta;
}

// Fits a (2r+1)² filter and bias with Adam from `theta`; returns the restored image.
template <class Loss>
Image restore(const Loss& loss, const Image& degraded, const Image& clean, int steps,
              Eigen::VectorXd theta = identity_filter()) {
  const Eigen::Index r = kRadius, h = clean.rows(), w = clean.cols();
  const Image padded = pad(degraded, r);
  Eigen::VectorXd grad(theta.size()), m = Eigen::VectorXd::Zero(theta.size()), v = m;
  Image restored, grad_restored(h, w);
  const Eigen::Map<const Eigen::VectorXd> target(clean.data(), clean.size());  // one image = one column
  for (int step = 1; step <= steps; ++step) {
    const Eigen::Map<const Eigen::MatrixXd> k(theta.data(), 2 * r + 1, 2 * r + 1);
    restored = filter(padded, k, theta(theta.size() - 1));
    Eigen::Map<Eigen::VectorXd> g_restored(grad_restored.data(), grad_restored.size());
    loss.value_and_gradient(Eigen::Map<const Eigen::VectorXd>(restored.data(), restored.size()), target, g_restored);
    for (Eigen::Index t = 0; t + 1 < theta.size(); ++t)  // ∂L/∂k(u, v) = Σ ∂L/∂out ∘ shifted input
      grad(t) = (grad_restored.array() * padded.block(t % (2 * r + 1), t / (2 * r + 1), h, w).array()).sum();
    grad(theta.size() - 1) = grad_restored.sum();
    // Adam (Kingma & Ba 2015), lr 1e-2: the same step size whatever the loss's scale.
    m = 0.9 * m + 0.1 * grad;
    v = 0.999 * v + 0.001 * grad.cwiseAbs2();
    const double c1 = 1 - std::pow(0.9, step), c2 = 1 - std::pow(0.999, step);
    theta.array() -= 1e-2 * (m.array() / c1) / ((v.array() / c2).sqrt() + 1e-12);
  }
  const Eigen::Map<const Eigen::MatrixXd> k(theta.data(), 2 * r + 1, 2 * r + 1);
  return filter(padded, k, theta(theta.size() - 1));
}

Eigen::Map<const Eigen::VectorXd> as_column(const Image& image) { return {image.data(), image.size()}; }

// The random-start study (see the top of the file); returns false if a
// result is non-finite or, after a full run, if a MSSSIML1Loss result is
// still clamped.
bool random_starts(const Image& degraded, const Image& clean, int steps, int seeds, bool full) {
  const Eigen::Index h = clean.rows(), w = clean.cols();
  losskit::MSSSIMLoss<double> ms(h, w), ms_k2(h, w);
  losskit::MSSSIML1Loss<double> mixed(h, w);
  ms.layout = ms_k2.layout = mixed.layout = losskit::ImageLayout::ColumnMajor;
  ms_k2.k2 = 0.4;
  const Image padded = pad(degraded, kRadius);
  std::vector<Eigen::VectorXd> starts;
  int clamped_starts = 0;
  for (int seed = 0; seed < seeds; ++seed) {
    std::mt19937 gen(std::uint32_t(100 + seed));
    starts.push_back(random_filter(gen));
    const Eigen::Map<const Eigen::MatrixXd> k(starts.back().data(), 2 * kRadius + 1, 2 * kRadius + 1);
    clamped_starts += int(ms.evaluate(as_column(filter(padded, k, 0.0)), as_column(clean)).clamped_images);
  }
  std::printf("\n%d random starts (taps N(0, 1/49)), %d clamped under the default MS-SSIM; %d Adam steps each:\n",
              seeds, clamped_starts, steps);
  std::printf("%-26s %15s %15s %9s\n", "trained on", "clamped result", "median MS-SSIM", "PSNR dB");
  bool sane = true;
  auto study = [&](const char* name, const auto& loss) {
    std::vector<double> ms_ssim, db;
    int clamped = 0;
    for (const Eigen::VectorXd& theta : starts) {
      const Image result = restore(loss, degraded, clean, steps, theta);
      clamped += int(ms.evaluate(as_column(result), as_column(clean)).clamped_images);
      ms_ssim.push_back(1 - ms(as_column(result), as_column(clean)));
      db.push_back(psnr(result, clean));
      sane = sane && result.allFinite();
    }
    std::sort(ms_ssim.begin(), ms_ssim.end());
    std::sort(db.begin(), db.end());
    const std::size_t mid = ms_ssim.size() / 2;  // upper median for an even count
    std::printf("%-26s %9d of %2d %15.4f %9.2f\n", name, clamped, seeds, ms_ssim[mid], db[mid]);
    return clamped;
  };
  study("MS-SSIM (k2 = 0.03)", ms);
  study("MS-SSIM (k2 = 0.4)", ms_k2);
  const int mixed_clamped = study("MSSSIML1 (alpha = 0.84)", mixed);
  return sane && (!full || mixed_clamped == 0);
}

int main(int argc, char** argv) {
  bool quick = false;
  std::string out_dir = ".";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      quick = true;
    else
      out_dir = argv[i];
  }
  Eigen::setNbThreads(1);
  const int steps = quick ? 40 : 300;

  const Image clean = example_io::read_pgm("data/summer_palace_192.pgm");
  std::mt19937 gen(5);
  std::normal_distribution<double> noise(0.0, 0.05);
  Image degraded = filter(pad(clean, 4), gaussian_kernel(4, 1.0), 0.0);
  for (Eigen::Index i = 0; i < degraded.size(); ++i) degraded.data()[i] += noise(gen);

  const Eigen::Index h = clean.rows(), w = clean.cols();
  const losskit::MSE<double> mse;
  losskit::SSIMLoss<double> ssim_loss(h, w);
  losskit::MSSSIMLoss<double> ms_ssim_loss(h, w);
  // Image is a column-major Eigen matrix (the default layout is row-major, NCHW).
  ssim_loss.layout = ms_ssim_loss.layout = losskit::ImageLayout::ColumnMajor;
  const Image by_mse = restore(mse, degraded, clean, steps);
  const Image by_ssim = restore(ssim_loss, degraded, clean, steps);
  const Image by_ms_ssim = restore(ms_ssim_loss, degraded, clean, steps);

  std::printf("%dx%d image, blur sigma 1.0 + noise sigma 0.05; 7x7 filter fitted by %d Adam steps\n", int(h), int(w),
              steps);
  std::printf("%-20s %9s %9s %9s\n", "image", "PSNR dB", "SSIM", "MS-SSIM");
  struct Row {
    const char* name;
    const Image* image;
  };
  const Row rows[] = {{"degraded", &degraded}, {"trained on MSE", &by_mse}, {"trained on SSIM", &by_ssim},
                      {"trained on MS-SSIM", &by_ms_ssim}};
  Eigen::Vector3d metric[4];
  for (int i = 0; i < 4; ++i) {
    metric[i] << psnr(*rows[i].image, clean), losskit::ssim(*rows[i].image, clean), losskit::ms_ssim(*rows[i].image, clean);
    std::printf("%-20s %9.2f %9.4f %9.4f\n", rows[i].name, metric[i](0), metric[i](1), metric[i](2));
  }

  const Eigen::Index gap = 4;
  Image strip = Image::Ones(h, 5 * w + 4 * gap);
  const Image* panels[] = {&clean, &degraded, &by_mse, &by_ssim, &by_ms_ssim};
  for (int p = 0; p < 5; ++p) strip.middleCols(p * (w + gap), w) = *panels[p];
  const std::string path = out_dir + "/restoration.png";
  example_io::write_png(path, strip);
  std::printf("wrote %s (clean | degraded | MSE | SSIM | MS-SSIM)\n", path.c_str());

  // Sanity: each result improves on the degraded image in the measure it was
  // trained on and, once converged, is the best of the three in that measure.
  bool sane = metric[1](0) > metric[0](0) && metric[2](1) > metric[0](1) && metric[3](2) > metric[0](2);
  for (int m = 0; m < 3 && !quick; ++m)
    for (int other = 1; other < 4; ++other) sane = sane && metric[m + 1](m) >= metric[other](m);
  sane = random_starts(degraded, clean, steps, quick ? 4 : 20, !quick) && sane;
  return sane ? 0 : 1;
}
