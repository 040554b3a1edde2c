// ZLoss: values against a long-double brute force, invariances, gradient
// identities, finite differences, the spherical-statistics form, degenerate
// and non-finite inputs, errors, allocation.
#include <losskit/gradcheck.hpp>
#include <losskit/z_loss.hpp>

#include <string>

#include "sample_weight_checks.hpp"
#include "test_util.hpp"

using losskit::Reduction;
using losskit::ZLoss;

namespace {

// Independent reference: the definition taken literally in long double
// (one-pass mean, two-pass population variance, log1p/exp softplus).
long double brute_z_loss(const Eigen::VectorXd& o, int c, long double a, long double b) {
  const long double d = static_cast<long double>(o.size());
  long double mean = 0;
  for (Eigen::Index k = 0; k < o.size(); ++k) mean += o(k);
  mean /= d;
  long double var = 0;
  for (Eigen::Index k = 0; k < o.size(); ++k) var += (o(k) - mean) * (o(k) - mean);
  var /= d;
  const long double z = (o(c) - mean) / std::sqrt(var);
  const long double x = a * (b - z);
  return (x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x))) / a;
}

}  // namespace

TEST_CASE("ZLoss matches a hand value and a long-double brute force", "[z_loss]") {
  // D = 2, o = (0, 1), c = 1: μ = 0.5, σ = 0.5, z_c = 1, L = log(1 + e^{-1}).
  Eigen::MatrixXd o(2, 1);
  o << 0, 1;
  Eigen::VectorXi y(1);
  y << 1;
  CHECK(ZLoss<double>{}(o, y) == Approx(0.31326168751822283).epsilon(1e-15));

  const Eigen::MatrixXd out = lktest::normal(9, 6, 2.0, 0.5);
  const Eigen::VectorXi labels = lktest::labels(6, 9);
  for (double a : {0.1, 1.0, 7.0})
    for (double b : {-1.0, 0.0, 2.5}) {
      ZLoss<double> z;
      z.a = a;
      z.b = b;
      const Eigen::VectorXd per = z.per_sample(out, labels);
      long double total = 0;
      for (Eigen::Index j = 0; j < 6; ++j) {
        const long double ref = brute_z_loss(out.col(j), labels(j), a, b);
        total += ref;
        INFO("ZLoss a=" << a << " b=" << b << " sample " << j);
        CHECK(lktest::rel_err(per(j), double(ref)) < 1e-13);
      }
      CHECK(lktest::rel_err(z(out, labels), double(total / 6)) < 1e-13);
      z.reduction = Reduction::Sum;
      CHECK(lktest::rel_err(z(out, labels), double(total)) < 1e-13);
    }
}

TEST_CASE("ZLoss value is invariant to o -> alpha*o + beta", "[z_loss][invariance]") {
  const Eigen::MatrixXd out = lktest::normal(20, 5);
  const Eigen::VectorXi labels = lktest::labels(5, 20);
  ZLoss<double> z;
  z.a = 2;
  z.b = 0.7;
  const double ref = z(out, labels);
  for (double alpha : {1e-3, 0.5, 3.0, 1e4})
    for (double beta : {-100.0, 0.0, 1e3}) {
      const Eigen::MatrixXd moved = (alpha * out.array() + beta).matrix();
      INFO("ZLoss invariance alpha=" << alpha << " beta=" << beta);
      // Shifting by beta = 1e3 at alpha = 1e-3 loses ~log10(1e6) digits of the inputs themselves.
      CHECK(lktest::rel_err(z(moved, labels), ref) < 1e-8);
    }
}

