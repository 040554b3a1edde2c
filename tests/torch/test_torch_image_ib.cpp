// Cross-checks against libtorch 1.13 in double for the batch/image losses:
// SSIM and MS-SSIM written with torch's conv2d (separable Gaussian window,
// "valid" padding) and avg_pool2d, and the CS-IB estimators written as plain
// Gram-matrix formulas (no log-domain tricks); gradients by autograd.
#include "torch_util.hpp"

using lktorch::kTol;

namespace F = torch::nn::functional;

#if __has_include(<losskit/ssim.hpp>)
#include <losskit/ssim.hpp>

namespace {

// losskit's image column (channels planes, each column-major H×W) is, as
// bytes, a row-major channels×W×H tensor: torch sees every plane transposed.
// SSIM is invariant under transposing both images (the window is
// symmetric, the map is just transposed), so no copy is made.
torch::Tensor images(const Eigen::MatrixXd& m, Eigen::Index h, Eigen::Index w, Eigen::Index c, bool grad = false) {
  torch::Tensor t = lktorch::rows(m).view({m.cols(), c, w, h});  // a leaf, so .grad() is filled
  return grad ? t.requires_grad_(true) : t;
}

struct TorchSSIM {
  int window = 11;
  double sigma = 1.5, c1 = 1e-4, c2 = 9e-4;

  torch::Tensor filter(const torch::Tensor& x) const {
    const int64_t ch = x.size(1);
    torch::Tensor g = torch::arange(window, torch::kDouble) - (window - 1) / 2.0;
    g = (-g.square() / (2 * sigma * sigma)).exp();
    g = g / g.sum();
    const auto opts = F::Conv2dFuncOptions().groups(ch);
    const torch::Tensor rows = F::conv2d(x, g.view({1, 1, 1, window}).expand({ch, 1, 1, window}).contiguous(), opts);
    return F::conv2d(rows, g.view({1, 1, window, 1}).expand({ch, 1, window, 1}).contiguous(), opts);
  }

  // Per image and channel: {mean S, mean CS} over the valid map (Wang et al. 2004).
  std::pair<torch::Tensor, torch::Tensor> maps(const torch::Tensor& x, const torch::Tensor& y) const {
    const torch::Tensor mx = filter(x), my = filter(y);
    const torch::Tensor sxx = filter(x * x) - mx * mx, syy = filter(y * y) - my * my, sxy = filter(x * y) - mx * my;
    const torch::Tensor cs = (2 * sxy + c2) / (sxx + syy + c2);
    const torch::Tensor s = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs;
    return {s.mean({2, 3}), cs.mean({2, 3})};
  }

  torch::Tensor ssim(const torch::Tensor& x, const torch::Tensor& y) const { return maps(x, y).first.mean(1); }

  // MS-SSIM per image: Π_j relu(v_j)^{w_j} per channel, then the channel mean.
  torch::Tensor ms_ssim(torch::Tensor x, torch::Tensor y, std::vector<double> weights, bool zero_first) const {
    double total = 0;
    for (double w : weights) total += w;
    torch::Tensor ms;
    for (std::size_t j = 0; j < weights.size(); ++j) {
      const auto sc = maps(x, y);
      const torch::Tensor v = j + 1 < weights.size() ? sc.second : sc.first;
      const torch::Tensor term = torch::relu(v).pow(weights[j] / total);
      ms = j == 0 ? term : ms * term;
      if (j + 1 < weights.size()) {
        x = pool(x, zero_first);
        y = pool(y, zero_first);
      }
    }
    return ms.mean(1);
  }

  static torch::Tensor pool(const torch::Tensor& x, bool zero_first) {
    const int64_t ph = x.size(2) % 2, pw = x.size(3) % 2;
    if (zero_first)  // pytorch-msssim: avg_pool2d(padding = n % 2), zeros counted in
      return F::avg_pool2d(x, F::AvgPool2dFuncOptions(2).stride(2).padding({ph, pw}));
    // MATLAB / TensorFlow: replicate the last row/column, then pool.
    return F::avg_pool2d(F::pad(x, F::PadFuncOptions({0, pw, 0, ph}).mode(torch::kReplicate)),
                         F::AvgPool2dFuncOptions(2).stride(2));
  }
};

}  // namespace

