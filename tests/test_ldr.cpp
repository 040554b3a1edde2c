// LDR-KL and ALDR-KL (Zhu, Ying, Yang, ICML 2023): limit identities, values
// against long-double brute force, ALDR-KL's λ* (fixed point, interval,
// global maximum, including a g with two local maxima), gradients by finite
// differences, float vs double, errors, allocations, non-finite inputs.
#include <losskit/gradcheck.hpp>
#include <losskit/ldr.hpp>

#include <string>
#include <vector>

#include "sample_weight_checks.hpp"
#include "test_util.hpp"

using losskit::ALDRKL;
using losskit::LDRKL;
using losskit::Reduction;

namespace {

using LD = long double;

// Scores of one column: raw logits, or softplus(s)/mean softplus(s) as in the
// paper's official code (loss.py), computed independently in long double.
std::vector<LD> ref_scores(const Eigen::MatrixXd& s, Eigen::Index j, bool normalize) {
  std::vector<LD> f(static_cast<std::size_t>(s.rows()));
  LD mean = 0;
  for (Eigen::Index k = 0; k < s.rows(); ++k) {
    const LD x = s(k, j);
    f[std::size_t(k)] = normalize ? std::log1p(std::exp(-std::fabs(x))) + std::max(x, LD(0)) : x;
    mean += f[std::size_t(k)];
  }
  if (normalize)
    for (LD& v : f) v /= mean / LD(s.rows());
  return f;
}

// z_k = c·[k ≠ y] + f_k − f_y.
std::vector<LD> ref_margins(const Eigen::MatrixXd& s, Eigen::Index j, int y, double margin, bool normalize) {
  std::vector<LD> f = ref_scores(s, j, normalize), z(f.size());
  for (std::size_t k = 0; k < f.size(); ++k) z[k] = (int(k) == y ? LD(0) : LD(margin)) + f[k] - f[std::size_t(y)];
  return z;
}

// λ·log((1/C)·Σ exp(z/λ)), max-shifted, in long double.
LD ref_lambda_lse(const std::vector<LD>& z, LD lambda) {
  const LD m = *std::max_element(z.begin(), z.end());
  LD sum = 0;
  for (LD v : z) sum += std::exp((v - m) / lambda);
  return m + lambda * std::log(sum / LD(z.size()));
}

// The ALDR-KL objective g(λ) = λ·lse_u(z/λ) − (a/2)(λ − λ0)², a = α·log C/λ0.
LD ref_aldr_objective(const std::vector<LD>& z, LD lambda, LD lambda0, LD alpha) {
  const LD a = alpha * std::log(LD(z.size())) / lambda0;
  return ref_lambda_lse(z, lambda) - a / 2 * (lambda - lambda0) * (lambda - lambda0);
}

// The paper's fixed-point map T(λ) = λ0·(1 − KL(softmax(z/λ), u)/(α·log C)).
LD ref_fixed_point_map(const std::vector<LD>& z, LD lambda, LD lambda0, LD alpha) {
  const LD m = *std::max_element(z.begin(), z.end());
  LD sum = 0;
  for (LD v : z) sum += std::exp((v - m) / lambda);
  LD kl = 0;
  const LD c = LD(z.size());
  for (LD v : z) {
    const LD p = std::exp((v - m) / lambda) / sum;
    if (p > 0) kl += p * std::log(p * c);
  }
  return lambda0 * (1 - kl / (alpha * std::log(c)));
}

struct RefMax {
  LD lambda, value;
};

// Brute-force global maximisation of g over [λ0(1 − 1/α), λ0]: a dense grid
// of 4000 cells, then golden-section search in the cells next to the best
// grid point. Independent of the library's Newton / branch-and-bound solver.
RefMax ref_aldr_max(const std::vector<LD>& z, LD lambda0, LD alpha) {
  const LD lo = lambda0 * (1 - 1 / alpha);
  const int n = 4000;
  int best = 0;
  LD best_g = -std::numeric_limits<LD>::infinity();
  for (int i = 0; i <= n; ++i) {
    const LD g = ref_aldr_objective(z, lo + (lambda0 - lo) * LD(i) / n, lambda0, alpha);
    if (g > best_g) best_g = g, best = i;
  }
  LD a = lo + (lambda0 - lo) * LD(std::max(best - 1, 0)) / n, b = lo + (lambda0 - lo) * LD(std::min(best + 1, n)) / n;
  const LD r = (std::sqrt(LD(5)) - 1) / 2;
  for (int it = 0; it < 120; ++it) {
    const LD x1 = b - r * (b - a), x2 = a + r * (b - a);
    if (ref_aldr_objective(z, x1, lambda0, alpha) >= ref_aldr_objective(z, x2, lambda0, alpha))
      b = x2;
    else
      a = x1;
  }
  const LD x = (a + b) / 2;
  return {x, ref_aldr_objective(z, x, lambda0, alpha)};
}

// Logits whose ALDR-KL objective has two local maxima in λ: 99 classes tied
// with the target and one class 10 above. Scanning g on a grid (λ0 = 2.9,
// α = 1.5) shows local maxima near λ = 0.985 (g = 1.1001, the global one) and
// λ = 2.454 (g = 0.8833); with λ0 = 3 they are near 1.027 (0.7948) and 2.656
// (0.7982, global). Newton started at λ0 finds the right-hand one.
Eigen::MatrixXd two_maxima_logits() {
  Eigen::MatrixXd s = Eigen::MatrixXd::Zero(100, 1);
  s(99, 0) = 10;
  return s;
}

}  // namespace

