// CS-IB family (CSDivergence, CSQuadraticMI, CSIB): values against a
// brute-force long-double evaluation written straight from the formulas of
// Yu et al. (ICLR 2024), limit identities (ŷ = y, constant t, w ≡ 1 equals the
// joint CS divergence of two KDEs), gradients by finite differences, the
// far-prediction float case, errors, workspace reuse.
#define EIGEN_RUNTIME_NO_MALLOC
#include <losskit/cs_ib.hpp>
#include <losskit/gradcheck.hpp>

#include <vector>

#include "test_util.hpp"

using losskit::CSDivergence;
using losskit::CSIB;
using losskit::CSQuadraticMI;
using losskit::CSWeighting;

namespace {

using LD = long double;
using MatLD = std::vector<std::vector<LD>>;

// Gaussian Gram matrix κ(a_i, b_j) = exp(−‖a_i − b_j‖²/(2σ²)) by explicit loops.
MatLD gram(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, double sigma) {
  MatLD g(static_cast<std::size_t>(a.cols()), std::vector<LD>(static_cast<std::size_t>(b.cols())));
  for (Eigen::Index i = 0; i < a.cols(); ++i)
    for (Eigen::Index j = 0; j < b.cols(); ++j) {
      LD d2 = 0;
      for (Eigen::Index r = 0; r < a.rows(); ++r) {
        const LD diff = LD(a(r, i)) - LD(b(r, j));
        d2 += diff * diff;
      }
      g[std::size_t(i)][std::size_t(j)] = std::exp(-d2 / (2 * LD(sigma) * LD(sigma)));
    }
  return g;
}

// The paper's conditional CS divergence estimator, term by term.
LD ref_divergence(const Eigen::MatrixXd& yhat, const Eigen::MatrixXd& y, const Eigen::MatrixXd& x, double sx,
                  double sy, CSWeighting weighting, bool symmetric) {
  const std::size_t n = std::size_t(x.cols());
  const MatLD K = gram(x, x, sx), L1 = gram(y, y, sy), L2 = gram(yhat, yhat, sy), L21 = gram(yhat, y, sy);
  std::vector<LD> w(n);
  for (std::size_t j = 0; j < n; ++j) {
    LD s = 0, s2 = 0;
    for (std::size_t i = 0; i < n; ++i) {
      s += K[j][i];
      s2 += K[j][i] * K[j][i];
    }
    w[j] = weighting == CSWeighting::Paper ? 1 / (s * s) : weighting == CSWeighting::OfficialCode ? 1 / s2 : 1;
  }
  LD A = 0, B = 0, C = 0, C2 = 0;
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t i = 0; i < n; ++i) {
      A += w[j] * K[j][i] * L1[j][i];
      B += w[j] * K[j][i] * L2[j][i];
      C += w[j] * K[j][i] * L21[j][i];       // κ(ŷ_j, y_i)
      C2 += w[j] * K[j][i] * L21[i][j];      // κ(y_j, ŷ_i)
    }
  return std::log(A) + std::log(B) - (symmetric ? std::log(C) + std::log(C2) : 2 * std::log(C));
}

// CS-QMI from its definition with the N-powers kept: V_J = (1/N²)ΣK∘Q,
// V_M = (1/N⁴)ΣK·ΣQ, V_C = (1/N³)Σ_j (Σ_i K_ji)(Σ_i Q_ji); Î = log(V_J·V_M/V_C²).
LD ref_qmi_from_grams(const MatLD& K, const MatLD& Q) {
  const std::size_t n = K.size();
  const LD N = LD(n);
  LD joint = 0, sk = 0, sq = 0, cross = 0;
  for (std::size_t j = 0; j < n; ++j) {
    LD kj = 0, qj = 0;
    for (std::size_t i = 0; i < n; ++i) {
      joint += K[j][i] * Q[j][i];
      kj += K[j][i];
      qj += Q[j][i];
    }
    sk += kj;
    sq += qj;
    cross += kj * qj;
  }
  const LD vj = joint / (N * N), vm = sk * sq / (N * N * N * N), vc = cross / (N * N * N);
  return std::log(vj * vm / (vc * vc));
}

LD ref_qmi(const Eigen::MatrixXd& t, const Eigen::MatrixXd& x, double sx, double st, bool normalized) {
  const MatLD K = gram(x, x, sx), Q = gram(t, t, st);
  const LD i = ref_qmi_from_grams(K, Q);
  if (!normalized) return i;
  return i / std::sqrt(ref_qmi_from_grams(K, K) * ref_qmi_from_grams(Q, Q));
}

// Median of the nonzero pairwise distances, by sorting all of them.
double ref_median_width(const Eigen::MatrixXd& a) {
  std::vector<double> d;
  for (Eigen::Index j = 0; j < a.cols(); ++j)
    for (Eigen::Index i = 0; i < j; ++i) {
      const double v = (a.col(i) - a.col(j)).norm();
      if (v > 0) d.push_back(v);
    }
  if (d.empty()) return 1.0;
  std::sort(d.begin(), d.end());
  const std::size_t m = d.size() / 2;
  return d.size() % 2 ? d[m] : 0.5 * (d[m - 1] + d[m]);
}

struct Batch {
  Eigen::MatrixXd x, y, yhat, t;
};

Batch batch(Eigen::Index n, Eigen::Index dx, Eigen::Index dy, Eigen::Index dt) {
  Batch b;
  b.x = lktest::normal(dx, n);
  b.y = lktest::normal(dy, n);
  b.yhat = b.y + 0.5 * lktest::normal(dy, n);
  b.t = lktest::normal(dt, n);
  return b;
}

const CSWeighting kWeightings[] = {CSWeighting::Paper, CSWeighting::OfficialCode, CSWeighting::Uniform};

const char* name(CSWeighting w) {
  return w == CSWeighting::Paper ? "Paper" : w == CSWeighting::OfficialCode ? "OfficialCode" : "Uniform";
}

}  // namespace

TEST_CASE("CSDivergence matches a brute-force long-double evaluation", "[cs_ib]") {
  for (Eigen::Index dy : {1, 3}) {
    const Batch b = batch(9, 4, dy, 2);
    for (CSWeighting w : kWeightings)
      for (bool symmetric : {false, true}) {
        CSDivergence<double> div;
        div.weighting = w;
        div.symmetric_cross_term = symmetric;
        div.sigma_x = 0.8;
        div.sigma_y = 1.3;
        const LD ref = ref_divergence(b.yhat, b.y, b.x, 0.8, 1.3, w, symmetric);
        INFO("CSDivergence d_y " << dy << ", " << name(w) << ", symmetric " << symmetric);
        CHECK(lktest::rel_err(div(b.yhat, b.y, b.x), double(ref)) < 1e-12);
        // Width 0: the median heuristic on x and on y (sorted independently here).
        div.sigma_x = div.sigma_y = 0;
        const LD ref_h =
            ref_divergence(b.yhat, b.y, b.x, ref_median_width(b.x), ref_median_width(b.y), w, symmetric);
        CHECK(lktest::rel_err(div(b.yhat, b.y, b.x), double(ref_h)) < 1e-12);
      }
  }
}

