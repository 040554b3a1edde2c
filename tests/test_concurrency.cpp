// Concurrency (design.md: every const member function may run at the same
// time on one object from several threads): one shared const functor is
// called from kThreads std::threads at once, and every result must equal the
// serial result on the same inputs bit for bit. Run under ThreadSanitizer by
// the `tsan` preset (OpenMP off there, so the results are deterministic),
// which selects these tests by the name prefix "Concurrent const calls: ".
// A new functor needs one lambda that makes its calls and records what they
// return: run_concurrently does the rest.
#include <losskit/losskit.hpp>

#include <atomic>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include "svd_instances.hpp"
#include "test_util.hpp"

namespace {

constexpr int kThreads = 4;
constexpr int kCallsPerThread = 6;

using MatrixD = Eigen::MatrixXd;
using MatrixF = Eigen::MatrixXf;

/// Everything one round of calls returned, as doubles (float → double is
/// exact), compared bit for bit (so NaN equals NaN of the same payload).
struct Record {
  std::vector<double> numbers;

  template <class S, std::enable_if_t<std::is_arithmetic<S>::value, int> = 0>
  Record& add(S v) {
    numbers.push_back(double(v));
    return *this;
  }
  template <class D>
  Record& add(const Eigen::DenseBase<D>& m) {
    for (Eigen::Index j = 0; j < m.cols(); ++j)
      for (Eigen::Index i = 0; i < m.rows(); ++i) numbers.push_back(double(m.derived().coeff(i, j)));
    return *this;
  }
  bool same_bits(const Record& o) const {
    return numbers.size() == o.numbers.size() &&
           std::memcmp(numbers.data(), o.numbers.data(), numbers.size() * sizeof(double)) == 0;
  }
};

/// Runs `calls()` once serially, then kCallsPerThread times on each of
/// kThreads threads released together, and checks every concurrent Record
/// against the serial one. `calls` captures the shared const functor.
template <class Calls>
void run_concurrently(const char* loss, Calls&& calls) {
  const Record serial = calls();
  std::vector<Record> results(kThreads * kCallsPerThread);
  std::atomic<int> arrived{0}, threw{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      arrived.fetch_add(1);
      while (arrived.load() < kThreads) std::this_thread::yield();
      try {
        for (int c = 0; c < kCallsPerThread; ++c) results[std::size_t(t * kCallsPerThread + c)] = calls();
      } catch (...) {
        threw.fetch_add(1);
      }
    });
  for (std::thread& th : threads) th.join();
  int differ = 0;
  for (const Record& r : results) differ += r.same_bits(serial) ? 0 : 1;
  INFO(loss << ": " << kThreads << " threads x " << kCallsPerThread << " calls on one shared object; " << threw
            << " threads threw, " << differ << " results differ from the serial one (" << serial.numbers.size()
            << " numbers each)");
  CHECK(threw == 0);
  CHECK(differ == 0);
}

/// operator(), value_and_gradient (into this call's own gradient) and
/// per_sample of a (pred, target) functor.
template <class Loss, class P, class T>
Record pred_target_calls(const Loss& loss, const P& pred, const T& target) {
  Eigen::Matrix<typename Loss::Scalar, Eigen::Dynamic, Eigen::Dynamic> grad;
  Record r;
  r.add(loss(pred, target));
  r.add(loss.value_and_gradient(pred, target, grad)).add(grad);
  r.add(loss.per_sample(pred, target));
  return r;
}

template <class Loss, class P, class T>
void check_pred_target(const char* name, const Loss& loss, const P& pred, const T& target) {
  run_concurrently(name, [&] { return pred_target_calls(loss, pred, target); });
}

MatrixD probabilities(Eigen::Index classes, Eigen::Index n) {
  MatrixD q = lktest::uniform(classes, n, 0.05, 1.0);
  q.array().rowwise() /= q.colwise().sum().array();
  return q;
}

}  // namespace

TEST_CASE("Concurrent const calls: MSE CrossEntropy BinaryCrossEntropyWithLogits", "[concurrency]") {
  const MatrixD x = lktest::normal(7, 33, 2.0), target = lktest::normal(7, 33);
  const Eigen::VectorXi y = lktest::labels(33, 7);
  check_pred_target("MSE", losskit::MSE<double>{}, x, target);
  losskit::CrossEntropy<double> ce;
  ce.label_smoothing = 0.1;
  ce.class_weights = lktest::uniform(7, 1, 0.5, 2.0);
  check_pred_target("CrossEntropy (labels)", ce, x, y);
  check_pred_target("CrossEntropy (probabilities)", ce, x, probabilities(7, 33));
  losskit::BinaryCrossEntropyWithLogits<double> bce;
  bce.pos_weight = lktest::uniform(7, 1, 0.5, 2.0);
  check_pred_target("BinaryCrossEntropyWithLogits", bce, x, lktest::uniform(7, 33));
  const losskit::CrossEntropy<float> ce_float;
  check_pred_target("CrossEntropy<float> (labels)", ce_float, lktest::normal<float>(7, 33, 2.0), y);
}

