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

// With losskit's default layout (ImageLayout::RowMajor) an image column is,
// as bytes, torch's contiguous C×H×W image: the N×(C·H·W) buffer is viewed as
// NCHW directly, as pytorch-msssim receives it.
torch::Tensor images(const Eigen::MatrixXd& m, Eigen::Index h, Eigen::Index w, Eigen::Index c, bool grad = false) {
  torch::Tensor t = lktorch::rows(m).view({m.cols(), c, h, w});  // a leaf, so .grad() is filled
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

TEST_CASE("SSIMLoss with sample weights agrees with torch's per-image values times the weights", "[torch][ssim]") {
  const Eigen::Index h = 23, w = 31, c = 2, n = 3;
  const Eigen::MatrixXd target = lktest::uniform(c * h * w, n);
  const Eigen::MatrixXd pred = target + lktest::normal(c * h * w, n, 0.2);
  Eigen::VectorXd s(n);
  s << 0.5, 2.0, 0.0;
  for (losskit::Reduction r : {losskit::Reduction::Mean, losskit::Reduction::Sum}) {
    losskit::SSIMLoss<double> loss(h, w, c);
    loss.reduction = r;
    Eigen::MatrixXd grad;
    const double v = loss.value_and_gradient(pred, target, s, grad);
    torch::Tensor x = images(pred, h, w, c, true);
    const torch::Tensor sw = torch::tensor(std::vector<double>(s.data(), s.data() + n), torch::kDouble);
    const torch::Tensor weighted = ((1 - TorchSSIM{}.ssim(x, images(target, h, w, c))) * sw).sum();
    const torch::Tensor ref = r == losskit::Reduction::Mean ? weighted / sw.sum() : weighted;
    ref.backward();
    INFO("SSIMLoss weighted, reduction " << r);
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad().view({n, -1}))) < kTol);
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

#if __has_include(<losskit/cs_ib.hpp>)
#include <losskit/cs_ib.hpp>

namespace {

// Gaussian Gram matrix κ_σ(a_i, b_j) = exp(−‖a_i − b_j‖²/(2σ²)), rows = samples.
torch::Tensor gram(const torch::Tensor& a, const torch::Tensor& b, double sigma) {
  const torch::Tensor d2 = (a.unsqueeze(1) - b.unsqueeze(0)).square().sum(2);
  return (-d2 / (2 * sigma * sigma)).exp();
}

// The median heuristic, independently: median (mean of the two middle values
// for an even count) of the nonzero distances over pairs i < j.
double median_width(const torch::Tensor& a) {
  torch::NoGradGuard no_grad;
  const int64_t n = a.size(0);
  const torch::Tensor d = (a.unsqueeze(1) - a.unsqueeze(0)).square().sum(2).sqrt();
  const torch::Tensor iu = torch::triu_indices(n, n, 1);
  torch::Tensor v = d.index({iu[0], iu[1]});
  v = std::get<0>(v.index({v > 0}).sort());
  const int64_t m = v.size(0);
  return m % 2 ? v[m / 2].item<double>() : 0.5 * (v[m / 2 - 1] + v[m / 2]).item<double>();
}

// Conditional CS divergence (Yu et al., ICLR 2024): w_j = 1/(Σ_i K_ji)²,
// A = Σ_j w_j Σ_i K_ji L¹_ji, B likewise with L², C with κ(ŷ_j, y_i).
torch::Tensor cs_divergence(const torch::Tensor& yhat, const torch::Tensor& y, const torch::Tensor& k,
                            double sigma_y, bool symmetric) {
  const torch::Tensor w = k.sum(1).pow(-2).unsqueeze(1);
  const torch::Tensor a = (w * k * gram(y, y, sigma_y)).sum();
  const torch::Tensor b = (w * k * gram(yhat, yhat, sigma_y)).sum();
  const torch::Tensor cross = gram(yhat, y, sigma_y);  // [j, i] = κ(ŷ_j, y_i)
  const torch::Tensor c = (w * k * cross).sum();
  if (!symmetric) return a.log() + b.log() - 2 * c.log();
  const torch::Tensor c_prime = (w * k * cross.t()).sum();
  return a.log() + b.log() - c.log() - c_prime.log();
}

// CS quadratic mutual information: log ΣK∘Q + log 1ᵀQ1 + log 1ᵀK1 − 2·log (K1)ᵀ(Q1).
torch::Tensor cs_mi(const torch::Tensor& k, const torch::Tensor& q) {
  return (k * q).sum().log() + q.sum().log() + k.sum().log() - 2 * (k.sum(1) * q.sum(1)).sum().log();
}

}  // namespace

