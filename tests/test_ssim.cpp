// SSIM / MS-SSIM: closed forms, invariances, an independent brute-force
// evaluation (direct 2-D window, explicit padding, long double), gradients
// by finite differences, float vs double, errors, allocation-free reuse.
#include <losskit/gradcheck.hpp>
#include <losskit/ssim.hpp>

#include <vector>

#include "sample_weight_checks.hpp"
#include "test_util.hpp"

using losskit::ImageLayout;
using losskit::MSSSIMLoss;
using losskit::OddSizePooling;
using losskit::Reduction;
using losskit::SSIMLoss;

namespace {

using LMat = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

struct BruteOptions {
  int window = 11;
  long double sigma = 1.5L, k1 = 0.01L, k2 = 0.03L, data_range = 1;
};

// Mean S and mean CS of one plane straight from the definition (Wang et al.
// 2004): a non-separable ws×ws Gaussian normalised as a whole, every window
// position's moments summed directly.
void brute_ssim(const LMat& x, const LMat& y, const BruteOptions& o, long double& s_mean, long double& cs_mean) {
  const int ws = o.window, r = ws / 2;
  LMat win(ws, ws);
  for (int u = 0; u < ws; ++u)
    for (int v = 0; v < ws; ++v)
      win(u, v) = std::exp(-((u - r) * (u - r) + (v - r) * (v - r)) / (2 * o.sigma * o.sigma));
  win /= win.sum();
  const long double c1 = (o.k1 * o.data_range) * (o.k1 * o.data_range);
  const long double c2 = (o.k2 * o.data_range) * (o.k2 * o.data_range);
  long double s_sum = 0, cs_sum = 0;
  const Eigen::Index hv = x.rows() - ws + 1, wv = x.cols() - ws + 1;
  for (Eigen::Index j = 0; j < wv; ++j)
    for (Eigen::Index i = 0; i < hv; ++i) {
      long double mx = 0, my = 0;
      for (int v = 0; v < ws; ++v)
        for (int u = 0; u < ws; ++u) {
          mx += win(u, v) * x(i + u, j + v);
          my += win(u, v) * y(i + u, j + v);
        }
      long double vx = 0, vy = 0, cxy = 0;
      for (int v = 0; v < ws; ++v)
        for (int u = 0; u < ws; ++u) {
          const long double dx = x(i + u, j + v) - mx, dy = y(i + u, j + v) - my;
          vx += win(u, v) * dx * dx;
          vy += win(u, v) * dy * dy;
          cxy += win(u, v) * dx * dy;
        }
      const long double cs = (2 * cxy + c2) / (vx + vy + c2);
      cs_sum += cs;
      s_sum += (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs;
    }
  s_mean = s_sum / (hv * wv);
  cs_mean = cs_sum / (hv * wv);
}

// 2×2 average pooling by explicit padding to even size, then block means.
LMat brute_pool(const LMat& x, OddSizePooling conv) {
  const Eigen::Index h = x.rows(), w = x.cols(), ph = h + h % 2, pw = w + w % 2;
  LMat p = LMat::Zero(ph, pw);
  if (conv == OddSizePooling::ReplicateLast) {
    p.topLeftCorner(h, w) = x;
    if (ph > h) p.row(ph - 1).head(w) = x.row(h - 1);
    if (pw > w) p.col(pw - 1).head(h) = x.col(w - 1);
    if (ph > h && pw > w) p(ph - 1, pw - 1) = x(h - 1, w - 1);
  } else {
    p.bottomRightCorner(h, w) = x;
  }
  LMat out(ph / 2, pw / 2);
  for (Eigen::Index j = 0; j < pw / 2; ++j)
    for (Eigen::Index i = 0; i < ph / 2; ++i)
      out(i, j) = (p(2 * i, 2 * j) + p(2 * i + 1, 2 * j) + p(2 * i, 2 * j + 1) + p(2 * i + 1, 2 * j + 1)) / 4;
  return out;
}

long double brute_ms_ssim(LMat x, LMat y, const BruteOptions& o, const std::vector<long double>& weights,
                          OddSizePooling conv) {
  long double wsum = 0;
  for (long double w : weights) wsum += w;
  long double ms = 1;
  for (std::size_t j = 0; j < weights.size(); ++j) {
    long double s, cs;
    brute_ssim(x, y, o, s, cs);
    const long double v = j + 1 == weights.size() ? s : cs;
    ms *= v > 0 ? std::pow(v, weights[j] / wsum) : 0;
    x = brute_pool(x, conv);
    y = brute_pool(y, conv);
  }
  return ms;
}

// Plane `channel` of image `image` as an H×W matrix, read in `layout`.
LMat plane(const Eigen::MatrixXd& images, Eigen::Index image, Eigen::Index channel, Eigen::Index h, Eigen::Index w,
           ImageLayout layout = ImageLayout::RowMajor) {
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const double* data = images.col(image).data() + channel * h * w;
  if (layout == ImageLayout::RowMajor) return Eigen::Map<const RowMat>(data, h, w).cast<long double>();
  return Eigen::Map<const Eigen::MatrixXd>(data, h, w).cast<long double>();
}

const char* name(ImageLayout layout) { return layout == ImageLayout::RowMajor ? "RowMajor" : "ColumnMajor"; }

// A target correlated with the prediction, so every MS-SSIM term is positive.
Eigen::MatrixXd correlated(const Eigen::MatrixXd& x, double noise) {
  return x + lktest::normal(x.rows(), x.cols(), noise);
}

}  // namespace

TEST_CASE("SSIM of identical images is 1 with zero gradient", "[ssim]") {
  const Eigen::MatrixXd x = lktest::uniform(2 * 20 * 17, 3);
  Eigen::MatrixXd g;
  SSIMLoss<double> loss(20, 17, 2);
  CHECK(loss.value_and_gradient(x, x, g) == Approx(0.0).margin(1e-14));
  CHECK(g.cwiseAbs().maxCoeff() <= 1e-13);
  CHECK((loss.index(x, x).array() - 1).abs().maxCoeff() <= 1e-14);
  MSSSIMLoss<double> ms(161, 161, 1);
  const Eigen::MatrixXd big = lktest::uniform(161 * 161, 1);
  CHECK(ms.value_and_gradient(big, big, g) == Approx(0.0).margin(1e-14));
  CHECK(g.cwiseAbs().maxCoeff() <= 1e-13);
}

TEST_CASE("SSIM of two constant images has the closed form", "[ssim]") {
  // Constant a, b: σ = 0 so CS = C2/C2 = 1 and S = (2ab + C1)/(a² + b² + C1);
  // a = 0.25, b = 0.75, L = 1: 0.600063989762 (reference sheet, ssim.md).
  const double expected = 0.600063989762;
  const double c1 = 1e-4, closed = (2 * 0.25 * 0.75 + c1) / (0.25 * 0.25 + 0.75 * 0.75 + c1);
  CHECK(closed == Approx(expected).epsilon(1e-11));
  const Eigen::MatrixXd a = Eigen::MatrixXd::Constant(3 * 16 * 19, 2, 0.25);
  const Eigen::MatrixXd b = Eigen::MatrixXd::Constant(3 * 16 * 19, 2, 0.75);
  SSIMLoss<double> loss(16, 19, 3);
  CHECK(loss.index(a, b)(1) == Approx(expected).epsilon(1e-11));
  CHECK(losskit::ssim(Eigen::MatrixXd::Constant(12, 30, 0.25), Eigen::MatrixXd::Constant(12, 30, 0.75)) ==
        Approx(expected).epsilon(1e-11));
  // MS-SSIM: CS = 1 at every scale, so MS = S^(w_5/Σw) with the last weight.
  const double ms_expected = std::pow(expected, 0.1333 / 1.0001);
  CHECK(losskit::ms_ssim(Eigen::MatrixXd::Constant(170, 165, 0.25), Eigen::MatrixXd::Constant(170, 165, 0.75)) ==
        Approx(ms_expected).epsilon(1e-11));
}

TEST_CASE("SSIM and MS-SSIM are unchanged when images and data_range scale together", "[ssim]") {
  const Eigen::MatrixXd x = lktest::uniform(2 * 24 * 21, 2);
  const Eigen::MatrixXd y = correlated(x, 0.2);
  SSIMLoss<double> unit(24, 21, 2), scaled(24, 21, 2);
  scaled.data_range = 255;
  Eigen::MatrixXd g1, g255;
  const double v1 = unit.value_and_gradient(x, y, g1);
  const double v255 = scaled.value_and_gradient(255 * x, 255 * y, g255);
  CHECK(lktest::rel_err(v1, v255) < 1e-12);
  CHECK((255 * g255 - g1).cwiseAbs().maxCoeff() <= 1e-11 * g1.cwiseAbs().maxCoeff());

  MSSSIMLoss<double> ms_unit(24, 21, 2), ms_scaled(24, 21, 2);
  for (auto* m : {&ms_unit, &ms_scaled}) {
    m->window_size = 5;
    m->weights = {0.2, 0.3, 0.5};
  }
  ms_scaled.data_range = 255;
  CHECK(lktest::rel_err(ms_unit(x, y), ms_scaled(255 * x, 255 * y)) < 1e-12);
}

TEST_CASE("SSIM agrees with a brute-force non-separable evaluation", "[ssim][brute]") {
  const Eigen::Index h = 23, w = 18, c = 3, n = 2;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n), y = lktest::uniform(c * h * w, n);
  for (int window : {11, 7}) {
    for (double range : {1.0, 2.0}) {
      const ImageLayout layout = range == 1.0 ? ImageLayout::RowMajor : ImageLayout::ColumnMajor;
      SSIMLoss<double> loss(h, w, c);
      loss.layout = layout;
      loss.window_size = window;
      loss.sigma = window == 7 ? 1.0 : 1.5;
      loss.data_range = range;
      BruteOptions o;
      o.window = window;
      o.sigma = loss.sigma;
      o.data_range = range;
      const Eigen::VectorXd idx = loss.index(x, y);
      long double total_loss = 0;
      for (Eigen::Index i = 0; i < n; ++i) {
        long double mean = 0;
        for (Eigen::Index ch = 0; ch < c; ++ch) {
          long double s, cs;
          brute_ssim(plane(x, i, ch, h, w, layout), plane(y, i, ch, h, w, layout), o, s, cs);
          mean += s / c;
        }
        INFO("SSIM " << name(layout) << " window " << window << " L " << range << " image " << i << ": " << idx(i) << " vs brute "
                            << double(mean));
        CHECK(lktest::rel_err(idx(i), double(mean)) < 1e-12);
        total_loss += (1 - mean) / n;
      }
      CHECK(lktest::rel_err(loss(x, y), double(total_loss)) < 1e-12);
    }
  }
  // The free function on a single plane.
  long double s, cs;
  brute_ssim(plane(x, 1, 2, h, w, ImageLayout::ColumnMajor), plane(y, 1, 2, h, w, ImageLayout::ColumnMajor),
             BruteOptions{}, s, cs);
  const Eigen::Map<const Eigen::MatrixXd> xp(x.col(1).data() + 2 * h * w, h, w), yp(y.col(1).data() + 2 * h * w, h, w);
  CHECK(lktest::rel_err(losskit::ssim(xp, yp), double(s)) < 1e-12);
}