TEST_CASE("median_heuristic_width equals the sorted median of the nonzero pairwise distances", "[cs_ib]") {
  for (Eigen::Index n : {2, 3, 9, 10, 301}) {
    const Eigen::MatrixXd a = lktest::normal(3, n);
    const Eigen::MatrixXd ties = (4 * lktest::uniform(1, n)).array().floor();  // integer values: many ties
    Eigen::MatrixXd dup = a;
    dup.rightCols(n / 2) = dup.leftCols(1).replicate(1, n / 2);  // duplicated samples: zero distances
    const Eigen::MatrixXd* mats[] = {&a, &ties, &dup};
    for (const Eigen::MatrixXd* m : mats) {
      INFO("N " << n);
      CHECK(losskit::median_heuristic_width(*m) == Approx(ref_median_width(*m)).epsilon(1e-14));
      CHECK(losskit::median_heuristic_width(Eigen::MatrixXf(m->cast<float>())) ==
            Approx(ref_median_width(*m)).epsilon(1e-6));
    }
  }
  CHECK(losskit::median_heuristic_width(Eigen::MatrixXd::Ones(2, 5)) == 1.0);  // all samples equal
  const Eigen::MatrixXd wide = lktest::normal(40, 7);  // GEMM distance path
  CHECK(losskit::median_heuristic_width(wide) == Approx(ref_median_width(wide)).epsilon(1e-12));
}

TEST_CASE("CSDivergence with uniform weights is the joint CS divergence of two KDEs", "[cs_ib]") {
  // With w ≡ 1 and σ_x = σ_y = σ the estimator is −log of the squared cosine
  // between the Gaussian KDEs of z = (x, y) and ẑ = (x, ŷ): the joint kernel on
  // the concatenated vectors, Σ_ij κ(z_i, ẑ_j) etc. (Príncipe 2010, ch. 2).
  const Batch b = batch(11, 3, 2, 1);
  Eigen::MatrixXd z(5, 11), zhat(5, 11);
  z << b.x, b.y;
  zhat << b.x, b.yhat;
  const double sigma = 0.9;
  auto inner = [&](const Eigen::MatrixXd& p, const Eigen::MatrixXd& q) {
    LD s = 0;
    for (const auto& row : gram(p, q, sigma))
      for (LD v : row) s += v;
    return s;
  };
  const LD pq = inner(z, zhat), pp = inner(z, z), qq = inner(zhat, zhat);
  const LD joint = -std::log(pq * pq / (pp * qq));
  CSDivergence<double> div;
  div.weighting = CSWeighting::Uniform;
  div.sigma_x = div.sigma_y = sigma;
  CHECK(lktest::rel_err(div(b.yhat, b.y, b.x), double(joint)) < 1e-12);
  CHECK(joint > 0);
}

TEST_CASE("CSDivergence is zero at yhat == y, with a zero gradient where the estimator is symmetric", "[cs_ib]") {
  const Batch b = batch(12, 3, 2, 1);
  for (CSWeighting w : kWeightings)
    for (bool symmetric : {false, true}) {
      CSDivergence<double> div;
      div.weighting = w;
      div.symmetric_cross_term = symmetric;
      Eigen::MatrixXd g;
      const double v = div.value_and_gradient(b.y, b.y, b.x, g);
      INFO("CSDivergence at yhat == y, " << name(w) << ", symmetric " << symmetric << ": value " << v
                                         << ", max |grad| " << g.cwiseAbs().maxCoeff());
      CHECK(std::abs(v) <= 1e-14);
      if (symmetric || w == CSWeighting::Uniform) {
        CHECK(g.cwiseAbs().maxCoeff() <= 1e-14);
      } else {
        // Paper / official weights with the one-sided cross term −2·log C:
        // ∂D̂/∂ŷ_k = −(1/(σ²A)) Σ_i (w_i − w_k) K_ki L_ki (y_k − y_i) ≠ 0, so
        // ŷ = y is not stationary. The finite differences confirm it.
        CHECK(g.cwiseAbs().maxCoeff() > 1e-6);
        const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return div(z, b.y, b.x); }, b.y, g);
        INFO(res.report());
        CHECK(res.passed);
      }
    }
}

TEST_CASE("CSQuadraticMI matches brute force, is non-negative, and vanishes for constant t or x", "[cs_ib]") {
  for (Eigen::Index dt : {2, 16, 24}) {  // 24 > 16: the GEMM distance path
    const Batch b = batch(10, 3, 1, dt);
    for (bool normalized : {false, true}) {
      CSQuadraticMI<double> mi;
      mi.normalized = normalized;
      mi.sigma_x = 1.1;
      mi.sigma_t = 0.7 * std::sqrt(double(dt));
      const LD ref = ref_qmi(b.t, b.x, 1.1, 0.7 * std::sqrt(double(dt)), normalized);
      const double v = mi(b.t, b.x);
      INFO("CSQuadraticMI d_t " << dt << ", normalized " << normalized << ": " << v << " vs " << double(ref));
      CHECK(lktest::rel_err(v, double(ref)) < 1e-10);
      CHECK(v > 0);
      mi.sigma_x = mi.sigma_t = 0;
      const LD ref_h = ref_qmi(b.t, b.x, ref_median_width(b.x), ref_median_width(b.t), normalized);
      CHECK(lktest::rel_err(mi(b.t, b.x), double(ref_h)) < 1e-10);
    }
  }
  for (Eigen::Index dt : {3, 40}) {
    const Eigen::MatrixXd x = lktest::normal(4, 8);
    const Eigen::MatrixXd t = lktest::normal(dt, 1).replicate(1, 8);  // collapsed representation
    for (bool normalized : {false, true}) {
      CSQuadraticMI<double> mi;
      mi.normalized = normalized;
      Eigen::MatrixXd g;
      INFO("CSQuadraticMI constant t, d_t " << dt << ", normalized " << normalized);
      CHECK(mi.value_and_gradient(t, x, g) == 0.0);
      CHECK(g.isZero(0));
      CHECK(mi.value_and_gradient(lktest::normal(3, 8), Eigen::MatrixXd::Ones(2, 8), g) == 0.0);  // constant x
      CHECK(g.isZero(0));
    }
  }
}