TEST_CASE("Concurrent const calls: CompSum SmoothAdversarialCompSum", "[concurrency]") {
  const MatrixD clean = lktest::normal(6, 29, 2.0), adv = clean + lktest::normal(6, 29, 0.3);
  const Eigen::VectorXi y = lktest::labels(29, 6);
  check_pred_target("CompSum", losskit::CompSum<double>(0.5), clean, y);
  const losskit::SmoothAdversarialCompSum<double> smooth(1.5, 2.0);
  run_concurrently("SmoothAdversarialCompSum", [&] {
    MatrixD grad_clean, grad_adv;
    Record r;
    r.add(smooth(clean, adv, y));
    r.add(smooth.value_and_gradient(clean, adv, y, grad_clean, grad_adv)).add(grad_clean).add(grad_adv);
    return r.add(smooth.per_sample(clean, adv, y));
  });
}

TEST_CASE("Concurrent const calls: LDRKL ALDRKL ZLoss", "[concurrency]") {
  const MatrixD x = lktest::normal(9, 31, 2.0);
  const Eigen::VectorXi y = lktest::labels(31, 9);
  check_pred_target("LDRKL", losskit::LDRKL<double>{}, x, y);
  check_pred_target("ALDRKL", losskit::ALDRKL<double>{}, x, y);
  check_pred_target("ZLoss", losskit::ZLoss<double>{}, x, y);
}

TEST_CASE("Concurrent const calls: SSIMLoss MSSSIMLoss", "[concurrency]") {
  const Eigen::Index h = 36, w = 28, c = 2, n = 3;
  const MatrixF x = lktest::uniform<float>(c * h * w, n), target = lktest::uniform<float>(c * h * w, n);
  const losskit::SSIMLoss<float> ssim(h, w, c);
  check_pred_target("SSIMLoss", ssim, x, target);
  losskit::MSSSIMLoss<float> ms(h, w, c);
  ms.window_size = 5;
  ms.weights = {0.3f, 0.3f, 0.4f};
  check_pred_target("MSSSIMLoss", ms, x, target);
  run_concurrently("SSIMLoss::index", [&] { return Record().add(ssim.index(x, target)); });
  const Eigen::VectorXf s = lktest::uniform<float>(n, 1, 0.5f, 2.0f);
  run_concurrently("MSSSIMLoss::evaluate (sample weights)", [&] {
    MatrixF grad;
    const auto r = ms.evaluate(x, target, s, grad);
    return Record().add(r.loss).add(r.clamped_images).add(grad).add(ssim(x, target, s));
  });
}

TEST_CASE("Concurrent const calls: SSIM3DLoss MSSSIM3DLoss", "[concurrency]") {
  const Eigen::Index d = 9, h = 11, w = 10, c = 2, n = 3;
  const MatrixF x = lktest::uniform<float>(c * d * h * w, n), target = lktest::uniform<float>(c * d * h * w, n);
  losskit::SSIM3DLoss<float> ssim(d, h, w, c);
  ssim.window_size = 5;
  check_pred_target("SSIM3DLoss", ssim, x, target);
  losskit::MSSSIM3DLoss<float> ms(d, h, w, c);
  ms.window_size = 3;
  ms.weights = {0.3f, 0.3f, 0.4f};
  ms.pooling = losskit::OddSizePooling::ZeroFirst;
  check_pred_target("MSSSIM3DLoss", ms, x, target);
  const Eigen::VectorXf s = lktest::uniform<float>(n, 1, 0.5f, 2.0f);
  run_concurrently("MSSSIM3DLoss::evaluate (sample weights)", [&] {
    MatrixF grad;
    const auto r = ms.evaluate(x, target, s, grad);
    return Record().add(r.loss).add(r.clamped_images).add(grad).add(ssim.channel_index(x, target));
  });
}

