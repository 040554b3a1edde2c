// CompSum and SmoothAdversarialCompSum (Mao, Mohri, Zhong, ICML 2023):
// closed forms of the named members in p_y, the τ = 1 cross-entropy limit,
// continuity around τ = 1, finite-difference gradients, extreme logits,
// float vs double, expressions, errors, allocation, non-finite inputs.
#include <losskit/comp_sum.hpp>
#include <losskit/cross_entropy.hpp>
#include <losskit/gradcheck.hpp>

#include <sstream>
#include <string>

#include "sample_weight_checks.hpp"
#include "test_util.hpp"

using losskit::CompSum;
using losskit::Reduction;
using losskit::SmoothAdversarialCompSum;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// p_y by brute force in long double: 1 / Σ_k exp(x_k − x_y) (no max shift,
// no shared code with losskit; fine for the moderate logits used with it).
long double brute_p_y(const Eigen::MatrixXd& x, Eigen::Index j, int y) {
  long double s = 0;
  for (Eigen::Index k = 0; k < x.rows(); ++k) s += std::exp(static_cast<long double>(x(k, j)) - x(y, j));
  return 1.0L / s;
}

// Closed form of each named member in p (the table in reference/comp_sum.md).
long double closed_form(long double p, double tau) {
  if (tau == 0) return 1 / p - 1;                 // sum-exponential
  if (tau == 1) return -std::log(p);              // cross-entropy
  if (tau == 2) return 1 - p;                     // MAE
  const long double q = tau - 1;                  // GCE (q in (0,1)) and τ > 2
  return (1 - std::pow(p, q)) / q;
}

// ‖Δ' − Δ‖₂ by brute force in long double, Δ_k = h_k − h_y.
long double brute_smooth_term(const Eigen::MatrixXd& c, const Eigen::MatrixXd& a, Eigen::Index j, int y) {
  long double s = 0;
  for (Eigen::Index k = 0; k < c.rows(); ++k) {
    const long double d = (static_cast<long double>(a(k, j)) - a(y, j)) - (static_cast<long double>(c(k, j)) - c(y, j));
    s += d * d;
  }
  return std::sqrt(s);
}

const double kTaus[] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0};

}  // namespace

TEST_CASE("CompSum named members match their closed forms in p_y", "[comp_sum]") {
  const Eigen::MatrixXd x = lktest::normal(6, 5, 2.0);
  const Eigen::VectorXi y = lktest::labels(5, 6);
  struct Named {
    const char* name;
    CompSum<double> loss;
    double tau;
  };
  const Named members[] = {{"sum_exponential", CompSum<double>::sum_exponential(), 0.0},
                           {"cross_entropy", CompSum<double>::cross_entropy(), 1.0},
                           {"generalized_cross_entropy(0.7)", CompSum<double>::generalized_cross_entropy(), 1.7},
                           {"generalized_cross_entropy(0.3)", CompSum<double>::generalized_cross_entropy(0.3), 1.3},
                           {"mean_absolute_error", CompSum<double>::mean_absolute_error(), 2.0},
                           {"tau 0.5", CompSum<double>(0.5), 0.5},
                           {"tau 3", CompSum<double>(3.0), 3.0}};
  for (const Named& m : members) {
    CHECK(m.loss.tau == Approx(m.tau).epsilon(1e-15));
    const Eigen::VectorXd per = m.loss.per_sample(x, y);
    long double total = 0;
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      const long double expected = closed_form(brute_p_y(x, j, y(j)), m.tau);
      total += expected;
      INFO("CompSum " << m.name << " sample " << j << ": " << per(j) << " vs closed form " << double(expected));
      CHECK(lktest::rel_err(per(j), double(expected)) < 1e-13);
    }
    CompSum<double> loss = m.loss;
    INFO("CompSum " << m.name << " reduced");
    CHECK(lktest::rel_err(loss(x, y), double(total / x.cols())) < 1e-13);
    loss.reduction = Reduction::Sum;
    CHECK(lktest::rel_err(loss(x, y), double(total)) < 1e-13);
    Eigen::MatrixXd g;
    CHECK(lktest::rel_err(loss.value_and_gradient(x, y, g), double(total)) < 1e-13);
  }
}

TEST_CASE("CompSum with tau = 1 is the cross-entropy lse(h) - h_y", "[comp_sum]") {
  const Eigen::MatrixXd x = lktest::normal(7, 6, 3.0);
  const Eigen::VectorXi y = lktest::labels(6, 7);
  // Independent cross-entropy: log Σ exp in long double minus the label logit;
  // its gradient softmax − e_y, also in long double.
  long double total = 0;
  Eigen::MatrixXd expected_grad(7, 6);
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    long double s = 0;
    for (Eigen::Index k = 0; k < x.rows(); ++k) s += std::exp(static_cast<long double>(x(k, j)));
    total += std::log(s) - x(y(j), j);
    for (Eigen::Index k = 0; k < x.rows(); ++k)
      expected_grad(k, j) = double(std::exp(static_cast<long double>(x(k, j))) / s - (k == y(j) ? 1 : 0));
  }
  CompSum<double> loss;  // default tau = 1
  loss.reduction = Reduction::Sum;
  Eigen::MatrixXd g;
  const double v = loss.value_and_gradient(x, y, g);
  CHECK(lktest::rel_err(v, double(total)) < 1e-14);
  CHECK((g - expected_grad).cwiseAbs().maxCoeff() < 1e-15);
}