TEST_CASE("CS-IB gradients pass the finite-difference check", "[cs_ib][gradient]") {
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 60;
  SECTION("CSDivergence, every weighting, d_y = 1 and 3, heuristic and fixed widths") {
    for (Eigen::Index dy : {1, 3}) {
      const Batch b = batch(14, 5, dy, 1);
      for (CSWeighting w : kWeightings)
        for (bool symmetric : {false, true})
          for (double sigma : {0.0, 0.7}) {
            CSDivergence<double> div;
            div.weighting = w;
            div.symmetric_cross_term = symmetric;
            div.sigma_x = div.sigma_y = sigma;  // heuristic widths come from x and y: constants in ŷ
            Eigen::MatrixXd g;
            const double v = div.value_and_gradient(b.yhat, b.y, b.x, g);
            CHECK(v == Approx(div(b.yhat, b.y, b.x)).epsilon(1e-13));
            const auto res =
                losskit::check_gradient([&](const Eigen::MatrixXd& z) { return div(z, b.y, b.x); }, b.yhat, g, opt);
            INFO("CSDivergence d_y " << dy << ", " << name(w) << ", symmetric " << symmetric << ", sigma " << sigma
                                     << ": " << res.report());
            CHECK(res.passed);
          }
    }
  }
  SECTION("CSQuadraticMI, plain and normalised, d_t = 16 and 24 (GEMM path)") {
    for (Eigen::Index dt : {16, 24}) {
      const Batch b = batch(12, 4, 1, dt);
      for (bool normalized : {false, true}) {
        CSQuadraticMI<double> mi;
        mi.normalized = normalized;
        mi.sigma_x = 1.5;
        mi.sigma_t = 4.0;
        Eigen::MatrixXd g;
        const double v = mi.value_and_gradient(b.t, b.x, g);
        CHECK(v == Approx(mi(b.t, b.x)).epsilon(1e-13));
        const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return mi(z, b.x); }, b.t, g, opt);
        INFO("CSQuadraticMI d_t " << dt << ", normalized " << normalized << ": " << res.report());
        CHECK(res.passed);
      }
    }
  }
  SECTION("CSIB as a whole, d_y = 1 and 3, d_t = 16") {
    for (Eigen::Index dy : {1, 3}) {
      const Batch b = batch(12, 6, dy, 16);
      for (bool normalized : {false, true}) {
        CSIB<double> ib;
        ib.beta = 0.3;
        ib.normalized = normalized;
        ib.sigma_t = 3.5;  // fixed: the gradient is then the exact gradient of the value
        Eigen::MatrixXd gy, gt;
        const double v = ib.value_and_gradient(b.yhat, b.y, b.t, b.x, gy, gt);
        CHECK(v == Approx(ib(b.yhat, b.y, b.t, b.x)).epsilon(1e-13));
        const auto ry =
            losskit::check_gradient([&](const Eigen::MatrixXd& z) { return ib(z, b.y, b.t, b.x); }, b.yhat, gy, opt);
        const auto rt =
            losskit::check_gradient([&](const Eigen::MatrixXd& z) { return ib(b.yhat, b.y, z, b.x); }, b.t, gt, opt);
        INFO("CSIB d_y " << dy << ", normalized " << normalized << ": yhat " << ry.report() << "; t " << rt.report());
        CHECK(ry.passed);
        CHECK(rt.passed);
        // The value is the sum of the two functors' values.
        CSDivergence<double> div;
        CSQuadraticMI<double> mi;
        mi.normalized = normalized;
        mi.sigma_t = 3.5;
        CHECK(v == Approx(div(b.yhat, b.y, b.x) + 0.3 * mi(b.t, b.x)).epsilon(1e-13));
      }
    }
  }
}

TEST_CASE("With the median heuristic for t, the gradient holds that width constant", "[cs_ib][gradient]") {
  const Batch b = batch(10, 3, 1, 16);
  CSIB<double> heuristic, fixed;
  heuristic.beta = fixed.beta = 0.5;
  fixed.sigma_t = losskit::median_heuristic_width(b.t);
  CHECK(fixed.sigma_t == Approx(ref_median_width(b.t)).epsilon(1e-14));
  Eigen::MatrixXd gy_h, gt_h, gy_f, gt_f;
  const double vh = heuristic.value_and_gradient(b.yhat, b.y, b.t, b.x, gy_h, gt_h);
  const double vf = fixed.value_and_gradient(b.yhat, b.y, b.t, b.x, gy_f, gt_f);
  CHECK(vh == Approx(vf).epsilon(1e-14));
  CHECK(lktest::max_rel_err(gt_h, gt_f, 1e-12) < 1e-12);
  CHECK(lktest::max_rel_err(gy_h, gy_f, 1e-12) < 1e-12);
  // And that gradient is the derivative at the fixed width (checked above by
  // finite differences of the fixed-width function):
  const auto res =
      losskit::check_gradient([&](const Eigen::MatrixXd& z) { return fixed(b.yhat, b.y, z, b.x); }, b.t, gt_h);
  INFO(res.report());
  CHECK(res.passed);
}

