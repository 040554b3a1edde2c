// libFuzzer harness over every losskit functor. The first byte picks the
// family; the rest gives shapes, options and data (NaN/Inf included).
// Invariants: no crash and no sanitizer report; each call either throws
// losskit::Error or returns; for finite inputs the loss and gradient are
// finite and the gradient matches a directional finite difference.
#include <cstdint>
#include <losskit/losskit.hpp>

#include "fuzz_common.hpp"

namespace {
using namespace lkfuzz;

void fuzz_mse(Fdp& p) {
  const bool finite = p.ConsumeBool();
  const Eigen::Index d = dim(p, 1, 6), n = dim(p, 1, 6);
  const Mat pred = matrix(p, d, n, finite), target = matrix(p, maybe_wrong(p, d), n, finite);
  losskit::MSE<double> mse;
  mse.reduction = p.ConsumeBool() ? losskit::Reduction::Mean : losskit::Reduction::Sum;
  Mat g;
  double v;
  try {
    v = mse.value_and_gradient(pred, target, g);
  } catch (const losskit::Error&) {
    return;
  }
  if (finite && (!std::isfinite(v) || !all_finite(g))) violation("MSE", "non-finite result for finite input");
  if (finite) check_direction("MSE", [&](const Mat& z) { return mse(z, target); }, pred, g);
  const float vf = losskit::MSE<float>{}(pred.cast<float>(), target.cast<float>());
  if (finite && pred.cwiseAbs().maxCoeff() < 1e15 && !std::isfinite(vf)) violation("MSE<float>", "non-finite");
}

using Target = void (*)(Fdp&);
const Target kTargets[] = {fuzz_mse};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fdp p(data, size);
  constexpr int count = int(sizeof(kTargets) / sizeof(kTargets[0]));
  int which = p.ConsumeIntegralInRange<int>(0, 255) % count;
  if (const char* only = std::getenv("LOSSKIT_FUZZ_TARGET")) which = std::atoi(only) % count;
  kTargets[which](p);
  return 0;
}
