// LinearCrossEntropy: against the materialised path (logits = W·H + b·1ᵀ,
// CrossEntropy, chain rule) over option combinations, finite differences on
// H, W and b, float vs double, errors (nothing written), peak heap of a call
// at C = 32768, the sparsity filter's documented bound, concurrency.
#include <losskit/gradcheck.hpp>
#include <losskit/linear_cross_entropy.hpp>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "test_util.hpp"

using losskit::CrossEntropy;
using losskit::LinearCrossEntropy;
using losskit::Reduction;

namespace {

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;

// Sample weights, or nullptr (a non-deduced parameter, so nullptr binds).
template <class S>
using WeightsPtr = const typename std::common_type<Vec<S>>::type*;

template <class S>
struct Grads {
  S loss = 0;
  Mat<S> h, w;
  Vec<S> b;
};

// The materialised path: the C×N logits, CrossEntropy with the same options,
// then ∂L/∂H = Wᵀ·G, ∂L/∂W = G·Hᵀ, ∂L/∂b = G·1.
template <class S>
Grads<S> materialised(const LinearCrossEntropy<S>& lce, const Mat<S>& h, const Mat<S>& w, const Vec<S>& b,
                      const Eigen::VectorXi& y, WeightsPtr<S> weights) {
  Mat<S> logits = w * h;
  if (b.size()) logits.colwise() += b;
  CrossEntropy<S> ce;
  ce.reduction = lce.reduction;
  ce.class_weights = lce.class_weights;
  ce.ignore_index = lce.ignore_index;
  ce.label_smoothing = lce.label_smoothing;
  ce.z_penalty = lce.z_penalty;
  Mat<S> g;
  Grads<S> r;
  r.loss = weights ? ce.value_and_gradient(logits, y, *weights, g) : ce.value_and_gradient(logits, y, g);
  r.h = w.transpose() * g;
  r.w = g * h.transpose();
  if (b.size()) r.b = g.rowwise().sum();
  return r;
}

template <class S>
Grads<S> blocked(const LinearCrossEntropy<S>& lce, const Mat<S>& h, const Mat<S>& w, const Vec<S>& b,
                 const Eigen::VectorXi& y, WeightsPtr<S> weights) {
  Grads<S> r;
  r.loss = weights ? lce.value_and_gradient(h, w, b, y, *weights, r.h, r.w, r.b)
                   : lce.value_and_gradient(h, w, b, y, r.h, r.w, r.b);
  return r;
}

// max |a − b| / max |b|: the error relative to the gradient's scale (entries
// that cancel to ~0 are compared at that scale, not their own).
template <class A, class B>
double scaled_err(const A& a, const B& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  if (a.size() == 0) return 0;
  const double scale = std::max(double(b.cwiseAbs().maxCoeff()), 1e-300);
  return double((a - b).cwiseAbs().maxCoeff()) / scale;
}

struct Problem {
  Eigen::MatrixXd h, w;
  Eigen::VectorXd b, weights, sample_weights;
  Eigen::VectorXi y;
};

Problem problem(int classes, int d, int n, double scale = 1.0) {
  Problem p;
  p.h = lktest::normal(d, n, scale);
  p.w = lktest::normal(classes, d, 1.0);
  p.b = lktest::normal(classes, 1, 0.5);
  p.weights = lktest::uniform(classes, 1, 0.2, 2.0);
  p.sample_weights = lktest::uniform(n, 1, 0.0, 3.0);
  p.sample_weights(1) = 0;
  p.y = lktest::labels(n, classes);
  for (int i = 0; i < n; i += 5) p.y(i) = -100;  // every fifth sample ignored
  return p;
}

}  // namespace