TEST_CASE("CS-IB far predictions (yhat = y + 20 sigma) stay finite and correct in float", "[cs_ib][float]") {
  // exp(−(20σ)²/(2σ²)) = exp(−200) underflows in float (smallest subnormal
  // ≈ exp(−103)): a direct sum gives C = 0, log C = −inf. The log-domain sums
  // must agree with double.
  const Batch b = batch(32, 4, 1, 8);
  const Eigen::MatrixXd yhat = b.y.array() + 20.0;
  double closest = HUGE_VAL;  // the largest cross-kernel exponent, −min ‖ŷ_j − y_i‖²/2
  for (Eigen::Index j = 0; j < 32; ++j)
    for (Eigen::Index i = 0; i < 32; ++i) closest = std::min(closest, 0.5 * std::pow(yhat(0, j) - b.y(0, i), 2));
  REQUIRE(std::exp(-float(closest)) == 0.0f);  // every float cross kernel underflows
  for (CSWeighting w : kWeightings)
    for (bool symmetric : {false, true}) {
      CSIB<float> ibf;
      CSIB<double> ibd;
      ibf.weighting = w;
      ibd.weighting = w;
      ibf.symmetric_cross_term = ibd.symmetric_cross_term = symmetric;
      ibf.sigma_y = 1.0f;
      ibd.sigma_y = 1.0;
      Eigen::MatrixXf gyf, gtf;
      Eigen::MatrixXd gyd, gtd;
      const float vf = ibf.value_and_gradient(yhat.cast<float>(), b.y.cast<float>(), b.t.cast<float>(),
                                              b.x.cast<float>(), gyf, gtf);
      const double vd = ibd.value_and_gradient(yhat, b.y, b.t, b.x, gyd, gtd);
      INFO("CSIB far prediction, " << name(w) << ", symmetric " << symmetric << ": float " << vf << " vs double "
                                   << vd);
      CHECK(std::isfinite(vf));
      CHECK(gyf.allFinite());
      CHECK(gtf.allFinite());
      CHECK(vd > 2 * closest - 10);  // −2·log C ≈ 2·closest: finite, no clamp
      CHECK(lktest::rel_err(vf, vd) < 1e-5);
      CHECK((gyf.cast<double>() - gyd).cwiseAbs().maxCoeff() <= 1e-4 * gyd.cwiseAbs().maxCoeff());
      CHECK((gtf.cast<double>() - gtd).cwiseAbs().maxCoeff() <= 1e-4 * gtd.cwiseAbs().maxCoeff() + 1e-7);
    }
  // The double gradient there is right, too.
  CSDivergence<double> div;
  div.sigma_y = 1.0;
  Eigen::MatrixXd g;
  div.value_and_gradient(yhat, b.y, b.x, g);
  const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return div(z, b.y, b.x); }, yhat, g);
  INFO(res.report());
  CHECK(res.passed);
}

TEST_CASE("CS-IB in float agrees with double on ordinary inputs", "[cs_ib][float]") {
  const Batch b = batch(192, 8, 1, 32);  // large enough for the OpenMP loops to split
  CSIB<float> ibf;
  CSIB<double> ibd;
  ibf.normalized = ibd.normalized = true;
  Eigen::MatrixXf gyf, gtf;
  Eigen::MatrixXd gyd, gtd;
  const Eigen::MatrixXf yhat = b.yhat.cast<float>(), y = b.y.cast<float>(), t = b.t.cast<float>(),
                        x = b.x.cast<float>();
  const float vf = ibf.value_and_gradient(yhat, y, t, x, gyf, gtf);
  const double vd =
      ibd.value_and_gradient(yhat.cast<double>(), y.cast<double>(), t.cast<double>(), x.cast<double>(), gyd, gtd);
  INFO("CSIB float " << vf << " vs double " << vd);
  CHECK(lktest::rel_err(vf, vd) < 1e-4);
  CHECK((gyf.cast<double>() - gyd).cwiseAbs().maxCoeff() <= 1e-4 * gyd.cwiseAbs().maxCoeff());
  CHECK((gtf.cast<double>() - gtd).cwiseAbs().maxCoeff() <= 1e-3 * gtd.cwiseAbs().maxCoeff());
}

// Expression inputs and gradient views, for every functor: tests/contract_checks.hpp.
TEST_CASE("CS-IB rejects bad shapes and options, writing nothing", "[cs_ib][errors]") {
  const Batch b = batch(6, 3, 1, 4);
  CSIB<double> ib;
  Eigen::MatrixXd gy = lktest::sentinel(1, 6), gt = lktest::sentinel(4, 6);
  auto throws = [&](const Eigen::MatrixXd& yhat, const Eigen::MatrixXd& y, const Eigen::MatrixXd& t,
                    const Eigen::MatrixXd& x) {
    CHECK_THROWS_AS(ib.value_and_gradient(yhat, y, t, x, gy, gt), losskit::Error);
    CHECK_THROWS_AS(ib(yhat, y, t, x), losskit::Error);
    CHECK(lktest::untouched(gy, 1, 6));
    CHECK(lktest::untouched(gt, 4, 6));
  };
  throws(b.yhat, b.y, b.t, lktest::normal(3, 5));            // x has 5 samples
  throws(b.yhat, b.y, lktest::normal(4, 7), b.x);            // t has 7
  throws(b.yhat, lktest::normal(2, 6), b.t, b.x);            // y is 2×6, yhat 1×6
  throws(b.yhat.leftCols(1), b.y.leftCols(1), b.t.leftCols(1), b.x.leftCols(1));  // N = 1
  throws(Eigen::MatrixXd(0, 6), Eigen::MatrixXd(0, 6), b.t, b.x);                 // d_y = 0
  CHECK_THROWS_WITH(ib(b.yhat, b.y, b.t, lktest::normal(3, 5)),
                    lktest::Contains("CSIB") && lktest::Contains("x") && lktest::Contains("5"));
  for (double bad : {-1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    CSIB<double> opt;
    opt.sigma_t = bad;
    CHECK_THROWS_AS(opt.value_and_gradient(b.yhat, b.y, b.t, b.x, gy, gt), losskit::Error);
    opt = CSIB<double>{};
    opt.beta = bad;
    CHECK_THROWS_WITH(opt(b.yhat, b.y, b.t, b.x), lktest::Contains("beta"));
    CSDivergence<double> div;
    div.sigma_y = bad;
    CHECK_THROWS_AS(div(b.yhat, b.y, b.x), losskit::Error);
    CSQuadraticMI<double> mi;
    mi.sigma_x = bad;
    CHECK_THROWS_AS(mi(b.t, b.x), losskit::Error);
  }
  CHECK(lktest::untouched(gy, 1, 6));
  CHECK(lktest::untouched(gt, 4, 6));
  Eigen::MatrixXd owner = lktest::sentinel(8, 8);
  CHECK_THROWS_AS(ib.value_and_gradient(b.yhat, b.y, b.t, b.x, gy, owner.block(0, 0, 4, 5)), losskit::Error);
  CHECK(lktest::untouched(owner, 8, 8));
  CHECK(lktest::untouched(gy, 1, 6));
  Eigen::MatrixXd g1 = lktest::sentinel(1, 6);
  CHECK_THROWS_AS(CSDivergence<double>{}.value_and_gradient(b.yhat, b.y, lktest::normal(2, 3), g1), losskit::Error);
  CHECK_THROWS_AS(CSQuadraticMI<double>{}.value_and_gradient(lktest::normal(2, 1), lktest::normal(2, 1), g1),
                  losskit::Error);
  CHECK(lktest::untouched(g1, 1, 6));
}

TEST_CASE("CS-IB reuses its workspace: repeated same-size calls allocate nothing", "[cs_ib][alloc]") {
  // d_t = 32 exercises the GEMM distance path; at these sizes Eigen's GEMM
  // blocking lives on the stack. (Larger GEMMs take a heap block from Eigen.)
  const Batch b = batch(48, 8, 1, 32);
  const Eigen::MatrixXf yhat = b.yhat.cast<float>(), y = b.y.cast<float>(), t = b.t.cast<float>(),
                        x = b.x.cast<float>();
  CSIB<float> ib;
  ib.normalized = true;
  Eigen::MatrixXf gy(1, 48), gt(32, 48);
  const float first = ib.value_and_gradient(yhat, y, t, x, gy, gt);
  lktest::AllocationCounter counter;
  Eigen::internal::set_is_malloc_allowed(false);
  const float second = ib.value_and_gradient(yhat, y, t, x, gy, gt);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(counter.count() == 0);
  CHECK(second == first);
}

TEST_CASE("CS-IB non-finite inputs give NaN without throwing", "[cs_ib][nonfinite]") {
  Batch b = batch(6, 2, 1, 3);
  CSIB<double> ib;
  Eigen::MatrixXd gy, gt;
  b.x(0, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(ib.value_and_gradient(b.yhat, b.y, b.t, b.x, gy, gt)));
  b.x(0, 2) = 0;
  b.yhat(0, 1) = std::numeric_limits<double>::infinity();
  CHECK_NOTHROW(ib.value_and_gradient(b.yhat, b.y, b.t, b.x, gy, gt));
  b.yhat(0, 1) = 0;
  b.t(1, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(ib(b.yhat, b.y, b.t, b.x)));
}

TEST_CASE("CS log-sum-exps follow core's NaN rule: an infinite sample gives NaN and is not dropped",
          "[cs_ib][nonfinite]") {
  // The CS kernel sums use core's log_sum_exp in its accumulating form (float
  // exps, double log): a NaN entry gives NaN whatever the max (+inf or -inf).
  const float finf = std::numeric_limits<float>::infinity(), fnan = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(losskit::detail::log_sum_exp<double>(Eigen::Vector3f(1, finf, fnan).array())));
  CHECK(std::isnan(losskit::detail::log_sum_exp<double>(Eigen::Vector2f(-finf, fnan).array())));
  CHECK(losskit::detail::log_sum_exp<double>(Eigen::Vector2f(1, finf).array()) == std::numeric_limits<double>::infinity());
  // An infinite sample's kernel exponents are -inf next to a NaN (its distance
  // to itself, inf - inf). CS-IB's former local log-sum-exp returned the max
  // there, dropping that sample's entries of A, B and C: a finite value that is
  // not even the limit of a far sample (yhat_k = 1e300 gives another value).
  const double inf = std::numeric_limits<double>::infinity();
  for (CSWeighting w : kWeightings)
    for (bool symmetric : {false, true})
      for (int input = 0; input < 3; ++input)
        for (double bad : {inf, -inf}) {
          Batch b = batch(6, 2, 1, 2);
          (input == 0 ? b.yhat : input == 1 ? b.y : b.x)(0, 2) = bad;
          CSDivergence<double> div;
          div.weighting = w;
          div.symmetric_cross_term = symmetric;
          Eigen::MatrixXd g;
          INFO("CSDivergence, weighting " << name(w) << ", symmetric " << symmetric << ", "
                                          << (input == 0 ? "yhat" : input == 1 ? "y" : "x") << "(0, 2) = " << bad);
          CHECK(std::isnan(div(b.yhat, b.y, b.x)));
          CHECK(std::isnan(div.value_and_gradient(b.yhat, b.y, b.x, g)));
          CHECK(std::isnan(CSIB<double>{}(b.yhat, b.y, b.t, b.x)));
        }
}

