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
// Run from examples/:  ./example_image_restoration [output_dir]           (300 Adam steps, a few seconds)
//                      ./example_image_restoration --quick [output_dir]   (CTest: 40 steps)
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <losskit/mse.hpp>
#include <losskit/ssim.hpp>
#include <random>
#include <string>

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

// Fits a (2r+1)² filter and bias with Adam; returns the restored image.
template <class Loss>
Image restore(const Loss& loss, const Image& degraded, const Image& clean, int steps) {
  const Eigen::Index r = 3, h = clean.rows(), w = clean.cols();
  const Image padded = pad(degraded, r);
  Eigen::VectorXd theta = Eigen::VectorXd::Zero((2 * r + 1) * (2 * r + 1) + 1);  // taps (column-major), bias
  theta(r * (2 * r + 1) + r) = 1;                                                  // identity filter
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
  return sane ? 0 : 1;
}
