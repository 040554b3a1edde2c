// Built with -fno-exceptions: shows the documented error policy.
// With LOSSKIT_TEST_HANDLER defined, a user handler prints the message and
// exits 0 (CTest checks the message); without it, losskit prints the message
// and calls std::abort() (CTest expects the abort).
#include <cstdio>
#include <cstdlib>

#if defined(LOSSKIT_TEST_HANDLER)
[[noreturn]] inline void my_losskit_handler(const char* message) {
  std::printf("handled: %s\n", message);
  std::exit(0);
}
#define LOSSKIT_ERROR_HANDLER(message) my_losskit_handler(message)
#endif

#include <Eigen/Core>
#include <losskit/losskit.hpp>

int main() {
  const Eigen::MatrixXd pred = Eigen::MatrixXd::Zero(2, 3), target = Eigen::MatrixXd::Zero(3, 3);
  const double v = losskit::MSE<double>{}(pred, target);  // shape mismatch: never returns
  std::printf("returned %g: the error policy did not stop the call\n", v);
  return 1;
}