TEST_CASE("CompSum with tau = 1 equals CrossEntropy", "[comp_sum]") {
  // Same formula (lse − h_y, gradient p − e_y), different code: CrossEntropy
  // accumulates float columns in double, so agreement is to round-off.
  const Eigen::VectorXi y = lktest::labels(40, 300);
  for (double spread : {1.0, 20.0}) {
    const Eigen::MatrixXd x = lktest::normal(300, 40, spread);
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      CompSum<double> cs(1.0, r);
      losskit::CrossEntropy<double> ce;
      ce.reduction = r;
      Eigen::MatrixXd g_cs, g_ce;
      const double v_cs = cs.value_and_gradient(x, y, g_cs), v_ce = ce.value_and_gradient(x, y, g_ce);
      INFO("CompSum(1) vs CrossEntropy, spread " << spread << ", " << r << ": " << v_cs << " vs " << v_ce);
      CHECK(lktest::rel_err(v_cs, v_ce) < 1e-14);
      CHECK(lktest::max_rel_err(cs.per_sample(x, y), ce.per_sample(x, y)) < 1e-13);
      CHECK((g_cs - g_ce).cwiseAbs().maxCoeff() <= 1e-15 * g_ce.cwiseAbs().maxCoeff());

      CompSum<float> csf(1.0f, r);
      losskit::CrossEntropy<float> cef;
      cef.reduction = r;
      const Eigen::MatrixXf xf = x.cast<float>();
      Eigen::MatrixXf gf_cs, gf_ce;
      const float vf_cs = csf.value_and_gradient(xf, y, gf_cs), vf_ce = cef.value_and_gradient(xf, y, gf_ce);
      CHECK(lktest::rel_err(vf_cs, vf_ce) < 1e-6);
      CHECK((gf_cs - gf_ce).cwiseAbs().maxCoeff() <= 1e-6f * gf_ce.cwiseAbs().maxCoeff());
    }
  }
}

TEST_CASE("CompSum value and gradient are continuous in tau around 1", "[comp_sum]") {
  const Eigen::MatrixXd x = lktest::normal(5, 4, 1.5);
  const Eigen::VectorXi y = lktest::labels(4, 5);
  CompSum<double> ce(1.0, Reduction::Sum);
  Eigen::MatrixXd g1;
  ce.value_and_gradient(x, y, g1);
  const Eigen::VectorXd per1 = ce.per_sample(x, y);
  const double taus[] = {1 + 1e-3, 1 - 1e-3, 1 + 1e-6, 1 - 1e-6, 1 + 1e-10, 1 - 1e-10, std::nextafter(1.0, 2.0),
                         std::nextafter(1.0, 0.0)};
  for (double tau : taus) {
    CompSum<double> near(tau, Reduction::Sum);
    const Eigen::VectorXd per = near.per_sample(x, y);
    Eigen::MatrixXd g;
    near.value_and_gradient(x, y, g);
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      // Series of (1 − p^q)/q in q with L = log p: −L − q·L²/2 + O(q²L³),
      // so ℓ(τ) − ℓ(1) + q·L²/2 is second order in q.
      const double L = -per1(j);
      const double qe = near.tau - 1.0;
      INFO("CompSum tau = 1 + " << qe << ", sample " << j << ": " << per(j) << " vs CE " << per1(j));
      CHECK(std::abs(per(j) - per1(j) + qe * L * L / 2) <= qe * qe * std::abs(L * L * L) + 2e-15 * (1 + std::abs(L)));
      // p_y^q (p − e_y) − (p − e_y) = (qL + O(q²L²))·(p − e_y).
      const double dg = (g.col(j) - g1.col(j)).cwiseAbs().maxCoeff();
      CHECK(dg <= 2 * std::abs(qe * L) * g1.col(j).cwiseAbs().maxCoeff() + 4e-16);
    }
  }
}