TEST_CASE("MS-SSIM agrees with a brute-force evaluation for both odd-size poolings", "[ssim][brute]") {
  const Eigen::Index h = 37, w = 42, c = 2, n = 2;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n);
  const Eigen::MatrixXd y = correlated(x, 0.3);
  const std::vector<long double> weights = {0.1, 0.2, 0.3, 0.4};
  // 37 → 19 → 10 → 5 and 42 → 21 → 11 → 6: odd sizes on different axes at
  // different scales, in both layouts.
  for (OddSizePooling conv : {OddSizePooling::ReplicateLast, OddSizePooling::ZeroFirst})
    for (ImageLayout layout : {ImageLayout::RowMajor, ImageLayout::ColumnMajor}) {
    MSSSIMLoss<double> loss(h, w, c);
    loss.layout = layout;
    loss.window_size = 5;
    loss.sigma = 1.0;
    loss.weights = {0.1, 0.2, 0.3, 0.4};
    loss.pooling = conv;
    BruteOptions o;
    o.window = 5;
    o.sigma = 1.0;
    const Eigen::VectorXd idx = loss.index(x, y);
    for (Eigen::Index i = 0; i < n; ++i) {
      long double mean = 0;
      for (Eigen::Index ch = 0; ch < c; ++ch)
        mean += brute_ms_ssim(plane(x, i, ch, h, w, layout), plane(y, i, ch, h, w, layout), o, weights, conv) / c;
      INFO("MS-SSIM " << name(layout) << " pooling " << int(conv) << " image " << i << ": " << idx(i) << " vs brute " << double(mean));
      CHECK(lktest::rel_err(idx(i), double(mean)) < 1e-12);
    }
  }
  // Default five scales, window 11, on the smallest allowed image (161 → 81 → 41 → 21 → 11).
  const Eigen::MatrixXd big_x = lktest::uniform(161, 161), big_y = correlated(big_x, 0.2);
  const long double brute = brute_ms_ssim(big_x.cast<long double>(), big_y.cast<long double>(), BruteOptions{},
                                          {0.0448, 0.2856, 0.3001, 0.2363, 0.1333}, OddSizePooling::ReplicateLast);
  CHECK(lktest::rel_err(losskit::ms_ssim(big_x, big_y), double(brute)) < 1e-12);
}

TEST_CASE("SSIM gradient passes the finite-difference check", "[ssim][gradient]") {
  const Eigen::Index h = 15, w = 13, c = 2, n = 2;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n), y = correlated(x, 0.3);
  for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
    SSIMLoss<double> loss(h, w, c);
    loss.reduction = r;
    Eigen::MatrixXd g;
    const double v = loss.value_and_gradient(x, y, g);
    CHECK(v == Approx(loss(x, y)).epsilon(1e-15));
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g);
    INFO("SSIM " << r << ": " << res.report());
    CHECK(res.max_rel_error <= 1e-6);
  }
}

TEST_CASE("MS-SSIM gradient passes the finite-difference check with odd sizes at every scale", "[ssim][gradient]") {
  // 9 → 5 → 3 and 25 → 13 → 7: odd at every scale, so both pooling
  // conventions' edge cases (replicated last / zero first) are exercised.
  const Eigen::Index h = 9, w = 25, c = 2, n = 2;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n), y = correlated(x, 0.2);
  for (OddSizePooling conv : {OddSizePooling::ReplicateLast, OddSizePooling::ZeroFirst}) {
    MSSSIMLoss<double> loss(h, w, c);
    loss.window_size = 3;
    loss.sigma = 0.8;
    loss.weights = {0.3, 0.3, 0.4};
    loss.pooling = conv;
    Eigen::MatrixXd g;
    const double v = loss.value_and_gradient(x, y, g);
    REQUIRE(v < 1.0);  // every scale term positive: the smooth branch
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g);
    INFO("MS-SSIM pooling " << int(conv) << ": " << res.report());
    CHECK(res.max_rel_error <= 1e-6);
  }
  // Default options (5 scales, window 11) on 161×161 (odd at all five
  // scales), two channels: random coordinates plus random directions.
  const Eigen::MatrixXd bx = lktest::uniform(2 * 161 * 161, 1), by = correlated(bx, 0.2);
  MSSSIMLoss<double> loss(161, 161, 2);
  Eigen::MatrixXd g;
  loss.value_and_gradient(bx, by, g);
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 12;
  opt.directions = 3;
  opt.extrapolation_levels = 4;
  const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, by); }, bx, g, opt);
  INFO("MS-SSIM default options: " << res.report());
  CHECK(res.max_rel_error <= 1e-6);
}

TEST_CASE("SSIM and MS-SSIM gradients hold at edge points: flat images, 8-bit magnitudes", "[ssim][gradient]") {
  const Eigen::Index h = 13, w = 17, c = 2, n = 1;
  SECTION("near-constant images: σ ≈ 0, the C2 term dominates") {
    const Eigen::MatrixXd x = (0.3 + 1e-3 * lktest::normal(c * h * w, n).array()).matrix();
    const Eigen::MatrixXd y = (0.6 + 1e-3 * lktest::normal(c * h * w, n).array()).matrix();
    SSIMLoss<double> loss(h, w, c);
    Eigen::MatrixXd g;
    loss.value_and_gradient(x, y, g);
    losskit::GradientCheckOptions opt;
    opt.step = 1e-4;  // absolute: the images vary on the 1e-3 scale
    opt.relative_step = false;
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g, opt);
    INFO("SSIM flat: " << res.report());
    CHECK(res.max_rel_error <= 1e-6);
  }
  SECTION("0..255 images with data_range 255, MS-SSIM with both poolings") {
    const Eigen::MatrixXd x = 255 * lktest::uniform(c * h * w, n), y = correlated(x / 255, 0.2) * 255;
    for (OddSizePooling conv : {OddSizePooling::ReplicateLast, OddSizePooling::ZeroFirst}) {
      MSSSIMLoss<double> loss(h, w, c);
      loss.window_size = 5;
      loss.weights = {0.4, 0.6};
      loss.data_range = 255;
      loss.pooling = conv;
      Eigen::MatrixXd g;
      loss.value_and_gradient(x, y, g);
      const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g);
      INFO("MS-SSIM 8-bit, pooling " << int(conv) << ": " << res.report());
      CHECK(res.max_rel_error <= 1e-6);
    }
  }
}

TEST_CASE("MS-SSIM with unnormalised weights is the normalised index to the power Σw", "[ssim]") {
  // Π v_j^{w_j} = (Π v_j^{w_j/Σw})^{Σw}.
  const Eigen::MatrixXd x = lktest::uniform(30 * 28, 2), y = correlated(x, 0.2);
  MSSSIMLoss<double> norm(30, 28), raw(30, 28);
  norm.window_size = raw.window_size = 5;
  norm.weights = raw.weights = {0.5, 0.7, 0.9};
  raw.normalize_weights = false;
  const Eigen::VectorXd a = norm.index(x, y), b = raw.index(x, y);
  for (Eigen::Index i = 0; i < 2; ++i) CHECK(lktest::rel_err(std::pow(a(i), 2.1), b(i)) < 1e-13);
}

TEST_CASE("MS-SSIM never produces NaN: non-positive scale terms give 0 and a zero gradient", "[ssim][nan]") {
  // y = 1 − x is perfectly anti-correlated: CS < 0 at the finest scale.
  const Eigen::Index h = 40, w = 40;
  const Eigen::MatrixXd x = lktest::uniform(2 * h * w, 2);
  Eigen::MatrixXd y = (1 - x.array()).matrix();
  y.col(1) = correlated(x.col(1), 0.1);  // image 1 stays on the smooth branch
  MSSSIMLoss<double> loss(h, w, 2);
  loss.window_size = 5;
  loss.weights = {0.5, 0.5};
  Eigen::MatrixXd g;
  const double v = loss.value_and_gradient(x, y, g);
  const Eigen::VectorXd idx = loss.index(x, y);
  CHECK(idx(0) == 0.0);
  CHECK(idx(1) > 0.0);
  CHECK(v == Approx((1.0 + (1.0 - idx(1))) / 2).epsilon(1e-14));
  CHECK(g.allFinite());
  CHECK(g.col(0).isZero(0));
  CHECK(!g.col(1).isZero(0));
}

TEST_CASE("SSIM in float agrees with double", "[ssim][float]") {
  const Eigen::Index h = 40, w = 36, c = 3, n = 2;
  const Eigen::MatrixXf xf = lktest::uniform<float>(c * h * w, n);
  const Eigen::MatrixXf yf = (xf + lktest::normal<float>(c * h * w, n, 0.1)).eval();
  const Eigen::MatrixXd xd = xf.cast<double>(), yd = yf.cast<double>();
  {
    Eigen::MatrixXf gf;
    Eigen::MatrixXd gd;
    const float vf = SSIMLoss<float>(h, w, c).value_and_gradient(xf, yf, gf);
    const double vd = SSIMLoss<double>(h, w, c).value_and_gradient(xd, yd, gd);
    INFO("SSIM float " << vf << " vs double " << vd);
    CHECK(std::abs(vf - vd) < 2e-6);
    CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-4 * gd.cwiseAbs().maxCoeff());
  }
  {
    MSSSIMLoss<float> mf(h, w, c);
    MSSSIMLoss<double> md(h, w, c);
    mf.window_size = md.window_size = 7;
    mf.weights = {0.2f, 0.3f, 0.5f};
    md.weights = {0.2, 0.3, 0.5};
    Eigen::MatrixXf gf;
    Eigen::MatrixXd gd;
    const float vf = mf.value_and_gradient(xf, yf, gf);
    const double vd = md.value_and_gradient(xd, yd, gd);
    INFO("MS-SSIM float " << vf << " vs double " << vd);
    CHECK(std::abs(vf - vd) < 2e-6);
    CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-4 * gd.cwiseAbs().maxCoeff());
  }
  // 8-bit range in float: the mean shift keeps σ² accurate (W(X²) ~ 6e4).
  const Eigen::MatrixXf xf255 = 255 * xf, yf255 = 255 * yf;
  SSIMLoss<float> f255(h, w, c);
  f255.data_range = 255;
  CHECK(std::abs(f255(xf255, yf255) - SSIMLoss<double>(h, w, c)(xd, yd)) < 2e-6);
}

TEST_CASE("SSIM reductions, per-sample values and expression inputs", "[ssim]") {
  const Eigen::Index h = 14, w = 12, c = 2, n = 3;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n), y = correlated(x, 0.3);
  SSIMLoss<double> loss(h, w, c);
  const Eigen::VectorXd per = loss.per_sample(x, y);
  CHECK(loss(x, y) == Approx(per.mean()).epsilon(1e-14));
  loss.reduction = Reduction::Sum;
  CHECK(loss(x, y) == Approx(per.sum()).epsilon(1e-14));
  Eigen::MatrixXd g_ref;
  loss.value_and_gradient(x, y, g_ref);

  // Row-major N×D buffers seen through transpose, gradient into a Block.
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajor xr = x.transpose(), yr = y.transpose();
  Eigen::MatrixXd big = Eigen::MatrixXd::Zero(c * h * w + 4, n + 2);
  loss.value_and_gradient(xr.transpose(), (yr.array() * 1.0).matrix().transpose(), big.block(2, 1, c * h * w, n));
  CHECK(big.block(2, 1, c * h * w, n).isApprox(g_ref, 1e-15));
  CHECK(big.topRows(2).isZero(0));
  Eigen::ArrayXXd ga;
  loss.value_and_gradient(x.array(), y.array(), ga);
  CHECK(ga.matrix().isApprox(g_ref, 1e-15));
}