// ---------------------------------------------------------------- LDR-KL

TEST_CASE("LDRKL with margin 0 and lambda 1 is cross-entropy minus log C", "[ldr]") {
  // ψ = log((1/C)Σ exp(f_k − f_y)) = CE − log C exactly (reference/ldr.md).
  const Eigen::MatrixXd s = lktest::normal(7, 9, 2.0);
  const Eigen::VectorXi y = lktest::labels(9, 7);
  LDRKL<double> ldr;
  ldr.margin = 0;
  const Eigen::VectorXd per = ldr.per_sample(s, y);
  LD total = 0;
  for (Eigen::Index j = 0; j < 9; ++j) {
    LD m = s.col(j).maxCoeff(), sum = 0;
    for (Eigen::Index k = 0; k < 7; ++k) sum += std::exp(LD(s(k, j)) - m);
    const LD ce = m + std::log(sum) - LD(s(y(j), j));
    INFO("LDRKL sample " << j);
    CHECK(per(j) == Approx(double(ce - std::log(LD(7)))).epsilon(1e-13).margin(1e-14));
    total += ce - std::log(LD(7));
  }
  CHECK(ldr(s, y) == Approx(double(total / 9)).epsilon(1e-13));
  ldr.reduction = Reduction::Sum;
  CHECK(ldr(s, y) == Approx(double(total)).epsilon(1e-13));
}

TEST_CASE("LDRKL matches a long-double brute force for several lambda, margins, normalisation", "[ldr]") {
  const Eigen::MatrixXd s = lktest::normal(11, 6, 3.0);
  const Eigen::VectorXi y = lktest::labels(6, 11);
  for (bool normalize : {false, true})
    for (double lambda : {0.05, 0.3, 1.0, 10.0})
      for (double margin : {0.0, 0.1, 2.0}) {
        LDRKL<double> ldr;
        ldr.lambda = lambda;
        ldr.margin = margin;
        ldr.normalize_logits = normalize;
        const Eigen::VectorXd per = ldr.per_sample(s, y);
        for (Eigen::Index j = 0; j < 6; ++j) {
          const LD ref = ref_lambda_lse(ref_margins(s, j, y(j), margin, normalize), lambda);
          INFO("LDRKL lambda " << lambda << " margin " << margin << " normalize " << normalize << " sample " << j);
          CHECK(per(j) == Approx(double(ref)).epsilon(1e-12).margin(1e-13));
        }
      }
}