TEST_CASE("CompSum gradient p_y^(tau-1)(p - e_y) passes the finite-difference check", "[comp_sum][gradient]") {
  const Eigen::VectorXi y = lktest::labels(4, 5);
  Eigen::MatrixXd ties = Eigen::MatrixXd::Constant(5, 4, 0.25);
  Eigen::MatrixXd confident = lktest::normal(5, 4);
  for (Eigen::Index j = 0; j < 4; ++j) confident(y(j), j) += 12;  // p_y ≈ 1 − 1e-5
  Eigen::MatrixXd wrong = lktest::normal(5, 4);
  for (Eigen::Index j = 0; j < 4; ++j) wrong(y(j), j) -= 6;  // p_y small: τ = 0 large
  const Eigen::MatrixXd large = (lktest::normal(5, 4, 2.0).array() + 1e3).matrix();
  // A spread of 30 makes the τ < 1 losses ~e^{100}: their small gradient
  // entries are then below what differences of such values can resolve, so
  // that point is checked for τ >= 1 only.
  const std::pair<const char*, Eigen::MatrixXd> points[] = {{"random", lktest::normal(5, 4, 2.0)},
                                                            {"ties", ties},
                                                            {"large magnitude", large},
                                                            {"wide spread", lktest::normal(5, 4, 30.0)},
                                                            {"confident", confident},
                                                            {"wrong", wrong}};
  losskit::GradientCheckOptions abs_step;
  abs_step.relative_step = false;  // steps of 1e-3·|x| = 1 would be too coarse at |x| = 1e3
  for (double tau : kTaus) {
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      for (const auto& pt : points) {
        if (tau < 1 && std::string(pt.first) == "wide spread") continue;
        CompSum<double> loss(tau, r);
        Eigen::MatrixXd g;
        const double v = loss.value_and_gradient(pt.second, y, g);
        CHECK(v == Approx(loss(pt.second, y)).epsilon(1e-14));
        const auto res =
            losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, y); }, pt.second, g, abs_step);
        INFO("CompSum tau " << tau << ", " << r << ", " << pt.first << ": " << res.report());
        CHECK(res.passed);
      }
    }
  }
}

TEST_CASE("CompSum handles extreme logits of +-1e4 for every tau", "[comp_sum][extreme]") {
  for (double tau : kTaus) {
    // Column 0: label at +1e4, others −1e4 → p_y = 1 in double: value 0, gradient 0
    // (up to ~5e-309: Eigen's vectorised exp clamps its argument, so exp(−2e4)
    // comes out as a subnormal instead of 0).
    // Column 1: label at −1e4, one class at +1e4 → log p_y = −2e4: −log p_y = 2e4;
    // (1 − p_y^{τ−1})/(τ − 1) = 1/(τ−1) for τ > 1 (p_y^{τ−1} underflows to 0 exactly);
    // e^{2e4·(1−τ)} overflows for τ < 1, so the value is +inf there.
    Eigen::MatrixXd x = Eigen::MatrixXd::Constant(4, 2, -1e4);
    Eigen::VectorXi y(2);
    y << 1, 3;
    x(1, 0) = 1e4;
    x(0, 1) = 1e4;
    CompSum<double> loss(tau, Reduction::Sum);
    const Eigen::VectorXd per = loss.per_sample(x, y);
    Eigen::MatrixXd g;
    const double v = loss.value_and_gradient(x, y, g);
    INFO("CompSum tau " << tau << " at +-1e4: per-sample " << per.transpose() << ", gradient\n" << g);
    CHECK(per(0) == 0.0);
    CHECK(g.col(0).cwiseAbs().maxCoeff() <= 1e-300);
    if (tau < 1) {
      CHECK(per(1) == kInf);
      CHECK(v == kInf);
    } else if (tau == 1) {
      CHECK(per(1) == 2e4);
      Eigen::Vector4d expected(1, 0, 0, -1);  // p − e_y with p = e_0
      CHECK((g.col(1) - expected).cwiseAbs().maxCoeff() <= 1e-300);
    } else {
      CHECK(per(1) == Approx(1 / (tau - 1)).epsilon(1e-15));
      CHECK(g.col(1).cwiseAbs().maxCoeff() <= 1e-300);
    }
    // float, same logits
    Eigen::MatrixXf gf;
    const float vf = CompSum<float>(float(tau), Reduction::Sum).value_and_gradient(x.cast<float>(), y, gf);
    if (tau < 1)
      CHECK(vf == std::numeric_limits<float>::infinity());
    else
      CHECK(vf == Approx(float(per(1))).epsilon(1e-6));
    if (tau >= 1) CHECK(gf.allFinite());
  }
}

TEST_CASE("CompSum with tau = 0 stays finite wherever 1/p_y - 1 is finite", "[comp_sum][extreme]") {
  // Logits (0, 709, 709), label 0: 1/p_y − 1 = 2·e^709 ≈ 1.64e308 < DBL_MAX, although
  // p_y ≈ 4e-309 is subnormal (forming 1/p_y would lose most digits).
  Eigen::MatrixXd x(3, 1);
  x << 0, 709, 709;
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
  const long double expected = 2 * std::exp(709.0L);
  CompSum<double> se = CompSum<double>::sum_exponential();
  Eigen::MatrixXd g;
  const double v = se.value_and_gradient(x, y, g);
  CHECK(lktest::rel_err(v, double(expected)) < 1e-12);
  // ∇ = p_y^{−1}(p − e_y) = (−2e^709, e^709, e^709).
  CHECK(g.allFinite());
  CHECK(lktest::rel_err(g(1, 0), double(std::exp(709.0L))) < 1e-12);
  CHECK(lktest::rel_err(g(0, 0), -double(expected)) < 1e-12);
  // One step further the value itself overflows, and so does the loss.
  x(1, 0) = 710;
  CHECK(se(x, y) == kInf);
  // float: 2·e^87 ≈ 1.2e38 < FLT_MAX.
  Eigen::MatrixXf xf(3, 1);
  xf << 0, 87, 87;
  Eigen::MatrixXf gf;
  const float vf = CompSum<float>::sum_exponential().value_and_gradient(xf, y, gf);
  CHECK(lktest::rel_err(vf, double(2 * std::exp(87.0L))) < 3e-5);
  CHECK(gf.allFinite());
}