TEST_CASE("SSIM and MS-SSIM reject invalid options and shapes, writing nothing", "[ssim][errors]") {
  const Eigen::MatrixXd x = lktest::uniform(2 * 20 * 20, 2);
  Eigen::MatrixXd g = lktest::sentinel(2 * 20 * 20, 2);
  auto rejects = [&](const SSIMLoss<double>& loss, const char* needle) {
    CHECK_THROWS_WITH(loss.value_and_gradient(x, x, g), lktest::Contains("SSIMLoss") && lktest::Contains(needle));
    CHECK_THROWS_AS(loss(x, x), losskit::Error);
    CHECK(lktest::untouched(g, 2 * 20 * 20, 2));
  };
  SSIMLoss<double> loss(20, 20, 2);
  loss.window_size = 10;
  rejects(loss, "window_size");
  loss.window_size = 11;
  loss.sigma = 0;
  rejects(loss, "sigma");
  loss.sigma = -1;
  rejects(loss, "sigma");
  loss.sigma = 1.5;
  loss.data_range = 0;
  rejects(loss, "data_range");
  loss.data_range = 1;
  loss.k2 = -0.03;
  rejects(loss, "k2");
  loss.k2 = 0.03;
  loss.window_size = 21;
  rejects(loss, "at least 21");

  SSIMLoss<double> ok(20, 20, 2);
  CHECK_THROWS_WITH(ok.value_and_gradient(x, lktest::uniform(2 * 20 * 20, 3), g), lktest::Contains("target"));
  CHECK_THROWS_WITH(SSIMLoss<double>(20, 20, 3)(x, x), lktest::Contains("3·20·20"));
  CHECK_THROWS_AS(ok.value_and_gradient(x, x, g.block(0, 0, 10, 2)), losskit::Error);
  CHECK_THROWS_AS(SSIMLoss<double>(0, 20, 1), losskit::Error);
  CHECK_THROWS_AS(losskit::ssim(Eigen::MatrixXd::Ones(20, 20), Eigen::MatrixXd::Ones(20, 21)), losskit::Error);
  CHECK(lktest::untouched(g, 2 * 20 * 20, 2));

  // MS-SSIM: 5 scales with window 11 need 161 px per side.
  const Eigen::MatrixXd img = lktest::uniform(100 * 200, 1);
  Eigen::MatrixXd gm = lktest::sentinel(100 * 200, 1);
  MSSSIMLoss<double> ms(100, 200, 1);
  CHECK_THROWS_WITH(ms.value_and_gradient(img, img, gm),
                    lktest::Contains("MSSSIMLoss") && lktest::Contains("100x200") && lktest::Contains("161") &&
                        lktest::Contains("fewer scales"));
  ms.weights = {0.0448, 0.2856, 0.3001, 0.2363};  // 4 scales need 81: fine
  CHECK_NOTHROW(ms(img, img));
  ms.weights = {};
  CHECK_THROWS_WITH(ms.value_and_gradient(img, img, gm), lktest::Contains("weights"));
  ms.weights = {0.5, -0.5};
  CHECK_THROWS_WITH(ms.value_and_gradient(img, img, gm), lktest::Contains("weights"));
  ms.weights = {0.5, 0.5};
  ms.window_size = 4;
  CHECK_THROWS_WITH(ms.value_and_gradient(img, img, gm), lktest::Contains("window_size"));
  CHECK(lktest::untouched(gm, 100 * 200, 1));
}

TEST_CASE("SSIM and MS-SSIM reuse their workspace: no allocation on repeated calls", "[ssim][alloc]") {
  const Eigen::Index h = 48, w = 40, c = 2, n = 4;
  const Eigen::MatrixXf x = lktest::uniform<float>(c * h * w, n), y = lktest::uniform<float>(c * h * w, n);
  Eigen::MatrixXf g(c * h * w, n);
  SSIMLoss<float> ssim(h, w, c);
  MSSSIMLoss<float> ms(h, w, c);
  ms.window_size = 7;
  ms.weights = {0.3f, 0.3f, 0.4f};
  ssim.value_and_gradient(x, y, g);  // first call sizes the workspace
  ms.value_and_gradient(x, y, g);
  lktest::AllocationCounter counter;
  const float v1 = ssim.value_and_gradient(x, y, g);
  const float v2 = ssim(x, y);
  const float v3 = ms.value_and_gradient(x, y, g);
  const float v4 = ms(x, y);
  CHECK(counter.count() == 0);
  CHECK(v1 == v2);
  CHECK(v3 == v4);
}

TEST_CASE("SSIM propagates non-finite pixels to that plane only, without throwing", "[ssim][nonfinite]") {
  const Eigen::Index h = 12, w = 12;
  Eigen::MatrixXd x = lktest::uniform(2 * h * w, 2);
  const Eigen::MatrixXd y = lktest::uniform(2 * h * w, 2);
  x(5, 0) = std::numeric_limits<double>::quiet_NaN();
  x(h * w + 3, 1) = std::numeric_limits<double>::infinity();
  Eigen::MatrixXd g;
  SSIMLoss<double> loss(h, w, 2);
  CHECK(std::isnan(loss.value_and_gradient(x, y, g)));
  CHECK(g.col(0).head(h * w).array().isNaN().all());
  CHECK(g.col(0).tail(h * w).allFinite());
  CHECK(g.col(1).tail(h * w).array().isNaN().all());
  CHECK(g.col(1).head(h * w).allFinite());
  MSSSIMLoss<double> ms(h * 2, w * 2, 1);
  ms.window_size = 3;
  ms.weights = {0.5, 0.5};
  Eigen::MatrixXd xm = lktest::uniform(4 * h * w, 1);
  xm(7, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(ms.value_and_gradient(xm, xm, g)));
}

namespace {

using RowPlane = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The same images with every plane stored row after row instead of column
// after column (or back: the map is its own inverse with h, w swapped).
Eigen::MatrixXd transpose_planes(const Eigen::MatrixXd& images, Eigen::Index h, Eigen::Index w, Eigen::Index c) {
  Eigen::MatrixXd out(images.rows(), images.cols());
  for (Eigen::Index i = 0; i < images.cols(); ++i)
    for (Eigen::Index ch = 0; ch < c; ++ch)
      Eigen::Map<RowPlane>(out.col(i).data() + ch * h * w, h, w) =
          Eigen::Map<const Eigen::MatrixXd>(images.col(i).data() + ch * h * w, h, w);
  return out;
}

}  // namespace

TEST_CASE("SSIM and MS-SSIM: sample weights follow the contract (n_i = 1)", "[ssim][weights]") {
  const Eigen::Index h = 14, w = 17, c = 2, n = 5;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n), y = correlated(x, 0.3);
  // A random subset of 120 of the 2380 coordinates and 12 random directions per
  // gradient check (each image's whole gradient enters every direction): the
  // full check costs minutes under the sanitizers.
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 120;
  opt.directions = 12;
  SSIMLoss<double> ssim(h, w, c);
  ssim.window_size = 7;
  lktest::check_sample_weights(ssim, x, y, "SSIMLoss", opt);
  MSSSIMLoss<double> ms(h, w, c);
  ms.window_size = 3;
  ms.weights = {0.3, 0.3, 0.4};
  ms.pooling = OddSizePooling::ZeroFirst;
  lktest::check_sample_weights(ms, x, y, "MSSSIMLoss", opt);
}

TEST_CASE("SSIM layouts: a row-major plane gives the index of the same image stored column-major", "[ssim][layout]") {
  // H ≠ W, and for MS-SSIM 27 → 14 → 7 and 40 → 20 → 10: an odd size on one
  // axis only, with both poolings; the gradient comes back in the same layout.
  const Eigen::Index h = 27, w = 40, c = 2, n = 2;
  const Eigen::MatrixXd xc = lktest::uniform(c * h * w, n), yc = correlated(xc, 0.3);
  const Eigen::MatrixXd xr = transpose_planes(xc, h, w, c), yr = transpose_planes(yc, h, w, c);
  auto agree = [&](auto row, auto col, const char* what) {
    row.layout = ImageLayout::RowMajor;
    col.layout = ImageLayout::ColumnMajor;
    Eigen::MatrixXd gr, gc;
    const double vr = row.value_and_gradient(xr, yr, gr), vc = col.value_and_gradient(xc, yc, gc);
    INFO(what << ": RowMajor " << vr << " vs ColumnMajor " << vc);
    CHECK(lktest::rel_err(vr, vc) < 1e-13);
    CHECK((transpose_planes(gr, w, h, c) - gc).cwiseAbs().maxCoeff() <= 1e-13 * gc.cwiseAbs().maxCoeff());
    CHECK((row.index(xr, yr) - col.index(xc, yc)).cwiseAbs().maxCoeff() <= 1e-14);
    // Reading the data in the wrong layout is a different (wrong) image.
    col.layout = ImageLayout::RowMajor;
    CHECK(std::abs(col(xc, yc) - vc) > 1e-6);
  };
  agree(SSIMLoss<double>(h, w, c), SSIMLoss<double>(h, w, c), "SSIM");
  for (OddSizePooling conv : {OddSizePooling::ReplicateLast, OddSizePooling::ZeroFirst}) {
    MSSSIMLoss<double> ms(h, w, c);
    ms.window_size = 5;
    ms.weights = {0.3, 0.3, 0.4};
    ms.pooling = conv;
    agree(ms, ms, conv == OddSizePooling::ZeroFirst ? "MS-SSIM ZeroFirst" : "MS-SSIM ReplicateLast");
  }
}

TEST_CASE("ssim() and ms_ssim() read an H×W matrix in its own storage order", "[ssim][layout]") {
  const Eigen::MatrixXd xc = lktest::uniform(20, 30), yc = correlated(xc, 0.2);
  const RowPlane xr = xc, yr = yc;
  const double v = losskit::ssim(xc, yc);
  CHECK(lktest::rel_err(losskit::ssim(xr, yr), v) < 1e-14);
  CHECK(lktest::rel_err(losskit::ssim(xr, yc), v) < 1e-14);
  CHECK(lktest::rel_err(losskit::ssim(xc.transpose(), yc.transpose()), v) < 1e-13);
  // A row-major buffer of the plane through SSIMLoss's default layout.
  SSIMLoss<double> loss(20, 30);
  const Eigen::Map<const Eigen::VectorXd> xv(xr.data(), xr.size()), yv(yr.data(), yr.size());
  CHECK(lktest::rel_err(loss.index(xv, yv)(0), v) < 1e-14);
  long double s, cs;
  brute_ssim(xc.cast<long double>(), yc.cast<long double>(), BruteOptions{}, s, cs);
  CHECK(lktest::rel_err(v, double(s)) < 1e-12);
  const Eigen::MatrixXd bx = lktest::uniform(170, 180), by = correlated(bx, 0.2);
  const RowPlane bxr = bx, byr = by;
  CHECK(lktest::rel_err(losskit::ms_ssim(bxr, byr), losskit::ms_ssim(bx, by)) < 1e-13);
}