TEST_CASE("LDRKL limits: hinge as lambda -> 0, mean of z as lambda -> infinity, and the bounds", "[ldr]") {
  const Eigen::MatrixXd s = lktest::normal(9, 5);
  const Eigen::VectorXi y = lktest::labels(5, 9);
  const double margin = 0.5;
  LDRKL<double> ldr;
  ldr.margin = margin;
  for (Eigen::Index j = 0; j < 5; ++j) {
    const std::vector<LD> z = ref_margins(s, j, y(j), margin, false);
    const LD zmax = *std::max_element(z.begin(), z.end());
    LD zmean = 0, zvar = 0;
    for (LD v : z) zmean += v / LD(z.size());
    for (LD v : z) zvar += (v - zmean) * (v - zmean) / LD(z.size());
    INFO("LDRKL limits, sample " << j);
    // Crammer–Singer hinge: max z − λ log C ≤ ψ ≤ max z.
    ldr.lambda = 1e-4;
    const double small = ldr.per_sample(s.col(j), y.segment(j, 1))(0);
    CHECK(small <= double(zmax) + 1e-15);
    CHECK(small >= double(zmax) - 1e-4 * std::log(9.0) - 1e-15);
    // λ → ∞: λ·lse_u(z/λ) = mean z + Var_u(z)/(2λ) + O(λ⁻²) (cumulant expansion).
    ldr.lambda = 1e5;
    const double large = ldr.per_sample(s.col(j), y.segment(j, 1))(0);
    CHECK(large == Approx(double(zmean + zvar / (2 * LD(1e5)))).margin(1e-9));
    for (double lambda : {0.01, 0.5, 3.0}) {
      ldr.lambda = lambda;
      const double v = ldr.per_sample(s.col(j), y.segment(j, 1))(0);
      CHECK(v <= double(zmax) + 1e-14);
      CHECK(v >= double(zmax) - lambda * std::log(9.0) - 1e-14);
    }
  }
}

TEST_CASE("LDRKL gradient passes the finite-difference check", "[ldr][gradient]") {
  const Eigen::VectorXi y = lktest::labels(5, 6);
  for (bool normalize : {false, true})
    for (double lambda : {0.2, 1.0, 7.0})
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        const Eigen::MatrixXd s = lktest::normal(6, 5, 2.0);
        LDRKL<double> ldr;
        ldr.lambda = lambda;
        ldr.normalize_logits = normalize;
        ldr.reduction = r;
        Eigen::MatrixXd g;
        const double v = ldr.value_and_gradient(s, y, g);
        CHECK(v == Approx(ldr(s, y)).epsilon(1e-14));
        const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return ldr(x, y); }, s, g);
        INFO("LDRKL lambda " << lambda << " normalize " << normalize << " reduction " << r << ": " << res.report());
        CHECK(res.passed);
      }
}

TEST_CASE("LDRKL gradient at extreme logits and ties", "[ldr][gradient]") {
  Eigen::MatrixXd s = 300.0 * lktest::normal(8, 4);
  s.col(1).setConstant(5.0);  // all tied
  s(2, 2) = s(5, 2) = 900.0;  // two tied maxima
  const Eigen::VectorXi y = lktest::labels(4, 8);
  for (double lambda : {0.1, 1.0, 50.0}) {
    LDRKL<double> ldr;
    ldr.lambda = lambda;
    Eigen::MatrixXd g;
    const double v = ldr.value_and_gradient(s, y, g);
    REQUIRE(std::isfinite(v));
    REQUIRE(g.allFinite());
    losskit::GradientCheckOptions opt;
    opt.relative_step = false;  // a step relative to |x| ~ 900 would cross kinks of the near-hinge
    opt.step = 1e-4;
    opt.atol = 1e-9;  // ψ ~ 900: central differences carry ~ε·900/h ≈ 1e-9 absolute noise
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return ldr(x, y); }, s, g, opt);
    INFO("LDRKL extreme logits, lambda " << lambda << ": " << res.report());
    CHECK(res.passed);
    // Each column of ∂ψ/∂f = softmax(z/λ) − e_y sums to 0.
    CHECK(g.colwise().sum().cwiseAbs().maxCoeff() <= 1e-15);
  }
}

// --------------------------------------------------------------- ALDR-KL