TEST_CASE("Concurrent const calls: CSDivergence CSQuadraticMI CSIB", "[concurrency]") {
  const Eigen::Index n = 40;
  const MatrixD x = lktest::normal(3, n), y = lktest::normal(2, n), yhat = y + 0.5 * lktest::normal(2, n);
  const MatrixD t = lktest::normal(20, n);  // d_t > 16: the GEMM distance path
  losskit::CSDivergence<double> div;
  div.symmetric_cross_term = true;
  run_concurrently("CSDivergence", [&] {
    MatrixD grad;
    Record r;
    r.add(div(yhat, y, x));
    return r.add(div.value_and_gradient(yhat, y, x, grad)).add(grad);
  });
  losskit::CSQuadraticMI<double> mi;
  mi.normalized = true;
  run_concurrently("CSQuadraticMI", [&] {
    MatrixD grad;
    Record r;
    r.add(mi(t, x));
    return r.add(mi.value_and_gradient(t, x, grad)).add(grad);
  });
  const losskit::CSIB<double> ib;
  run_concurrently("CSIB", [&] {
    MatrixD grad_yhat, grad_t;
    Record r;
    r.add(ib(yhat, y, t, x));
    return r.add(ib.value_and_gradient(yhat, y, t, x, grad_yhat, grad_t)).add(grad_yhat).add(grad_t);
  });
}

TEST_CASE("Concurrent const calls: LinearCrossEntropy", "[concurrency]") {
  const Eigen::Index d = 8, n = 30, classes = 50;
  const MatrixD h = lktest::normal(d, n), w = lktest::normal(classes, d);
  const Eigen::VectorXd b = lktest::normal(classes, 1), s = lktest::uniform(n, 1, 0.0, 2.0);
  const Eigen::VectorXi y = lktest::labels(n, int(classes));
  losskit::LinearCrossEntropy<double> lce;
  lce.block_size = 16;  // several class blocks per call
  lce.label_smoothing = 0.1;
  lce.z_penalty = 1e-3;
  run_concurrently("LinearCrossEntropy", [&] {
    MatrixD grad_h, grad_w, grad_b;
    Record r;
    r.add(lce(h, w, b, y)).add(lce(h, w, b, y, s));
    r.add(lce.value_and_gradient(h, w, b, y, s, grad_h, grad_w, grad_b));
    return r.add(grad_h).add(grad_w).add(grad_b);
  });
}

TEST_CASE("Concurrent const calls: FactoredOutputLayer", "[concurrency]") {
  const Eigen::Index classes = 30, d = 5, m = 6;
  losskit::FactoredOutputLayer<double> layer(lktest::normal(classes, d, 0.3));
  const losskit::ZLoss<double> z;
  const losskit::MSE<double> mse;
  MatrixD step_grad;
  for (int s = 0; s < 3; ++s)  // a factored state (U != I, omega != 0) to read
    layer.train_step(z, lktest::normal(d, m), lktest::labels(m, int(classes)), step_grad, 0.1);
  const MatrixD h = lktest::normal(d, m);
  const Eigen::VectorXi y = lktest::labels(m, int(classes));
  Eigen::MatrixXi rows(2, m);  // two distinct target rows per sample
  for (Eigen::Index i = 0; i < m; ++i) rows.col(i) << y(i), (y(i) + 1) % int(classes);
  const MatrixD vals = lktest::normal(2, m);
  const losskit::FactoredOutputLayer<double>& shared = layer;
  run_concurrently("FactoredOutputLayer", [&] {
    MatrixD g_z, g_onehot, g_sparse;
    Record r;
    r.add(shared.value_and_gradient(z, h, y, g_z)).add(g_z);
    r.add(shared.value_and_gradient(mse, h, y, g_onehot)).add(g_onehot);
    r.add(shared.value_and_gradient(mse, h, rows, vals, g_sparse)).add(g_sparse);
    r.add(shared.outputs(h)).add(shared.weights());
    return r.add(shared.stats().updates).add(shared.classes()).add(shared.hidden_size());
  });
}

TEST_CASE("Concurrent const calls: WorkspacePool reuses one workspace per caller and copies empty",
          "[concurrency]") {
  const losskit::detail::WorkspacePool<Eigen::VectorXd> pool;
  const Eigen::VectorXd* first = nullptr;
  {
    const auto a = pool.acquire();
    first = &*a;
  }
  {
    const auto again = pool.acquire();  // the one just returned
    const auto second = pool.acquire();  // a second concurrent caller: a new one
    CHECK(&*again == first);
    CHECK(&*second != first);
  }
  if (!lktest::allocations_counted()) {
    WARN("operator new is not counted in this build (clang ThreadSanitizer): allocation checks skipped");
    return;
  }
  lktest::AllocationCounter counter;
  {
    const auto a = pool.acquire(), b = pool.acquire();  // as many as ever held at once: no allocation
  }
  CHECK(counter.count() == 0);
  const losskit::detail::WorkspacePool<Eigen::VectorXd> copy = pool;  // empty: nothing shared
  const auto c = copy.acquire();
  CHECK(&*c != first);
  CHECK(counter.count() > 0);
}