TEST_CASE("CompSum in float agrees with double", "[comp_sum][float]") {
  for (Eigen::Index classes : {Eigen::Index(10), Eigen::Index(1000)}) {
    const Eigen::MatrixXf xf = lktest::normal<float>(classes, 300, 3.0);
    const Eigen::VectorXi y = lktest::labels(300, int(classes));
    for (double tau : kTaus) {
      Eigen::MatrixXd gd;
      Eigen::MatrixXf gf;
      const double vd = CompSum<double>(tau).value_and_gradient(xf.cast<double>(), y, gd);
      const float vf = CompSum<float>(float(tau)).value_and_gradient(xf, y, gf);
      INFO("CompSum float vs double, C " << classes << ", tau " << tau << ": " << vf << " vs " << vd);
      CHECK(lktest::rel_err(vf, vd) < 2e-5);
      CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 2e-5 * gd.cwiseAbs().maxCoeff());
    }
  }
}

// Views, transposes and output kinds for every functor: tests/contract_checks.hpp.
TEST_CASE("CompSum takes cast labels, and expressions in per_sample", "[comp_sum][expressions]") {
  const Eigen::MatrixXd x = lktest::normal(5, 6);
  const Eigen::VectorXi y = lktest::labels(6, 5);
  const CompSum<double> loss(1.5);
  Eigen::MatrixXd g_ref;
  const double ref = loss.value_and_gradient(x, y, g_ref);

  SECTION("Map logits, labels as a cast expression") {
    Eigen::Map<const Eigen::MatrixXd> m(x.data(), 5, 6);
    const Eigen::Matrix<long, Eigen::Dynamic, 1> yl = y.cast<long>();
    Eigen::MatrixXd g;
    CHECK(loss.value_and_gradient(m, yl.cast<int>(), g) == Approx(ref).epsilon(1e-15));
    CHECK(g.isApprox(g_ref, 1e-15));
  }
  SECTION("product and array expressions") {
    const Eigen::MatrixXd w = Eigen::MatrixXd::Identity(5, 5);
    Eigen::MatrixXd g;
    CHECK(loss.value_and_gradient(w * x, y, g) == Approx(ref).epsilon(1e-14));
    CHECK(g.isApprox(g_ref, 1e-14));
    CHECK(loss(x.array() * 1.0, y) == Approx(ref).epsilon(1e-15));
    CHECK(loss.per_sample(x.array() + 0.0, y).mean() == Approx(ref).epsilon(1e-14));
  }
}

TEST_CASE("CompSum rejects bad tau, shapes and labels, writing nothing", "[comp_sum][errors]") {
  const Eigen::MatrixXd x = lktest::normal(4, 3);
  const Eigen::VectorXi y = lktest::labels(3, 4);
  Eigen::MatrixXd g = lktest::sentinel(4, 3);
  for (double bad : {-0.5, -1e-300, std::nan(""), kInf}) {
    CompSum<double> loss(bad);
    CHECK_THROWS_WITH(loss.value_and_gradient(x, y, g), lktest::Contains("CompSum") && lktest::Contains("tau"));
    CHECK_THROWS_AS(loss(x, y), losskit::Error);
    CHECK_THROWS_AS(loss.per_sample(x, y), losskit::Error);
  }
  CompSum<double> loss;
  Eigen::VectorXi out_of_range = y;
  out_of_range(1) = 4;
  CHECK_THROWS_WITH(loss.value_and_gradient(x, out_of_range, g),
                    lktest::Contains("CompSum") && lktest::Contains("labels") && lktest::Contains("4"));
  out_of_range(1) = -1;
  CHECK_THROWS_AS(loss.value_and_gradient(x, out_of_range, g), losskit::Error);
  CHECK_THROWS_WITH(loss.value_and_gradient(x, lktest::labels(4, 4), g),
                    lktest::Contains("labels") && lktest::Contains("length 3"));
  CHECK_THROWS_AS(loss(Eigen::MatrixXd(0, 3), Eigen::VectorXi::Zero(3)), losskit::Error);
  CHECK_THROWS_AS(loss(Eigen::MatrixXd(4, 0), Eigen::VectorXi(0)), losskit::Error);
  CHECK(lktest::untouched(g, 4, 3));
  Eigen::MatrixXd owner = lktest::sentinel(6, 6);
  CHECK_THROWS_WITH(loss.value_and_gradient(x, y, owner.block(0, 0, 3, 3)), lktest::Contains("grad"));
  CHECK(lktest::untouched(owner, 6, 6));
}