TEST_CASE("ALDRKL lambda* is a fixed point in its interval and the global maximiser", "[ldr][aldr]") {
  const Eigen::MatrixXd s = lktest::normal(10, 6, 2.0);
  const Eigen::VectorXi y = lktest::labels(6, 10);
  for (bool normalize : {false, true})
    for (double lambda0 : {0.1, 1.0, 10.0})
      for (double alpha : {1.2, 2.0, 5.0}) {
        ALDRKL<double> aldr;
        aldr.lambda0 = lambda0;
        aldr.alpha = alpha;
        aldr.normalize_logits = normalize;
        const Eigen::VectorXd lam = aldr.lambda_star(s, y), per = aldr.per_sample(s, y);
        const double lo = lambda0 * (1 - 1 / alpha);
        for (Eigen::Index j = 0; j < 6; ++j) {
          const std::vector<LD> z = ref_margins(s, j, y(j), 0.1, normalize);
          const RefMax ref = ref_aldr_max(z, lambda0, alpha);
          INFO("ALDRKL lambda0 " << lambda0 << " alpha " << alpha << " normalize " << normalize << " sample " << j
                                 << ": lambda* " << lam(j) << " (brute force " << double(ref.lambda) << ")");
          CHECK(lam(j) >= lo);
          CHECK(lam(j) <= lambda0);
          // Stationarity λ* = T(λ*), evaluated independently in long double.
          CHECK(double(ref_fixed_point_map(z, lam(j), lambda0, alpha)) == Approx(lam(j)).epsilon(1e-9));
          CHECK(lam(j) == Approx(double(ref.lambda)).epsilon(1e-6));
          CHECK(per(j) == Approx(double(ref.value)).epsilon(1e-12).margin(1e-13));
          // A maximum: not below g at λ0 and at the interval's ends.
          CHECK(per(j) >= double(ref_aldr_objective(z, lambda0, lambda0, alpha)) - 1e-13);
          CHECK(per(j) >= double(ref_aldr_objective(z, lo, lambda0, alpha)) - 1e-13);
          // And it is g at the returned λ*.
          CHECK(per(j) == Approx(double(ref_aldr_objective(z, lam(j), lambda0, alpha))).epsilon(1e-12).margin(1e-13));
        }
      }
}

TEST_CASE("ALDRKL finds the global maximum when g has two local maxima", "[ldr][aldr]") {
  const Eigen::MatrixXd s = two_maxima_logits();
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
  // Grid scan (see two_maxima_logits): left maximum global for λ0 = 2.9,
  // right one for λ0 = 3.
  for (double lambda0 : {2.9, 3.0}) {
    ALDRKL<double> aldr;
    aldr.lambda0 = lambda0;
    aldr.alpha = 1.5;
    aldr.margin = 0;
    const std::vector<LD> z = ref_margins(s, 0, 0, 0.0, false);
    const RefMax ref = ref_aldr_max(z, lambda0, 1.5);
    const double lam = aldr.lambda_star(s, y)(0), v = aldr(s, y);
    INFO("ALDRKL two maxima, lambda0 " << lambda0 << ": lambda* " << lam << " vs " << double(ref.lambda));
    CHECK(lam == Approx(double(ref.lambda)).epsilon(1e-6));
    CHECK(lam == Approx(lambda0 == 2.9 ? 0.985 : 2.656).epsilon(2e-3));
    CHECK(v == Approx(double(ref.value)).epsilon(1e-12));
    CHECK(double(ref_fixed_point_map(z, lam, lambda0, 1.5)) == Approx(lam).epsilon(1e-9));
    // The gradient is softmax(z/λ*) − e_y at the global maximiser.
    Eigen::MatrixXd g;
    aldr.value_and_gradient(s, y, g);
    // ψ is the max of two branches 0.0034 apart (λ0 = 3); moving z_99 by
    // 1e-2 would switch branch, so keep the first step at 1e-4.
    losskit::GradientCheckOptions opt;
    opt.step = 1e-5;
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return aldr(x, y); }, s, g, opt);
    INFO(res.report());
    CHECK(res.passed);
  }
}

