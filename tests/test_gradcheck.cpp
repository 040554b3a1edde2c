// check_gradient(): it must pass correct gradients and catch wrong ones, in
// double and, with its float defaults, in float.
#include <losskit/cross_entropy.hpp>
#include <losskit/gradcheck.hpp>
#include <losskit/mse.hpp>
#include <losskit/ssim.hpp>

#include <functional>
#include <random>
#include <string>
#include <vector>

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

// ------------------------------------------------------- defaults by Scalar
namespace {
using MatF = Eigen::MatrixXf;

// Own generator: the float checks below must not depend on which tests ran
// before them.
struct FloatInputs {
  std::mt19937_64 gen{20261205};
  MatF normal(Eigen::Index rows, Eigen::Index cols, double stddev = 1.0) {
    std::normal_distribution<double> d(0.0, stddev);
    MatF m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(d(gen));
    return m;
  }
  MatF uniform(Eigen::Index rows, Eigen::Index cols) {
    std::uniform_real_distribution<double> d(0.0, 1.0);
    MatF m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(d(gen));
    return m;
  }
  Eigen::VectorXi labels(Eigen::Index n, int classes) {
    std::uniform_int_distribution<int> d(0, classes - 1);
    Eigen::VectorXi y(n);
    for (Eigen::Index i = 0; i < n; ++i) y(i) = d(gen);
    return y;
  }
};

// One float loss at one random input: its function, point and analytic gradient.
struct FloatCase {
  std::string loss;
  std::function<double(const MatF&)> f;
  MatF x, grad;
};

std::vector<FloatCase> float_cases(FloatInputs& in) {
  std::vector<FloatCase> cases;
  {
    const MatF pred = in.normal(6, 5), target = in.normal(6, 5);
    const losskit::MSE<float> mse;
    FloatCase c{"MSE", [=](const MatF& z) { return double(mse(z, target)); }, pred, {}};
    mse.value_and_gradient(pred, target, c.grad);
    cases.push_back(c);
  }
  {
    const MatF logits = in.normal(10, 6, 2.0);
    const Eigen::VectorXi y = in.labels(6, 10);
    losskit::CrossEntropy<float> ce;
    ce.label_smoothing = 0.1f;
    FloatCase c{"CrossEntropy (label_smoothing 0.1)", [=](const MatF& z) { return double(ce(z, y)); }, logits, {}};
    ce.value_and_gradient(logits, y, c.grad);
    cases.push_back(c);
  }
  {
    const MatF logits = in.normal(5, 6, 2.0), targets = in.uniform(5, 6);
    const losskit::BinaryCrossEntropyWithLogits<float> bce;
    FloatCase c{"BinaryCrossEntropyWithLogits", [=](const MatF& z) { return double(bce(z, targets)); }, logits, {}};
    bce.value_and_gradient(logits, targets, c.grad);
    cases.push_back(c);
  }
  {
    const MatF x = in.uniform(16 * 16, 2);
    const MatF y = (x + 0.2f * in.normal(16 * 16, 2)).eval();
    const losskit::SSIMLoss<float> ssim(16, 16);
    FloatCase c{"SSIMLoss 16x16", [=](const MatF& z) { return double(ssim(z, y)); }, x, {}};
    ssim.value_and_gradient(x, y, c.grad);
    cases.push_back(c);
  }
  return cases;
}
}  // namespace

TEST_CASE("check_gradient's defaults for double are unchanged", "[gradcheck]") {
  constexpr losskit::GradientCheckDefaults d = losskit::gradient_check_defaults<double>();
  CHECK(d.rtol == 1e-6);
  CHECK(d.atol == 1e-10);
  CHECK(d.step == 1e-3);
  const Eigen::MatrixXd x = lktest::normal(4, 3, 2.0);
  const auto r = losskit::check_gradient(f, x, grad_f(x));
  CHECK(r.rtol == 1e-6);
  CHECK(r.atol == 1e-10);
  CHECK(r.step == 1e-3);
}

TEST_CASE("check_gradient passes correct float gradients with its float defaults", "[gradcheck]") {
  constexpr losskit::GradientCheckDefaults d = losskit::gradient_check_defaults<float>();
  CHECK(d.rtol == 3e-3);
  CHECK(d.atol == 5e-5);
  CHECK(d.step == 5e-2);
  FloatInputs in;
  for (int draw = 0; draw < 10; ++draw) {
    for (const FloatCase& c : float_cases(in)) {
      const auto r = losskit::check_gradient(c.f, c.x, c.grad);
      INFO(c.loss << ", draw " << draw << ": " << r.report());
      CHECK(r.passed);
      CHECK(r.rtol == d.rtol);
      // Setting another option keeps the float tolerances.
      losskit::GradientCheckOptions sampled;
      sampled.max_coordinates = 8;
      sampled.directions = 2;
      const auto rs = losskit::check_gradient(c.f, c.x, c.grad, sampled);
      INFO("8 coordinates + 2 directions: " << rs.report());
      CHECK(rs.passed);
      CHECK(rs.atol == d.atol);
    }
  }
  // Why float needs its own defaults: double's fail these correct gradients.
  constexpr losskit::GradientCheckDefaults dd = losskit::gradient_check_defaults<double>();
  losskit::GradientCheckOptions double_defaults;
  double_defaults.rtol = dd.rtol;
  double_defaults.atol = dd.atol;
  double_defaults.step = dd.step;
  for (const FloatCase& c : float_cases(in)) {
    INFO(c.loss);
    CHECK_FALSE(losskit::check_gradient(c.f, c.x, c.grad, double_defaults).passed);
  }
}

TEST_CASE("check_gradient's float defaults catch a 1% error in one entry", "[gradcheck]") {
  FloatInputs in;
  for (int draw = 0; draw < 10; ++draw) {
    for (const FloatCase& c : float_cases(in)) {
      // The largest entry: entries below atol/rtol ≈ 0.017 are compared to
      // atol absolutely, and float differences cannot resolve 1% of them.
      Eigen::Index row = 0, col = 0;
      c.grad.cwiseAbs().maxCoeff(&row, &col);
      MatF wrong = c.grad;
      wrong(row, col) *= 1.01f;
      const auto r = losskit::check_gradient(c.f, c.x, wrong);
      INFO(c.loss << ", draw " << draw << ", entry (" << row << ", " << col << ") of " << c.grad(row, col) << ": "
                  << r.report());
      CHECK_FALSE(r.passed);
      CHECK(r.worst_row == row);
      CHECK(r.worst_col == col);
      CHECK(r.max_rel_error == Approx(0.01).epsilon(0.3));
    }
  }
}