TEST_CASE("LinearCrossEntropy equals the materialised logits + CrossEntropy to 1e-12 in double, every option",
          "[lce]") {
  const int classes = 37, d = 6, n = 23;
  const Problem p = problem(classes, d, n, 1.5);
  double worst = 0;
  int combos = 0;
  for (const Eigen::Index block : {Eigen::Index(1), Eigen::Index(8), Eigen::Index(37), Eigen::Index(1000)})
    for (const bool bias : {false, true})
      for (const bool weighted : {false, true})
        for (const double eps : {0.0, 0.2})
          for (const double z : {0.0, 1e-2})
            for (const Reduction r : {Reduction::Mean, Reduction::Sum})
              for (const bool sw : {false, true}) {
                LinearCrossEntropy<double> lce;
                lce.block_size = block;
                lce.reduction = r;
                lce.label_smoothing = eps;
                lce.z_penalty = z;
                if (weighted) lce.class_weights = p.weights;
                const Eigen::VectorXd b = bias ? p.b : Eigen::VectorXd();
                const Eigen::VectorXd* s = sw ? &p.sample_weights : nullptr;
                const Grads<double> ref = materialised(lce, p.h, p.w, b, p.y, s);
                const Grads<double> got = blocked(lce, p.h, p.w, b, p.y, s);
                const double e = std::max({lktest::rel_err(got.loss, ref.loss), scaled_err(got.h, ref.h),
                                           scaled_err(got.w, ref.w), scaled_err(got.b, ref.b)});
                INFO("block " << block << ", bias " << bias << ", class weights " << weighted << ", smoothing " << eps
                              << ", z_penalty " << z << ", reduction " << r << ", sample weights " << sw
                              << ": loss " << got.loss << " vs " << ref.loss << ", worst error " << e);
                CHECK(e <= 1e-12);
                CHECK(got.b.size() == (bias ? classes : 0));
                // The value alone is the same number.
                CHECK(lktest::rel_err(s ? lce(p.h, p.w, b, p.y, *s) : lce(p.h, p.w, b, p.y), got.loss) <= 1e-14);
                worst = std::max(worst, e);
                ++combos;
              }
  WARN("LinearCrossEntropy vs materialised, double, " << combos << " combinations: worst relative error " << worst);
}

TEST_CASE("LinearCrossEntropy over several default-size blocks, and its parts, match CrossEntropy::evaluate",
          "[lce]") {
  const int classes = 1300, d = 16, n = 40;  // 3 blocks of 512, the last partial
  const Problem p = problem(classes, d, n, 0.5);
  LinearCrossEntropy<double> lce;
  lce.z_penalty = 1e-3;
  lce.label_smoothing = 0.1;
  lce.class_weights = p.weights;
  const Grads<double> ref = materialised(lce, p.h, p.w, p.b, p.y, &p.sample_weights);
  const Grads<double> got = blocked(lce, p.h, p.w, p.b, p.y, &p.sample_weights);
  CHECK(lktest::rel_err(got.loss, ref.loss) <= 1e-12);
  CHECK(scaled_err(got.h, ref.h) <= 1e-12);
  CHECK(scaled_err(got.w, ref.w) <= 1e-12);
  CHECK(scaled_err(got.b, ref.b) <= 1e-12);

  CrossEntropy<double> ce;
  ce.z_penalty = lce.z_penalty;
  const Eigen::MatrixXd logits = (p.w * p.h).colwise() + p.b;
  const auto want = ce.evaluate(logits, p.y);
  LinearCrossEntropy<double> plain;
  plain.z_penalty = lce.z_penalty;
  const auto same = plain.evaluate(p.h, p.w, p.b, p.y);
  CHECK(lktest::rel_err(same.loss, want.loss) <= 1e-13);
  CHECK(lktest::rel_err(same.cross_entropy, want.cross_entropy) <= 1e-13);
  CHECK(lktest::rel_err(same.z_penalty, want.z_penalty) <= 1e-13);
  CHECK(same.normaliser == want.normaliser);
}