TEST_CASE("ALDRKL gradient (envelope theorem) passes the finite-difference check", "[ldr][aldr][gradient]") {
  const Eigen::VectorXi y = lktest::labels(4, 7);
  for (bool normalize : {false, true})
    for (double lambda0 : {0.3, 1.0, 10.0})
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        const Eigen::MatrixXd s = lktest::normal(7, 4, 3.0);
        ALDRKL<double> aldr;
        aldr.lambda0 = lambda0;
        aldr.normalize_logits = normalize;
        aldr.reduction = r;
        Eigen::MatrixXd g;
        const double v = aldr.value_and_gradient(s, y, g);
        CHECK(v == Approx(aldr(s, y)).epsilon(1e-14));
        const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return aldr(x, y); }, s, g);
        INFO("ALDRKL lambda0 " << lambda0 << " normalize " << normalize << " reduction " << r << ": " << res.report());
        CHECK(res.passed);
        // The envelope gradient is LDR-KL's gradient at λ = λ*.
        const Eigen::VectorXd lam = aldr.lambda_star(s, y);
        for (Eigen::Index j = 0; j < 4; ++j) {
          LDRKL<double> ldr;
          ldr.lambda = lam(j);
          ldr.normalize_logits = normalize;
          ldr.reduction = Reduction::Sum;
          Eigen::MatrixXd gj;
          ldr.value_and_gradient(s.col(j), y.segment(j, 1), gj);
          const double f = r == Reduction::Mean ? 0.25 : 1.0;
          CHECK((gj * f - g.col(j)).cwiseAbs().maxCoeff() <= 1e-12);
        }
      }
}

TEST_CASE("ALDRKL at extreme logits: finite, in its interval, gradient checked", "[ldr][aldr][gradient]") {
  Eigen::MatrixXd s = 200.0 * lktest::normal(6, 3);
  s.col(1).setConstant(-3.0);  // all z = margin except z_y = 0
  const Eigen::VectorXi y = lktest::labels(3, 6);
  ALDRKL<double> aldr;
  aldr.lambda0 = 1.0;
  Eigen::MatrixXd g;
  const double v = aldr.value_and_gradient(s, y, g);
  REQUIRE(std::isfinite(v));
  REQUIRE(g.allFinite());
  const Eigen::VectorXd lam = aldr.lambda_star(s, y);
  CHECK(lam.minCoeff() >= 0.5);
  CHECK(lam.maxCoeff() <= 1.0);
  for (Eigen::Index j = 0; j < 3; ++j) {
    const std::vector<LD> z = ref_margins(s, j, y(j), 0.1, false);
    INFO("ALDRKL extreme logits sample " << j);
    CHECK(aldr.per_sample(s, y)(j) == Approx(double(ref_aldr_max(z, 1.0, 2.0).value)).epsilon(1e-12));
  }
  losskit::GradientCheckOptions opt;
  opt.relative_step = false;
  opt.step = 1e-4;
  opt.atol = 1e-9;  // values ~ 600: ε·600/h ≈ 1e-9 absolute noise in the differences
  const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return aldr(x, y); }, s, g, opt);
  INFO(res.report());
  CHECK(res.passed);
}

TEST_CASE("ALDRKL with one class or all-equal scores has lambda* = lambda0 and loss 0", "[ldr][aldr]") {
  ALDRKL<double> aldr;
  aldr.margin = 0;
  const Eigen::MatrixXd one = lktest::normal(1, 3), tied = Eigen::MatrixXd::Constant(5, 3, 2.5);
  Eigen::MatrixXd g;
  CHECK(aldr.value_and_gradient(one, Eigen::VectorXi::Zero(3), g) == 0.0);
  CHECK(g.isZero(0));
  CHECK((aldr.lambda_star(one, Eigen::VectorXi::Zero(3)).array() == 10.0).all());
  // z ≡ 0: KL ≡ 0 so T ≡ λ0; ψ = λ0·log 1 = 0; gradient 1/C − e_y.
  const Eigen::VectorXi y = lktest::labels(3, 5);
  CHECK(aldr.value_and_gradient(tied, y, g) == Approx(0.0).margin(1e-15));
  CHECK((aldr.lambda_star(tied, y).array() == 10.0).all());
  for (Eigen::Index j = 0; j < 3; ++j)
    for (Eigen::Index k = 0; k < 5; ++k) CHECK(g(k, j) == Approx(((k == y(j)) ? 0.2 - 1.0 : 0.2) / 3).margin(1e-15));
}