TEST_CASE("CompSum value_and_gradient allocates nothing with a presized gradient", "[comp_sum][alloc]") {
  const Eigen::MatrixXf x = lktest::normal<float>(100, 64);
  const Eigen::VectorXi y = lktest::labels(64, 100);
  Eigen::MatrixXf g(100, 64);
  for (float tau : {0.0f, 1.0f, 1.7f}) {
    const CompSum<float> loss(tau);
    lktest::AllocationCounter counter;
    const float v = loss.value_and_gradient(x, y, g);
    const float v2 = loss(x, y);
    CHECK(counter.count() == 0);
    CHECK(std::isfinite(v));
    CHECK(v == Approx(v2).epsilon(1e-6));
  }
}

TEST_CASE("CompSum non-finite logits give the documented results without throwing", "[comp_sum][nonfinite]") {
  Eigen::MatrixXd x = Eigen::MatrixXd::Zero(3, 1);
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
  Eigen::MatrixXd g;
  // −inf at a non-label class: probability 0, the same as a 2-class problem.
  x(2, 0) = -kInf;
  for (double tau : kTaus) {
    CompSum<double> loss(tau);
    CHECK(loss.value_and_gradient(x, y, g) == Approx(double(closed_form(0.5L, tau))).epsilon(1e-15));
    CHECK(g.allFinite());
    CHECK(g(2, 0) == 0.0);
  }
  // −inf at the label: +inf for τ <= 1, 1/(τ−1) with gradient 0 for τ > 1.
  x << -kInf, 0, 0;
  for (double tau : kTaus) {
    CompSum<double> loss(tau);
    const double v = loss.value_and_gradient(x, y, g);
    if (tau <= 1) {
      CHECK(v == kInf);
    } else {
      CHECK(v == Approx(1 / (tau - 1)).epsilon(1e-15));
      CHECK(g.cwiseAbs().maxCoeff() == 0.0);
    }
  }
  // +inf at a non-label class: +inf for τ <= 1, 1/(τ−1) for τ > 1.
  x << 0, kInf, 0;
  CHECK(CompSum<double>(1.0)(x, y) == kInf);
  CHECK(CompSum<double>(0.0)(x, y) == kInf);
  CHECK(CompSum<double>(3.0)(x, y) == Approx(0.5).epsilon(1e-15));
  // NaN anywhere, or +inf at the label: NaN.
  x << 0, std::nan(""), 0;
  CHECK(std::isnan(CompSum<double>(1.5).value_and_gradient(x, y, g)));
  CHECK(g.array().isNaN().all());
  x << kInf, 0, 0;
  CHECK(std::isnan(CompSum<double>(1.0)(x, y)));
}

// Found by the fuzzer (tests/fuzz): with a +inf logit in the column, the
// gradient path took the +inf branch of the softmax and dropped the NaN,
// returning inf (τ < 1) or 1 (τ = 2) while operator() returned NaN.
TEST_CASE("CompSum NaN next to +inf gives NaN in every path", "[comp_sum][nonfinite]") {
  Eigen::MatrixXd x(3, 1);
  x << 0.7255429029842384, kInf, std::nan("");
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
  for (double tau : {0.0, 2.13e-17, 0.5, 1.0, 2.0}) {
    CAPTURE(tau);
    CompSum<double> loss(tau);
    Eigen::MatrixXd g;
    CHECK(std::isnan(loss.value_and_gradient(x, y, g)));
    CHECK(g.array().isNaN().all());
    CHECK(std::isnan(loss(x, y)));
    CHECK(std::isnan(loss.per_sample(x, y)(0)));
    Eigen::MatrixXd gc, ga;
    CHECK(std::isnan(SmoothAdversarialCompSum<double>(tau, 1.0).value_and_gradient(x, x, y, gc, ga)));
    CHECK(gc.array().isNaN().all());
  }
}

// Found by the fuzzer: +inf and −inf in one column made operator() NaN (the
// NaN test of log_sum_exp sums the column) while value_and_gradient gave the
// documented 1/(τ−1) for τ > 1 and +inf for τ <= 1.
TEST_CASE("CompSum +inf next to -inf at non-label classes gives the documented limit in every path",
          "[comp_sum][nonfinite]") {
  Eigen::MatrixXd x(4, 1);
  x << -kInf, kInf, 5, 5;
  const Eigen::VectorXi y = Eigen::VectorXi::Constant(1, 3);
  for (double tau : {0.0, 0.5, 1.0, 1.5, 3.0}) {
    CAPTURE(tau);
    CompSum<double> loss(tau);
    const double expected = tau <= 1 ? kInf : 1 / (tau - 1);
    Eigen::MatrixXd g;
    CHECK(loss.value_and_gradient(x, y, g) == Approx(expected).epsilon(1e-15));
    CHECK(loss(x, y) == Approx(expected).epsilon(1e-15));
    CHECK(loss.per_sample(x, y)(0) == Approx(expected).epsilon(1e-15));
  }
}

// ---------------------------------------------------------------- smooth adversarial

