// MSE: hand-computed values, reductions, gradients, expression kinds, errors,
// allocation-free value_and_gradient.
#include <losskit/gradcheck.hpp>
#include <losskit/mse.hpp>

#include "test_util.hpp"

using losskit::MSE;
using losskit::Reduction;

TEST_CASE("MSE matches hand-computed values for both reductions", "[mse]") {
  Eigen::MatrixXd pred(2, 3), target(2, 3);
  pred << 1, 2, 3, 4, 5, 6;
  target << 0, 2, 5, 4, 8, 6;
  // Squared errors by hand: (1,0) (0,9) (4,0)  -> total 14 over 6 elements.
  MSE<double> mse;
  CHECK(mse(pred, target) == Approx(14.0 / 6.0).epsilon(1e-15));
  const Eigen::VectorXd per = mse.per_sample(pred, target);
  CHECK(per(0) == Approx(0.5).epsilon(1e-15));
  CHECK(per(1) == Approx(4.5).epsilon(1e-15));
  CHECK(per(2) == Approx(2.0).epsilon(1e-15));
  mse.reduction = Reduction::Sum;
  CHECK(mse(pred, target) == Approx(14.0).epsilon(1e-15));
  Eigen::MatrixXd g;
  CHECK(mse.value_and_gradient(pred, target, g) == Approx(14.0).epsilon(1e-15));
  Eigen::MatrixXd expected(2, 3);
  expected << 2, 0, -4, 0, -6, 0;  // 2·(pred − target)
  CHECK(g == expected);
}

TEST_CASE("MSE gradient passes the finite-difference check for both reductions", "[mse][gradient]") {
  const Eigen::MatrixXd pred = lktest::normal(7, 5), target = lktest::normal(7, 5);
  for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
    MSE<double> mse;
    mse.reduction = r;
    Eigen::MatrixXd g;
    const double v = mse.value_and_gradient(pred, target, g);
    CHECK(v == Approx(mse(pred, target)).epsilon(1e-14));
    const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return mse(z, target); }, pred, g);
    INFO("MSE reduction " << r << ": " << res.report());
    CHECK(res.passed);
    CHECK(res.max_rel_error <= 1e-6);
  }
}

TEST_CASE("MSE in float agrees with double, also over 2^22 elements", "[mse][float]") {
  for (Eigen::Index cols : {Eigen::Index(3), Eigen::Index(1) << 16}) {
    const Eigen::MatrixXd pd = lktest::normal(64, cols), td = lktest::normal(64, cols);
    const Eigen::MatrixXf pf = pd.cast<float>(), tf = td.cast<float>();
    Eigen::MatrixXd gd;
    Eigen::MatrixXf gf;
    const double vd = MSE<double>{}.value_and_gradient(pf.cast<double>(), tf.cast<double>(), gd);
    const float vf = MSE<float>{}.value_and_gradient(pf, tf, gf);
    INFO("MSE float vs double, 64x" << cols << ": " << vf << " vs " << vd);
    // Blocked accumulation keeps the float sum at a few ulps even over 4M terms.
    CHECK(lktest::rel_err(vf, vd) < 1e-6);
    CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-6 * gd.cwiseAbs().maxCoeff());
  }
}

// Expression inputs and gradient views, for every functor: tests/contract_checks.hpp.
TEST_CASE("MSE rejects mismatched shapes and empty input, writing nothing", "[mse][errors]") {
  MSE<double> mse;
  const Eigen::MatrixXd pred = lktest::normal(3, 4);
  Eigen::MatrixXd g = lktest::sentinel(3, 4);
  CHECK_THROWS_AS(mse.value_and_gradient(pred, lktest::normal(3, 5), g), losskit::Error);
  CHECK_THROWS_WITH(mse(pred, lktest::normal(4, 4)), lktest::Contains("MSE") &&
                                                         lktest::Contains("target") &&
                                                         lktest::Contains("4x4"));
  CHECK(lktest::untouched(g, 3, 4));
  Eigen::MatrixXd wrong_view_owner = lktest::sentinel(5, 5);
  CHECK_THROWS_AS(mse.value_and_gradient(pred, pred, wrong_view_owner.block(0, 0, 2, 2)), losskit::Error);
  CHECK(lktest::untouched(wrong_view_owner, 5, 5));
  CHECK_THROWS_AS(mse(Eigen::MatrixXd(0, 3), Eigen::MatrixXd(0, 3)), losskit::Error);
  CHECK_THROWS_AS(mse.per_sample(pred, lktest::normal(3, 1)), losskit::Error);
}

TEST_CASE("MSE value_and_gradient allocates nothing with a presized gradient", "[mse][alloc]") {
  const Eigen::MatrixXf pred = lktest::normal<float>(32, 100), target = lktest::normal<float>(32, 100);
  Eigen::MatrixXf g(32, 100);
  MSE<float> mse;
  lktest::AllocationCounter counter;
  const float v = mse.value_and_gradient(pred, target, g);
  CHECK(counter.count() == 0);
  CHECK(std::isfinite(v));
}

TEST_CASE("MSE propagates non-finite inputs without throwing", "[mse][nonfinite]") {
  Eigen::MatrixXd pred = Eigen::MatrixXd::Zero(2, 2), target = Eigen::MatrixXd::Zero(2, 2);
  pred(0, 0) = std::numeric_limits<double>::infinity();
  CHECK(std::isinf(MSE<double>{}(pred, target)));
  pred(0, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(MSE<double>{}(pred, target)));
}