// ----------------------------------------------------------------- shared

TEST_CASE("LDR losses in float agree with double", "[ldr][float]") {
  for (Eigen::Index c : {Eigen::Index(10), Eigen::Index(1000)}) {
    const Eigen::MatrixXf sf = lktest::normal<float>(c, 40, 2.0);
    const Eigen::MatrixXd sd = sf.cast<double>();
    const Eigen::VectorXi y = lktest::labels(40, int(c));
    for (bool normalize : {false, true}) {
      LDRKL<float> lf;
      LDRKL<double> ld;
      lf.normalize_logits = ld.normalize_logits = normalize;
      ALDRKL<float> af;
      ALDRKL<double> ad;
      af.normalize_logits = ad.normalize_logits = normalize;
      Eigen::MatrixXf gf;
      Eigen::MatrixXd gd;
      INFO("C " << c << " normalize " << normalize);
      // Losses of both signs: the mean can cancel towards 0, so errors are
      // measured against the mean per-sample magnitude.
      const float vf = lf.value_and_gradient(sf, y, gf);
      const double vd = ld.value_and_gradient(sd, y, gd);
      CHECK(std::abs(vf - vd) <= 2e-6 * ld.per_sample(sd, y).cwiseAbs().mean());
      CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-6 * gd.cwiseAbs().maxCoeff());
      const float af_v = af.value_and_gradient(sf, y, gf);
      const double ad_v = ad.value_and_gradient(sd, y, gd);
      CHECK(std::abs(af_v - ad_v) <= 2e-6 * ad.per_sample(sd, y).cwiseAbs().mean());
      CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-5 * gd.cwiseAbs().maxCoeff());
      CHECK(lktest::max_rel_err(af.lambda_star(sf, y), ad.lambda_star(sd, y)) < 1e-5);
    }
  }
}

TEST_CASE("LDR losses accept expressions and write into gradient views", "[ldr][expressions]") {
  const Eigen::MatrixXd s = lktest::normal(5, 4);
  const Eigen::VectorXi y = lktest::labels(4, 5);
  ALDRKL<double> aldr;
  aldr.lambda0 = 1.0;
  Eigen::MatrixXd g_ref;
  const double ref = aldr.value_and_gradient(s, y, g_ref);
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajor rows = s.transpose();
  Eigen::Map<const RowMajor> m(rows.data(), 4, 5);
  Eigen::MatrixXd big = Eigen::MatrixXd::Zero(8, 8);
  CHECK(aldr.value_and_gradient(m.transpose(), y.array() + 0, big.block(1, 2, 5, 4)) == Approx(ref).epsilon(1e-15));
  CHECK(big.block(1, 2, 5, 4).isApprox(g_ref, 1e-15));
  CHECK(big.block(0, 0, 1, 8).isZero(0));
  LDRKL<double> ldr;
  Eigen::ArrayXXd ga;
  CHECK(ldr.value_and_gradient(s.array() * 1.0, y, ga) == Approx(ldr(s, y)).epsilon(1e-15));
  CHECK(ldr(2.0 * s - s, y) == Approx(ldr(s, y)).epsilon(1e-15));
}