TEST_CASE("MS-SSIM fit_scales uses the scales that fit, as the truncated weights would", "[ssim][fit_scales]") {
  // Window 11: 2 scales need 21 px per side, 3 need 41: a 40×50 image fits 2.
  const Eigen::Index h = 40, w = 50, c = 2, n = 2;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n), y = correlated(x, 0.2);
  MSSSIMLoss<double> fit(h, w, c), truncated(h, w, c);
  Eigen::MatrixXd g = lktest::sentinel(c * h * w, n);
  CHECK_THROWS_WITH(fit.value_and_gradient(x, y, g), lktest::Contains("40x50") && lktest::Contains("fewer scales"));
  CHECK(lktest::untouched(g, c * h * w, n));
  fit.fit_scales = true;
  truncated.weights = {0.0448, 0.2856};
  CHECK(fit.scales() == 2);
  for (bool normalize : {true, false}) {
    fit.normalize_weights = truncated.normalize_weights = normalize;
    Eigen::MatrixXd gf, gt;
    const double vf = fit.value_and_gradient(x, y, gf), vt = truncated.value_and_gradient(x, y, gt);
    INFO("normalize_weights " << normalize << ": fit " << vf << " vs truncated " << vt);
    CHECK(lktest::rel_err(vf, vt) < 1e-15);
    CHECK((gf - gt).cwiseAbs().maxCoeff() <= 1e-15 * gt.cwiseAbs().maxCoeff());
    CHECK((fit.index(x, y) - truncated.index(x, y)).cwiseAbs().maxCoeff() <= 1e-15);
  }
  // Large enough for every scale: fit_scales changes nothing.
  MSSSIMLoss<double> big(161, 170), big_fit(161, 170);
  big_fit.fit_scales = true;
  CHECK(big_fit.scales() == 5);
  const Eigen::MatrixXd bx = lktest::uniform(161 * 170, 1), by = correlated(bx, 0.2);
  CHECK(big(bx, by) == big_fit(bx, by));
  // Smaller than the window: one scale does not fit either.
  MSSSIMLoss<double> tiny(8, 30);
  tiny.fit_scales = true;
  CHECK_THROWS_WITH(tiny(lktest::uniform(240, 1), lktest::uniform(240, 1)), lktest::Contains("window"));
}

TEST_CASE("MS-SSIM evaluate() counts the images with a clamped scale term", "[ssim][clamped]") {
  // Independent noise: some scale's CS is <= 0 for most pairs, and the image
  // then has MS-SSIM 0 with a zero gradient; an image with itself never.
  const Eigen::Index h = 65, w = 70, n = 12;
  MSSSIMLoss<double> ms(h, w);
  ms.window_size = 5;  // 5 scales need 65 px per side
  const Eigen::MatrixXd x = lktest::uniform(h * w, n), y = lktest::uniform(h * w, n);
  const Eigen::VectorXd idx = ms.index(x, y);
  const Eigen::Index zeros = (idx.array() == 0.0).count();
  REQUIRE(zeros >= 1);
  Eigen::MatrixXd g;
  const auto r = ms.evaluate(x, y, g);
  CHECK(r.clamped_images == zeros);
  CHECK(r.loss == ms(x, y));
  CHECK(ms.evaluate(x, y).clamped_images == zeros);
  for (Eigen::Index i = 0; i < n; ++i)
    if (idx(i) == 0.0) CHECK(g.col(i).isZero(0));
  // An image with itself.
  const auto same = ms.evaluate(x, x, g);
  CHECK(same.clamped_images == 0);
  CHECK(same.loss == Approx(0.0).margin(1e-14));
  // Weighted: images of weight 0 are not evaluated, so not counted.
  Eigen::VectorXd s = Eigen::VectorXd::Ones(n);
  for (Eigen::Index i = 0; i < n; ++i)
    if (idx(i) == 0.0) s(i) = 0;
  const auto weighted = ms.evaluate(x, y, s, losskit::no_grad);
  CHECK(weighted.clamped_images == 0);
  CHECK(weighted.loss == Approx(ms(x, y, s)).epsilon(1e-15));
}

// ---- Options against their peers (issue 15) -----------------------------------------------
// Reference numbers: tests/torch/ssim_peer_references.py, run here in double with
// pytorch-msssim (github.com/VainF/pytorch-msssim @ b057b072dd869ae3f6b88543786f44d008315f69),
// piq (github.com/photosynthesis-team/piq @ 9948a52fc09ac5f7fb3618ce64b7086f5c3109da) and
// scikit-image 0.19.3 (Debian bookworm python3-skimage). pytorch-msssim's default window is
// built in float32, so the script passes the same Gaussian built in double as `win`.

namespace {

// The script's peer_image: an integer LCG, exact in double; images in NCHW order, so
// the N×(C·H·W) buffer is the losskit RowMajor batch (column j = image j).
Eigen::VectorXd lcg(long long seed, Eigen::Index n) {
  Eigen::VectorXd out(n);
  long long s = seed;
  for (Eigen::Index i = 0; i < n; ++i) {
    s = (s * 1103515245LL + 12345LL) % (1LL << 31);
    out(i) = double((s >> 8) % 65536) / 65536.0;
  }
  return out;
}

struct PeerImages {
  Eigen::MatrixXd x, y;
};

PeerImages peer_image(Eigen::Index n, Eigen::Index c, Eigen::Index plane, long long seed, bool anti = false) {
  const Eigen::Index size = n * c * plane;
  PeerImages p;
  const Eigen::VectorXd a = lcg(seed, size), b = lcg(seed + 1, size);
  p.x = Eigen::Map<const Eigen::MatrixXd>(a.data(), c * plane, n);
  const Eigen::VectorXd yv = 0.75 * a + 0.25 * b;
  p.y = Eigen::Map<const Eigen::MatrixXd>(yv.data(), c * plane, n);
  if (anti)
    for (Eigen::Index j = 0; j < n; ++j)
      for (Eigen::Index ch = 1; ch < c; ch += 2) p.y.col(j).segment(ch * plane, plane).array() = 1.0 - p.y.col(j).segment(ch * plane, plane).array();
  return p;
}

// Within 1e-12, relative to max(1, |ref|).
bool close12(double v, double ref) { return std::abs(v - ref) <= 1e-12 * std::max(1.0, std::abs(ref)); }

// The script's grad_entries: chosen flat NCHW entries (= entries of the gradient
// matrix's data) and the sum of |g|; entries within 1e-14 absolute (they are < 1e-3),
// the sum within 1e-12 relative.
void check_grad_entries(const Eigen::MatrixXd& g, const std::vector<Eigen::Index>& idx,
                        const std::vector<double>& ref) {
  for (std::size_t k = 0; k < idx.size(); ++k) {
    INFO("entry " << idx[k] << ": " << g.data()[idx[k]] << " vs " << ref[k]);
    CHECK(std::abs(g.data()[idx[k]] - ref[k]) <= 1e-14);
  }
  INFO("sum |g|: " << g.cwiseAbs().sum() << " vs " << ref.back());
  CHECK(std::abs(g.cwiseAbs().sum() - ref.back()) <= 1e-12 * ref.back());
}

}  // namespace

TEST_CASE("nonnegative_ssim and channel_index reproduce pytorch-msssim", "[ssim][peer][nonnegative]") {
  // pytorch_msssim.ssim(X, Y, data_range=1, win=win64, size_average=False, nonnegative_ssim=True)
  // on 2×2×20×30, odd channels anti-correlated (negative SSIM); _ssim(...) for the channels.
  const PeerImages p = peer_image(2, 2, 20 * 30, 1, true);
  SSIMLoss<double> loss(20, 30, 2);
  const Eigen::MatrixXd per_channel = loss.channel_index(p.x, p.y);
  const double ref_channel[] = {0.91796989973337217, -0.89621887010594747, 0.90765618151589644,
                                -0.89953679374216233};  // (image, channel) row-major
  for (int i = 0; i < 4; ++i) CHECK(close12(per_channel(i % 2, i / 2), ref_channel[i]));
  loss.nonnegative_ssim = true;
  const Eigen::VectorXd index = loss.index(p.x, p.y);
  CHECK(close12(index(0), 0.45898494986668609));
  CHECK(close12(index(1), 0.45382809075794822));
  // Gradient of 1 − ssim(..., size_average=True, nonnegative_ssim=True) by torch autograd.
  Eigen::MatrixXd g;
  const double v = loss.value_and_gradient(p.x, p.y, g);
  CHECK(close12(v, 1 - (0.45898494986668609 + 0.45382809075794822) / 2));
  check_grad_entries(g, {0, 1, 17, 123, 599, 1000},
                     {8.1847833846778616e-10, 1.4487480574239502e-08, 3.89626430939249e-06, -1.1099706856904094e-05,
                      3.0471832379716627e-09, 0, 0.61436368930256835});
  CHECK((g.col(0).segment(600, 600).array() == 0).all());  // the clamped channel: exactly 0
  const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, p.y); }, p.x, g);
  INFO(res.report());
  CHECK(res.max_rel_error <= 1e-6);
}

TEST_CASE("A custom asymmetric window reproduces pytorch-msssim's win", "[ssim][peer][window]") {
  // pytorch_msssim.ssim(X, Y, data_range=1, win=[1, 2, 4, 2.5, 0.5]/10) on 1×1×20×30.
  const PeerImages p = peer_image(1, 1, 20 * 30, 3);
  for (ImageLayout layout : {ImageLayout::RowMajor, ImageLayout::ColumnMajor}) {
    SSIMLoss<double> loss(20, 30, 1);
    loss.window = losskit::SSIMWindow::Custom;
    loss.taps = {2, 4, 8, 5, 1};  // divided by their sum: the script's normalised taps
    loss.layout = layout;
    Eigen::MatrixXd x = p.x, y = p.y;
    if (layout == ImageLayout::ColumnMajor) {  // the same image stored column after column
      using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      Eigen::MatrixXd xc = Eigen::Map<const RowMat>(p.x.data(), 20, 30), yc = Eigen::Map<const RowMat>(p.y.data(), 20, 30);
      x = Eigen::Map<const Eigen::MatrixXd>(xc.data(), 600, 1);
      y = Eigen::Map<const Eigen::MatrixXd>(yc.data(), 600, 1);
    }
    Eigen::MatrixXd g;
    const double v = loss.value_and_gradient(x, y, g);
    INFO(name(layout));
    CHECK(close12(1 - v, 0.91038254736041846));
    if (layout == ImageLayout::RowMajor)
      check_grad_entries(g, {0, 1, 17, 123, 599},
                         {1.9373824792479306e-05, 6.7911574428041138e-05, -0.00014796652571332647,
                          -0.00082921575068231981, 8.7220619679331437e-06, 1.1772448884207483});
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g);
    INFO(res.report());
    CHECK(res.max_rel_error <= 1e-6);
  }
}