TEST_CASE("CSDivergence agrees with the plain Gram-matrix estimator in torch, gradient by autograd", "[torch][cs_ib]") {
  const Eigen::Index n = 40;
  const Eigen::MatrixXd x = lktest::normal(3, n), y = lktest::normal(2, n);
  const Eigen::MatrixXd yhat = y + lktest::normal(2, n, 0.4);
  for (const bool symmetric : {false, true})
    for (const bool median : {false, true}) {
      losskit::CSDivergence<double> div;
      div.symmetric_cross_term = symmetric;
      if (!median) {
        div.sigma_x = 1.3;
        div.sigma_y = 0.7;
      }
      Eigen::MatrixXd grad;
      const double v = div.value_and_gradient(yhat, y, x, grad);

      torch::Tensor tyhat = lktorch::rows(yhat, true);
      const torch::Tensor tx = lktorch::rows(x), ty = lktorch::rows(y);
      const double sx = median ? median_width(tx) : 1.3, sy = median ? median_width(ty) : 0.7;
      const torch::Tensor ref = cs_divergence(tyhat, ty, gram(tx, tx, sx), sy, symmetric);
      ref.backward();
      INFO("CSDivergence symmetric " << symmetric << ", median widths " << median);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktorch::grad_err(grad, lktorch::columns(tyhat.grad())) < kTol);
    }
}

TEST_CASE("CSQuadraticMI (plain and normalised) agrees with Gram-matrix formulas in torch, gradient by autograd",
          "[torch][cs_ib]") {
  const Eigen::Index n = 36;
  const Eigen::MatrixXd x = lktest::normal(4, n), t = lktest::normal(3, n) + 0.5 * x.topRows(3);
  for (const bool normalized : {false, true}) {
    losskit::CSQuadraticMI<double> mi;
    mi.sigma_x = 2.0;
    mi.sigma_t = 1.5;
    mi.normalized = normalized;
    Eigen::MatrixXd grad;
    const double v = mi.value_and_gradient(t, x, grad);

    torch::Tensor tt = lktorch::rows(t, true);
    const torch::Tensor k = gram(lktorch::rows(x), lktorch::rows(x), 2.0), q = gram(tt, tt, 1.5);
    // I_n = Î(x;t)/√(Î(x;x)·Î(t;t)), the official training script's normalisation.
    const torch::Tensor ref = normalized ? cs_mi(k, q) / (cs_mi(k, k) * cs_mi(q, q)).sqrt() : cs_mi(k, q);
    ref.backward();
    INFO("CSQuadraticMI normalized " << normalized);
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktorch::grad_err(grad, lktorch::columns(tt.grad())) < kTol);
  }
}

TEST_CASE("CSIB = D̂_CS + β·Î_CS agrees with torch, both gradients by autograd (σ_t median held constant)",
          "[torch][cs_ib]") {
  const Eigen::Index n = 32;
  const Eigen::MatrixXd x = lktest::normal(5, n), y = lktest::normal(1, n);
  const Eigen::MatrixXd yhat = y + lktest::normal(1, n, 0.3), t = lktest::normal(4, n);
  for (const bool median : {false, true}) {
    losskit::CSIB<double> ib;
    ib.beta = 0.3;
    if (!median) {
      ib.sigma_x = 2.0;
      ib.sigma_y = 0.5;
      ib.sigma_t = 1.7;
    }
    Eigen::MatrixXd g_yhat, g_t;
    const double v = ib.value_and_gradient(yhat, y, t, x, g_yhat, g_t);

    torch::Tensor tyhat = lktorch::rows(yhat, true), tt = lktorch::rows(t, true);
    const torch::Tensor tx = lktorch::rows(x), ty = lktorch::rows(y);
    // The median width of t is computed without gradient: losskit documents
    // σ_t as a constant of the gradient (stop-gradient), as torch code does with .detach().
    const double sx = median ? median_width(tx) : 2.0, sy = median ? median_width(ty) : 0.5,
                 st = median ? median_width(tt) : 1.7;
    const torch::Tensor k = gram(tx, tx, sx);
    const torch::Tensor ref = cs_divergence(tyhat, ty, k, sy, false) + 0.3 * cs_mi(k, gram(tt, tt, st));
    ref.backward();
    INFO("CSIB median widths " << median);
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktorch::grad_err(g_yhat, lktorch::columns(tyhat.grad())) < kTol);
    CHECK(lktorch::grad_err(g_t, lktorch::columns(tt.grad())) < kTol);
  }
}
#endif