TEST_CASE("Normalised CSQuadraticMI: a NaN or infinite t or x gives NaN, not the collapsed 0", "[cs_ib][nonfinite]") {
  // Î_tt or Î_xx is NaN then; the collapsed case (Î_tt or Î_xx = 0, defined
  // as 0) must not swallow it.
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  for (int input = 0; input < 2; ++input)
    for (double bad : {nan, inf}) {
      Batch b = batch(6, 2, 1, 3);
      (input == 0 ? b.t : b.x)(0, 2) = bad;
      losskit::CSQuadraticMI<double> mi;
      mi.normalized = true;
      Eigen::MatrixXd g;
      INFO((input == 0 ? "t" : "x") << "(0, 2) = " << bad);
      CHECK(std::isnan(mi(b.t, b.x)));
      CHECK(std::isnan(mi.value_and_gradient(b.t, b.x, g)));
      CHECK(!g.allFinite());
    }
}

// ---------------------------------------------------------------------------
// width_rule = CSWidth::OfficialCode: the official loss_cs.py's sigma=None rule.

namespace {

using losskit::CSWidth;

// The rule as the official code writes it (loss_cs.py, sigma_estimation, commit
// 252f86be104e37780894242be4ebd3e9bfea41a6), by brute force: stack the samples
// on themselves (2N columns), take every squared distance of the strict lower
// triangle of the 2N×2N matrix, sort, median (mean of the two middle ones),
// their mean if the median is <= 0, at least 1e-2; σ = 10 × that.
double ref_official_width(const Eigen::MatrixXd& a) {
  const Eigen::Index n = a.cols();
  Eigen::MatrixXd stacked(a.rows(), 2 * n);
  stacked << a, a;
  std::vector<double> d;
  for (Eigen::Index r = 0; r < 2 * n; ++r)
    for (Eigen::Index c = 0; c < r; ++c) d.push_back((stacked.col(r) - stacked.col(c)).squaredNorm());
  std::sort(d.begin(), d.end());
  const std::size_t m = d.size() / 2;
  double med = d.size() % 2 ? d[m] : 0.5 * (d[m - 1] + d[m]);
  if (med <= 0) {
    double sum = 0;
    for (double v : d) sum += v;
    med = sum / double(d.size());
  }
  return 10 * std::max(med, 1e-2);
}

// The width the functors use under OfficialCode (the engine's own routine).
template <class Scalar>
Scalar official_width(const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& a) {
  return losskit::median_heuristic_width(a, CSWidth::OfficialCode);
}

// The inputs of tests/torch/cs_ib_official_references.py: an integer LCG, exact
// in double; (LCG − 0.5)·scale, filled sample after sample (d×N column-major).
Eigen::MatrixXd official_data(Eigen::Index n, Eigen::Index d, unsigned long long seed, double scale = 1.0) {
  Eigen::MatrixXd m(d, n);
  unsigned long long s = seed;
  for (Eigen::Index k = 0; k < m.size(); ++k) {
    s = (s * 1103515245ULL + 12345ULL) % (1ULL << 31);
    m.data()[k] = (double((s >> 8) % 65536) / 65536.0 - 0.5) * scale;
  }
  return m;
}

// Row-major N×D numbers printed by the script, as losskit's D×N matrix.
Eigen::MatrixXd from_rows(const std::vector<double>& v, Eigen::Index d) {
  return Eigen::Map<const Eigen::MatrixXd>(v.data(), d, Eigen::Index(v.size()) / d);
}

const double kLn2 = std::log(2.0);

// The rule's σ is 10× a squared distance: for a typical pair the kernel exponent is ≈
// 1/(200·m), m the median squared distance, so the kernels are far from 1 only for
// m = O(1e-2). A batch scaled into that regime (per variable: x, y and ŷ, t).
Batch official_scale(Batch b, double sx, double sy, double st) {
  b.x *= sx;
  b.y *= sy;
  b.yhat *= sy;
  b.t *= st;
  return b;
}

}  // namespace