TEST_CASE("ZLoss gradient sums to zero and is orthogonal to the outputs", "[z_loss][gradient]") {
  const Eigen::MatrixXd out = lktest::normal(15, 7, 3.0, 1.0);
  const Eigen::VectorXi labels = lktest::labels(7, 15);
  ZLoss<double> z;
  z.b = 1.0;
  Eigen::MatrixXd g;
  z.value_and_gradient(out, labels, g);
  for (Eigen::Index j = 0; j < 7; ++j) {
    const double scale = g.col(j).cwiseAbs().sum() * (1 + out.col(j).cwiseAbs().maxCoeff());
    INFO("ZLoss sample " << j);
    CHECK(std::abs(g.col(j).sum()) <= 1e-14 * scale);  // shift invariance: Σ_k ∂L/∂o_k = 0
    CHECK(std::abs(g.col(j).dot(out.col(j))) <= 1e-14 * scale);  // scale invariance: Σ_k o_k ∂L/∂o_k = 0
  }
}

TEST_CASE("ZLoss gradient passes the finite-difference check", "[z_loss][gradient]") {
  const Eigen::VectorXi labels = lktest::labels(4, 6);
  for (Reduction r : {Reduction::Mean, Reduction::Sum})
    for (double a : {0.5, 1.0, 10.0}) {
      ZLoss<double> z;
      z.a = a;
      z.b = 0.5;
      z.reduction = r;
      const Eigen::MatrixXd out = lktest::normal(6, 4);
      Eigen::MatrixXd g;
      const double v = z.value_and_gradient(out, labels, g);
      CHECK(v == Approx(z(out, labels)).epsilon(1e-15));
      const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return z(x, labels); }, out, g);
      INFO("ZLoss a=" << a << " reduction " << r << ": " << res.report());
      CHECK(res.passed);
      CHECK(res.max_rel_error <= 1e-6);
    }
  SECTION("with a large common offset (|mu| >> sigma)") {
    ZLoss<double> z;
    const Eigen::MatrixXd out = (lktest::normal(6, 4).array() + 1e4).matrix();
    Eigen::MatrixXd g;
    z.value_and_gradient(out, labels, g);
    losskit::GradientCheckOptions opt;
    opt.relative_step = false;
    opt.step = 1e-2;
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return z(x, labels); }, out, g, opt);
    INFO("ZLoss offset 1e4: " << res.report());
    CHECK(res.max_rel_error <= 1e-6);
  }
}

TEST_CASE("ZLoss on the spherical statistics equals the direct form", "[z_loss][spherical]") {
  const Eigen::MatrixXd out = lktest::normal(11, 6, 1.5, 0.3);
  const Eigen::VectorXi labels = lktest::labels(6, 11);
  ZLoss<double> z;
  z.a = 3;
  z.b = 1.2;
  z.reduction = Reduction::Sum;
  Eigen::MatrixXd g;
  z.value_and_gradient(out, labels, g);
  const Eigen::VectorXd per = z.per_sample(out, labels);
  for (Eigen::Index j = 0; j < 6; ++j) {
    const auto t = z.spherical_terms(out.col(j).sum(), out.col(j).squaredNorm(), out(labels(j), j), 11);
    // Chain rule: ∂L/∂o_k = [k = c]·∂L/∂o_c + ∂L/∂s + 2·o_k·∂L/∂q.
    Eigen::VectorXd assembled = (t.d_sum + 2.0 * t.d_sum_squares * out.col(j).array()).matrix();
    assembled(labels(j)) += t.d_target;
    INFO("ZLoss statistics form, sample " << j);
    CHECK(lktest::rel_err(t.value, per(j)) < 1e-13);
    CHECK((assembled - g.col(j)).cwiseAbs().maxCoeff() <= 1e-12 * g.col(j).cwiseAbs().maxCoeff());
  }
  // The statistics form's partials against finite differences in (s, q, o_c).
  const double s = out.col(0).sum(), q = out.col(0).squaredNorm(), oc = out(labels(0), 0);
  const auto t = z.spherical_terms(s, q, oc, 11);
  Eigen::MatrixXd x(3, 1), gx(3, 1);
  x << s, q, oc;
  gx << t.d_sum, t.d_sum_squares, t.d_target;
  const auto res = losskit::check_gradient(
      [&](const Eigen::MatrixXd& p) { return z.spherical_terms(p(0), p(1), p(2), 11).value; }, x, gx);
  INFO(res.report());
  CHECK(res.max_rel_error <= 1e-6);
}