TEST_CASE("LinearCrossEntropy gradients on H, W and b pass check_gradient in double", "[lce][gradient]") {
  const int classes = 11, d = 4, n = 9;
  const Problem p = problem(classes, d, n);
  for (const bool options : {false, true}) {
    LinearCrossEntropy<double> lce;
    lce.block_size = 4;
    if (options) {
      lce.class_weights = p.weights;
      lce.label_smoothing = 0.15;
      lce.z_penalty = 0.05;
    }
    const Eigen::VectorXd& s = p.sample_weights;
    Eigen::MatrixXd gh, gw;
    Eigen::VectorXd gb;
    lce.value_and_gradient(p.h, p.w, p.b, p.y, s, gh, gw, gb);
    const auto rh = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return lce(x, p.w, p.b, p.y, s); }, p.h, gh);
    const auto rw = losskit::check_gradient([&](const Eigen::MatrixXd& x) { return lce(p.h, x, p.b, p.y, s); }, p.w, gw);
    const auto rb = losskit::check_gradient([&](const Eigen::VectorXd& x) { return lce(p.h, p.w, x, p.y, s); }, p.b, gb);
    INFO("options " << options << "\nH: " << rh.report() << "\nW: " << rw.report() << "\nb: " << rb.report());
    CHECK(rh);
    CHECK(rw);
    CHECK(rb);
  }
}

TEST_CASE("LinearCrossEntropy in float agrees with double", "[lce][float]") {
  const int classes = 300, d = 32, n = 50;
  const Problem p = problem(classes, d, n, 0.3);
  LinearCrossEntropy<double> ld;
  LinearCrossEntropy<float> lf;
  ld.block_size = lf.block_size = 64;
  ld.label_smoothing = 0.1;
  lf.label_smoothing = 0.1f;
  ld.z_penalty = 1e-3;
  lf.z_penalty = 1e-3f;
  const Grads<double> gd = blocked(ld, p.h, p.w, p.b, p.y, nullptr);
  const Eigen::MatrixXf hf = p.h.cast<float>(), wf = p.w.cast<float>();
  const Eigen::VectorXf bf = p.b.cast<float>();
  const Grads<float> gf = blocked(lf, hf, wf, bf, p.y, nullptr);
  CHECK(lktest::rel_err(gf.loss, gd.loss) <= 1e-5);
  CHECK(scaled_err(gf.h.cast<double>(), gd.h) <= 1e-4);
  CHECK(scaled_err(gf.w.cast<double>(), gd.w) <= 1e-4);
  CHECK(scaled_err(gf.b.cast<double>(), gd.b) <= 1e-4);
}

TEST_CASE("LinearCrossEntropy takes expressions: a row-major W through a Map, H as a transpose, no bias",
          "[lce]") {
  const int classes = 20, d = 5, n = 8;
  const Problem p = problem(classes, d, n);
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajor w_rows = p.w;
  const Eigen::MatrixXd h_t = p.h.transpose();  // N×d as stored elsewhere
  LinearCrossEntropy<double> lce;
  lce.block_size = 7;
  Eigen::MatrixXd gh, gw, gb;
  const double v = lce.value_and_gradient(h_t.transpose(), Eigen::Map<const RowMajor>(w_rows.data(), classes, d),
                                          Eigen::VectorXd(), p.y, gh, gw, gb);
  const Grads<double> ref = materialised(lce, p.h, p.w, Eigen::VectorXd(), p.y, nullptr);
  CHECK(lktest::rel_err(v, ref.loss) <= 1e-13);
  CHECK(scaled_err(gh, ref.h) <= 1e-13);
  CHECK(scaled_err(gw, ref.w) <= 1e-13);
  CHECK(gb.size() == 0);
}