TEST_CASE("Uniform window, sample covariance and ssim_map reproduce scikit-image", "[ssim][peer][window]") {
  // skimage.metrics.structural_similarity(x, y, data_range=1.0, full=True) with its defaults
  // (7×7 uniform window, use_sample_covariance=True) on a 20×30 image; the map cropped
  // by (7 − 1)/2 on each side is the valid map.
  const PeerImages p = peer_image(1, 1, 20 * 30, 5);
  SSIMLoss<double> loss(20, 30, 1);
  loss.window = losskit::SSIMWindow::Uniform;
  loss.window_size = 7;
  loss.sample_covariance = true;
  CHECK(close12(loss.index(p.x, p.y)(0), 0.91995826255057711));
  const Eigen::MatrixXd map = loss.ssim_map(p.x, p.y);
  REQUIRE(map.rows() == 14);
  REQUIRE(map.cols() == 24);
  CHECK(close12(map(0, 0), 0.93879542288466922));
  CHECK(close12(map(2, 5), 0.90284062411659938));
  CHECK(close12(map(13, 23), 0.92107312785406803));
  CHECK(close12(map.mean(), loss.index(p.x, p.y)(0)));
  Eigen::MatrixXd g;
  loss.value_and_gradient(p.x, p.y, g);
  auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, p.y); }, p.x, g);
  INFO(res.report());
  CHECK(res.max_rel_error <= 1e-6);
  // structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=True)
  SSIMLoss<double> gauss(20, 30, 1);
  gauss.sample_covariance = true;
  CHECK(close12(gauss.index(p.x, p.y)(0), 0.92184425845861229));
  gauss.value_and_gradient(p.x, p.y, g);
  res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return gauss(z, p.y); }, p.x, g);
  CHECK(res.max_rel_error <= 1e-6);
  // structural_similarity(..., win_size=5, use_sample_covariance=False)
  loss.window_size = 5;
  loss.sample_covariance = false;
  CHECK(close12(loss.index(p.x, p.y)(0), 0.91870918170524185));
}

TEST_CASE("downsample reproduces piq's ssim(downsample=True)", "[ssim][peer][downsample]") {
  // piq.ssim(x, y, data_range=1., downsample=True) on 1×2×400×523: f = round(400/256) = 2,
  // the last column dropped by avg_pool2d(kernel_size=2); gradient by torch autograd.
  const PeerImages p = peer_image(1, 2, 400 * 523, 7);
  SSIMLoss<double> loss(400, 523, 2);
  loss.downsample = true;
  REQUIRE(loss.downsample_factor() == 2);
  Eigen::MatrixXd g;
  const double v = loss.value_and_gradient(p.x, p.y, g);
  CHECK(close12(1 - v, 0.92239908258558034));
  check_grad_entries(g, {0, 1, 523, 523 * 2 + 5, 523 * 399 + 522, 400 * 523 + 7},
                     {-7.7548124105960139e-12, -7.7548124105960139e-12, -7.7548124105960139e-12,
                      1.4010160060112855e-10, 0, -1.5134403794521049e-09, 2.1333363274481316});
  // Python's round ties to even: round(384/256) = 2, round(640/256) = 2, round(1152/256) = 4, round(383/256) = 1.
  const std::pair<Eigen::Index, Eigen::Index> ties[] = {{384, 2}, {640, 2}, {1152, 4}, {383, 1}};
  for (auto [side, f] : ties) {
    SSIMLoss<double> l(side, side + 7, 1);
    l.downsample = true;
    CHECK(l.downsample_factor() == f);
  }
  // Gradient check with f = 2 on 385×390 (odd: a dropped row), random coordinates and directions.
  const Eigen::MatrixXd x = lktest::uniform(385 * 390, 1), y = correlated(x, 0.2);
  SSIMLoss<double> down(385, 390, 1);
  down.downsample = true;
  REQUIRE(down.downsample_factor() == 2);
  down.value_and_gradient(x, y, g);
  CHECK(g.col(0).tail(390).cwiseAbs().maxCoeff() == 0);  // the dropped last row
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 12;
  opt.directions = 3;
  const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return down(z, y); }, x, g, opt);
  INFO(res.report());
  CHECK(res.max_rel_error <= 1e-6);
}

TEST_CASE("ReplicateFirst pooling reproduces piq's multi_scale_ssim", "[ssim][peer][pooling]") {
  // piq.multi_scale_ssim(x, y, data_range=1., reduction='none') on 2×1×171×182 (an odd side
  // at every scale; piq pads the first row and column whenever either side is odd).
  const PeerImages p = peer_image(2, 1, 171 * 182, 9);
  // piq uses its default weights as they are (it normalises only weights passed in).
  MSSSIMLoss<double> loss(171, 182, 1);
  loss.pooling = OddSizePooling::ReplicateFirst;
  loss.normalize_weights = false;
  const Eigen::VectorXd index = loss.index(p.x, p.y);
  CHECK(close12(index(0), 0.9339496705158985));
  CHECK(close12(index(1), 0.93938961454046277));
  Eigen::MatrixXd g;
  loss.value_and_gradient(p.x, p.y, g);
  check_grad_entries(g, {0, 1, 182, 4000, 171 * 182 - 1, 171 * 182 + 3},
                     {2.0250001281325295e-06, -3.7764549886596739e-07, -4.9644341790135198e-07,
                      1.6401885162069579e-07, -7.1837892763362018e-13, -1.1006503453859688e-07, 3.1034043678323751});
}

TEST_CASE("New options: gradient checks with odd sizes, float vs double", "[ssim][gradient][options]") {
  // ReplicateFirst at 9×24 → 5×12 → 3×6 (one odd side at each scale) and 10×24 (none odd).
  for (Eigen::Index h : {9, 10}) {
    const Eigen::Index w = 24, c = 2;
    const Eigen::MatrixXd x = lktest::uniform(c * h * w, 2), y = correlated(x, 0.2);
    for (ImageLayout layout : {ImageLayout::RowMajor, ImageLayout::ColumnMajor}) {
      MSSSIMLoss<double> loss(h, w, c);
      loss.window_size = 3;
      loss.sigma = 0.8;
      loss.weights = {0.3, 0.3, 0.4};
      loss.pooling = OddSizePooling::ReplicateFirst;
      loss.layout = layout;
      Eigen::MatrixXd g;
      REQUIRE(loss.value_and_gradient(x, y, g) < 1.0);
      const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g);
      INFO("ReplicateFirst h = " << h << " " << name(layout) << ": " << res.report());
      CHECK(res.max_rel_error <= 1e-6);
    }
  }
  // Custom asymmetric taps, uniform window, sample covariance on MS-SSIM.
  const Eigen::Index h = 23, w = 20, c = 2;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, 2), y = correlated(x, 0.2);
  MSSSIMLoss<double> loss(h, w, c);
  loss.window = losskit::SSIMWindow::Custom;
  loss.taps = {0.5, 1, 3, 2, 0.25};
  loss.weights = {0.4, 0.6};
  loss.sample_covariance = true;
  Eigen::MatrixXd g;
  REQUIRE(loss.value_and_gradient(x, y, g) < 1.0);
  auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g);
  INFO("custom taps MS-SSIM: " << res.report());
  CHECK(res.max_rel_error <= 1e-6);
  loss.window = losskit::SSIMWindow::Uniform;
  loss.window_size = 5;
  loss.value_and_gradient(x, y, g);
  res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g);
  INFO("uniform MS-SSIM: " << res.report());
  CHECK(res.max_rel_error <= 1e-6);

  // float against double with every option on.
  const Eigen::MatrixXf xf = x.cast<float>(), yf = y.cast<float>();
  MSSSIMLoss<float> lf(h, w, c);
  lf.window = losskit::SSIMWindow::Custom;
  lf.taps = {0.5f, 1, 3, 2, 0.25f};
  lf.weights = {0.4f, 0.6f};
  lf.sample_covariance = true;
  lf.pooling = OddSizePooling::ReplicateFirst;
  loss.window = losskit::SSIMWindow::Custom;
  loss.pooling = OddSizePooling::ReplicateFirst;
  Eigen::MatrixXf gf;
  const float vf = lf.value_and_gradient(xf, yf, gf);
  const double vd = loss.value_and_gradient(x, y, g);
  CHECK(std::abs(vf - vd) < 2e-6);
  CHECK((gf.cast<double>() - g).cwiseAbs().maxCoeff() <= 1e-4 * g.cwiseAbs().maxCoeff());
  SSIMLoss<float> sf(h, w, c);
  SSIMLoss<double> sd(h, w, c);
  sf.window = sd.window = losskit::SSIMWindow::Uniform;
  sf.window_size = sd.window_size = 7;
  sf.nonnegative_ssim = sd.nonnegative_ssim = true;
  sf.sample_covariance = sd.sample_covariance = true;
  CHECK(std::abs(sf(xf, yf) - sd(x, y)) < 2e-6);
  CHECK((sf.channel_index(xf, yf).cast<double>() - sd.channel_index(x, y)).cwiseAbs().maxCoeff() < 2e-6);
  CHECK((sf.ssim_map(xf.col(0), yf.col(0), 1).cast<double>() - sd.ssim_map(x.col(0), y.col(0), 1))
            .cwiseAbs()
            .maxCoeff() < 1e-5);
}

TEST_CASE("New options reject bad input naming the option, writing nothing", "[ssim][errors][options]") {
  const Eigen::MatrixXd x = lktest::uniform(2 * 20 * 20, 2);
  Eigen::MatrixXd g = lktest::sentinel(2 * 20 * 20, 2);
  auto rejects = [&](const auto& loss, const char* needle) {
    CHECK_THROWS_WITH(loss.value_and_gradient(x, x, g), lktest::Contains(loss.kName) && lktest::Contains(needle));
    CHECK_THROWS_AS(loss.index(x, x), losskit::Error);
    CHECK(lktest::untouched(g, 2 * 20 * 20, 2));
  };
  SSIMLoss<double> loss(20, 20, 2);
  loss.window = losskit::SSIMWindow::Uniform;
  loss.window_size = 6;
  rejects(loss, "window_size");
  loss.window = losskit::SSIMWindow::Custom;
  rejects(loss, "taps");  // none given
  loss.taps = {1, 2};
  rejects(loss, "taps");  // even
  loss.taps = {1, -2, 0.5};
  rejects(loss, "positive");
  loss.taps = {1, std::nan(""), 1};
  rejects(loss, "finite");
  loss.taps = {1, 2, 1};
  CHECK_NOTHROW(loss(x, x));
  loss.taps = {1};
  loss.sample_covariance = true;
  rejects(loss, "sample_covariance");
  MSSSIMLoss<double> ms(20, 20, 2);
  ms.window = losskit::SSIMWindow::Custom;
  ms.taps = {1, 1, 1, 1};
  rejects(ms, "taps");
  // downsample: the downsampled image must still hold the window.
  const Eigen::MatrixXd big = lktest::uniform(384 * 20, 1);
  Eigen::MatrixXd gb = lktest::sentinel(384 * 20, 1);
  SSIMLoss<double> down(384, 20, 1);  // min side 20: f = 1, fine
  down.downsample = true;
  CHECK_NOTHROW(down(big, big));
  SSIMLoss<double> down2(384, 400, 1);  // f = 2: 192×200
  down2.downsample = true;
  down2.window_size = 201;
  CHECK_THROWS_WITH(down2.value_and_gradient(lktest::uniform(384 * 400, 1), lktest::uniform(384 * 400, 1), gb.col(0)),
                    lktest::Contains("after downsample"));
  // ssim_map: one image, a valid channel.
  SSIMLoss<double> ok(20, 20, 2);
  CHECK_THROWS_WITH(ok.ssim_map(x, x), lktest::Contains("one image"));
  CHECK_THROWS_WITH(ok.ssim_map(x.col(0), x.col(0), 2), lktest::Contains("channel"));
}

