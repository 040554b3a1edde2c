// LDR-KL and ALDR-KL (Zhu, Ying, Yang, ICML 2023): limit identities, values
// against long-double brute force, ALDR-KL's λ* (fixed point, interval,
// global maximum, including a g with two local maxima), gradients by finite
// differences, float vs double, errors, allocations, non-finite inputs.
#include <losskit/gradcheck.hpp>
#include <losskit/ldr.hpp>

#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sample_weight_checks.hpp"
#include "test_util.hpp"

using losskit::ALDRKL;
using losskit::LDRKL;
using losskit::LogitScaling;
using losskit::Reduction;

namespace {

using LD = long double;

constexpr LogitScaling kScalings[] = {LogitScaling::None, LogitScaling::Softplus, LogitScaling::MeanAbs};

// Scores of one column: raw logits, softplus(s)/mean softplus(s) or
// s/mean |s| (the official code's two options, loss.py), computed
// independently in long double; an all-zero column under MeanAbs is f ≡ 0
// (losskit's documented convention for the code's 0/0).
std::vector<LD> ref_scores(const Eigen::MatrixXd& s, Eigen::Index j, LogitScaling scaling) {
  std::vector<LD> f(static_cast<std::size_t>(s.rows()));
  LD mean = 0;
  for (Eigen::Index k = 0; k < s.rows(); ++k) {
    const LD x = s(k, j);
    f[std::size_t(k)] = scaling == LogitScaling::Softplus ? std::log1p(std::exp(-std::fabs(x))) + std::max(x, LD(0)) : x;
    mean += std::fabs(f[std::size_t(k)]) / LD(s.rows());
  }
  if (scaling != LogitScaling::None)
    for (LD& v : f) v = mean > 0 ? v / mean : LD(0);
  return f;
}

std::string name_of(LogitScaling scaling) {
  std::ostringstream os;
  os << scaling;
  return os.str();
}

// z_k = c·[k ≠ y] + f_k − f_y.
std::vector<LD> ref_margins(const Eigen::MatrixXd& s, Eigen::Index j, int y, double margin,
                            LogitScaling scaling = LogitScaling::None) {
  std::vector<LD> f = ref_scores(s, j, scaling), z(f.size());
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

TEST_CASE("LDRKL matches a long-double brute force for several lambda, margins, logit scalings", "[ldr]") {
  const Eigen::MatrixXd s = lktest::normal(11, 6, 3.0);
  const Eigen::VectorXi y = lktest::labels(6, 11);
  for (LogitScaling scaling : kScalings)
    for (double lambda : {0.05, 0.3, 1.0, 10.0})
      for (double margin : {0.0, 0.1, 2.0}) {
        LDRKL<double> ldr;
        ldr.lambda = lambda;
        ldr.margin = margin;
        ldr.logit_scaling = scaling;
        const Eigen::VectorXd per = ldr.per_sample(s, y);
        for (Eigen::Index j = 0; j < 6; ++j) {
          const LD ref = ref_lambda_lse(ref_margins(s, j, y(j), margin, scaling), lambda);
          INFO("LDRKL lambda " << lambda << " margin " << margin << " scaling " << scaling << " sample " << j);
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
    const std::vector<LD> z = ref_margins(s, j, y(j), margin);
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
  for (LogitScaling scaling : kScalings)
    for (double lambda : {0.2, 1.0, 7.0})
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        const Eigen::MatrixXd s = lktest::normal(6, 5, 2.0);
        LDRKL<double> ldr;
        ldr.lambda = lambda;
        ldr.logit_scaling = scaling;
        ldr.reduction = r;
        Eigen::MatrixXd g;
        const double v = ldr.value_and_gradient(s, y, g);
        CHECK(v == Approx(ldr(s, y)).epsilon(1e-14));
        const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return ldr(x, y); }, s, g);
        INFO("LDRKL lambda " << lambda << " scaling " << scaling << " reduction " << r << ": " << res.report());
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
  for (LogitScaling scaling : kScalings)
    for (double lambda0 : {0.1, 1.0, 10.0})
      for (double alpha : {1.2, 2.0, 5.0}) {
        ALDRKL<double> aldr;
        aldr.lambda0 = lambda0;
        aldr.alpha = alpha;
        aldr.logit_scaling = scaling;
        const Eigen::VectorXd lam = aldr.lambda_star(s, y), per = aldr.per_sample(s, y);
        const double lo = lambda0 * (1 - 1 / alpha);
        for (Eigen::Index j = 0; j < 6; ++j) {
          const std::vector<LD> z = ref_margins(s, j, y(j), 0.1, scaling);
          const RefMax ref = ref_aldr_max(z, lambda0, alpha);
          INFO("ALDRKL lambda0 " << lambda0 << " alpha " << alpha << " scaling " << scaling << " sample " << j
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
    const std::vector<LD> z = ref_margins(s, 0, 0, 0.0);
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
  for (LogitScaling scaling : kScalings)
    for (double lambda0 : {0.3, 1.0, 10.0})
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        const Eigen::MatrixXd s = lktest::normal(7, 4, 3.0);
        ALDRKL<double> aldr;
        aldr.lambda0 = lambda0;
        aldr.logit_scaling = scaling;
        aldr.reduction = r;
        Eigen::MatrixXd g;
        const double v = aldr.value_and_gradient(s, y, g);
        CHECK(v == Approx(aldr(s, y)).epsilon(1e-14));
        const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return aldr(x, y); }, s, g);
        INFO("ALDRKL lambda0 " << lambda0 << " scaling " << scaling << " reduction " << r << ": " << res.report());
        CHECK(res.passed);
        // The envelope gradient is LDR-KL's gradient at λ = λ*.
        const Eigen::VectorXd lam = aldr.lambda_star(s, y);
        for (Eigen::Index j = 0; j < 4; ++j) {
          LDRKL<double> ldr;
          ldr.lambda = lam(j);
          ldr.logit_scaling = scaling;
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
    const std::vector<LD> z = ref_margins(s, j, y(j), 0.1);
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
    for (LogitScaling scaling : kScalings) {
      LDRKL<float> lf;
      LDRKL<double> ld;
      lf.logit_scaling = ld.logit_scaling = scaling;
      ALDRKL<float> af;
      ALDRKL<double> ad;
      af.logit_scaling = ad.logit_scaling = scaling;
      Eigen::MatrixXf gf;
      Eigen::MatrixXd gd;
      INFO("C " << c << " scaling " << scaling);
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

// Expression inputs and gradient views, for every functor: tests/contract_checks.hpp.
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
  for (LogitScaling scaling : kScalings) {
    LDRKL<float> ldr;
    ALDRKL<float> aldr;
    ldr.logit_scaling = aldr.logit_scaling = scaling;
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
  for (LogitScaling scaling : kScalings)
    for (double lambda : {0.3, 1.0, 10.0}) {
      LDRKL<double> ldr;
      ALDRKL<double> aldr;
      ldr.lambda = aldr.lambda0 = lambda;
      ldr.logit_scaling = aldr.logit_scaling = scaling;
      const std::string what = " lambda " + std::to_string(lambda) + ", scaling " + name_of(scaling);
      lktest::check_sample_weights(ldr, s, y, "LDRKL" + what);
      lktest::check_sample_weights(aldr, s, y, "ALDRKL" + what);
    }
}

// ------------------------------------------------------- MeanAbs scaling

TEST_CASE("MeanAbs scaling is scale invariant and equals Softplus scaling on softplus(s)", "[ldr][scaling]") {
  // f = s/mean|s| is unchanged by s -> k·s (k > 0); on positive logits
  // t = softplus(s), MeanAbs(t) gives exactly the scores Softplus(s) gives.
  const Eigen::MatrixXd s = lktest::normal(9, 5, 2.0);
  const Eigen::VectorXi y = lktest::labels(5, 9);
  const Eigen::MatrixXd t = s.unaryExpr([](double v) { return losskit::detail::softplus(v); });
  for (double lambda : {0.2, 1.0, 10.0}) {
    LDRKL<double> mean_abs, soft;
    mean_abs.lambda = soft.lambda = lambda;
    mean_abs.logit_scaling = LogitScaling::MeanAbs;
    soft.logit_scaling = LogitScaling::Softplus;
    INFO("LDRKL lambda " << lambda);
    CHECK(lktest::max_rel_err(mean_abs.per_sample(s, y), mean_abs.per_sample(1e-3 * s, y), 1e-15) < 1e-12);
    CHECK(lktest::max_rel_err(mean_abs.per_sample(s, y), mean_abs.per_sample(1e5 * s, y), 1e-15) < 1e-12);
    CHECK(lktest::max_rel_err(mean_abs.per_sample(t, y), soft.per_sample(s, y), 1e-15) < 1e-12);
    ALDRKL<double> a_abs, a_soft;
    a_abs.lambda0 = a_soft.lambda0 = lambda;
    a_abs.logit_scaling = LogitScaling::MeanAbs;
    a_soft.logit_scaling = LogitScaling::Softplus;
    CHECK(lktest::max_rel_err(a_abs.per_sample(t, y), a_soft.per_sample(s, y), 1e-15) < 1e-12);
    CHECK(lktest::max_rel_err(a_abs.per_sample(s, y), a_abs.per_sample(64.0 * s, y), 1e-15) < 1e-12);
  }
}

TEST_CASE("MeanAbs scaling: zero, denormal, mixed-sign and non-finite columns", "[ldr][scaling][nonfinite]") {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  Eigen::MatrixXd s = lktest::normal(4, 5);
  s.col(0).setZero();                                   // m = 0: f ≡ 0 by convention
  s.col(2) << 1.5, -0.25, 2.0, 0.0;                     // a zero entry: sign(0) = 0
  s.col(1) = s.col(2) * std::ldexp(1.0, -1068);         // denormal (exactly): the same scores as column 2
  s(1, 3) = inf;
  s(2, 4) = nan;
  const Eigen::VectorXi y = Eigen::VectorXi::Constant(5, 1);
  LDRKL<double> ldr;
  ldr.lambda = 0.5;
  ldr.logit_scaling = LogitScaling::MeanAbs;
  Eigen::MatrixXd g;
  ldr.value_and_gradient(s, y, g);
  const Eigen::VectorXd per = ldr.per_sample(s, y);
  // z = c·[k ≠ y]: λ·log((1 + 3·e^{c/λ})/4).
  CHECK(per(0) == Approx(0.5 * std::log((1 + 3 * std::exp(0.1 / 0.5)) / 4)).epsilon(1e-14));
  CHECK(g.col(0).isZero(0));
  CHECK(per(1) == Approx(per(2)).epsilon(1e-14));
  CHECK(g.col(2).allFinite());
  CHECK(std::isnan(per(3)));
  CHECK(std::isnan(per(4)));
  // The zero entry is differentiable from both sides only through the mean's
  // |s|; its one-sided derivatives differ, so check the other entries by
  // central differences in the column where no entry is 0 (column 2 without the zero).
  Eigen::MatrixXd c2 = s.col(2);
  c2(3, 0) = 0.7;
  const Eigen::VectorXi y1 = Eigen::VectorXi::Constant(1, 1);
  Eigen::MatrixXd g2;
  ldr.value_and_gradient(c2, y1, g2);
  const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return ldr(x, y1); }, c2, g2);
  INFO(res.report());
  CHECK(res.passed);
  ALDRKL<double> aldr;
  aldr.logit_scaling = LogitScaling::MeanAbs;
  const Eigen::VectorXd aper = aldr.per_sample(s, y);
  CHECK(std::isfinite(aper(0)));
  CHECK(aper(1) == Approx(aper(2)).epsilon(1e-14));
  CHECK(std::isnan(aper(3)));
  CHECK(std::isnan(aper(4)));
}

// -------------------------------------------- against the official code

namespace {

// Reference numbers: tests/torch/ldr_official_references.py, which runs the
// authors' loss.py (Optimization-AI/ICML2023_LDR @
// 732fc85dbd8b30b6dd16cd2dfb79d6c325558d71) unchanged, on a CPU in double:
// torch.set_default_dtype(torch.float64), torch.Tensor.cuda replaced by the
// identity, and ALDRLoss_V1's float32 self.Lambda replaced by the same values
// as a float64 tensor (see the script's docstring). C = 5, N = 4, 6
// examples, threshold (margin) 0.1, alpha 2; MeanAbs = softplus=False with
// Lambda 1, Softplus = softplus=True with Lambda 0.5. Calls use the ids
// {0,1,2,3}, {4,5,0,1}, {2,5,2,3} (example 2 twice), {1,0,4,2} and labels
// (call + 2j) mod 5.
struct OfficialCall {
  double loss;
  double lambdas[6];
  double grad[20];
};

// meanabs: per call {loss}, {lambda of the 6 examples after the call}, {gradient, N x C row by row}
const OfficialCall kOfficial_meanabs[4] = {
    {0.67385539905372704,
     {0.93472798623659781, 0.95969732858150003, 0.87100495842083736, 0.96895396765857167, 1, 1},
     {-0.096042544269897667, -0.024094162983671584, 0.011781981961526015, -0.030911293716243661, 0.0065351733564465025, 0.017946912358199271, 0.021094707548570055, -0.14177961787468463, 0.025094822662080324, 0.048146138861015077, 0.03210417714991326, 0.010777488264082563, 0.03147276702404618, 0.0088549475460298413, -0.054586833121434877, 0.044256325472724449, -0.08572546549295805, 0.017014310738499246, 0.015701920255249864, 0.029445704990345593}},
    {1.1123108388535377,
     {0.86823883457865392, 0.84342571393782995, 0.87100495842083736, 0.96895396765857167, 0.89937393279796107, 0.81808497187865803},
     {0.066996756050922229, -0.31117894010108127, 0.10084377364071104, 0.059582782736040271, 0.043109066301258166, 0.040829044166763646, 0.045581878012201205, 0.034773558412264059, -0.058578209437482175, 0.035085146208206991, -0.081295736915924219, -0.013678920508979384, 0.067060713688977175, 0.020441230829340157, 0.064968880568681206, 0.065834492881839554, 0.040833251797644271, -0.096702989482807589, 0.057994134891406847, -0.011716086515232822}},
    {0.33242044250073099,
     {0.86823883457865392, 0.84342571393782995, 0.84687701319179931, 0.82697494329227395, 0.89937393279796107, 0.89386737997044619},
     {0.049225005547973301, 0.014167396860526149, -0.078655141406585499, 0.042556860850071127, 0.012245304412901857, 0.0092393792163681064, 0.0021439200130778423, 0.051518964028894748, 0.021436054679467791, -0.084006099519634739, 0.071500439720778214, -0.10093690735738495, 0.0062348714165753535, 0.0086542620741412585, 0.018683457407557065, 0.023073636961032942, 0.046005540281056592, 0.021891565764473264, -0.057950607110775196, 0.022850441722340364}},
    {0.95818352137699092,
     {0.80024096533475297, 0.95508024888794496, 0.84146808421293917, 0.82697494329227395, 0.89819203935746283, 0.89386737997044619},
     {0.086129762656702274, 0.080294374303861688, 0.087033408321125355, -0.10567187412042371, 0.063309676134505055, -0.057062108039296275, 0.04260226809010461, 0.0434415461537025, 0.038287913438690306, 0.03771079846552676, 0.049789945021409987, -0.027362283702330788, -0.048752716375580402, -0.0055895268739048487, -0.012590843194468258, -0.010368379112288197, -0.0057314881148965461, 0.024624834978551353, 0.048160594514559618, -0.044757930432447246}},
};
// softplus: per call {loss}, {lambda of the 6 examples after the call}, {gradient, N x C row by row}
const OfficialCall kOfficial_softplus[4] = {
    {1.3297898852199566,
     {0.29219182820423667, 0.39084508515748057, 0.25808498979453465, 0.26986973847368823, 0.5, 0.5},
     {-0.002272486927209274, 0.00016401391545874547, 0.0032518271459011359, 4.0108512152953994e-05, 5.9113877303252554e-05, 0.04872001483541015, -0.0012493263759258799, -0.15676226943129296, 0.042780685161956204, -0.0044808662350167647, -0.035774422631285746, -0.025940311203888386, 0.23620547167152156, -0.034754879096769345, -0.2562579159507663, -0.09968070404928718, -0.035855743184186675, -0.016838701305293011, -0.10169450974695678, 0.14322416923004497}},
    {0.85436729187878335,
     {0.42049628832109143, 0.32911354316077729, 0.25808498979453465, 0.26986973847368823, 0.32558100521556832, 0.36607789452598732},
     {0.11474524675838489, -0.071008073707083938, -0.015803848551128267, -0.0026722028627409883, -0.10204231400003366, 0.022173427172474416, 0.0013824996846369148, 0.00067512732195899156, -0.032944995004088581, 0.019499291056973952, -0.14295465411546485, 0.045677439105892829, 7.6627595450859379e-05, 0.085982342680526139, 0.0023157320525276004, 0.082766008977532515, -0.0025539251050474285, -0.032055748086577601, -0.038283942750261243, -0.067048858017178303}},
    {0.90657004558778365,
     {0.42049628832109143, 0.32911354316077729, 0.30367489269089454, 0.30652755929928166, 0.32558100521556832, 0.35997524597755626},
     {0.066658916493473372, -0.0023242259834668944, -0.0061216942793528347, -0.0076977258678628821, -0.075612261885324092, 0.033627628019199003, 0.003070274304938044, 0.012394636885036106, 0.0017329046655241668, -0.034984299376249743, -0.022799176818117314, -0.1076760240873883, 0.089047770318811698, -0.024242120671943864, -0.026128813799296005, 0.11740945191873417, -0.029252591688261092, -0.026262397063903153, -0.14567035509596615, -0.0076088395109665773}},
    {1.0022758873365349,
     {0.36840775815772242, 0.27063774110052063, 0.36811192719154795, 0.30652755929928166, 0.37380202060436762, 0.35997524597755626},
     {-0.0035905245114568152, 0.098388480773463238, -0.072877224703647436, -0.13264610463726842, -0.011342931170469176, -0.10902509176667136, 0.0003665991015831141, 0.11121271604552416, 0.00081069707999460229, 0.00068592013005493017, 0.029661352900851128, -0.0028830824608328449, -0.12045725635369191, -0.028667445692289552, 0.052501182372364071, -0.065108379227289695, 0.0047569179119879594, -0.0064994883246496408, 0.08058002709175531, -0.036863668481216118}},
};
// LDRLoss_V1, Lambda = 0.5
const double kOfficialLdr_0_5_loss = 1.4943649954267229;
const double kOfficialLdr_0_5_grad[20] = {-0.015848855176017512, 0.086492546650870014, -0.036344611537502285, -0.096848805831976664, -0.053503881583946249, -0.00732662484815195, -0.033530219113959571, -0.14139726925418397, 0.11653495035121314, -0.084722906834923187, -0.0018871903950791263, 0.012412821952909745, -0.00083671583694803261, 0.24837324410444053, -0.27085650055552923, 0.083187853090716191, -0.077071045066587185, -0.055301534626469417, -0.0098402705540144124, -0.050401950745702868};
// LDRLoss_V1, Lambda = 10.0
const double kOfficialLdr_10_0_loss = 0.7159807477156539;
const double kOfficialLdr_10_0_grad[20] = {-0.015959694481315526, -0.00082378726143773147, 0.0087157744944411537, -0.007099097974486655, -0.00095568803158077207, -0.00019423726647648768, 0.0027828859412753998, -0.020635814340058681, -0.00012037661296076498, 0.002925470069681965, 0.0034890366668260562, 0.056051159778011783, 0.013396545959481197, 0.053645848555988342, -0.12332190341134483, -0.00062425945535506415, -0.02789892039483733, -0.00014929504781887099, 0.0029233562888973698, 0.0097255414704631449};

// The script's Lcg: an integer LCG mapped to multiples of 1/32 in [-4, 4),
// exact in double; drawn sample by sample, class by class (N×C there).
struct OfficialLcg {
  long long s;
  double next() {
    s = (s * 1103515245LL + 12345LL) % (1LL << 31);
    return double((s >> 8) % 256) / 32.0 - 4.0;
  }
  Eigen::MatrixXd logits(Eigen::Index n, Eigen::Index c) {
    Eigen::MatrixXd x(c, n);
    for (Eigen::Index j = 0; j < n; ++j)
      for (Eigen::Index k = 0; k < c; ++k) x(k, j) = next();
    return x;
  }
};

const int kOfficialIds[4][4] = {{0, 1, 2, 3}, {4, 5, 0, 1}, {2, 5, 2, 3}, {1, 0, 4, 2}};

Eigen::VectorXi official_labels(int call) {
  Eigen::VectorXi y(4);
  for (int j = 0; j < 4; ++j) y(j) = (call + 2 * j) % 5;
  return y;
}

// Entry (k, j) of a C×N gradient from the code's N×C row-by-row list.
Eigen::MatrixXd official_grad(const double* g) { return Eigen::Map<const Eigen::MatrixXd>(g, 5, 4); }

void check_official_sequence(const OfficialCall* calls, LogitScaling scaling, double lambda0, long long seed) {
  ALDRKL<double> aldr;
  aldr.lambda0 = lambda0;
  aldr.alpha = 2.0;
  aldr.margin = 0.1;
  aldr.logit_scaling = scaling;
  losskit::ALDRKLState<double> state(6, lambda0);
  OfficialLcg lcg{seed};
  for (int call = 0; call < 4; ++call) {
    const Eigen::MatrixXd x = lcg.logits(4, 5);
    const Eigen::VectorXi ids = Eigen::Map<const Eigen::VectorXi>(kOfficialIds[call], 4);
    Eigen::MatrixXd g;
    const double v = aldr.value_and_gradient(x, official_labels(call), ids, state, g);
    INFO("official ALDRLoss_V1 (" << scaling << "), call " << call << ": loss " << v << " vs " << calls[call].loss);
    CHECK(v == Approx(calls[call].loss).epsilon(1e-12));
    const Eigen::VectorXd expected = Eigen::Map<const Eigen::VectorXd>(calls[call].lambdas, 6);
    CHECK(lktest::max_rel_err(state.lambdas(), expected) < 1e-12);
    const Eigen::MatrixXd eg = official_grad(calls[call].grad);
    CHECK((g - eg).cwiseAbs().maxCoeff() <= 1e-12 * eg.cwiseAbs().maxCoeff());
  }
}

}  // namespace

TEST_CASE("Stateful ALDRKL with MeanAbs scaling reproduces the official ALDRLoss_V1 (softplus=False)",
          "[ldr][aldr][state][official]") {
  check_official_sequence(kOfficial_meanabs, LogitScaling::MeanAbs, 1.0, 1);
}

TEST_CASE("Stateful ALDRKL with Softplus scaling reproduces the official ALDRLoss_V1 (softplus=True)",
          "[ldr][aldr][state][official]") {
  check_official_sequence(kOfficial_softplus, LogitScaling::Softplus, 0.5, 2);
}

TEST_CASE("LDRKL with Softplus scaling reproduces the official LDRLoss_V1", "[ldr][official]") {
  OfficialLcg lcg{3};
  const double* grads[2] = {kOfficialLdr_0_5_grad, kOfficialLdr_10_0_grad};
  const double losses[2] = {kOfficialLdr_0_5_loss, kOfficialLdr_10_0_loss};
  const double lambdas[2] = {0.5, 10.0};
  for (int i = 0; i < 2; ++i) {
    const Eigen::MatrixXd x = lcg.logits(4, 5);
    LDRKL<double> ldr;
    ldr.lambda = lambdas[i];
    ldr.logit_scaling = LogitScaling::Softplus;
    Eigen::MatrixXd g;
    INFO("official LDRLoss_V1, Lambda " << lambdas[i]);
    CHECK(ldr.value_and_gradient(x, official_labels(0), g) == Approx(losses[i]).epsilon(1e-12));
    const Eigen::MatrixXd eg = official_grad(grads[i]);
    CHECK((g - eg).cwiseAbs().maxCoeff() <= 1e-12 * eg.cwiseAbs().maxCoeff());
  }
}

// ------------------------------------------------------ stateful ALDR-KL

namespace {

// The official step in long double: q = (softmax(f/λ_old) + δ)/(1 + Cδ) of
// the scores without the margin, λ_new = λ0·(1 − KL(q, u)/(α·log C)).
LD ref_step(const Eigen::MatrixXd& s, Eigen::Index j, int y, LogitScaling scaling, LD lambda_old, LD lambda0, LD alpha,
            LD delta) {
  const std::vector<LD> z = ref_margins(s, j, y, 0.0, scaling);
  const LD m = *std::max_element(z.begin(), z.end()), c = LD(z.size());
  LD sum = 0, kl = 0;
  for (LD v : z) sum += std::exp((v - m) / lambda_old);
  for (LD v : z) {
    const LD q = (std::exp((v - m) / lambda_old) / sum + delta) / (1 + c * delta);
    if (q > 0) kl += q * std::log(c * q);
  }
  return lambda0 * (1 - kl / (alpha * std::log(c)));
}

// The code's loss of one sample at a fixed λ, in long double.
LD ref_state_loss(const Eigen::MatrixXd& s, Eigen::Index j, int y, LogitScaling scaling, LD lambda, LD lambda0,
                  LD alpha, LD margin) {
  return ref_aldr_objective(ref_margins(s, j, y, double(margin), scaling), lambda, lambda0, alpha);
}

}  // namespace

TEST_CASE("Stateful ALDRKL: one step per call from the stored lambda, loss at the new lambda", "[ldr][aldr][state]") {
  const Eigen::VectorXi y = lktest::labels(5, 8);
  for (LogitScaling scaling : kScalings)
    for (double delta : {1e-5, 0.0, 0.1}) {
      ALDRKL<double> aldr;
      aldr.lambda0 = 2.0;
      aldr.alpha = 1.5;
      aldr.margin = 0.3;
      aldr.logit_scaling = scaling;
      aldr.kl_smoothing = delta;
      losskit::ALDRKLState<double> state(7, 2.0);
      Eigen::VectorXi ids(5);
      ids << 6, 0, 3, 1, 4;
      for (int call = 0; call < 3; ++call) {
        const Eigen::MatrixXd s = lktest::normal(8, 5, 2.0);
        const Eigen::VectorXd before = state.lambdas();
        Eigen::MatrixXd g;
        const double v = aldr.value_and_gradient(s, y, ids, state, g);
        LD total = 0;
        for (Eigen::Index j = 0; j < 5; ++j) {
          const LD lam = ref_step(s, j, y(j), scaling, before(ids(j)), 2.0, 1.5, delta);
          INFO("scaling " << scaling << " delta " << delta << " call " << call << " sample " << j);
          CHECK(state.lambdas()(ids(j)) == Approx(double(lam)).epsilon(1e-13));
          CHECK(lam > 2.0 * (1 - 1 / 1.5));
          total += ref_state_loss(s, j, y(j), scaling, state.lambdas()(ids(j)), 2.0, 1.5, 0.3);
        }
        CHECK(state.lambdas()(2) == 2.0);  // never visited
        CHECK(state.lambdas()(5) == 2.0);
        CHECK(v == Approx(double(total / 5)).epsilon(1e-12));
        CHECK(aldr(s, y) != v);  // the stateless call is the global solver, not this
        ids = ids.reverse().eval();
      }
    }
}

TEST_CASE("Stateful ALDRKL with kl_smoothing 0 takes the paper's fixed-point map T on margin-free scores",
          "[ldr][aldr][state]") {
  const Eigen::MatrixXd s = lktest::normal(6, 3, 2.0);
  const Eigen::VectorXi y = lktest::labels(3, 6), ids = Eigen::VectorXi::LinSpaced(3, 0, 2);
  ALDRKL<double> aldr;
  aldr.lambda0 = 1.0;
  aldr.kl_smoothing = 0;
  losskit::ALDRKLState<double> state(3, 1.0);
  aldr(s, y, ids, state);
  for (Eigen::Index j = 0; j < 3; ++j)
    CHECK(state.lambdas()(j) ==
          Approx(double(ref_fixed_point_map(ref_margins(s, j, y(j), 0.0), 1.0, 1.0, 2.0))).epsilon(1e-13));
}

TEST_CASE("Stateful ALDRKL gradient is that of the code's loss at the stored lambda (finite differences)",
          "[ldr][aldr][state][gradient]") {
  const Eigen::VectorXi y = lktest::labels(4, 6), ids = (Eigen::VectorXi(4) << 2, 0, 2, 1).finished();
  for (LogitScaling scaling : kScalings)
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      ALDRKL<double> aldr;
      aldr.lambda0 = 1.0;
      aldr.logit_scaling = scaling;
      aldr.reduction = r;
      losskit::ALDRKLState<double> state(3, 1.0);
      Eigen::MatrixXd g;
      aldr(lktest::normal(6, 4, 2.0), y, ids, state);  // a first call moves λ off λ0
      const Eigen::MatrixXd s = lktest::normal(6, 4, 2.0);
      const double v = aldr.value_and_gradient(s, y, ids, state, g);
      // λ held fixed at what the call stored: LDR-KL at each sample's λ plus the constant penalty.
      const Eigen::VectorXd lam = state.lambdas();
      const auto fixed = [&](const Eigen::MatrixXd& x) {
        double total = 0;
        for (Eigen::Index j = 0; j < 4; ++j) {
          LDRKL<double> ldr;
          ldr.lambda = lam(ids(j));
          ldr.logit_scaling = scaling;
          const double a = 2.0 * std::log(6.0);
          total += ldr.per_sample(x.col(j), y.segment(j, 1))(0) - a / 2 * (lam(ids(j)) - 1) * (lam(ids(j)) - 1);
        }
        return r == Reduction::Mean ? total / 4 : total;
      };
      INFO("scaling " << scaling << " reduction " << r);
      CHECK(v == Approx(fixed(s)).epsilon(1e-13));
      const auto res = losskit::check_gradient(fixed, s, g);
      INFO(res.report());
      CHECK(res.passed);
    }
}

TEST_CASE("Stateful ALDRKL: a duplicated id keeps the last sample's step, and both samples use it",
          "[ldr][aldr][state]") {
  // As the official code on PyTorch's CPU: self.Lambda[ids] = lambdas writes in
  // order (last wins) and self.Lambda[ids] then reads that value for both.
  const Eigen::MatrixXd s = lktest::normal(5, 3, 2.0);
  const Eigen::VectorXi y = lktest::labels(3, 5), ids = (Eigen::VectorXi(3) << 4, 1, 4).finished();
  ALDRKL<double> aldr;
  aldr.lambda0 = 1.0;
  aldr.logit_scaling = LogitScaling::MeanAbs;
  losskit::ALDRKLState<double> state(5, 1.0);
  const double v = aldr(s, y, ids, state);
  const LD first = ref_step(s, 0, y(0), LogitScaling::MeanAbs, 1, 1, 2, 1e-5);
  const LD last = ref_step(s, 2, y(2), LogitScaling::MeanAbs, 1, 1, 2, 1e-5);
  REQUIRE(std::fabs(double(first - last)) > 1e-3);  // the choice is visible
  CHECK(state.lambdas()(4) == Approx(double(last)).epsilon(1e-13));
  LD total = 0;
  for (Eigen::Index j = 0; j < 3; ++j)
    total += ref_state_loss(s, j, y(j), LogitScaling::MeanAbs, j == 1 ? state.lambdas()(1) : double(last), 1, 2, 0.1);
  CHECK(v == Approx(double(total / 3)).epsilon(1e-12));
}

TEST_CASE("Stateful ALDRKL: Sum is N times Mean, float agrees with double over a sequence", "[ldr][aldr][state][float]") {
  const Eigen::VectorXi y = lktest::labels(16, 20);
  for (LogitScaling scaling : kScalings) {
    ALDRKL<double> mean, sum;
    ALDRKL<float> single;
    mean.logit_scaling = sum.logit_scaling = single.logit_scaling = scaling;
    sum.reduction = Reduction::Sum;
    losskit::ALDRKLState<double> sm(40, 10.0), ss(40, 10.0);
    losskit::ALDRKLState<float> sf(40, 10.0f);
    for (int call = 0; call < 4; ++call) {
      const Eigen::MatrixXf xf = lktest::normal<float>(20, 16, 2.0);
      const Eigen::MatrixXd x = xf.cast<double>();
      const Eigen::VectorXi ids = Eigen::VectorXi::LinSpaced(16, 0, 15).unaryExpr([&](int i) { return i * (call + 1) % 40; });
      Eigen::MatrixXd gm, gs;
      Eigen::MatrixXf gf;
      const double vm = mean.value_and_gradient(x, y, ids, sm, gm), vs = sum.value_and_gradient(x, y, ids, ss, gs);
      const float vf = single.value_and_gradient(xf, y, ids, sf, gf);
      INFO("scaling " << scaling << " call " << call);
      CHECK(vs == Approx(16 * vm).epsilon(1e-14));
      CHECK((gs - 16 * gm).cwiseAbs().maxCoeff() <= 1e-14);
      CHECK(std::abs(vf - vm) <= 2e-6 * std::max(1.0, std::abs(vm)));
      CHECK((gf.cast<double>() - gm).cwiseAbs().maxCoeff() <= 1e-5 * gm.cwiseAbs().maxCoeff());
      CHECK(lktest::max_rel_err(sf.lambdas().cast<double>(), sm.lambdas()) < 1e-5);
    }
  }
}

TEST_CASE("Stateful ALDRKL edge cases: one class, NaN logits, checkpoint restore", "[ldr][aldr][state][nonfinite]") {
  ALDRKL<double> aldr;
  losskit::ALDRKLState<double> state(3, 10.0);
  // C = 1: KL ≡ 0 (the code's 0/0), λ stays λ0 and ψ = 0.
  Eigen::MatrixXd g;
  CHECK(aldr.value_and_gradient(lktest::normal(1, 2), Eigen::VectorXi::Zero(2), Eigen::Vector2i(0, 2), state, g) == 0.0);
  CHECK(g.isZero(0));
  CHECK((state.lambdas().array() == 10.0).all());
  // NaN logits: that sample's loss is NaN and its example keeps its λ; the other example moves.
  Eigen::MatrixXd s = lktest::normal(4, 2, 2.0);
  s(1, 0) = std::numeric_limits<double>::quiet_NaN();
  const double v = aldr.value_and_gradient(s, Eigen::Vector2i(0, 3), Eigen::Vector2i(0, 1), state, g);
  CHECK(std::isnan(v));
  CHECK(state.lambdas()(0) == 10.0);
  CHECK(state.lambdas()(1) < 10.0);
  CHECK(g.col(1).allFinite());
  // set_lambdas restores a checkpoint; the next call continues from it.
  losskit::ALDRKLState<double> restored(3, 10.0);
  restored.set_lambdas(state.lambdas());
  const Eigen::MatrixXd x = lktest::normal(4, 2, 2.0);
  const Eigen::VectorXi y = Eigen::Vector2i(1, 2), ids = Eigen::Vector2i(1, 2);
  CHECK(aldr(x, y, ids, restored) == aldr(x, y, ids, state));
  CHECK(restored.lambdas() == state.lambdas());
}

TEST_CASE("Stateful ALDRKL and ALDRKLState reject bad input, writing nothing", "[ldr][aldr][state][errors]") {
  const Eigen::MatrixXd s = lktest::normal(4, 3);
  const Eigen::VectorXi y = lktest::labels(3, 4), ids = Eigen::Vector3i(0, 1, 2);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  losskit::ALDRKLState<double> state(3, 10.0);
  ALDRKL<double> warm;
  warm(s, y, ids, state);  // λ off λ0, so an accidental write would show
  const Eigen::VectorXd before = state.lambdas();
  Eigen::MatrixXd g = lktest::sentinel(4, 3);
  const auto rejects = [&](const ALDRKL<double>& aldr, const Eigen::VectorXi& bad_ids, const char* arg, const char* value) {
    INFO("argument " << arg);
    CHECK_THROWS_WITH(aldr.value_and_gradient(s, y, bad_ids, state, g),
                      lktest::Contains("ALDRKL") && lktest::Contains(arg) && lktest::Contains(value));
    CHECK_THROWS_AS(aldr(s, y, bad_ids, state), losskit::Error);
    CHECK(lktest::untouched(g, 4, 3));
    CHECK(state.lambdas() == before);
  };
  ALDRKL<double> ok;
  rejects(ok, Eigen::Vector3i(0, 3, 1), "ids", "3");
  rejects(ok, Eigen::Vector3i(0, -1, 1), "ids", "-1");
  rejects(ok, Eigen::Vector2i(0, 1), "ids", "length 3");
  ALDRKL<double> other_lambda0;
  other_lambda0.lambda0 = 1.0;
  rejects(other_lambda0, ids, "state", "lambda0 = 10");
  for (double bad : {-1e-5, nan}) {
    ALDRKL<double> aldr;
    aldr.kl_smoothing = bad;
    rejects(aldr, ids, "kl_smoothing", bad < 0 ? "-1e-05" : "nan");
  }
  ALDRKL<double> bad_alpha;
  bad_alpha.alpha = 1.0;
  rejects(bad_alpha, ids, "alpha", "1");
  ALDRKL<double> bad_scaling;
  bad_scaling.logit_scaling = static_cast<LogitScaling>(7);
  rejects(bad_scaling, ids, "logit_scaling", "7");
  Eigen::VectorXi bad_labels = y;
  bad_labels(2) = 4;
  CHECK_THROWS_WITH(ok.value_and_gradient(s, bad_labels, ids, state, g), lktest::Contains("labels"));
  Eigen::MatrixXd owner = lktest::sentinel(6, 6);
  CHECK_THROWS_WITH(ok.value_and_gradient(s, y, ids, state, owner.block(0, 0, 4, 2)), lktest::Contains("grad"));
  CHECK(lktest::untouched(owner, 6, 6));
  CHECK(lktest::untouched(g, 4, 3));
  CHECK(state.lambdas() == before);
  // The state itself.
  CHECK_THROWS_WITH(losskit::ALDRKLState<double>(0, 1.0),
                    lktest::Contains("ALDRKLState") && lktest::Contains("num_examples") && lktest::Contains("0"));
  for (double bad : {0.0, -1.0, nan})
    CHECK_THROWS_WITH(losskit::ALDRKLState<double>(3, bad), lktest::Contains("ALDRKLState") && lktest::Contains("lambda0"));
  CHECK_THROWS_WITH(state.set_lambdas(Eigen::Vector3d(1, 0, 1)),
                    lktest::Contains("ALDRKLState") && lktest::Contains("lambdas") && lktest::Contains("example 1"));
  CHECK_THROWS_WITH(state.set_lambdas(Eigen::Vector2d(1, 1)), lktest::Contains("lambdas"));
  CHECK(state.lambdas() == before);
  // The stateless calls still reject a bad logit_scaling.
  LDRKL<double> ldr;
  ldr.logit_scaling = static_cast<LogitScaling>(-1);
  CHECK_THROWS_WITH(ldr.value_and_gradient(s, y, g), lktest::Contains("LDRKL") && lktest::Contains("logit_scaling"));
  CHECK(lktest::untouched(g, 4, 3));
}

TEST_CASE("Stateful ALDRKL allocates nothing once the state has seen the batch size", "[ldr][aldr][state][alloc]") {
  const Eigen::MatrixXf s = lktest::normal<float>(300, 20, 2.0);
  const Eigen::VectorXi y = lktest::labels(20, 300), ids = Eigen::VectorXi::LinSpaced(20, 0, 19);
  Eigen::MatrixXf g(300, 20);
  for (LogitScaling scaling : kScalings) {
    ALDRKL<float> aldr;
    aldr.logit_scaling = scaling;
    losskit::ALDRKLState<float> state(20, 10.0f);
    aldr.value_and_gradient(s, y, ids, state, g);
    lktest::AllocationCounter counter;
    const float v = aldr.value_and_gradient(s, y, ids, state, g);
    CHECK(counter.count() == 0);
    CHECK(std::isfinite(v));
  }
}

TEST_CASE("Stateful ALDRKL: one const functor, concurrent calls each with its own state", "[ldr][aldr][state][concurrency]") {
  // The functor's const calls may run concurrently; a state is per caller.
  const Eigen::MatrixXd s = lktest::normal(30, 12, 2.0);
  const Eigen::VectorXi y = lktest::labels(12, 30), ids = Eigen::VectorXi::LinSpaced(12, 11, 0);
  ALDRKL<double> aldr;
  aldr.logit_scaling = LogitScaling::MeanAbs;
  losskit::ALDRKLState<double> serial(12, 10.0);
  Eigen::MatrixXd g_serial;
  const double v1 = aldr.value_and_gradient(s, y, ids, serial, g_serial);
  const double v2 = aldr.value_and_gradient(s, y, ids, serial, g_serial);
  const int kThreads = 4;
  std::vector<losskit::ALDRKLState<double>> states(kThreads, losskit::ALDRKLState<double>(12, 10.0));
  std::vector<Eigen::MatrixXd> grads(kThreads);
  std::vector<double> first(kThreads), second(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      first[std::size_t(t)] = aldr.value_and_gradient(s, y, ids, states[std::size_t(t)], grads[std::size_t(t)]);
      second[std::size_t(t)] = aldr.value_and_gradient(s, y, ids, states[std::size_t(t)], grads[std::size_t(t)]);
    });
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t);
    CHECK(first[std::size_t(t)] == v1);
    CHECK(second[std::size_t(t)] == v2);
    CHECK(grads[std::size_t(t)] == g_serial);
    CHECK(states[std::size_t(t)].lambdas() == serial.lambdas());
  }
}