TEST_CASE("SSIMLoss agrees with SSIM built on torch conv2d, gradient by autograd", "[torch][ssim]") {
  const Eigen::Index h = 37, w = 29, c = 3, n = 2;
  const Eigen::MatrixXd target = lktest::uniform(c * h * w, n);
  const Eigen::MatrixXd pred = target + lktest::normal(c * h * w, n, 0.2);
  for (const double range : {1.0, 255.0})
    for (losskit::Reduction r : {losskit::Reduction::Mean, losskit::Reduction::Sum}) {
      losskit::SSIMLoss<double> loss(h, w, c);
      loss.data_range = range;
      loss.reduction = r;
      Eigen::MatrixXd grad;
      const double v = loss.value_and_gradient(pred * range, target * range, grad);

      TorchSSIM ref_ssim;
      ref_ssim.c1 = (0.01 * range) * (0.01 * range);
      ref_ssim.c2 = (0.03 * range) * (0.03 * range);
      const Eigen::MatrixXd pred_scaled = pred * range, target_scaled = target * range;
      torch::Tensor x = images(pred_scaled, h, w, c, true);
      const torch::Tensor per = 1 - ref_ssim.ssim(x, images(target_scaled, h, w, c));
      const torch::Tensor ref = r == losskit::Reduction::Mean ? per.mean() : per.sum();
      ref.backward();
      INFO("SSIMLoss data_range " << range << ", reduction " << r);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad().view({n, -1}))) < kTol);
      CHECK(lktest::max_rel_err(loss.per_sample(pred_scaled, target_scaled), lktorch::vector(per)) < kTol);
    }
}

TEST_CASE("MSSSIMLoss agrees with MS-SSIM built on torch conv2d and avg_pool2d, gradient by autograd",
          "[torch][ssim]") {
  SECTION("five standard scales, even sizes") {
    const Eigen::Index h = 176, w = 184, c = 1, n = 2;
    const Eigen::MatrixXd target = lktest::uniform(c * h * w, n);
    const Eigen::MatrixXd pred = target + lktest::normal(c * h * w, n, 0.2);
    losskit::MSSSIMLoss<double> loss(h, w, c);
    Eigen::MatrixXd grad;
    const double v = loss.value_and_gradient(pred, target, grad);
    torch::Tensor x = images(pred, h, w, c, true);
    const torch::Tensor ref =
        (1 - TorchSSIM{}.ms_ssim(x, images(target, h, w, c), {0.0448, 0.2856, 0.3001, 0.2363, 0.1333}, false)).mean();
    ref.backward();
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad().view({n, -1}))) < kTol);
  }
  SECTION("three scales, odd sizes, both odd-size pooling conventions") {
    const Eigen::Index h = 45, w = 51, c = 2, n = 2;
    const Eigen::MatrixXd target = lktest::uniform(c * h * w, n);
    const Eigen::MatrixXd pred = target + lktest::normal(c * h * w, n, 0.15);
    for (const bool zero_first : {false, true}) {
      losskit::MSSSIMLoss<double> loss(h, w, c);
      loss.weights = {0.2, 0.3, 0.5};
      loss.pooling = zero_first ? losskit::OddSizePooling::ZeroFirst : losskit::OddSizePooling::ReplicateLast;
      Eigen::MatrixXd grad;
      const double v = loss.value_and_gradient(pred, target, grad);
      torch::Tensor x = images(pred, h, w, c, true);
      const torch::Tensor ref = (1 - TorchSSIM{}.ms_ssim(x, images(target, h, w, c), {0.2, 0.3, 0.5}, zero_first)).mean();
      ref.backward();
      INFO("MSSSIMLoss pooling " << (zero_first ? "ZeroFirst" : "ReplicateLast"));
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad().view({n, -1}))) < kTol);
    }
  }
}
#endif