TEST_CASE("SmoothAdversarialCompSum is comp-sum plus nu times the norm of the logit-difference change",
          "[comp_sum][adversarial]") {
  const Eigen::MatrixXd clean = lktest::normal(6, 5, 2.0);
  const Eigen::MatrixXd adv = clean + lktest::normal(6, 5, 0.3);
  const Eigen::VectorXi y = lktest::labels(5, 6);
  for (double tau : kTaus) {
    SmoothAdversarialCompSum<double> loss(tau, 2.5);
    const Eigen::VectorXd per = loss.per_sample(clean, adv, y);
    long double total = 0;
    for (Eigen::Index j = 0; j < 5; ++j) {
      const long double expected =
          closed_form(brute_p_y(clean, j, y(j)), tau) + 2.5L * brute_smooth_term(clean, adv, j, y(j));
      total += expected;
      INFO("SmoothAdversarialCompSum tau " << tau << " sample " << j);
      CHECK(lktest::rel_err(per(j), double(expected)) < 1e-13);
    }
    CHECK(lktest::rel_err(loss(clean, adv, y), double(total / 5)) < 1e-13);
    loss.reduction = Reduction::Sum;
    Eigen::MatrixXd gc, ga;
    CHECK(lktest::rel_err(loss.value_and_gradient(clean, adv, y, gc, ga), double(total)) < 1e-13);
  }
}

TEST_CASE("SmoothAdversarialCompSum gradients for both logit matrices pass the finite-difference check",
          "[comp_sum][adversarial][gradient]") {
  const Eigen::MatrixXd clean = lktest::normal(5, 4, 2.0);
  const Eigen::VectorXi y = lktest::labels(4, 5);
  const Eigen::MatrixXd advs[] = {clean + lktest::normal(5, 4, 0.5), lktest::normal(5, 4, 3.0)};
  for (double tau : kTaus) {
    for (double nu : {1.0, 2.5}) {
      for (const Eigen::MatrixXd& adv : advs) {
        SmoothAdversarialCompSum<double> loss(tau, nu);
        Eigen::MatrixXd gc, ga;
        const double v = loss.value_and_gradient(clean, adv, y, gc, ga);
        CHECK(v == Approx(loss(clean, adv, y)).epsilon(1e-14));
        const auto rc =
            losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, adv, y); }, clean, gc);
        const auto ra =
            losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(clean, z, y); }, adv, ga);
        INFO("SmoothAdversarialCompSum tau " << tau << ", nu " << nu << ": clean " << rc.report() << "; adv "
                                             << ra.report());
        CHECK(rc.passed);
        CHECK(ra.passed);
      }
    }
  }
}

TEST_CASE("SmoothAdversarialCompSum uses subgradient 0 where the logit differences are unchanged",
          "[comp_sum][adversarial]") {
  // Dyadic logits so that clean + constant and its difference are exact.
  const Eigen::MatrixXd clean = (lktest::normal(5, 4) * 64).array().round().matrix() / 64;
  const Eigen::VectorXi y = lktest::labels(4, 5);
  // Adding a per-sample constant to every logit leaves Δ unchanged: d = 0.
  Eigen::MatrixXd adv = clean;
  adv.rowwise() += Eigen::RowVector4d(0.5, -2.0, 0.0, 3.25);
  SmoothAdversarialCompSum<double> loss(1.5, 3.0);
  Eigen::MatrixXd gc, ga, g_ref;
  const double v = loss.value_and_gradient(clean, adv, y, gc, ga);
  const double ref = CompSum<double>(1.5).value_and_gradient(clean, y, g_ref);
  CHECK(v == Approx(ref).epsilon(1e-15));
  CHECK(ga.cwiseAbs().maxCoeff() == 0.0);
  CHECK(gc.isApprox(g_ref, 1e-15));
  // nu = 0: plain comp-sum, zero gradient for the perturbed logits.
  loss.nu = 0;
  const double v0 = loss.value_and_gradient(clean, lktest::normal(5, 4), y, gc, ga);
  CHECK(v0 == Approx(ref).epsilon(1e-15));
  CHECK(ga.cwiseAbs().maxCoeff() == 0.0);
  CHECK(gc.isApprox(g_ref, 1e-15));
}

TEST_CASE("SmoothAdversarialCompSum smooth term neither overflows nor underflows", "[comp_sum][adversarial][extreme]") {
  // Differences of 1e200 (squares overflow) and 1e-200 (squares underflow):
  // with d = (s, 0, …) up to the label entry the norm is |s|·‖(1,1)‖ = √2·|s|.
  for (double s : {1e200, 1e-200}) {
    Eigen::MatrixXd clean = Eigen::MatrixXd::Zero(3, 1), adv = Eigen::MatrixXd::Zero(3, 1);
    adv(1, 0) = s;
    adv(2, 0) = s;
    const Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
    const double nu = s < 1 ? 1 / s : 1.0;  // keeps ν·n visible next to log 3
    SmoothAdversarialCompSum<double> loss(1.0, nu);
    Eigen::MatrixXd gc, ga;
    const double v = loss.value_and_gradient(clean, adv, y, gc, ga);
    INFO("SmoothAdversarialCompSum with differences " << s << ": " << v << ", grad_adv " << ga.transpose());
    CHECK(lktest::rel_err(v - std::log(3.0), std::sqrt(2.0) * s * nu) < 1e-14);
    // ∂n/∂h' = d/n − e_y Σd/n = (−√2, 1/√2, 1/√2).
    CHECK(lktest::rel_err(ga(1, 0), nu / std::sqrt(2.0)) < 1e-15);
    CHECK(lktest::rel_err(ga(0, 0), -nu * std::sqrt(2.0)) < 1e-15);
    CHECK(gc.allFinite());
  }
}