TEST_CASE("LDR losses reject bad options, labels and shapes, writing nothing", "[ldr][errors]") {
  const Eigen::MatrixXd s = lktest::normal(4, 3);
  const Eigen::VectorXi y = lktest::labels(3, 4);
  Eigen::MatrixXd g = lktest::sentinel(4, 3);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (double bad : {0.0, -1.0, nan, inf}) {
    LDRKL<double> ldr;
    ldr.lambda = bad;
    CHECK_THROWS_WITH(ldr.value_and_gradient(s, y, g), lktest::Contains("LDRKL") && lktest::Contains("lambda"));
    ALDRKL<double> aldr;
    aldr.lambda0 = bad;
    CHECK_THROWS_WITH(aldr.value_and_gradient(s, y, g), lktest::Contains("ALDRKL") && lktest::Contains("lambda0"));
  }
  for (double bad : {1.0, 0.5, -2.0, nan, inf}) {
    ALDRKL<double> aldr;
    aldr.alpha = bad;
    CHECK_THROWS_AS(aldr.value_and_gradient(s, y, g), losskit::Error);
    CHECK_THROWS_WITH(aldr(s, y), lktest::Contains("alpha"));
  }
  for (double bad : {nan, inf}) {
    LDRKL<double> ldr;
    ldr.margin = bad;
    CHECK_THROWS_WITH(ldr.value_and_gradient(s, y, g), lktest::Contains("margin"));
    ALDRKL<double> aldr;
    aldr.margin = bad;
    CHECK_THROWS_WITH(aldr.lambda_star(s, y), lktest::Contains("margin"));
  }
  Eigen::VectorXi out_of_range = y;
  out_of_range(1) = 4;
  CHECK_THROWS_WITH(LDRKL<double>{}.value_and_gradient(s, out_of_range, g), lktest::Contains("labels") && lktest::Contains("4"));
  out_of_range(1) = -1;
  CHECK_THROWS_AS(ALDRKL<double>{}.value_and_gradient(s, out_of_range, g), losskit::Error);
  CHECK_THROWS_AS(ALDRKL<double>{}.per_sample(s, Eigen::VectorXi::Zero(2)), losskit::Error);
  CHECK_THROWS_AS(LDRKL<double>{}(Eigen::MatrixXd(0, 3), Eigen::VectorXi::Zero(3)), losskit::Error);
  CHECK(lktest::untouched(g, 4, 3));
  Eigen::MatrixXd owner = lktest::sentinel(6, 6);
  CHECK_THROWS_AS(LDRKL<double>{}.value_and_gradient(s, y, owner.block(0, 0, 4, 2)), losskit::Error);
  CHECK_THROWS_AS(ALDRKL<double>{}.value_and_gradient(s, y, owner.block(0, 0, 3, 3)), losskit::Error);
  CHECK(lktest::untouched(owner, 6, 6));
}

TEST_CASE("LDR losses allocate nothing with a presized gradient", "[ldr][alloc]") {
  const Eigen::MatrixXf s = lktest::normal<float>(300, 20, 2.0);
  const Eigen::VectorXi y = lktest::labels(20, 300);
  Eigen::MatrixXf g(300, 20);
  for (bool normalize : {false, true}) {
    LDRKL<float> ldr;
    ALDRKL<float> aldr;
    ldr.normalize_logits = aldr.normalize_logits = normalize;
    lktest::AllocationCounter counter;
    const float v1 = ldr.value_and_gradient(s, y, g);
    const float v2 = aldr.value_and_gradient(s, y, g);
    CHECK(counter.count() == 0);
    CHECK(std::isfinite(v1));
    CHECK(std::isfinite(v2));
  }
}

TEST_CASE("LDR losses: non-finite logits give the documented results without throwing", "[ldr][nonfinite]") {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  Eigen::MatrixXd s = Eigen::MatrixXd::Zero(4, 5);
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(5);
  s(2, 0) = nan;   // NaN anywhere: NaN
  s(1, 1) = inf;   // +inf on a non-target class: NaN
  s(0, 2) = -inf;  // -inf on the target: NaN
  s(3, 3) = -inf;  // -inf on a non-target class: that class drops out
  s(0, 4) = inf;   // +inf on the target: the limit −λ·log C
  LDRKL<double> ldr;
  ALDRKL<double> aldr;
  Eigen::MatrixXd g;
  CHECK_NOTHROW(ldr.value_and_gradient(s, y, g));
  const Eigen::VectorXd per = ldr.per_sample(s, y);
  CHECK(std::isnan(per(0)));
  CHECK(std::isnan(per(1)));
  CHECK(std::isnan(per(2)));
  // Column 3: z = (0, 0.1, 0.1, −inf): log((1 + 2e^0.1)/4).
  CHECK(per(3) == Approx(std::log((1 + 2 * std::exp(0.1)) / 4)).epsilon(1e-14));
  CHECK(per(4) == Approx(-std::log(4.0)).epsilon(1e-15));
  CHECK(g.col(3).allFinite());
  CHECK(g.col(4).cwiseAbs().maxCoeff() <= 1e-300);  // exp(−inf) is a denormal in Eigen's vectorised exp
  CHECK_NOTHROW(aldr.value_and_gradient(s, y, g));
  const Eigen::VectorXd aper = aldr.per_sample(s, y);
  CHECK(std::isnan(aper(0)));
  CHECK(std::isnan(aper(1)));
  CHECK(std::isnan(aper(2)));
  CHECK(std::isfinite(aper(3)));
  CHECK(std::isfinite(aper(4)));
}

