// Built by the package.* CTest tests against an installed / embedded losskit.
#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <losskit/losskit.hpp>

#ifdef CONSUMER_OPENMP
#ifndef _OPENMP
#error "OpenMP::OpenMP_CXX is linked but _OPENMP is not defined"
#endif
#include <omp.h>
#endif

int main() {
  Eigen::MatrixXd pred(2, 2), target(2, 2), grad;
  pred << 1, 2, 3, 4;
  target << 0, 2, 3, 6;
  // Squared errors 1, 0, 0, 4 over 4 elements.
  const double value = losskit::MSE<double>{}.value_and_gradient(pred, target, grad);
  bool ok = std::abs(value - 1.25) < 1e-15 && std::abs(grad(1, 1) + 1.0) < 1e-15;
  std::printf("consumer: MSE = %g (%s)\n", value, ok ? "ok" : "WRONG");
#ifdef CONSUMER_OPENMP
  // A batch large enough for losskit's column loop to use every thread: the
  // parallel result equals the one-thread result up to round-off.
  const Eigen::MatrixXd logits = Eigen::MatrixXd::Random(64, 2048);
  const Eigen::VectorXi labels = Eigen::VectorXi::LinSpaced(2048, 0, 63);
  const losskit::CrossEntropy<double> ce;
  const int threads = omp_get_max_threads();
  const double parallel = ce(logits, labels);
  omp_set_num_threads(1);
  const double serial = ce(logits, labels);
  const bool same = std::abs(parallel - serial) <= 1e-12 * std::abs(serial);
  std::printf("consumer: OpenMP %d, %d threads: CrossEntropy %.17g, 1 thread %.17g (%s)\n", _OPENMP, threads,
              parallel, serial, same ? "ok" : "WRONG");
  ok = ok && threads >= 1 && same;
#endif
  return ok ? 0 : 1;
}