TEST_CASE("SmoothAdversarialCompSum in float agrees with double and allocates nothing", "[comp_sum][adversarial][float]") {
  const Eigen::MatrixXf cf = lktest::normal<float>(50, 40, 2.0);
  const Eigen::MatrixXf af = cf + lktest::normal<float>(50, 40, 0.2);
  const Eigen::VectorXi y = lktest::labels(40, 50);
  SmoothAdversarialCompSum<float> lf(0.5f, 1.0f);
  SmoothAdversarialCompSum<double> ld(0.5, 1.0);
  Eigen::MatrixXf gcf(50, 40), gaf(50, 40);
  Eigen::MatrixXd gcd, gad;
  lktest::AllocationCounter counter;
  const float vf = lf.value_and_gradient(cf, af, y, gcf, gaf);
  CHECK(counter.count() == 0);
  const double vd = ld.value_and_gradient(cf.cast<double>(), af.cast<double>(), y, gcd, gad);
  CHECK(lktest::rel_err(vf, vd) < 2e-5);
  CHECK((gcf.cast<double>() - gcd).cwiseAbs().maxCoeff() <= 2e-5 * gcd.cwiseAbs().maxCoeff());
  CHECK((gaf.cast<double>() - gad).cwiseAbs().maxCoeff() <= 2e-5 * gad.cwiseAbs().maxCoeff());
}

TEST_CASE("SmoothAdversarialCompSum rejects bad options and shapes, writing nothing", "[comp_sum][adversarial][errors]") {
  const Eigen::MatrixXd clean = lktest::normal(4, 3), adv = lktest::normal(4, 3);
  const Eigen::VectorXi y = lktest::labels(3, 4);
  Eigen::MatrixXd gc = lktest::sentinel(4, 3), ga = lktest::sentinel(4, 3);
  for (double bad : {-1.0, std::nan(""), kInf}) {
    SmoothAdversarialCompSum<double> bad_tau(bad, 1.0), bad_nu(1.0, bad);
    CHECK_THROWS_WITH(bad_tau.value_and_gradient(clean, adv, y, gc, ga),
                      lktest::Contains("SmoothAdversarialCompSum") && lktest::Contains("tau"));
    CHECK_THROWS_WITH(bad_nu.value_and_gradient(clean, adv, y, gc, ga),
                      lktest::Contains("SmoothAdversarialCompSum") && lktest::Contains("nu"));
    CHECK_THROWS_AS(bad_nu(clean, adv, y), losskit::Error);
    CHECK_THROWS_AS(bad_tau.per_sample(clean, adv, y), losskit::Error);
  }
  SmoothAdversarialCompSum<double> loss;
  CHECK_THROWS_WITH(loss.value_and_gradient(clean, lktest::normal(4, 2), y, gc, ga),
                    lktest::Contains("adv_logits") && lktest::Contains("4x2"));
  CHECK_THROWS_AS(loss(clean, lktest::normal(3, 3), y), losskit::Error);
  Eigen::VectorXi bad_y = y;
  bad_y(0) = 7;
  CHECK_THROWS_WITH(loss.value_and_gradient(clean, adv, bad_y, gc, ga), lktest::Contains("labels"));
  CHECK(lktest::untouched(gc, 4, 3));
  CHECK(lktest::untouched(ga, 4, 3));
  Eigen::MatrixXd owner = lktest::sentinel(8, 8);
  CHECK_THROWS_WITH(loss.value_and_gradient(clean, adv, y, gc, owner.block(0, 0, 4, 2)),
                    lktest::Contains("grad_adv"));
  CHECK_THROWS_WITH(loss.value_and_gradient(clean, adv, y, owner.block(0, 0, 2, 3), ga),
                    lktest::Contains("grad_clean"));
  CHECK(lktest::untouched(owner, 8, 8));
  CHECK(lktest::untouched(gc, 4, 3));
  CHECK(lktest::untouched(ga, 4, 3));
}