TEST_CASE("LinearCrossEntropy: every sample ignored or weighted 0 gives 0 and zero gradients", "[lce]") {
  const Problem p = problem(9, 3, 6);
  LinearCrossEntropy<double> lce;
  Eigen::MatrixXd gh, gw;
  Eigen::VectorXd gb;
  const Eigen::VectorXi ignored = Eigen::VectorXi::Constant(6, -100);
  CHECK(lce.value_and_gradient(p.h, p.w, p.b, ignored, gh, gw, gb) == 0.0);
  CHECK(gh.isZero(0));
  CHECK(gw.isZero(0));
  CHECK(gb.isZero(0));
  CHECK(lce.value_and_gradient(p.h, p.w, p.b, lktest::labels(6, 9), Eigen::VectorXd::Zero(6), gh, gw, gb) == 0.0);
  CHECK(gw.isZero(0));
}

TEST_CASE("LinearCrossEntropy rejects bad input and options, writing nothing", "[lce][errors]") {
  const int classes = 6, d = 3, n = 4;
  const Problem p = problem(classes, d, n);
  const Eigen::VectorXi y = (Eigen::VectorXi(n) << 0, 5, 2, 1).finished();
  Eigen::MatrixXd gh = lktest::sentinel(d, n), gw = lktest::sentinel(classes, d), gb = lktest::sentinel(classes, 1);
  LinearCrossEntropy<double> lce;
  auto fails = [&](auto&& call, const std::vector<std::string>& words) {
    try {
      call();
      FAIL_CHECK("no exception; expected one naming " << words.front());
    } catch (const losskit::Error& e) {
      const std::string msg = e.what();
      INFO(msg);
      CHECK(msg.find("LinearCrossEntropy") != std::string::npos);
      for (const std::string& w : words) CHECK(msg.find(w) != std::string::npos);
    }
    CHECK(lktest::untouched(gh, d, n));
    CHECK(lktest::untouched(gw, classes, d));
    CHECK(lktest::untouched(gb, classes, 1));
  };
  const Eigen::VectorXd b = p.b;
  auto vg = [&](const auto& h, const auto& w, const auto& bias, const auto& labels) {
    return [&] { lce.value_and_gradient(h, w, bias, labels, gh, gw, gb); };
  };
  const Eigen::MatrixXd w_bad = lktest::normal(classes, d + 1);
  fails(vg(p.h, w_bad, b, y), {"W", "4 columns", "d = 3"});
  const Eigen::VectorXd b_bad = lktest::normal(classes - 1, 1);
  fails(vg(p.h, p.w, b_bad, y), {"b", "C = 6"});
  const Eigen::VectorXi y_range = (Eigen::VectorXi(n) << 0, 6, 2, 1).finished();
  fails(vg(p.h, p.w, b, y_range), {"labels", "6"});
  const Eigen::VectorXi y_neg = (Eigen::VectorXi(n) << 0, -1, 2, 1).finished();
  fails(vg(p.h, p.w, b, y_neg), {"labels", "-1"});
  const Eigen::VectorXi y_short = Eigen::VectorXi::Zero(n - 1);
  fails(vg(p.h, p.w, b, y_short), {"labels", "N = 4"});
  const Eigen::MatrixXd h_empty(d, 0);
  fails(vg(h_empty, p.w, b, Eigen::VectorXi()), {"H", "empty"});
  // Options.
  lce.class_weights = Eigen::VectorXd::Ones(classes - 1);
  fails(vg(p.h, p.w, b, y), {"class_weights", "6"});
  lce.class_weights = Eigen::VectorXd::Ones(classes);
  lce.class_weights(2) = -1;
  fails(vg(p.h, p.w, b, y), {"class_weights", "-1"});
  lce.class_weights.resize(0);
  lce.label_smoothing = 1.5;
  fails(vg(p.h, p.w, b, y), {"label_smoothing", "1.5"});
  lce.label_smoothing = 0;
  lce.z_penalty = -1;
  fails(vg(p.h, p.w, b, y), {"z_penalty"});
  lce.z_penalty = 0;
  lce.block_size = 0;
  fails(vg(p.h, p.w, b, y), {"block_size", "0"});
  lce.block_size = 16;
  lce.sparsity_threshold = 1;
  fails(vg(p.h, p.w, b, y), {"sparsity_threshold"});
  lce.sparsity_threshold = 0;
  // Sample weights.
  const Eigen::VectorXd s_short = Eigen::VectorXd::Ones(n - 1);
  fails([&] { lce.value_and_gradient(p.h, p.w, b, y, s_short, gh, gw, gb); }, {"sample_weights"});
  Eigen::VectorXd s_bad = Eigen::VectorXd::Ones(n);
  s_bad(2) = -0.5;
  fails([&] { lce.value_and_gradient(p.h, p.w, b, y, s_bad, gh, gw, gb); }, {"sample_weights", "-0.5"});
  s_bad(2) = std::numeric_limits<double>::quiet_NaN();
  fails([&] { lce.value_and_gradient(p.h, p.w, b, y, s_bad, gh, gw, gb); }, {"sample_weights", "nan"});
  // Output views of the wrong shape.
  Eigen::MatrixXd big = lktest::sentinel(d + 1, n);
  fails([&] { lce.value_and_gradient(p.h, p.w, b, y, big.topRows(d + 1), gw, gb); }, {"grad_H"});
  CHECK(lktest::untouched(big, d + 1, n));
  fails([&] { lce.value_and_gradient(p.h, p.w, b, y, gh, big.topRows(d), gb); }, {"grad_W"});
  fails([&] { lce.value_and_gradient(p.h, p.w, b, y, gh, gw, big.col(0)); }, {"grad_b"});
  CHECK(lktest::untouched(big, d + 1, n));
  // Value only: the same checks.
  CHECK_THROWS_AS(lce(p.h, w_bad, b, y), losskit::Error);
}

