// check_gradient(): it must pass correct gradients and catch wrong ones.
#include <losskit/gradcheck.hpp>

#include "test_util.hpp"

namespace {
// f(x) = Σ sin(x_ij)·x_ij² + exp(0.1·Σx); its gradient by hand:
// cos(x)·x² + 2x·sin(x) + 0.1·exp(0.1·Σx).
double f(const Eigen::MatrixXd& x) {
  return (x.array().sin() * x.array().square()).sum() + std::exp(0.1 * x.sum());
}
Eigen::MatrixXd grad_f(const Eigen::MatrixXd& x) {
  const Eigen::ArrayXXd a = x.array();
  return (a.cos() * a.square() + 2 * a * a.sin() + 0.1 * std::exp(0.1 * x.sum())).matrix();
}
}  // namespace

TEST_CASE("check_gradient passes a correct gradient to ~1e-9", "[gradcheck]") {
  const Eigen::MatrixXd x = lktest::normal(4, 3, 2.0);
  const auto r = losskit::check_gradient(f, x, grad_f(x));
  INFO(r.report());
  CHECK(r.passed);
  CHECK(r.max_rel_error < 1e-9);
  CHECK(r.checked == 12);
}

TEST_CASE("check_gradient catches a deliberately wrong gradient", "[gradcheck]") {
  const Eigen::MatrixXd x = lktest::normal(4, 3, 2.0);
  Eigen::MatrixXd wrong = grad_f(x);
  wrong(2, 1) *= 1.0 + 1e-5;  // a 1e-5 relative slip in one entry
  const auto r = losskit::check_gradient(f, x, wrong);
  INFO(r.report());
  CHECK_FALSE(r.passed);
  CHECK(r.worst_row == 2);
  CHECK(r.worst_col == 1);
  CHECK(r.max_rel_error == Approx(1e-5).epsilon(1e-2));
  // A missing factor 2 is caught by directional checks alone too.
  losskit::GradientCheckOptions dir_only;
  dir_only.max_coordinates = 0;
  dir_only.directions = 3;
  const auto rd = losskit::check_gradient(f, x, 0.5 * grad_f(x), dir_only);
  CHECK_FALSE(rd.passed);
  CHECK(rd.worst_direction >= 0);
  CHECK(losskit::check_gradient(f, x, grad_f(x), dir_only).passed);
}

TEST_CASE("check_gradient samples coordinates and rejects bad arguments", "[gradcheck]") {
  const Eigen::MatrixXd x = lktest::normal(20, 20);
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 15;
  const auto r = losskit::check_gradient(f, x, grad_f(x), opt);
  CHECK(r.checked == 15);
  CHECK(r.passed);
  CHECK_THROWS_AS(losskit::check_gradient(f, x, Eigen::MatrixXd(3, 3)), losskit::Error);
  opt.rtol = 0;
  CHECK_THROWS_AS(losskit::check_gradient(f, x, grad_f(x), opt), losskit::Error);
}