TEST_CASE("ZLoss keeps sigma accurate when |mu| >> sigma", "[z_loss][numerics]") {
  // Outputs 1e9 + N(0, 1): q/D − μ² would lose all digits of σ² in double;
  // the reference is the brute force on the same stored values minus the known
  // offset (o − 1e9 is exact: both are multiples of ulp(1e9) and the result is
  // small), which by shift invariance has the same loss.
  const Eigen::MatrixXd out = (lktest::normal(50, 3).array() + 1e9).matrix();
  const Eigen::VectorXi labels = lktest::labels(3, 50);
  const Eigen::VectorXd per = ZLoss<double>{}.per_sample(out, labels);
  for (Eigen::Index j = 0; j < 3; ++j) {
    const Eigen::VectorXd centred = (out.col(j).array() - 1e9).matrix();
    CHECK(lktest::rel_err(per(j), double(brute_z_loss(centred, labels(j), 1, 0))) < 1e-13);
  }
  // float: 1e4 + N(0,1) stored in float; same construction.
  const Eigen::MatrixXf outf = (lktest::normal<float>(50, 3).array() + 1e4f).matrix();
  const Eigen::VectorXf perf = ZLoss<float>{}.per_sample(outf, labels);
  for (Eigen::Index j = 0; j < 3; ++j) {
    const Eigen::VectorXd centred = (outf.col(j).array() - 1e4f).cast<double>().matrix();
    CHECK(lktest::rel_err(perf(j), double(brute_z_loss(centred, labels(j), 1, 0))) < 1e-5);
  }
}

TEST_CASE("ZLoss with all outputs equal (sigma = 0) gives softplus(a*b)/a and a zero gradient", "[z_loss][numerics]") {
  Eigen::MatrixXd out = Eigen::MatrixXd::Constant(5, 3, 0.1);
  out.col(1).setZero();
  out.col(2).setConstant(-3e7);
  Eigen::VectorXi labels(3);
  labels << 0, 4, 2;
  ZLoss<double> z;
  z.a = 2;
  z.b = 0.5;
  Eigen::MatrixXd g;
  // softplus(1)/2 = log(1 + e)/2.
  CHECK(z.value_and_gradient(out, labels, g) == Approx(std::log1p(std::exp(1.0)) / 2).epsilon(1e-15));
  CHECK(g.isZero(0));
  const auto t = z.spherical_terms(0.0, 0.0, 0.0, 5);
  CHECK(t.value == Approx(std::log1p(std::exp(1.0)) / 2).epsilon(1e-15));
  CHECK(t.d_sum == 0);
  CHECK(t.d_sum_squares == 0);
  CHECK(t.d_target == 0);
}

TEST_CASE("ZLoss in float agrees with double", "[z_loss][float]") {
  const Eigen::MatrixXd od = lktest::normal(300, 40);
  const Eigen::MatrixXf of = od.cast<float>();
  const Eigen::VectorXi labels = lktest::labels(40, 300);
  ZLoss<double> zd;
  ZLoss<float> zf;
  zd.b = 2;
  zf.b = 2;
  Eigen::MatrixXd gd;
  Eigen::MatrixXf gf;
  const double vd = zd.value_and_gradient(of.cast<double>(), labels, gd);
  const float vf = zf.value_and_gradient(of, labels, gf);
  INFO("ZLoss float " << vf << " vs double " << vd);
  CHECK(lktest::rel_err(vf, vd) < 1e-6);
  CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-5 * gd.cwiseAbs().maxCoeff());
}