TEST_CASE("OfficialCode width: the N×N selection equals the brute-force stacked [X; X] median", "[cs_ib][width]") {
  for (Eigen::Index n : {2, 3, 4, 7, 8, 33, 64}) {
    const Eigen::MatrixXd a = lktest::normal(3, n);
    const Eigen::MatrixXd ties = (4 * lktest::uniform(1, n)).array().floor();  // many equal distances
    Eigen::MatrixXd dup = a;
    dup.rightCols(n - n / 3) = dup.leftCols(1).replicate(1, n - n / 3);  // mostly one sample: median 0 → mean
    const Eigen::MatrixXd tiny = 0.01 * a;                                // median < 1e-2: the floor
    const Eigen::MatrixXd same = Eigen::MatrixXd::Ones(2, n);             // all zero: mean 0, floor → 0.1
    const Eigen::MatrixXd* mats[] = {&a, &ties, &dup, &tiny, &same};
    for (const Eigen::MatrixXd* m : mats) {
      INFO("N " << n << ", sample 0 " << m->col(0).transpose());
      const double ref = ref_official_width(*m);
      CHECK(official_width<double>(*m) == Approx(ref).epsilon(1e-14));
      CHECK(official_width<float>(m->cast<float>()) == Approx(ref).epsilon(1e-5));
    }
  }
  CHECK(official_width<double>(Eigen::MatrixXd(Eigen::MatrixXd::Ones(2, 5))) == Approx(0.1).epsilon(1e-15));
  const Eigen::MatrixXd wide = lktest::normal(40, 9);  // GEMM distance path
  CHECK(official_width<double>(wide) == Approx(ref_official_width(wide)).epsilon(1e-12));
  Eigen::MatrixXd nan = lktest::normal(2, 5);
  nan(1, 3) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(official_width<double>(nan)));  // np.median of a NaN is NaN
}

TEST_CASE("width_rule applies to every width left at 0, and only to those", "[cs_ib][width]") {
  const Batch b = batch(11, 4, 2, 5);
  const double wx = ref_official_width(b.x), wy = ref_official_width(b.y), wt = ref_official_width(b.t);
  for (bool normalized : {false, true}) {
    CSIB<double> rule, fixed;
    rule.width_rule = CSWidth::OfficialCode;
    rule.beta = fixed.beta = 0.4;
    rule.normalized = fixed.normalized = normalized;
    rule.weighting = fixed.weighting = CSWeighting::OfficialCode;
    fixed.sigma_x = wx;
    fixed.sigma_y = wy;
    fixed.sigma_t = wt;
    CHECK(rule(b.yhat, b.y, b.t, b.x) == Approx(fixed(b.yhat, b.y, b.t, b.x)).epsilon(1e-13));
    rule.sigma_y = fixed.sigma_y = 0.8;  // a width set > 0 is used as it is
    CHECK(rule(b.yhat, b.y, b.t, b.x) == Approx(fixed(b.yhat, b.y, b.t, b.x)).epsilon(1e-13));
    CSQuadraticMI<double> mi_rule, mi_fixed;
    mi_rule.width_rule = CSWidth::OfficialCode;
    mi_rule.normalized = mi_fixed.normalized = normalized;
    mi_fixed.sigma_x = wx;
    mi_fixed.sigma_t = wt;
    CHECK(mi_rule(b.t, b.x) == Approx(mi_fixed(b.t, b.x)).epsilon(1e-13));
  }
  CSDivergence<double> div_rule, div_fixed, div_median;
  div_rule.width_rule = CSWidth::OfficialCode;
  div_fixed.sigma_x = wx;
  div_fixed.sigma_y = wy;
  CHECK(div_rule(b.yhat, b.y, b.x) == Approx(div_fixed(b.yhat, b.y, b.x)).epsilon(1e-13));
  CHECK(div_median.width_rule == CSWidth::MedianDistance);  // the default stays the median heuristic
  CHECK(div_median(b.yhat, b.y, b.x) != Approx(div_rule(b.yhat, b.y, b.x)));
}