// Found by the fuzzer (tests/fuzz): with a tiny λ the rounding error of
// s_k − shift (≈ ε·|shift| > 0 at the arg-max class) was multiplied by 1/λ and
// exp overflowed: inf loss and NaN gradient where the hinge limit is finite.
// Reference: λ → 0⁺ gives max_k z_k (the Crammer–Singer hinge); here
// z = (c + 0.5 + 30, c − 30 + 30, 0) with c = −0.99311695434105063: the value
// is λ·log((1/C)Σ_k exp(z_k/λ)) = max z − λ·log 3 + O(λ·e^{−29/λ}), the
// gradient e_0 − e_y; ALDR-KL's λ* lies in [λ0/2, λ0], so its value lies in
// [max z − λ0·log 3, max z].
TEST_CASE("LDR losses with a tiny lambda stay finite (hinge limit)", "[ldr][extreme]") {
  Eigen::MatrixXd x(3, 1);
  x << 0.5, -30, -30;
  const Eigen::VectorXi y = Eigen::VectorXi::Constant(1, 2);
  const double c = -0.99311695434105063, hinge = 0.5 + 30 + c;
  for (double lambda : {1e-30, 1e-10, 1e-5}) {
    CAPTURE(lambda);
    LDRKL<double> l;
    l.lambda = lambda;
    l.margin = c;
    Eigen::MatrixXd g;
    const double expected = hinge - lambda * std::log(3.0);
    CHECK(l.value_and_gradient(x, y, g) == Approx(expected).epsilon(1e-12));
    CHECK(l(x, y) == Approx(expected).epsilon(1e-12));
    CHECK(g(0, 0) == Approx(1).epsilon(1e-12));
    CHECK(g(2, 0) == Approx(-1).epsilon(1e-12));
    CHECK(std::abs(g(1, 0)) < 1e-300);
    LDRKL<float> lf;
    lf.lambda = float(lambda);
    lf.margin = float(c);
    Eigen::MatrixXf gf;
    CHECK(lf.value_and_gradient(x.cast<float>(), y, gf) == Approx(expected).epsilon(1e-5));
    CHECK(gf.allFinite());
    ALDRKL<double> a;
    a.lambda0 = lambda;
    a.margin = c;
    const double va = a.value_and_gradient(x, y, g);
    CHECK(va <= hinge * (1 + 1e-15));
    CHECK(va >= hinge - lambda * std::log(3.0) - 1e-13);
    CHECK(g.allFinite());
  }
}

TEST_CASE("LDR losses with sample weights are the s-weighted mean (or sum) of per_sample", "[ldr][aldr][weights]") {
  const Eigen::MatrixXd s = lktest::normal(7, 6, 3.0);
  const Eigen::VectorXi y = lktest::labels(6, 7);
  for (bool normalize : {false, true})
    for (double lambda : {0.3, 1.0, 10.0}) {
      LDRKL<double> ldr;
      ALDRKL<double> aldr;
      ldr.lambda = aldr.lambda0 = lambda;
      ldr.normalize_logits = aldr.normalize_logits = normalize;
      const std::string what = " lambda " + std::to_string(lambda) + (normalize ? ", normalised" : "");
      lktest::check_sample_weights(ldr, s, y, "LDRKL" + what);
      lktest::check_sample_weights(aldr, s, y, "ALDRKL" + what);
    }
}