TEST_CASE("ZLoss rejects bad options, labels and shapes, writing nothing", "[z_loss][errors]") {
  const Eigen::MatrixXd out = lktest::normal(4, 3);
  Eigen::VectorXi labels(3);
  labels << 0, 3, 1;
  Eigen::MatrixXd g = lktest::sentinel(4, 3);
  ZLoss<double> z;
  for (double bad_a : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    z.a = bad_a;
    CHECK_THROWS_WITH(z.value_and_gradient(out, labels, g), lktest::Contains("ZLoss") && lktest::Contains("a"));
    CHECK_THROWS_AS(z.spherical_terms(1.0, 2.0, 0.5, 4), losskit::Error);
  }
  z.a = 1;
  z.b = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(z.value_and_gradient(out, labels, g), losskit::Error);
  z.b = 0;
  Eigen::VectorXi bad = labels;
  bad(1) = 4;
  CHECK_THROWS_WITH(z.value_and_gradient(out, bad, g), lktest::Contains("labels") && lktest::Contains("4"));
  bad(1) = -1;
  CHECK_THROWS_AS(z(out, bad), losskit::Error);
  CHECK_THROWS_AS(z.per_sample(out, Eigen::VectorXi::Zero(2)), losskit::Error);
  CHECK_THROWS_WITH(z.value_and_gradient(Eigen::MatrixXd::Ones(1, 3), Eigen::VectorXi::Zero(3), g),
                    lktest::Contains("at least 2 classes"));
  CHECK_THROWS_AS(z.spherical_terms(1.0, 2.0, 0.5, 1), losskit::Error);
  CHECK_THROWS_AS(z(Eigen::MatrixXd(0, 0), Eigen::VectorXi(0)), losskit::Error);
  CHECK(lktest::untouched(g, 4, 3));
  Eigen::MatrixXd owner = lktest::sentinel(6, 6);
  CHECK_THROWS_AS(z.value_and_gradient(out, labels, owner.block(0, 0, 3, 3)), losskit::Error);
  CHECK(lktest::untouched(owner, 6, 6));
}

TEST_CASE("ZLoss value_and_gradient allocates nothing with a presized gradient", "[z_loss][alloc]") {
  const Eigen::MatrixXf out = lktest::normal<float>(64, 50);
  const Eigen::VectorXi labels = lktest::labels(50, 64);
  Eigen::MatrixXf g(64, 50);
  ZLoss<float> z;
  lktest::AllocationCounter counter;
  const float v = z.value_and_gradient(out, labels, g);
  CHECK(counter.count() == 0);
  CHECK(std::isfinite(v));
}

TEST_CASE("ZLoss gives NaN for a column with non-finite outputs, without throwing", "[z_loss][nonfinite]") {
  Eigen::MatrixXd out = lktest::normal(4, 3);
  const Eigen::VectorXi labels = Eigen::VectorXi::Zero(3);
  out(2, 0) = std::numeric_limits<double>::infinity();
  out(0, 1) = std::numeric_limits<double>::quiet_NaN();
  Eigen::MatrixXd g;
  const Eigen::VectorXd per = ZLoss<double>{}.per_sample(out, labels);
  CHECK(std::isnan(per(0)));
  CHECK(std::isnan(per(1)));
  CHECK(std::isfinite(per(2)));
  CHECK(std::isnan(ZLoss<double>{}.value_and_gradient(out, labels, g)));
  CHECK(g.col(0).array().isNaN().all());
  CHECK(g.col(2).allFinite());
}

TEST_CASE("ZLoss with sample weights is the s-weighted mean (or sum) of per_sample", "[z_loss][weights]") {
  const Eigen::MatrixXd out = lktest::normal(6, 7, 2.0);
  const Eigen::VectorXi labels = lktest::labels(7, 6);
  for (double b : {0.0, 0.5}) {
    ZLoss<double> z;
    z.b = b;
    for (double a : {1.0, 3.0}) {
      z.a = a;
      lktest::check_sample_weights(z, out, labels, "ZLoss a " + std::to_string(a) + " b " + std::to_string(b));
    }
  }
}

TEST_CASE("ZLoss per_sample over a batch large enough for the parallel loop equals one column at a time",
          "[z_loss][parallel]") {
  const Eigen::MatrixXd out = lktest::normal(200, 400, 2.0);
  const Eigen::VectorXi labels = lktest::labels(400, 200);
  const ZLoss<double> z;
  const Eigen::VectorXd per = z.per_sample(out, labels);
  for (Eigen::Index j = 0; j < 400; ++j) CHECK(per(j) == z.per_sample(out.col(j), labels.segment(j, 1))(0));
}