TEST_CASE("OfficialCode widths reproduce loss_cs.py's CS_QMI(sigma=None) and the released training objective",
          "[cs_ib][official]") {
  // Every number below was printed by tests/torch/cs_ib_official_references.py, which runs
  // the authors' loss_cs.py (github.com/SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck @
  // 252f86be104e37780894242be4ebd3e9bfea41a6) in float64 under torch 1.13 on the same
  // LCG inputs (official_data above). The official code uses log2: its Î is losskit's / ln 2.
  // At unit scale (the third case) the rule's kernels are within 1e-3 of 1 and Î is a
  // 1e-5 difference of O(1) logs: any double evaluation (theirs and ours) is then only good
  // to ~1e-11 relative (measured: 2.5e-11), hence that case's tolerance.
  struct QMICase {
    Eigen::Index n;
    double scale_x, scale_z, tol;
    double width_x, width_z, qmi, qmi_normalized;
    std::vector<double> grad, grad_normalized;  // d/dz, N×2 row-major as printed
  };
  const QMICase cases[] = {
      {7, 0.25, 0.5, 1e-12, 0.24566313848481514, 0.60586148174479604,
       0.0058486580518103404, 0.25651827976179165,
       {
        0.0083207245340744234, 0.0014455961808955754, 0.0077042742801524434, 0.0031550156066873216,
        0.021868099604746519, 0.00046745630826481666, -0.024750478653558963, -0.0017272335116066372,
        -0.021753704486582592, 0.00038142238928755984, -0.011499288890614813, -0.0025957216469552793,
        0.020110373611782993, -0.0011265353265733559},
       {
        0.37210829317687621, -0.03408198784644511, -0.29552894249142786, -0.20507938604047043,
        1.0609819155869047, -0.026562807983725588, -0.95440865684604681, -0.15477018234633008,
        -0.64655956865212572, 0.19890214755932881, -0.16176827349157158, 0.12198383930954187,
        0.62517523271739139, 0.099608377348100491}},
      {8, 0.25, 0.5, 1e-12, 0.23694417046499439, 0.57984164217486978,
       0.0067178600113100284, 0.27942945256874524,
       {
        0.0054065054063922192, 0.0017164105007574293, 0.0055517581297450588, 0.0033989705549544265,
        0.0196365430184492, 0.0037841245118820531, -0.02779129316038562, -0.0060930013292978275,
        -0.024579341358328344, -0.003818452224850037, -0.014276392457277508, -0.0048137936384458355,
        0.017491784551144654, 0.001906318186388041, 0.01856043587026034, 0.0039194234386117442},
       {
        0.25661962152742157, -0.0063001352719501379, -0.36692888078379249, -0.19500971314998516,
        0.94562937725831397, 0.13520645513503021, -1.0007582728750906, -0.30880577083753824,
        -0.680002660608236, 0.065621775426926487, -0.21828119717205152, 0.078445685690335915,
        0.50671729310943692, 0.25938320038206819, 0.55700471954399833, -0.028541497374887037}},
      {8, 1.0, 2.0, 1e-9, 3.7911067274399102, 9.2774662747979164,
       2.562765308389281e-05, 0.2254457155798677,
       {
        4.5590119872377946e-06, 6.2795835490514013e-07, 3.2960153284602218e-06, 2.076189608823605e-06,
        2.2355914496910017e-05, 3.568812584294144e-06, -2.8839961412449139e-05, -5.0033533108697822e-06,
        -2.6023365908868368e-05, -3.1661269086911203e-06, -1.4625300708089578e-05, -4.4505485246149148e-06,
        1.9727373504204774e-05, 2.5473963659866145e-06, 1.9550312712594284e-05, 3.7996718301663199e-06},
       {
        0.043858837350364596, -0.0058106700634507893, -0.11357041131897411, -0.0667520470518978,
        0.21789556241762442, 0.029672257026273331, -0.22674541092244516, -0.051334127524502692,
        -0.15631428041965922, 0.018365460901575592, -0.037093797298710325, 0.025528909887566835,
        0.13779734733087484, 0.048742868660385852, 0.13417215286092501, 0.0015873481640496958}},
  };
  for (const QMICase& c : cases) {
    INFO("N " << c.n << ", scale " << c.scale_x);
    const Eigen::MatrixXd x = official_data(c.n, 3, 11, c.scale_x), z = official_data(c.n, 2, 12, c.scale_z);
    CHECK(official_width<double>(x) == Approx(c.width_x).epsilon(1e-14));  // 10·sigma_estimation(x, x)
    CHECK(official_width<double>(z) == Approx(c.width_z).epsilon(1e-14));
    CSQuadraticMI<double> mi;
    mi.width_rule = CSWidth::OfficialCode;
    Eigen::MatrixXd g;
    // CS_QMI(x, z) (sigma=None); its autograd gradient (the widths are numpy values: constants).
    const double v = mi.value_and_gradient(z, x, g);
    CHECK(lktest::rel_err(v / kLn2, c.qmi) < c.tol);
    CHECK(lktest::max_rel_err(g / kLn2, from_rows(c.grad, 2)) < 1e-10);
    // CS_QMI_normalized(x, z, None): a ratio of logs, the same in every base.
    mi.normalized = true;
    const double vn = mi.value_and_gradient(z, x, g);
    CHECK(lktest::rel_err(vn, c.qmi_normalized) < c.tol);
    CHECK(lktest::max_rel_err(g, from_rows(c.grad_normalized, 2)) < 1e-10);
  }
  SECTION("the floor and the mean fallback") {
    CSQuadraticMI<double> mi;
    mi.width_rule = CSWidth::OfficialCode;
    // x = 0.1·(LCG(21) − 0.5): every squared distance < 1e-2, so the floor: σ = 0.1.
    const Eigen::MatrixXd x = official_data(6, 2, 21, 0.1);
    CHECK(official_width<double>(x) == Approx(0.10000000000000001).epsilon(1e-15));
    CHECK(lktest::rel_err(mi(official_data(6, 2, 22, 0.25), x) / kLn2, 0.0089015695264577088) < 1e-12);
    // Three of four samples coincide: the median of the 28 stacked entries is 0, their mean
    // 4·3·0.085/28 is used (σ = 0.364...).
    Eigen::MatrixXd x2(2, 4);
    x2 << 0.05, 0.05, 0.05, 0.2, -0.1, -0.1, -0.1, 0.15;
    CHECK(official_width<double>(x2) == Approx(0.36428571428571427).epsilon(1e-14));
    CHECK(lktest::rel_err(mi(official_data(4, 2, 23, 0.5), x2) / kLn2, 0.0025504419594103434) < 1e-12);
  }
  SECTION("the released training objective (CS_IB_Housing.py)") {
    // CS_Div(x, y, ŷ, sigma=1) + 0.01·CS_QMI_normalized(x, z, sigma=1), y passed N×1, in
    // log2 = (1/ln 2)·losskit's CSIB with every width 1, OfficialCode weighting, the
    // normalised Î (base-free) and β = 0.01·ln 2.
    const Eigen::Index n = 8;
    const Eigen::MatrixXd x = official_data(n, 3, 31), y = official_data(n, 1, 32), z = official_data(n, 2, 34);
    const Eigen::MatrixXd yhat = y + 0.3 * official_data(n, 1, 33);
    CSIB<double> ib;
    ib.sigma_x = ib.sigma_y = ib.sigma_t = 1;
    ib.weighting = CSWeighting::OfficialCode;
    ib.normalized = true;
    ib.beta = 0.01 * kLn2;
    Eigen::MatrixXd gy, gz;
    const double v = ib.value_and_gradient(yhat, y, z, x, gy, gz);
    CHECK(lktest::rel_err(v / kLn2, 0.0039572016819256145) < 1e-12);
    const std::vector<double> ref_gy = {-0.0005321025934738946, 0.0065914005769917017, 0.0033278534805278662,
                                        0.0017300237582108802,  0.0073775675355407765, 0.0063175313650688722,
                                        0.0096541106767459393,  0.012329819982510912};
    const std::vector<double> ref_gz = {
        -0.0002269311289558333, 0.00027890676302981814, 0.0030002449126020113,  7.1560846473003262e-05,
        -0.0011584552662081836, 0.00042663250329466119, 0.0033175965336690776,  -0.001004584069045721,
        -0.0030176699141426623, 0.00071304581709839929, 0.0019839728225765326,  0.00047968612589856566,
        -0.00046818853512095061, -0.0020379490680361824, -0.0034305694244199936, 0.0010727010812874561};
    CHECK(lktest::max_rel_err(gy / kLn2, from_rows(ref_gy, 1)) < 1e-10);
    CHECK(lktest::max_rel_err(gz / kLn2, from_rows(ref_gz, 2)) < 1e-10);
  }
}

