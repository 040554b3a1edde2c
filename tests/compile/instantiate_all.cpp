// Instantiates every public functor for float and double, so the headers can
// be compiled with extra warnings (-Wconversion, -Wshadow, ...) on g++ and clang++.
#include <Eigen/Core>
#include <losskit/losskit.hpp>

namespace {
template <class S>
S use_all() {
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const M a = M::Ones(3, 4), b = M::Zero(3, 4);
  M g;
  S total = losskit::MSE<S>{}.value_and_gradient(a, b, g) + losskit::MSE<S>{}(a, b) +
            losskit::MSE<S>{}.per_sample(a, b).sum();
  const auto r = losskit::check_gradient([&](const M& z) { return losskit::MSE<S>{}(z, b); }, a, g);
  return total + S(r.max_rel_error);
}
}  // namespace

int main() { return use_all<float>() + use_all<double>() > 0 ? 0 : 1; }