TEST_CASE("MSSSIML1Loss: α·(1 − MS-SSIM) + (1 − α)·Gaussian-weighted L1", "[ssim][mixl1]") {
  using losskit::MSSSIML1Loss;
  const Eigen::Index h = 41, w = 38, c = 2, n = 3;
  const Eigen::MatrixXd x = lktest::uniform(c * h * w, n);
  // |x − y| >= 0.01 everywhere: the finite differences (step 1e-3) never cross |·|'s kink.
  const Eigen::MatrixXd d = lktest::normal(c * h * w, n, 0.2);
  const Eigen::MatrixXd y = x + d.unaryExpr([](double v) { return v < 0 ? std::min(v, -0.01) : std::max(v, 0.01); });
  MSSSIML1Loss<double> mix(h, w, c);
  mix.window_size = 7;
  mix.weights = {0.3, 0.3, 0.4};
  mix.l1_window_size = 15;
  mix.l1_sigma = 2.5;
  MSSSIMLoss<double> ms(h, w, c);
  ms.window_size = 7;
  ms.weights = {0.3, 0.3, 0.4};
  const double ms_loss = ms(x, y);
  // GL1 straight from the definition (the mean of the valid Gaussian-filtered |x − y|
  // map, a non-separable window, long double), independent of the ω = Wᵀ(1/N') form.
  const int ws = 15;
  LMat win(ws, ws);
  for (int u = 0; u < ws; ++u)
    for (int v = 0; v < ws; ++v) win(u, v) = std::exp(-((u - 7) * (u - 7) + (v - 7) * (v - 7)) / (2 * 2.5L * 2.5L));
  win /= win.sum();
  long double gl1 = 0;
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index ch = 0; ch < c; ++ch) {
      const LMat e = (plane(x, j, ch, h, w) - plane(y, j, ch, h, w)).cwiseAbs();
      long double sum = 0;
      for (Eigen::Index q = 0; q + ws <= w; ++q)
        for (Eigen::Index p = 0; p + ws <= h; ++p) sum += (win.array() * e.block(p, q, ws, ws).array()).sum();
      gl1 += sum / ((h - ws + 1) * (w - ws + 1)) / (c * n);
    }
  for (double alpha : {0.84, 0.0, 1.0}) {
    mix.alpha = alpha;
    INFO("alpha " << alpha);
    CHECK(mix(x, y) == Approx(alpha * ms_loss + (1 - alpha) * double(gl1)).epsilon(1e-13));
    Eigen::MatrixXd g;
    const auto r = mix.evaluate(x, y, g);
    CHECK(r.loss == Approx(mix(x, y)).epsilon(1e-15));
    CHECK(r.clamped_images == 0);
    // 150 random coordinates and 12 random directions of the 9348 (all of
    // them took 5 CPU minutes at -O1).
    losskit::GradientCheckOptions opt;
    opt.max_coordinates = 150;
    opt.directions = 12;
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return mix(z, y); }, x, g, opt);
    INFO(res.report());
    CHECK(res.max_rel_error <= 1e-6);
  }
  // Default options on 161×161 (MS-SSIM's smallest 5-scale image), float against double.
  const Eigen::MatrixXf xf = lktest::uniform<float>(161 * 161, 2);
  const Eigen::MatrixXf yf = (xf + lktest::normal<float>(161 * 161, 2, 0.1)).eval();
  MSSSIML1Loss<float> mf(161, 161);
  MSSSIML1Loss<double> md(161, 161);
  Eigen::MatrixXf gf;
  Eigen::MatrixXd gd;
  const float vf = mf.value_and_gradient(xf, yf, gf);
  const double vd = md.value_and_gradient(xf.cast<double>(), yf.cast<double>(), gd);
  CHECK(std::abs(vf - vd) < 2e-6);
  CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-4 * gd.cwiseAbs().maxCoeff());
  // Errors name the option; nothing written.
  Eigen::MatrixXd gs = lktest::sentinel(c * h * w, n);
  mix.alpha = 1.5;
  CHECK_THROWS_WITH(mix.value_and_gradient(x, y, gs), lktest::Contains("MSSSIML1Loss") && lktest::Contains("alpha"));
  mix.alpha = 0.84;
  mix.l1_window_size = 14;
  CHECK_THROWS_WITH(mix.value_and_gradient(x, y, gs), lktest::Contains("l1_window_size"));
  mix.l1_window_size = 43;
  CHECK_THROWS_WITH(mix.value_and_gradient(x, y, gs), lktest::Contains("l1_window_size"));
  mix.l1_window_size = 15;
  mix.l1_sigma = 0;
  CHECK_THROWS_WITH(mix.value_and_gradient(x, y, gs), lktest::Contains("l1_sigma"));
  CHECK(lktest::untouched(gs, c * h * w, n));
}

// ---- Volumes: SSIM3DLoss, MSSSIM3DLoss (issue 15, item 2) ---------------------------------
using losskit::MSSSIM3DLoss;
using losskit::SSIM3DLoss;

namespace {

using LVec = Eigen::Matrix<long double, Eigen::Dynamic, 1>;

// Channel `ch` of volume column `v` (depth×height×width, depth slowest, each slice in
// `layout`) as a flat array indexed [(d·H + r)·W + c] (RowMajor reading).
LVec volume_at(const Eigen::MatrixXd& v, Eigen::Index col, Eigen::Index ch, Eigen::Index d, Eigen::Index h,
               Eigen::Index w, ImageLayout layout = ImageLayout::RowMajor) {
  LVec out(d * h * w);
  const double* p = v.col(col).data() + ch * d * h * w;
  for (Eigen::Index k = 0; k < d; ++k)
    for (Eigen::Index r = 0; r < h; ++r)
      for (Eigen::Index c = 0; c < w; ++c)
        out((k * h + r) * w + c) = p[k * h * w + (layout == ImageLayout::RowMajor ? r * w + c : c * h + r)];
  return out;
}

// Mean S and mean CS of one volume straight from the definition: the window
// t_a t_b t_c (taps normalised as a whole), every window position's moments
// summed directly in long double; population moments unless sample (N/(N − 1),
// N = taps³). Independent of the separable passes and the mean shifts.
void brute_ssim3d(const LVec& x, const LVec& y, Eigen::Index d, Eigen::Index h, Eigen::Index w,
                  const std::vector<long double>& taps_in, bool sample, long double c1, long double c2,
                  long double& s_mean, long double& cs_mean) {
  const Eigen::Index ws = Eigen::Index(taps_in.size());
  long double tsum = 0;
  for (long double t : taps_in) tsum += t;
  long double s_sum = 0, cs_sum = 0, n = 0;
  const long double kappa = sample ? std::pow((long double)ws, 3) / (std::pow((long double)ws, 3) - 1) : 1;
  for (Eigen::Index k = 0; k + ws <= d; ++k)
    for (Eigen::Index r = 0; r + ws <= h; ++r)
      for (Eigen::Index c = 0; c + ws <= w; ++c) {
        long double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
        for (Eigen::Index a = 0; a < ws; ++a)
          for (Eigen::Index b = 0; b < ws; ++b)
            for (Eigen::Index e = 0; e < ws; ++e) {
              const long double g = taps_in[a] * taps_in[b] * taps_in[e] / (tsum * tsum * tsum);
              const Eigen::Index i = ((k + a) * h + r + b) * w + c + e;
              mx += g * x(i);
              my += g * y(i);
              xx += g * x(i) * x(i);
              yy += g * y(i) * y(i);
              xy += g * x(i) * y(i);
            }
        const long double sxx = kappa * (xx - mx * mx), syy = kappa * (yy - my * my), sxy = kappa * (xy - mx * my);
        const long double cs = (2 * sxy + c2) / (sxx + syy + c2);
        s_sum += (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs;
        cs_sum += cs;
        n += 1;
      }
  s_mean = s_sum / n;
  cs_mean = cs_sum / n;
}

// 2×2×2 average with the last entry of an odd axis replicated (ReplicateLast),
// written directly from the definition.
LVec brute_pool3d(const LVec& x, Eigen::Index& d, Eigen::Index& h, Eigen::Index& w) {
  const Eigen::Index d2 = (d + 1) / 2, h2 = (h + 1) / 2, w2 = (w + 1) / 2;
  LVec out = LVec::Zero(d2 * h2 * w2);
  for (Eigen::Index k = 0; k < d2; ++k)
    for (Eigen::Index r = 0; r < h2; ++r)
      for (Eigen::Index c = 0; c < w2; ++c)
        for (int a = 0; a < 8; ++a) {
          const Eigen::Index kk = std::min(2 * k + (a & 1), d - 1), rr = std::min(2 * r + ((a >> 1) & 1), h - 1),
                             cc = std::min(2 * c + (a >> 2), w - 1);
          out((k * h2 + r) * w2 + c) += x((kk * h + rr) * w + cc) / 8;
        }
  d = d2;
  h = h2;
  w = w2;
  return out;
}

std::vector<long double> gauss_taps(int ws, long double sigma) {
  std::vector<long double> t(static_cast<std::size_t>(ws));
  for (int k = 0; k < ws; ++k) t[std::size_t(k)] = std::exp(-(k - ws / 2) * (k - ws / 2) / (2 * sigma * sigma));
  return t;
}

// Volumes with each h×w slice stored column-major instead of row-major (same voxels);
// transpose_planes(·, h, w, slices) maps back.
Eigen::MatrixXd slices_column_major(const Eigen::MatrixXd& v, Eigen::Index slices, Eigen::Index h, Eigen::Index w) {
  return transpose_planes(v, w, h, slices);
}

// Gradient entries (flat NCDHW indices) within 1e-12 of the largest |g|, and Σ|g| within 1e-12 relative.
void check_grad_entries3d(const Eigen::MatrixXd& g, const std::vector<Eigen::Index>& idx,
                          const std::vector<double>& ref) {
  const double scale = g.cwiseAbs().maxCoeff();
  for (std::size_t k = 0; k + 1 < ref.size(); ++k) {
    INFO("entry " << idx[k] << ": " << g.data()[idx[k]] << " vs " << ref[k]);
    CHECK(std::abs(g.data()[idx[k]] - ref[k]) <= 1e-12 * scale);
  }
  INFO("sum |g|: " << g.cwiseAbs().sum() << " vs " << ref.back());
  CHECK(std::abs(g.cwiseAbs().sum() - ref.back()) <= 1e-12 * ref.back());
}

template <class Loss>
losskit::GradientCheckResult grad_check(const Loss& loss, const Eigen::MatrixXd& x, const Eigen::MatrixXd& y,
                                        long coordinates = -1) {
  Eigen::MatrixXd g;
  loss.value_and_gradient(x, y, g);
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = coordinates;
  opt.directions = coordinates > 0 ? 4 : 0;
  return losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, x, g, opt);
}

const std::vector<Eigen::Index> kIdx3d = {0, 1, 17, 123, 599, 1000, 2000};

}  // namespace

