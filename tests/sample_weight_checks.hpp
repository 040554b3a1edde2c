#pragma once
// The sample-weight contract of a loss whose samples each count once in the
// Mean (n_i = 1; design.md, issue 14), checked against the loss's own
// per_sample:
//   Mean = Σ s_i·per_sample_i / Σ s_i,   Sum = Σ s_i·per_sample_i,
// with positive weights and with some weights 0; value_and_gradient with
// weights returns operator()'s value and a gradient that passes
// check_gradient (zero columns where s_i = 0); all weights 0 give 0 and a
// zero gradient; weights of the wrong length, negative, NaN or infinite
// throw losskit::Error naming sample_weights and write nothing.
#include <losskit/core/error.hpp>
#include <losskit/gradcheck.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

namespace lktest {

/// Weights in [0.1, 3); with `zeros`, samples 0, 3, 6, ... weigh 0.
inline Eigen::VectorXd random_weights(Eigen::Index n, bool zeros) {
  std::uniform_real_distribution<double> d(0.1, 3.0);
  Eigen::VectorXd s(n);
  for (Eigen::Index i = 0; i < n; ++i) s(i) = zeros && i % 3 == 0 ? 0.0 : d(rng());
  return s;
}

/// Σ s_i·ℓ_i (or / Σ s_i for Mean) in long double, from per-sample values,
/// and Σ s_i·|ℓ_i| (same scaling), the size a rounding error is relative to.
struct WeightedReference {
  double value = 0, magnitude = 0;
};

inline WeightedReference weighted_reference(const Eigen::VectorXd& per, const Eigen::VectorXd& s, bool mean) {
  long double sum = 0, abs_sum = 0, total = 0;
  for (Eigen::Index i = 0; i < s.size(); ++i) {
    total += s(i);
    if (s(i) == 0) continue;
    sum += static_cast<long double>(s(i)) * per(i);
    abs_sum += static_cast<long double>(s(i)) * std::abs(per(i));
  }
  const long double scale = mean ? 1 / total : 1;
  return {double(sum * scale), double(abs_sum * scale)};
}

/// The bad weight vectors for n samples and what each is called.
inline std::vector<std::pair<std::string, Eigen::VectorXd>> bad_weights(Eigen::Index n) {
  std::vector<std::pair<std::string, Eigen::VectorXd>> bad;
  bad.emplace_back("wrong length", Eigen::VectorXd::Ones(n + 1));
  for (double v : {-1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    Eigen::VectorXd s = Eigen::VectorXd::Ones(n);
    s(n > 1 ? 1 : 0) = v;
    std::ostringstream name;
    name << "weight " << v;
    bad.emplace_back(name.str(), s);
  }
  return bad;
}

/// Every check above for `loss` (double, n_i = 1) at (x, target).
template <class Loss, class T>
void check_sample_weights(Loss loss, const Eigen::MatrixXd& x, const T& target, const std::string& what,
                          const losskit::GradientCheckOptions& opt = {}) {
  using losskit::Reduction;
  const Eigen::Index rows = x.rows(), n = x.cols();
  const Eigen::VectorXd per = loss.per_sample(x, target);
  for (bool zeros : {false, true}) {
    const Eigen::VectorXd s = random_weights(n, zeros);
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      loss.reduction = r;
      INFO(what << ", " << r << (zeros ? ", some weights 0" : ", positive weights"));
      const WeightedReference ref = weighted_reference(per, s, r == Reduction::Mean);
      const double v = loss(x, target, s);
      CHECK(std::abs(v - ref.value) <= 1e-13 * ref.magnitude);
      Eigen::MatrixXd g;
      CHECK(loss.value_and_gradient(x, target, s, g) == Approx(v).epsilon(1e-14));
      for (Eigen::Index i = 0; i < n; ++i)
        if (s(i) == 0) CHECK(g.col(i).isZero(0));
      const auto res = losskit::check_gradient([&](const Eigen::MatrixXd& z) { return loss(z, target, s); }, x, g, opt);
      INFO(res.report());
      CHECK(res.passed);
    }
  }
  for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
    loss.reduction = r;
    INFO(what << ", " << r << ": unit weights, all weights 0");
    CHECK(loss(x, target, Eigen::VectorXd::Ones(n)) == Approx(loss(x, target)).epsilon(1e-14));
    Eigen::MatrixXd g = sentinel(rows, n);
    CHECK(loss.value_and_gradient(x, target, Eigen::VectorXd::Zero(n), g) == 0.0);
    CHECK(g.isZero(0));
    CHECK(loss(x, target, Eigen::VectorXd::Zero(n)) == 0.0);
  }
  for (const auto& bad : bad_weights(n)) {
    INFO(what << ": " << bad.first);
    Eigen::MatrixXd g = sentinel(rows, n);
    CHECK_THROWS_AS(loss.value_and_gradient(x, target, bad.second, g), losskit::Error);
    CHECK_THROWS_WITH(loss.value_and_gradient(x, target, bad.second, g), Contains("sample_weights"));
    CHECK_THROWS_WITH(loss(x, target, bad.second), Contains("sample_weights"));
    CHECK(untouched(g, rows, n));
  }
}

}  // namespace lktest