TEST_CASE("LinearCrossEntropy's heap per call is at most 1/16 of the C×N logits at C = 32768", "[lce][memory]") {
  if (!lktest::heap_bytes_counted()) {
    WARN("heap bytes are not counted in this build (sanitizers): skipped");
    return;
  }
  const int classes = 32768, d = 16, n = 256;
  for (const bool flt : {false, true}) {
    const Problem p = problem(classes, d, n, 0.5);
    auto measure = [&](auto scalar) {
      using S = decltype(scalar);
      const Mat<S> h = p.h.cast<S>(), w = p.w.cast<S>();
      const Vec<S> b = p.b.cast<S>(), s = p.sample_weights.cast<S>();
      LinearCrossEntropy<S> lce;
      lce.class_weights = p.weights.cast<S>();
      lce.label_smoothing = S(0.1);
      Mat<S> gh(d, n), gw(classes, d);
      Vec<S> gb(classes);
      lktest::HeapPeak peak;
      lce.value_and_gradient(h, w, b, p.y, s, gh, gw, gb);
      const long long used = peak.peak();
      const double bound = double(classes) * n * sizeof(S) / 16;
      INFO((sizeof(S) == 4 ? "float" : "double") << ": peak heap of a call " << used << " bytes, bound " << bound
                                                 << " (logits " << 16 * bound << ")");
      CHECK(double(used) <= bound);
      WARN("LinearCrossEntropy heap, C=32768 d=16 N=256 " << (sizeof(S) == 4 ? "float" : "double") << ": " << used
                                                          << " bytes = 1/" << (16 * bound / double(used))
                                                          << " of the logits");
    };
    if (flt)
      measure(float{});
    else
      measure(double{});
  }
}