TEST_CASE("SmoothAdversarialCompSum non-finite perturbed logits give NaN or inf without throwing",
          "[comp_sum][adversarial][nonfinite]") {
  const Eigen::MatrixXd clean = Eigen::MatrixXd::Zero(3, 1);
  Eigen::MatrixXd adv = Eigen::MatrixXd::Zero(3, 1);
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
  Eigen::MatrixXd gc, ga;
  adv(1, 0) = kInf;
  CHECK(SmoothAdversarialCompSum<double>(1.0, 1.0).value_and_gradient(clean, adv, y, gc, ga) == kInf);
  adv(1, 0) = std::nan("");
  CHECK(std::isnan(SmoothAdversarialCompSum<double>(1.0, 1.0)(clean, adv, y)));
}

TEST_CASE("CompSum with sample weights is the s-weighted mean (or sum) of per_sample", "[comp_sum][weights]") {
  const Eigen::MatrixXd x = lktest::normal(6, 7, 2.0);
  const Eigen::VectorXi y = lktest::labels(7, 6);
  for (double tau : kTaus) {
    std::ostringstream what;
    what << "CompSum tau " << tau;
    lktest::check_sample_weights(CompSum<double>(tau), x, y, what.str());
  }
}

TEST_CASE("SmoothAdversarialCompSum with sample weights: weighted per_sample, both gradients, zero and bad weights",
          "[comp_sum][adversarial][weights]") {
  const Eigen::MatrixXd clean = lktest::normal(5, 7, 2.0);
  const Eigen::MatrixXd adv = clean + lktest::normal(5, 7, 0.5);
  const Eigen::VectorXi y = lktest::labels(7, 5);
  for (double tau : {0.5, 1.0, 2.0}) {
    SmoothAdversarialCompSum<double> loss(tau, 1.5);
    const Eigen::VectorXd per = loss.per_sample(clean, adv, y);
    for (bool zeros : {false, true}) {
      const Eigen::VectorXd s = lktest::random_weights(7, zeros);
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        loss.reduction = r;
        INFO("SmoothAdversarialCompSum tau " << tau << ", " << r << (zeros ? ", some weights 0" : ", positive weights"));
        const lktest::WeightedReference ref = lktest::weighted_reference(per, s, r == Reduction::Mean);
        const double v = loss(clean, adv, y, s);
        CHECK(std::abs(v - ref.value) <= 1e-13 * ref.magnitude);
        Eigen::MatrixXd gc, ga;
        CHECK(loss.value_and_gradient(clean, adv, y, s, gc, ga) == Approx(v).epsilon(1e-14));
        for (Eigen::Index i = 0; i < 7; ++i)
          if (s(i) == 0) CHECK((gc.col(i).isZero(0) && ga.col(i).isZero(0)));
        const auto rc = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, adv, y, s); }, clean, gc);
        const auto ra = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(clean, z, y, s); }, adv, ga);
        INFO("clean " << rc.report() << "; adv " << ra.report());
        CHECK(rc.passed);
        CHECK(ra.passed);
      }
    }
    Eigen::MatrixXd gc = lktest::sentinel(5, 7), ga = lktest::sentinel(5, 7);
    CHECK(loss.value_and_gradient(clean, adv, y, Eigen::VectorXd::Zero(7), gc, ga) == 0.0);
    CHECK((gc.isZero(0) && ga.isZero(0)));
    CHECK(loss(clean, adv, y, Eigen::VectorXd::Zero(7)) == 0.0);
    CHECK(loss(clean, adv, y, Eigen::VectorXd::Ones(7)) == Approx(loss(clean, adv, y)).epsilon(1e-14));
    for (const auto& bad : lktest::bad_weights(7)) {
      INFO("SmoothAdversarialCompSum tau " << tau << ": " << bad.first);
      gc = lktest::sentinel(5, 7);
      ga = lktest::sentinel(5, 7);
      CHECK_THROWS_AS(loss.value_and_gradient(clean, adv, y, bad.second, gc, ga), losskit::Error);
      CHECK_THROWS_WITH(loss.value_and_gradient(clean, adv, y, bad.second, gc, ga), lktest::Contains("sample_weights"));
      CHECK_THROWS_WITH(loss(clean, adv, y, bad.second), lktest::Contains("SmoothAdversarialCompSum: sample_weights"));
      CHECK(lktest::untouched(gc, 5, 7));
      CHECK(lktest::untouched(ga, 5, 7));
    }
  }
}

TEST_CASE("SmoothAdversarialCompSum with sample weights allocates nothing with presized gradients",
          "[comp_sum][adversarial][weights][alloc]") {
  const Eigen::MatrixXf clean = lktest::normal<float>(50, 40, 2.0);
  const Eigen::MatrixXf adv = clean + lktest::normal<float>(50, 40, 0.2);
  const Eigen::VectorXi y = lktest::labels(40, 50);
  const Eigen::VectorXf s = lktest::random_weights(40, true).cast<float>();
  const SmoothAdversarialCompSum<float> loss(0.5f, 1.0f);
  Eigen::MatrixXf gc(50, 40), ga(50, 40);
  lktest::AllocationCounter counter;
  const float v = loss.value_and_gradient(clean, adv, y, s, gc, ga);
  const float v2 = loss(clean, adv, y, s);
  CHECK(counter.count() == 0);
  CHECK(v == Approx(v2).epsilon(1e-6));
}