// Reference numbers: tests/torch/ssim3d_peer_references.py, pytorch-msssim
// (github.com/VainF/pytorch-msssim @ b057b072dd869ae3f6b88543786f44d008315f69) on 5-D
// N×C×D×H×W float64 tensors (conv3d with the 1-D window along each axis, valid;
// avg_pool3d(kernel_size=2, padding=[s % 2]) between scales), gradients by torch autograd,
// `win` the Gaussian built in float64; volumes from peer_image (NCDHW = RowMajor columns).
TEST_CASE("SSIM3DLoss reproduces pytorch-msssim's 5-D ssim", "[ssim3d][peer]") {
  // pytorch_msssim.ssim(X, Y, data_range=1, win=win64, size_average=False) on 2×2×13×17×15.
  const PeerImages p = peer_image(2, 2, 13 * 17 * 15, 11);
  SSIM3DLoss<double> loss(13, 17, 15, 2);
  const Eigen::VectorXd index = loss.index(p.x, p.y);
  CHECK(close12(index(0), 0.92577785778154364));
  CHECK(close12(index(1), 0.9210231203246777));
  // 1 − ssim(..., size_average=True) and its autograd gradient.
  Eigen::MatrixXd g;
  const double v = loss.value_and_gradient(p.x, p.y, g);
  CHECK(close12(v, 1 - (0.92577785778154364 + 0.9210231203246777) / 2));
  check_grad_entries3d(g, kIdx3d,
                       {2.1438399187979034e-12, 2.0948941021989019e-11, -9.2513160854190343e-10,
                        -2.1423823539232612e-07, 1.1617774733937816e-07, -1.7104349536057427e-06,
                        0.00010248122293237059, 1.0827987684592486});
  // The same volumes with each slice stored column-major: the same index.
  loss.layout = ImageLayout::ColumnMajor;
  const Eigen::VectorXd cm = loss.index(slices_column_major(p.x, 2 * 13, 17, 15), slices_column_major(p.y, 2 * 13, 17, 15));
  CHECK(close12(cm(0), 0.92577785778154364));
  CHECK(close12(cm(1), 0.9210231203246777));
}

TEST_CASE("SSIM3DLoss nonnegative_ssim and channel_index reproduce pytorch-msssim", "[ssim3d][peer][nonnegative]") {
  // _ssim(...) per channel and ssim(..., nonnegative_ssim=True) on 1×2×12×13×14, channel 1
  // anti-correlated (negative SSIM, clamped to 0).
  const PeerImages p = peer_image(1, 2, 12 * 13 * 14, 13, true);
  SSIM3DLoss<double> loss(12, 13, 14, 2);
  const Eigen::MatrixXd per_channel = loss.channel_index(p.x, p.y);
  CHECK(close12(per_channel(0, 0), 0.92219302830627614));
  CHECK(close12(per_channel(1, 0), -0.91646370918091324));
  loss.nonnegative_ssim = true;
  Eigen::MatrixXd g;
  CHECK(close12(1 - loss.value_and_gradient(p.x, p.y, g), 0.46109651415313807));
  check_grad_entries3d(g, kIdx3d,
                       {-5.1073530606981237e-11, -3.4184415708847862e-10, -1.1167920956223285e-08,
                        -1.5912265750373445e-07, 3.6203261348315519e-05, -0.0055846504417720513,
                        -8.756183831453294e-11, 0.53255338758660986});
  CHECK((g.col(0).tail(12 * 13 * 14).array() == 0).all());  // the clamped channel: exactly 0
}

TEST_CASE("SSIM3DLoss with an asymmetric window, data_range 255, k1, k2 reproduces pytorch-msssim",
          "[ssim3d][peer][window]") {
  // ssim(255·X, 255·Y, data_range=255, win=[1, 2, 4, 2.5, 0.5]/10, K=(0.02, 0.05)) on 1×1×9×10×11.
  const PeerImages p = peer_image(1, 1, 9 * 10 * 11, 15);
  const Eigen::MatrixXd x = 255 * p.x, y = 255 * p.y;
  for (ImageLayout layout : {ImageLayout::RowMajor, ImageLayout::ColumnMajor}) {
    SSIM3DLoss<double> loss(9, 10, 11);
    loss.window = losskit::SSIMWindow::Custom;
    loss.taps = {2, 4, 8, 5, 1};
    loss.data_range = 255;
    loss.k1 = 0.02;
    loss.k2 = 0.05;
    loss.layout = layout;
    const bool rm = layout == ImageLayout::RowMajor;
    const Eigen::MatrixXd xl = rm ? x : slices_column_major(x, 9, 10, 11), yl = rm ? y : slices_column_major(y, 9, 10, 11);
    Eigen::MatrixXd g;
    INFO(name(layout));
    CHECK(close12(1 - loss.value_and_gradient(xl, yl, g), 0.91951791786851567));
    if (!rm) g = transpose_planes(g, 10, 11, 9);  // back to row-major slices for the entries
    check_grad_entries3d(g, {0, 1, 17, 123, 599},
                         {1.2102615452143064e-08, 7.3576348418278463e-08, -7.2507570787115297e-07,
                          -6.552013985388708e-07, 3.6179373763344643e-05, 0.0044898172898619011});
  }
}

TEST_CASE("MSSSIM3DLoss reproduces pytorch-msssim's 5-D ms_ssim", "[ssim3d][peer][msssim]") {
  // ms_ssim(X, Y, data_range=1, win=3-tap Gaussian σ 1.5) on 1×1×33×35×34: five scales,
  // the standard weights unnormalised (as the peer uses them), ZeroFirst = avg_pool3d(padding = n % 2);
  // odd sides at every scale.
  const PeerImages p = peer_image(1, 1, 33 * 35 * 34, 17);
  MSSSIM3DLoss<double> loss(33, 35, 34);
  loss.window_size = 3;
  loss.pooling = OddSizePooling::ZeroFirst;
  loss.normalize_weights = false;
  Eigen::MatrixXd g;
  CHECK(close12(1 - loss.value_and_gradient(p.x, p.y, g), 0.96481487157829549));
  check_grad_entries3d(g, kIdx3d,
                       {-2.5007431728226738e-07, -7.4749652790798442e-08, -1.2473675702144825e-06,
                        -2.8619161932557788e-06, -3.3723649461691061e-06, 5.6142139841433742e-06,
                        2.5890656852614375e-05, 1.845993831429712});
  // ms_ssim(..., win=5-tap Gaussian σ 1, weights=[0.2, 0.3, 0.5], size_average=False) on 2×2×17×65×66.
  const PeerImages q = peer_image(2, 2, 17 * 65 * 66, 19);
  MSSSIM3DLoss<double> three(17, 65, 66, 2);
  three.window_size = 5;
  three.sigma = 1;
  three.weights = {0.2, 0.3, 0.5};
  three.pooling = OddSizePooling::ZeroFirst;
  const Eigen::VectorXd index = three.index(q.x, q.y);
  CHECK(close12(index(0), 0.95917046018585905));
  CHECK(close12(index(1), 0.95895937468043735));
  std::vector<Eigen::Index> idx = kIdx3d;
  idx.push_back(100000);
  idx.push_back(290000);
  three.value_and_gradient(q.x, q.y, g);
  check_grad_entries3d(g, idx,
                       {1.4329768689708174e-09, 1.8733363171808661e-09, -6.4384651662776924e-09,
                        1.461644151620923e-08, 6.5391685008847646e-09, 7.0075640767399785e-07,
                        6.0433483169427226e-07, 2.2743226198355747e-05, -8.9882714858375056e-08,
                        1.1952219052228532});
}

TEST_CASE("SSIM3D and MS-SSIM3D agree with a brute-force 3-D window evaluation", "[ssim3d][brute]") {
  // Uniform 3-tap window with sample covariance (N = 27), and a Gaussian 5-tap MS-SSIM with
  // ReplicateLast pooling, against brute_ssim3d / brute_pool3d (long double, direct sums).
  const Eigen::Index d = 7, h = 8, w = 9;
  const Eigen::MatrixXd x = lktest::uniform(d * h * w, 1), y = correlated(x, 0.2);
  SSIM3DLoss<double> loss(d, h, w);
  loss.window = losskit::SSIMWindow::Uniform;
  loss.window_size = 3;
  loss.sample_covariance = true;
  long double s, cs;
  brute_ssim3d(volume_at(x, 0, 0, d, h, w), volume_at(y, 0, 0, d, h, w), d, h, w, {1, 1, 1}, true, 1e-4L, 9e-4L, s, cs);
  CHECK(lktest::rel_err(loss.index(x, y)(0), double(s)) < 1e-12);

  const Eigen::Index D = 19, H = 18, W = 21;  // 19 → 10 (odd depth and width at scale 0)
  const Eigen::MatrixXd X = lktest::uniform(D * H * W, 1), Y = correlated(X, 0.2);
  MSSSIM3DLoss<double> ms(D, H, W);
  ms.window_size = 5;
  ms.weights = {0.4, 0.6};
  LVec bx = volume_at(X, 0, 0, D, H, W), by = volume_at(Y, 0, 0, D, H, W);
  long double s0, cs0, s1, cs1;
  brute_ssim3d(bx, by, D, H, W, gauss_taps(5, 1.5L), false, 1e-4L, 9e-4L, s0, cs0);
  Eigen::Index d1 = D, h1 = H, w1 = W, d2 = D, h2 = H, w2 = W;
  bx = brute_pool3d(bx, d1, h1, w1);
  by = brute_pool3d(by, d2, h2, w2);
  brute_ssim3d(bx, by, d1, h1, w1, gauss_taps(5, 1.5L), false, 1e-4L, 9e-4L, s1, cs1);
  const long double brute = std::pow(cs0, 0.4L) * std::pow(s1, 0.6L);
  CHECK(lktest::rel_err(ms.index(X, Y)(0), double(brute)) < 1e-12);
}

TEST_CASE("A volume constant along depth has the SSIM and MS-SSIM of its slice", "[ssim3d][identity]") {
  // x(d, r, c) = X(r, c): the taps along depth sum to 1, so every filtered moment is the
  // slice's and the S / CS maps are the 2-D maps repeated along depth (same means); pooling
  // along depth keeps a constant constant (ZeroFirst and ReplicateFirst: with an even depth
  // at every pooled scale). So index3d = index2d and, by the chain rule, the gradient summed
  // over depth is the 2-D gradient of the slice.
  const Eigen::Index h = 13, w = 18, c = 2;
  const Eigen::MatrixXd x2 = lktest::uniform(c * h * w, 2), y2 = correlated(x2, 0.3);
  auto extrude = [&](const Eigen::MatrixXd& m, Eigen::Index depth) {
    Eigen::MatrixXd out(c * depth * h * w, m.cols());
    for (Eigen::Index ch = 0; ch < c; ++ch)
      for (Eigen::Index k = 0; k < depth; ++k) out.middleRows((ch * depth + k) * h * w, h * w) = m.middleRows(ch * h * w, h * w);
    return out;
  };
  auto depth_sum = [&](const Eigen::MatrixXd& g3, Eigen::Index depth) {
    Eigen::MatrixXd out = Eigen::MatrixXd::Zero(c * h * w, g3.cols());
    for (Eigen::Index ch = 0; ch < c; ++ch)
      for (Eigen::Index k = 0; k < depth; ++k) out.middleRows(ch * h * w, h * w) += g3.middleRows((ch * depth + k) * h * w, h * w);
    return out;
  };
  for (ImageLayout layout : {ImageLayout::RowMajor, ImageLayout::ColumnMajor}) {
    INFO(name(layout));
    SSIMLoss<double> s2(h, w, c);
    SSIM3DLoss<double> s3(11, h, w, c);  // depth = window: one valid position along depth
    s2.window_size = s3.window_size = 11;
    s2.layout = s3.layout = layout;
    Eigen::MatrixXd g2, g3;
    const double v2 = s2.value_and_gradient(x2, y2, g2);
    CHECK(lktest::rel_err(s3.value_and_gradient(extrude(x2, 11), extrude(y2, 11), g3), v2) < 1e-13);
    CHECK(lktest::max_rel_err(depth_sum(g3, 11), g2, 1e-12) < 1e-10);
    for (OddSizePooling conv : {OddSizePooling::ReplicateLast, OddSizePooling::ZeroFirst, OddSizePooling::ReplicateFirst}) {
      MSSSIMLoss<double> m2(h, w, c);
      MSSSIM3DLoss<double> m3(12, h, w, c);  // depth 12 → 6 → 3: even wherever it is pooled
      m2.window_size = m3.window_size = 3;
      m2.weights = m3.weights = {0.2, 0.3, 0.5};
      m2.pooling = m3.pooling = conv;
      m2.layout = m3.layout = layout;
      const double mv2 = m2.value_and_gradient(x2, y2, g2);
      INFO("pooling " << int(conv));
      CHECK(lktest::rel_err(m3.value_and_gradient(extrude(x2, 12), extrude(y2, 12), g3), mv2) < 1e-13);
      CHECK(lktest::max_rel_err(depth_sum(g3, 12), g2, 1e-12) < 1e-10);
    }
  }
}