TEST_CASE("LinearCrossEntropy's sparsity filter keeps the loss and stays within its documented bound",
          "[lce][sparsity]") {
  const int classes = 96, d = 6, n = 30;
  Problem p = problem(classes, d, n);
  // The softmax mass sits in the first two blocks (bias 20 and 14): the
  // others hold probabilities ~e^-20, below τ in every column.
  p.b.setZero();
  p.b.head(8).setConstant(20);
  p.b.segment(8, 8).setConstant(14);
  p.y.setConstant(3);  // labels in the first block only
  LinearCrossEntropy<double> exact, filtered;
  exact.block_size = filtered.block_size = 8;
  const double tau = 1e-4;
  filtered.sparsity_threshold = tau;
  const Grads<double> ge = blocked(exact, p.h, p.w, p.b, p.y, nullptr);
  const Grads<double> gf = blocked(filtered, p.h, p.w, p.b, p.y, nullptr);
  CHECK(gf.loss == ge.loss);
  int skipped = 0;
  for (Eigen::Index k = 0; k < classes; k += 8) skipped += gf.w.middleRows(k, 8).isZero(0) ? 1 : 0;
  INFO("blocks skipped: " << skipped << " of " << classes / 8);
  CHECK(skipped > 0);
  CHECK(skipped == classes / 8 - 2);
  // Plain Mean without penalty: c_j = 1/N, Σ_j c_j = 1 (see the header).
  const double h_max = p.h.cwiseAbs().maxCoeff();
  const Eigen::VectorXd w_abs = p.w.cwiseAbs().rowwise().sum();  // per class Σ_i |W_ki| ≥ max_i |W_ki|
  CHECK((gf.b - ge.b).cwiseAbs().maxCoeff() < tau);
  CHECK((gf.w - ge.w).cwiseAbs().maxCoeff() < tau * h_max);
  CHECK((gf.h - ge.h).cwiseAbs().maxCoeff() < tau / n * w_abs.sum());
  CHECK((gf.w - ge.w).cwiseAbs().maxCoeff() > 0);  // it did change something
  // With label smoothing every class has target mass: nothing is skipped.
  exact.label_smoothing = filtered.label_smoothing = 0.1;
  const Grads<double> se = blocked(exact, p.h, p.w, p.b, p.y, nullptr);
  const Grads<double> sf = blocked(filtered, p.h, p.w, p.b, p.y, nullptr);
  CHECK(sf.w == se.w);
}

TEST_CASE("LinearCrossEntropy: concurrent const calls on one object give the serial result", "[lce][threads]") {
  const Problem p = problem(200, 8, 32);
  LinearCrossEntropy<double> lce;
  lce.block_size = 50;
  const Grads<double> serial = blocked(lce, p.h, p.w, p.b, p.y, nullptr);
  std::vector<Grads<double>> out(4);
  std::vector<std::thread> threads;
  for (auto& o : out) threads.emplace_back([&] { o = blocked(lce, p.h, p.w, p.b, p.y, nullptr); });
  for (auto& t : threads) t.join();
  for (const auto& o : out) {
    CHECK(o.loss == serial.loss);
    CHECK(o.w == serial.w);
    CHECK(o.h == serial.h);
  }
}

namespace {

// In-process stand-in for MPI_Allreduce among `ranks` threads.
class ThreadGroup {
 public:
  explicit ThreadGroup(int ranks) : ranks_(ranks) {}
  template <class T, class Op>
  void all_reduce(T* values, Eigen::Index n, Op op) {
    std::unique_lock<std::mutex> lock(mu_);
    const long generation = generation_;
    if (arrived_ == 0)
      acc_.assign(values, values + n);
    else
      for (Eigen::Index i = 0; i < n; ++i) acc_[std::size_t(i)] = op(acc_[std::size_t(i)], double(values[i]));
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      result_ = acc_;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    for (Eigen::Index i = 0; i < n; ++i) values[i] = T(result_[std::size_t(i)]);
  }

 private:
  int ranks_, arrived_ = 0;
  long generation_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<double> acc_, result_;
};

}  // namespace