TEST_CASE("OfficialCode widths: the gradient holds the widths constant, and passes the FD check there",
          "[cs_ib][gradient][width]") {
  const Batch b = official_scale(batch(10, 3, 2, 6), 0.06, 0.1, 0.05);
  for (bool normalized : {false, true}) {
    CSIB<double> rule, fixed;
    rule.width_rule = CSWidth::OfficialCode;
    rule.beta = fixed.beta = 0.5;
    rule.normalized = fixed.normalized = normalized;
    fixed.sigma_x = ref_official_width(b.x);
    fixed.sigma_y = ref_official_width(b.y);
    fixed.sigma_t = ref_official_width(b.t);
    Eigen::MatrixXd gy_r, gt_r, gy_f, gt_f;
    const double vr = rule.value_and_gradient(b.yhat, b.y, b.t, b.x, gy_r, gt_r);
    const double vf = fixed.value_and_gradient(b.yhat, b.y, b.t, b.x, gy_f, gt_f);
    CHECK(vr == Approx(vf).epsilon(1e-13));
    CHECK(vr == Approx(rule(b.yhat, b.y, b.t, b.x)).epsilon(1e-13));
    CHECK(lktest::max_rel_err(gy_r, gy_f, 1e-12) < 1e-11);
    CHECK(lktest::max_rel_err(gt_r, gt_f, 1e-12) < 1e-11);
    const auto ry =
        losskit::check_gradient([&](const Eigen::MatrixXd& q) { return fixed(q, b.y, b.t, b.x); }, b.yhat, gy_r);
    const auto rt =
        losskit::check_gradient([&](const Eigen::MatrixXd& q) { return fixed(b.yhat, b.y, q, b.x); }, b.t, gt_r);
    INFO("normalized " << normalized << ": yhat " << ry.report() << "; t " << rt.report());
    CHECK(ry.passed);
    CHECK(rt.passed);
    // ŷ's width comes from y, a constant of the loss: that gradient is exact for the rule itself.
    const auto exact =
        losskit::check_gradient([&](const Eigen::MatrixXd& q) { return rule(q, b.y, b.t, b.x); }, b.yhat, gy_r);
    INFO(exact.report());
    CHECK(exact.passed);
  }
}

TEST_CASE("OfficialCode widths in float agree with double", "[cs_ib][float][width]") {
  // Scaled so that the kernels are not all within 1e-4 of 1 (unit-variance data: see
  // docs/cs_ib.md, the estimators then sit below float's resolution).
  const Batch b = official_scale(batch(96, 6, 1, 24), 0.04, 0.15, 0.02);
  CSIB<float> ibf;
  CSIB<double> ibd;
  ibf.width_rule = ibd.width_rule = CSWidth::OfficialCode;
  ibf.normalized = ibd.normalized = true;
  ibf.beta = ibd.beta = 0.3f;
  Eigen::MatrixXf gyf, gtf;
  Eigen::MatrixXd gyd, gtd;
  const Eigen::MatrixXf yhat = b.yhat.cast<float>(), y = b.y.cast<float>(), t = b.t.cast<float>(),
                        x = b.x.cast<float>();
  const float vf = ibf.value_and_gradient(yhat, y, t, x, gyf, gtf);
  const double vd =
      ibd.value_and_gradient(yhat.cast<double>(), y.cast<double>(), t.cast<double>(), x.cast<double>(), gyd, gtd);
  INFO("CSIB OfficialCode float " << vf << " vs double " << vd);
  CHECK(lktest::rel_err(vf, vd) < 1e-4);
  CHECK((gyf.cast<double>() - gyd).cwiseAbs().maxCoeff() <= 1e-4 * gyd.cwiseAbs().maxCoeff());
  CHECK((gtf.cast<double>() - gtd).cwiseAbs().maxCoeff() <= 1e-3 * gtd.cwiseAbs().maxCoeff());
}

TEST_CASE("width_rule: an invalid value is an Error naming it, nothing written; no allocation on reuse",
          "[cs_ib][errors][width]") {
  const Batch b = batch(6, 3, 1, 4);
  const auto bad = static_cast<CSWidth>(7);
  Eigen::MatrixXd gy = lktest::sentinel(1, 6), gt = lktest::sentinel(4, 6);
  CSIB<double> ib;
  ib.width_rule = bad;
  CHECK_THROWS_WITH(ib.value_and_gradient(b.yhat, b.y, b.t, b.x, gy, gt),
                    lktest::Contains("CSIB") && lktest::Contains("width_rule") && lktest::Contains("7"));
  CSDivergence<double> div;
  div.width_rule = bad;
  CHECK_THROWS_WITH(div.value_and_gradient(b.yhat, b.y, b.x, gy), lktest::Contains("width_rule"));
  CSQuadraticMI<double> mi;
  mi.width_rule = bad;
  CHECK_THROWS_WITH(mi.value_and_gradient(b.t, b.x, gt), lktest::Contains("width_rule"));
  CHECK_THROWS_AS(mi(b.t, b.x), losskit::Error);
  CHECK(lktest::untouched(gy, 1, 6));
  CHECK(lktest::untouched(gt, 4, 6));
  CHECK_THROWS_WITH(losskit::median_heuristic_width(b.x, bad), lktest::Contains("width_rule"));

  const Batch big = batch(48, 8, 1, 32);
  const Eigen::MatrixXf yhat = big.yhat.cast<float>(), y = big.y.cast<float>(), t = big.t.cast<float>(),
                        x = big.x.cast<float>();
  CSIB<float> ibf;
  ibf.width_rule = CSWidth::OfficialCode;
  Eigen::MatrixXf gyf(1, 48), gtf(32, 48);
  const float first = ibf.value_and_gradient(yhat, y, t, x, gyf, gtf);
  lktest::AllocationCounter counter;
  Eigen::internal::set_is_malloc_allowed(false);
  const float second = ibf.value_and_gradient(yhat, y, t, x, gyf, gtf);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(counter.count() == 0);
  CHECK(second == first);
}