TEST_CASE("SSIM3D and MS-SSIM3D gradients pass the finite-difference check", "[ssim3d][gradient]") {
  const Eigen::Index d = 9, h = 10, w = 11, c = 2;  // 9 → 5 → 3, 10 → 5 → 3, 11 → 6 → 3
  const Eigen::MatrixXd x = lktest::uniform(c * d * h * w, 2), y = correlated(x, 0.2);
  for (ImageLayout layout : {ImageLayout::RowMajor, ImageLayout::ColumnMajor})
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      SSIM3DLoss<double> loss(d, h, w, c);
      loss.window_size = 5;
      loss.layout = layout;
      loss.reduction = r;
      const auto res = grad_check(loss, x, y, 300);
      INFO("SSIM3D " << name(layout) << " " << r << ": " << res.report());
      CHECK(res.max_rel_error <= 1e-6);
    }
  for (OddSizePooling conv : {OddSizePooling::ReplicateLast, OddSizePooling::ZeroFirst, OddSizePooling::ReplicateFirst}) {
    MSSSIM3DLoss<double> ms(d, h, w, c);
    ms.window_size = 3;
    ms.weights = {0.3, 0.3, 0.4};
    ms.pooling = conv;
    const auto res = grad_check(ms, x, y, 300);
    INFO("MS-SSIM3D pooling " << int(conv) << ": " << res.report());
    CHECK(res.max_rel_error <= 1e-6);
  }
  // Options: custom asymmetric taps + sample covariance, uniform window, nonnegative SSIM.
  SSIM3DLoss<double> opt(d, h, w, c);
  opt.window = losskit::SSIMWindow::Custom;
  opt.taps = {0.5, 1, 3, 2, 0.25};
  opt.sample_covariance = true;
  auto res = grad_check(opt, x, y, 300);
  INFO("custom taps, sample covariance: " << res.report());
  CHECK(res.max_rel_error <= 1e-6);
  opt.window = losskit::SSIMWindow::Uniform;
  opt.window_size = 3;
  opt.nonnegative_ssim = true;
  res = grad_check(opt, x, y, 300);
  INFO("uniform, nonnegative: " << res.report());
  CHECK(res.max_rel_error <= 1e-6);
  // The default 11-tap window on a 13×13×13 volume: 800 random coordinates and 4 directions.
  const Eigen::MatrixXd xs = lktest::uniform(13 * 13 * 13, 1), ys = correlated(xs, 0.2);
  res = grad_check(SSIM3DLoss<double>(13, 13, 13), xs, ys, 800);
  INFO("13x13x13, window 11: " << res.report());
  CHECK(res.max_rel_error <= 1e-6);
}

TEST_CASE("SSIM3D and MS-SSIM3D in float agree with double", "[ssim3d][float]") {
  const Eigen::Index d = 17, h = 20, w = 19, c = 2;
  const Eigen::MatrixXd x = lktest::uniform(c * d * h * w, 2), y = correlated(x, 0.2);
  const Eigen::MatrixXf xf = x.cast<float>(), yf = y.cast<float>();
  SSIM3DLoss<double> sd(d, h, w, c);
  SSIM3DLoss<float> sf(d, h, w, c);
  MSSSIM3DLoss<double> md(d, h, w, c);
  MSSSIM3DLoss<float> mf(d, h, w, c);
  md.window_size = 5;
  mf.window_size = 5;
  md.weights = {0.3, 0.3, 0.4};
  mf.weights = {0.3f, 0.3f, 0.4f};
  md.pooling = mf.pooling = OddSizePooling::ZeroFirst;
  Eigen::MatrixXd g;
  Eigen::MatrixXf gf;
  CHECK(std::abs(sf.value_and_gradient(xf, yf, gf) - sd.value_and_gradient(x, y, g)) < 2e-6);
  CHECK((gf.cast<double>() - g).cwiseAbs().maxCoeff() <= 1e-4 * g.cwiseAbs().maxCoeff());
  CHECK(std::abs(mf.value_and_gradient(xf, yf, gf) - md.value_and_gradient(x, y, g)) < 2e-6);
  CHECK((gf.cast<double>() - g).cwiseAbs().maxCoeff() <= 1e-4 * g.cwiseAbs().maxCoeff());
}

TEST_CASE("SSIM3D and MS-SSIM3D: weights, reductions, clamped count, fit_scales, non-finite, reuse",
          "[ssim3d]") {
  const Eigen::Index d = 8, h = 9, w = 10, c = 2, n = 5;
  const Eigen::MatrixXd x = lktest::uniform(c * d * h * w, n), y = correlated(x, 0.3);
  losskit::GradientCheckOptions some;  // 7200 coordinates: a random subset and directions
  some.max_coordinates = 150;
  some.directions = 3;
  SSIM3DLoss<double> ssim(d, h, w, c);
  ssim.window_size = 5;
  lktest::check_sample_weights(ssim, x, y, "SSIM3DLoss", some);
  MSSSIM3DLoss<double> ms(d, h, w, c);
  ms.window_size = 3;
  ms.weights = {0.5, 0.5};
  ms.pooling = OddSizePooling::ZeroFirst;
  lktest::check_sample_weights(ms, x, y, "MSSSIM3DLoss", some);
  CHECK(ssim(x, x) == Approx(0.0).margin(1e-14));

  // Independent noise volumes: some scale term <= 0 → index 0, counted, zero gradient.
  const Eigen::MatrixXd a = lktest::uniform(17 * 17 * 17, 8), b = lktest::uniform(17 * 17 * 17, 8);
  MSSSIM3DLoss<double> noise(17, 17, 17);
  noise.window_size = 3;
  noise.weights = {0.2, 0.2, 0.2, 0.2, 0.2};  // 5 scales with 3 taps need 33 per side
  noise.fit_scales = true;                      // uses the 4 that fit (17 ≥ 2·8 + 1)
  CHECK(noise.scales() == 4);
  MSSSIM3DLoss<double> four(17, 17, 17);
  four.window_size = 3;
  four.weights = {0.2, 0.2, 0.2, 0.2};
  const Eigen::VectorXd idx = noise.index(a, b);
  CHECK(lktest::max_rel_err(idx, four.index(a, b), 1e-300) == 0);
  Eigen::MatrixXd g;
  const auto r = noise.evaluate(a, b, g);
  const Eigen::Index zeros = (idx.array() == 0.0).count();
  REQUIRE(zeros >= 1);
  CHECK(r.clamped_images == zeros);
  for (Eigen::Index i = 0; i < 8; ++i)
    if (idx(i) == 0.0) CHECK(g.col(i).isZero(0));
  noise.fit_scales = false;
  CHECK_THROWS_WITH(noise(a, b), lktest::Contains("MSSSIM3DLoss") && lktest::Contains("17x17x17") &&
                                     lktest::Contains("at least 33"));

  // A NaN voxel: that channel's index and gradient NaN, the other channel finite.
  Eigen::MatrixXd xn = x;
  xn(7, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(ssim.value_and_gradient(xn, y, g)));
  CHECK(g.col(0).head(d * h * w).array().isNaN().all());
  CHECK(g.col(0).tail(d * h * w).allFinite());
  CHECK(g.col(1).allFinite());

  // Repeated calls reuse the workspace.
  const Eigen::MatrixXf xf = x.cast<float>(), yf = y.cast<float>();
  Eigen::MatrixXf gf(xf.rows(), xf.cols());
  SSIM3DLoss<float> sf(d, h, w, c);
  MSSSIM3DLoss<float> mf(d, h, w, c);
  sf.window_size = 5;
  mf.window_size = 3;
  mf.weights = {0.5f, 0.5f};
  sf.value_and_gradient(xf, yf, gf);
  mf.value_and_gradient(xf, yf, gf);
  lktest::AllocationCounter counter;
  const float v1 = sf.value_and_gradient(xf, yf, gf), v2 = sf(xf, yf);
  const float v3 = mf.value_and_gradient(xf, yf, gf), v4 = mf(xf, yf);
  CHECK(counter.count() == 0);
  CHECK(v1 == v2);
  CHECK(v3 == v4);
}

TEST_CASE("SSIM3D and MS-SSIM3D reject bad input naming the option, writing nothing", "[ssim3d][errors]") {
  const Eigen::Index d = 6, h = 20, w = 20;
  const Eigen::MatrixXd x = lktest::uniform(2 * d * h * w, 2);
  Eigen::MatrixXd g = lktest::sentinel(2 * d * h * w, 2);
  auto rejects = [&](const auto& loss, const char* needle) {
    CHECK_THROWS_WITH(loss.value_and_gradient(x, x, g), lktest::Contains(loss.kName) && lktest::Contains(needle));
    CHECK_THROWS_AS(loss.index(x, x), losskit::Error);
    CHECK(lktest::untouched(g, 2 * d * h * w, 2));
  };
  SSIM3DLoss<double> loss(d, h, w, 2);  // depth 6 < 11 taps
  rejects(loss, "volume 6x20x20");
  loss.window_size = 5;
  CHECK_NOTHROW(loss(x, x));
  loss.downsample = true;
  rejects(loss, "downsample");
  loss.downsample = false;
  loss.window_size = 4;
  rejects(loss, "window_size");
  loss.window_size = 5;
  loss.window = losskit::SSIMWindow::Custom;
  loss.taps = {1, -2, 0.5};
  rejects(loss, "taps");
  loss.taps = {1};
  loss.sample_covariance = true;
  rejects(loss, "sample_covariance");
  CHECK_THROWS_WITH(SSIM3DLoss<double>(d, h, w, 3)(x, x), lktest::Contains("channels·depth·height·width"));
  CHECK_THROWS_WITH(SSIM3DLoss<double>(d, h, w, 2).ssim_map(x.col(0), x.col(0)), lktest::Contains("ssim_map"));
  CHECK_THROWS_AS(SSIM3DLoss<double>(0, h, w, 1), losskit::Error);
  MSSSIM3DLoss<double> ms(d, h, w, 2);
  ms.window_size = 3;
  ms.weights = {0.3, 0.3, 0.4};  // 3 scales need 9 per side: the depth 6 fails
  rejects(ms, "too small for 3 scales");
  ms.weights = {0.5, 0.5};
  CHECK_NOTHROW(ms(x, x));
  ms.weights = {0.5, -0.5};
  rejects(ms, "weights");
  CHECK(lktest::untouched(g, 2 * d * h * w, 2));
}