TEST_CASE("LinearCrossEntropy over vocabulary slices equals one process (in-process all-reduce)", "[lce][slices]") {
  const int classes = 37, d = 5, n = 21;
  const Problem p = problem(classes, d, n, 1.5);
  const std::vector<Eigen::Index> starts = {0, 16, 30, classes};  // slices not multiples of the block
  for (const bool options : {false, true}) {
    LinearCrossEntropy<double> full;
    full.block_size = 8;
    if (options) {
      full.class_weights = p.weights;
      full.label_smoothing = 0.1;
      full.z_penalty = 1e-2;
    }
    const Grads<double> ref = blocked(full, p.h, p.w, p.b, p.y, options ? &p.sample_weights : nullptr);
    const int ranks = int(starts.size()) - 1;
    ThreadGroup group(ranks);
    std::vector<Grads<double>> part(static_cast<std::size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        LinearCrossEntropy<double> lce = full;
        lce.class_offset = starts[std::size_t(r)];
        lce.total_classes = classes;
        lce.all_reduce_max = [&](double* v, Eigen::Index k) {
          group.all_reduce(v, k, [](double a, double b) { return std::max(a, b); });
        };
        lce.all_reduce_sum = [&](double* v, Eigen::Index k) {
          group.all_reduce(v, k, [](double a, double b) { return a + b; });
        };
        const Eigen::Index c0 = starts[std::size_t(r)], len = starts[std::size_t(r) + 1] - c0;
        part[std::size_t(r)] = blocked(lce, p.h, Eigen::MatrixXd(p.w.middleRows(c0, len)), Eigen::VectorXd(p.b.segment(c0, len)),
                                       p.y, options ? &p.sample_weights : nullptr);
      });
    for (auto& t : threads) t.join();
    Eigen::MatrixXd gh = Eigen::MatrixXd::Zero(d, n);
    for (int r = 0; r < ranks; ++r) {
      const Grads<double>& g = part[std::size_t(r)];
      const Eigen::Index c0 = starts[std::size_t(r)], len = starts[std::size_t(r) + 1] - c0;
      INFO("options " << options << ", rank " << r << ": loss " << g.loss << " vs " << ref.loss);
      CHECK(lktest::rel_err(g.loss, ref.loss) <= 1e-13);
      CHECK(scaled_err(g.w, Eigen::MatrixXd(ref.w.middleRows(c0, len))) <= 1e-13);
      CHECK(scaled_err(g.b, Eigen::VectorXd(ref.b.segment(c0, len))) <= 1e-13);
      gh += g.h;  // grad_H: each rank's part, summed by the caller
    }
    CHECK(scaled_err(gh, ref.h) <= 1e-13);
  }
}

TEST_CASE("LinearCrossEntropy rejects inconsistent vocabulary slices", "[lce][slices][errors]") {
  const Problem p = problem(10, 3, 4);
  Eigen::MatrixXd gh = lktest::sentinel(3, 4), gw = lktest::sentinel(6, 3), gb = lktest::sentinel(6, 1);
  const Eigen::MatrixXd w = p.w.topRows(6);
  const Eigen::VectorXd b = p.b.head(6);
  const Eigen::VectorXi y = (Eigen::VectorXi(4) << 0, 9, 3, 5).finished();
  auto fails_with = [&](LinearCrossEntropy<double>& lce, const char* word) {
    CHECK_THROWS_WITH(lce.value_and_gradient(p.h, w, b, y, gh, gw, gb),
                      lktest::Contains("LinearCrossEntropy") && lktest::Contains(word));
    CHECK(lktest::untouched(gh, 3, 4));
    CHECK(lktest::untouched(gw, 6, 3));
    CHECK(lktest::untouched(gb, 6, 1));
  };
  LinearCrossEntropy<double> lce;
  lce.class_offset = 2;
  fails_with(lce, "class_offset");  // an offset without total_classes
  lce.total_classes = 7;
  fails_with(lce, "total_classes");  // 2 + 6 > 7
  lce.total_classes = 10;
  fails_with(lce, "all_reduce");  // a slice without the reductions
  lce.class_offset = -1;
  fails_with(lce, "class_offset");
  LinearCrossEntropy<double> whole;
  whole.total_classes = 6;  // labels 9 is then out of range
  fails_with(whole, "labels");
}
