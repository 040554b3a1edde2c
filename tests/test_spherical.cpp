// FactoredOutputLayer: every step against a naive dense implementation (full
// outputs D×m, dense ∂L/∂O from ZLoss / MSE on those outputs, dense SGD update
// of W), with and without the stabilisation measures; singular updates;
// errors; non-finite input; float; no allocation in train_step once the
// shapes are known; const members from several threads.
#include <losskit/factored_output_layer.hpp>
#include <losskit/gradcheck.hpp>

#include <array>
#include <thread>
#include <vector>

#include "svd_instances.hpp"
#include "test_util.hpp"

using losskit::FactoredOutputLayer;
using losskit::MSE;
using losskit::Reduction;
using losskit::SingularUpdate;
using losskit::ZLoss;

namespace {

// The independent reference: W stored densely, outputs materialised, the loss
// evaluated by the direct-form functors (ZLoss centres each column; MSE on
// dense targets), ∂L/∂H = Wᵀ·∂L/∂O, W ← W − η(∂L/∂O·Hᵀ + λW).
template <class Scalar>
struct DenseLayer {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Matrix w;

  template <class Loss, class Target>
  Scalar step(const Loss& loss, const Matrix& h, const Target& target, Matrix& grad_h, Scalar lr, Scalar decay) {
    const Matrix o = w * h;
    Matrix g;
    const Scalar v = loss.value_and_gradient(o, target, g);
    grad_h = w.transpose() * g;
    w = (Scalar(1) - lr * decay) * w - lr * g * h.transpose();
    return v;
  }
};

double max_rel(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
}

Eigen::MatrixXd one_hot(const Eigen::VectorXi& labels, Eigen::Index classes) {
  Eigen::MatrixXd t = Eigen::MatrixXd::Zero(classes, labels.size());
  for (Eigen::Index i = 0; i < labels.size(); ++i) t(labels(i), i) = 1;
  return t;
}

void no_stabilisation(FactoredOutputLayer<double>& layer) {
  layer.inverse_refresh_period = 0;
  layer.condition_check_period = 0;
  layer.unfactorize_period = 0;
  layer.condition_band = 1e30;
}

// Runs `steps` Z-loss steps on both layers, checking loss, ∂L/∂H and W after each.
void run_zloss(FactoredOutputLayer<double>& layer, DenseLayer<double>& dense, const ZLoss<double>& z, int steps,
               Eigen::Index m, double lr, double tol) {
  const Eigen::Index d = layer.hidden_size(), classes = layer.classes();
  double worst_v = 0, worst_g = 0, worst_w = 0;
  for (int t = 0; t < steps; ++t) {
    const Eigen::MatrixXd h = lktest::normal(d, m);
    const Eigen::VectorXi y = lktest::labels(m, int(classes));
    Eigen::MatrixXd gf, gd;
    const double vf = layer.train_step(z, h, y, gf, lr);
    const double vd = dense.step(z, h, y, gd, lr, layer.weight_decay);
    worst_v = std::max(worst_v, lktest::rel_err(vf, vd));
    worst_g = std::max(worst_g, max_rel(gf, gd));
    worst_w = std::max(worst_w, max_rel(layer.weights(), dense.w));
    INFO("FactoredOutputLayer Z-loss, step " << t << ": loss " << vf << " vs dense " << vd);
    REQUIRE(lktest::rel_err(vf, vd) < tol);
    REQUIRE(max_rel(gf, gd) < tol);
    REQUIRE(max_rel(layer.weights(), dense.w) < tol);
  }
  INFO("worst relative differences: loss " << worst_v << ", dL/dH " << worst_g << ", W " << worst_w);
  CHECK(worst_w < tol);
}

}  // namespace

TEST_CASE("FactoredOutputLayer Z-loss steps agree with the dense step after every step", "[spherical]") {
  const Eigen::MatrixXd w0 = lktest::normal(50, 8, 0.5);
  for (double decay : {0.0, 0.02}) {
    FactoredOutputLayer<double> layer(w0);
    no_stabilisation(layer);
    layer.weight_decay = decay;
    DenseLayer<double> dense{w0};
    ZLoss<double> z;
    z.a = 2;
    z.b = 1.5;
    run_zloss(layer, dense, z, 60, 5, 0.5, 1e-9);
    CHECK(layer.stats().updates == 60);
    CHECK(layer.stats().dense_fallbacks == 0);
    // Training moved W far from its start: the agreement is not trivial.
    CHECK(max_rel(dense.w, w0) > 0.05);
  }
}

TEST_CASE("FactoredOutputLayer MSE steps (one-hot and sparse targets) agree with the dense step", "[spherical]") {
  const Eigen::MatrixXd w0 = lktest::normal(40, 6, 0.3);
  for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
    MSE<double> mse;
    mse.reduction = r;
    const double lr = r == Reduction::Mean ? 5.0 : 0.015;
    SECTION("one-hot labels") {
      // Default stabilisation: MSE's g_q > 0 makes every update contract U
      // along the hidden directions, so U's conditioning must be maintained.
      FactoredOutputLayer<double> layer(w0);
      layer.weight_decay = 0.01;
      DenseLayer<double> dense{w0};
      for (int t = 0; t < 40; ++t) {
        const Eigen::MatrixXd h = lktest::normal(6, 7);
        const Eigen::VectorXi y = lktest::labels(7, 40);
        Eigen::MatrixXd gf, gd;
        const double vf = layer.train_step(mse, h, y, gf, lr);
        const double vd = dense.step(mse, h, one_hot(y, 40), gd, lr, layer.weight_decay);
        INFO("FactoredOutputLayer MSE one-hot, reduction " << r << ", step " << t);
        REQUIRE(lktest::rel_err(vf, vd) < 1e-9);
        REQUIRE(max_rel(gf, gd) < 1e-9);
        REQUIRE(max_rel(layer.weights(), dense.w) < 1e-9);
      }
      CHECK(max_rel(dense.w, w0) > 0.05);
    }
    SECTION("sparse targets, K = 3 per sample, with rows shared across samples") {
      FactoredOutputLayer<double> layer(w0);
      DenseLayer<double> dense{w0};
      for (int t = 0; t < 40; ++t) {
        const Eigen::MatrixXd h = lktest::normal(6, 5);
        Eigen::MatrixXi rows(3, 5);
        for (Eigen::Index i = 0; i < 5; ++i) {
          const Eigen::VectorXi pick = lktest::labels(1, 13);
          rows.col(i) << pick(0), pick(0) + 13, (pick(0) + 7) % 13 + 26;  // distinct, collisions across samples
        }
        const Eigen::MatrixXd vals = lktest::normal(3, 5);
        Eigen::MatrixXd dense_t = Eigen::MatrixXd::Zero(40, 5);
        for (Eigen::Index i = 0; i < 5; ++i)
          for (Eigen::Index j = 0; j < 3; ++j) dense_t(rows(j, i), i) = vals(j, i);
        Eigen::MatrixXd gf, gd;
        const double vf = layer.train_step(mse, h, rows, vals, gf, lr);
        const double vd = dense.step(mse, h, dense_t, gd, lr, 0.0);
        INFO("FactoredOutputLayer MSE sparse, reduction " << r << ", step " << t);
        REQUIRE(lktest::rel_err(vf, vd) < 1e-9);
        REQUIRE(max_rel(gf, gd) < 1e-9);
        REQUIRE(max_rel(layer.weights(), dense.w) < 1e-9);
      }
    }
  }
}

TEST_CASE("FactoredOutputLayer stays exact over hundreds of steps with stabilisation on", "[spherical][stability]") {
  const Eigen::MatrixXd w0 = lktest::normal(50, 8, 0.5);
  FactoredOutputLayer<double> layer(w0);
  // Short periods and a narrow band so that every measure runs many times;
  // weight decay shrinks U by (1 − ηλ) per step and forces band resets.
  layer.inverse_refresh_period = 5;
  layer.condition_check_period = 17;
  layer.unfactorize_period = 97;
  layer.condition_band = 1.5;
  layer.weight_decay = 0.05;
  DenseLayer<double> dense{w0};
  ZLoss<double> z;
  z.b = 1;
  run_zloss(layer, dense, z, 300, 4, 0.4, 1e-9);
  const auto& st = layer.stats();
  INFO("refreshes " << st.inverse_refreshes << ", checks " << st.condition_checks << ", resets "
                    << st.condition_resets << ", unfactorizations " << st.unfactorizations);
  CHECK(st.inverse_refreshes > 10);
  CHECK(st.condition_checks > 10);
  CHECK(st.condition_resets > 0);
  CHECK(st.unfactorizations == 3);
}

TEST_CASE("FactoredOutputLayer defaults stay exact over hundreds of steps", "[spherical][stability]") {
  const Eigen::MatrixXd w0 = lktest::normal(50, 8, 0.5);
  FactoredOutputLayer<double> layer(w0);
  layer.weight_decay = 0.01;
  DenseLayer<double> dense{w0};
  run_zloss(layer, dense, ZLoss<double>{}, 400, 4, 0.5, 1e-9);
}

TEST_CASE("FactoredOutputLayer detects a singular update and handles it", "[spherical][singular]") {
  const Eigen::MatrixXd w0 = lktest::normal(30, 6, 0.5);
  const Eigen::MatrixXd h = lktest::normal(6, 1);
  // Target the class with the largest output: z_c > 0, so g_q = ∂L/∂q > 0 and
  // η = 1/(2·g_q·‖h‖²) makes A = I − 2η·g_q·h·hᵀ exactly singular.
  const Eigen::VectorXd o = w0 * h;
  Eigen::Index c;
  o.maxCoeff(&c);
  Eigen::VectorXi y(1);
  y << int(c);
  ZLoss<double> z;
  const auto t = z.spherical_terms(o.sum(), o.squaredNorm(), o(c), 30);
  REQUIRE(t.d_sum_squares > 0);
  const double lr = 1.0 / (2.0 * t.d_sum_squares * h.squaredNorm());

  SECTION("DenseFallback applies the exact step and keeps agreeing afterwards") {
    FactoredOutputLayer<double> layer(w0);
    DenseLayer<double> dense{w0};
    Eigen::MatrixXd gf, gd;
    const double vf = layer.train_step(z, h, y, gf, lr);
    const double vd = dense.step(z, h, y, gd, lr, 0.0);
    CHECK(layer.stats().dense_fallbacks == 1);
    CHECK(lktest::rel_err(vf, vd) < 1e-12);
    CHECK(max_rel(gf, gd) < 1e-12);
    CHECK(max_rel(layer.weights(), dense.w) < 1e-12);
    run_zloss(layer, dense, z, 20, 3, 0.3, 1e-9);
  }
  SECTION("near-singular (factor 1e-5 instead of 0) is caught too") {
    FactoredOutputLayer<double> layer(w0);
    DenseLayer<double> dense{w0};
    Eigen::MatrixXd gf, gd;
    layer.train_step(z, h, y, gf, lr * (1 - 1e-5));
    dense.step(z, h, y, gd, lr * (1 - 1e-5), 0.0);
    CHECK(layer.stats().dense_fallbacks == 1);
    CHECK(max_rel(layer.weights(), dense.w) < 1e-12);
  }
  SECTION("Throw reports it and changes nothing") {
    FactoredOutputLayer<double> layer(w0);
    layer.on_singular = SingularUpdate::Throw;
    const Eigen::MatrixXd before = layer.weights();
    Eigen::MatrixXd g = lktest::sentinel(6, 1);
    CHECK_THROWS_WITH(layer.train_step(z, h, y, g, lr),
                      lktest::Contains("FactoredOutputLayer") && lktest::Contains("singular"));
    CHECK(lktest::untouched(g, 6, 1));
    CHECK(layer.weights() == before);
    CHECK(layer.stats().updates == 0);
    // A safe step afterwards still agrees with the dense path.
    DenseLayer<double> dense{w0};
    Eigen::MatrixXd gf, gd;
    layer.train_step(z, h, y, gf, lr * 0.25);
    dense.step(z, h, y, gd, lr * 0.25, 0.0);
    CHECK(max_rel(layer.weights(), dense.w) < 1e-12);
  }
}

TEST_CASE("FactoredOutputLayer dL/dH passes the finite-difference check", "[spherical][gradient]") {
  FactoredOutputLayer<double> layer(lktest::normal(25, 5));
  const Eigen::VectorXi y = lktest::labels(3, 25);
  const Eigen::MatrixXd h = lktest::normal(5, 3);
  ZLoss<double> z;
  z.b = 0.5;
  Eigen::MatrixXd g;
  layer.value_and_gradient(z, h, y, g);
  const auto res = losskit::check_gradient(
      [&](const Eigen::MatrixXd& x) {
        Eigen::MatrixXd unused;
        return layer.value_and_gradient(z, x, y, unused);
      },
      h, g);
  INFO(res.report());
  CHECK(res.max_rel_error <= 1e-6);
  CHECK(layer.stats().updates == 0);
}

TEST_CASE("FactoredOutputLayer outputs() and unfactorize() are consistent with W", "[spherical]") {
  const Eigen::MatrixXd w0 = lktest::normal(30, 4);
  FactoredOutputLayer<double> layer(w0);
  no_stabilisation(layer);
  Eigen::MatrixXd g;
  for (int t = 0; t < 10; ++t) layer.train_step(ZLoss<double>{}, lktest::normal(4, 3), lktest::labels(3, 30), g, 0.5);
  const Eigen::MatrixXd w = layer.weights(), h = lktest::normal(4, 6);
  CHECK(max_rel(layer.outputs(h), w * h) < 1e-13);
  layer.unfactorize();
  CHECK(max_rel(layer.weights(), w) < 1e-13);
  CHECK(layer.stats().unfactorizations == 1);
}

TEST_CASE("FactoredOutputLayer rejects bad inputs and options, changing nothing", "[spherical][errors]") {
  const Eigen::MatrixXd w0 = lktest::normal(10, 3);
  FactoredOutputLayer<double> layer(w0);
  const Eigen::MatrixXd h = lktest::normal(3, 2);
  Eigen::VectorXi y(2);
  y << 1, 9;
  Eigen::MatrixXd g = lktest::sentinel(3, 2);
  ZLoss<double> z;
  MSE<double> mse;
  CHECK_THROWS_WITH(layer.train_step(z, lktest::normal(4, 2), y, g, 0.1), lktest::Contains("hidden"));
  Eigen::VectorXi bad = y;
  bad(1) = 10;
  CHECK_THROWS_WITH(layer.train_step(z, h, bad, g, 0.1), lktest::Contains("labels"));
  CHECK_THROWS_AS(layer.train_step(mse, h, bad, g, 0.1), losskit::Error);
  CHECK_THROWS_WITH(layer.train_step(z, h, y, g, -0.1), lktest::Contains("learning_rate"));
  layer.weight_decay = 20;
  CHECK_THROWS_WITH(layer.train_step(z, h, y, g, 0.1), lktest::Contains("weight_decay"));
  layer.weight_decay = 0;
  layer.condition_band = 1;
  CHECK_THROWS_WITH(layer.train_step(z, h, y, g, 0.1), lktest::Contains("condition_band"));
  layer.condition_band = 10;
  layer.unfactorize_period = -1;
  CHECK_THROWS_AS(layer.train_step(z, h, y, g, 0.1), losskit::Error);
  layer.unfactorize_period = 1000;
  z.a = 0;
  CHECK_THROWS_WITH(layer.train_step(z, h, y, g, 0.1), lktest::Contains("ZLoss"));
  Eigen::MatrixXi rows(2, 2);
  rows << 1, 2, 1, 3;  // sample 0 has row 1 twice
  CHECK_THROWS_WITH(layer.train_step(mse, h, rows, lktest::normal(2, 2), g, 0.1), lktest::Contains("twice"));
  rows << 1, 2, 4, 3;
  CHECK_THROWS_AS(layer.train_step(mse, h, rows, lktest::normal(2, 3), g, 0.1), losskit::Error);
  rows(0, 0) = -1;
  CHECK_THROWS_AS(layer.train_step(mse, h, rows, lktest::normal(2, 2), g, 0.1), losskit::Error);
  Eigen::MatrixXd owner = lktest::sentinel(5, 5);
  CHECK_THROWS_AS(layer.train_step(ZLoss<double>{}, h, y, owner.block(0, 0, 2, 2), 0.1), losskit::Error);
  CHECK(lktest::untouched(owner, 5, 5));
  CHECK(lktest::untouched(g, 3, 2));
  CHECK(layer.weights() == w0);
  CHECK(layer.stats().updates == 0);
  Eigen::MatrixXd nan_w = w0;
  nan_w(2, 1) = std::nan("");
  CHECK_THROWS_AS(FactoredOutputLayer<double>(nan_w), losskit::Error);
  CHECK_THROWS_AS(FactoredOutputLayer<double>(Eigen::MatrixXd(0, 3)), losskit::Error);
  FactoredOutputLayer<double> one_class(lktest::normal(1, 3));
  CHECK_THROWS_WITH(one_class.train_step(ZLoss<double>{}, h, Eigen::VectorXi::Zero(2), g, 0.1),
                    lktest::Contains("at least 2 classes"));
}

TEST_CASE("FactoredOutputLayer leaves the weights unchanged on non-finite hidden values", "[spherical][nonfinite]") {
  const Eigen::MatrixXd w0 = lktest::normal(10, 3);
  FactoredOutputLayer<double> layer(w0);
  Eigen::MatrixXd h = lktest::normal(3, 2);
  h(1, 1) = std::numeric_limits<double>::quiet_NaN();
  Eigen::MatrixXd g;
  CHECK(std::isnan(layer.train_step(ZLoss<double>{}, h, Eigen::VectorXi::Zero(2), g, 0.1)));
  CHECK(layer.weights() == w0);
  CHECK(layer.stats().skipped_nonfinite == 1);
  CHECK(layer.stats().updates == 0);
}

TEST_CASE("FactoredOutputLayer in float follows the double dense path", "[spherical][float]") {
  const Eigen::MatrixXd w0 = lktest::normal(64, 8, 0.5);
  FactoredOutputLayer<float> layer(w0.cast<float>());
  layer.weight_decay = 0.01f;
  DenseLayer<double> dense{w0};
  for (int t = 0; t < 30; ++t) {
    const Eigen::MatrixXd h = lktest::normal(8, 4).cast<float>().cast<double>();
    const Eigen::VectorXi y = lktest::labels(4, 64);
    Eigen::MatrixXf gf;
    Eigen::MatrixXd gd;
    const float vf = layer.train_step(ZLoss<float>{}, h.cast<float>(), y, gf, 0.5f);
    const double vd = dense.step(ZLoss<double>{}, h, y, gd, 0.5, 0.01);
    INFO("float step " << t);
    CHECK(lktest::rel_err(vf, vd) < 1e-4);
    CHECK(max_rel(gf.cast<double>(), gd) < 1e-3);
  }
  CHECK(max_rel(layer.weights().cast<double>(), dense.w) < 1e-4);
}

namespace {

// A pool of minibatches of fixed shapes (d×m hidden, K = 3 sparse targets),
// made before any allocation is counted, and one train_step per loss path.
struct Minibatches {
  static constexpr int kPool = 7;
  std::vector<Eigen::MatrixXd> hidden, values;
  std::vector<Eigen::VectorXi> labels;
  std::vector<Eigen::MatrixXi> rows;
  Eigen::MatrixXd grad;

  Minibatches(Eigen::Index classes, Eigen::Index d, Eigen::Index m) : grad(d, m) {
    for (int i = 0; i < kPool; ++i) {
      hidden.push_back(lktest::normal(d, m));
      labels.push_back(lktest::labels(m, int(classes)));
      values.push_back(lktest::normal(3, m));
      Eigen::MatrixXi r(3, m);
      for (Eigen::Index j = 0; j < m; ++j) r.col(j) << int(3 * j), int(3 * j + 1), int((3 * j + 2 + i) % classes);
      rows.push_back(r);
    }
  }

  // path 0: Z-loss with labels, 1: MSE against one-hot labels, 2: MSE against sparse targets.
  void step(FactoredOutputLayer<double>& layer, int path, int t, double lr) {
    const std::size_t i = std::size_t(t % kPool);
    if (path == 0)
      layer.train_step(ZLoss<double>{}, hidden[i], labels[i], grad, lr);
    else if (path == 1)
      layer.train_step(MSE<double>{}, hidden[i], labels[i], grad, lr);
    else
      layer.train_step(MSE<double>{}, hidden[i], rows[i], values[i], grad, lr);
  }
};

const char* const kPaths[] = {"Z-loss labels", "MSE one-hot", "MSE sparse"};

struct Tally {
  long steps = 0, news = 0, mallocs = 0;
};

// step(0) is the warm-up that sizes the buffers; steps 1..n reuse the same
// shapes. Steps that ran a condition check are tallied apart (index 1): the
// SVD allocates inside Eigen, which the layer documents.
template <class Step>
std::array<Tally, 2> tally_allocations(const FactoredOutputLayer<double>& layer, int n, Step&& step) {
  step(0);
  std::array<Tally, 2> tally{};
  for (int t = 1; t <= n; ++t) {
    const long checks = layer.stats().condition_checks;
    const lktest::AllocationCounter counter;
    step(t);
    const long news = counter.count(), mallocs = counter.heap_count();
    Tally& x = tally[layer.stats().condition_checks != checks ? 1 : 0];
    ++x.steps;
    x.news += news;
    x.mallocs += mallocs;
  }
  return tally;
}

bool counts_mallocs() {
  if (lktest::heap_allocations() >= 0) return true;
  WARN("this linker cannot wrap malloc: Eigen's own allocations are not counted");
  return false;
}

}  // namespace

TEST_CASE("FactoredOutputLayer train_step allocates nothing once the shapes are known", "[spherical][allocation]") {
  // Default options; 250 steps pass the periodic condition checks at 100 and 200.
  const Eigen::MatrixXd w0 = lktest::normal(40, 6, 0.5);
  Minibatches batches(40, 6, 5);
  for (int path = 0; path < 3; ++path) {
    FactoredOutputLayer<double> layer(w0);
    layer.weight_decay = 0.01;
    const std::array<Tally, 2> t =
        tally_allocations(layer, 250, [&](int step) { batches.step(layer, path, step, 0.01); });
    INFO("FactoredOutputLayer::train_step, " << kPaths[path] << ": " << t[0].steps << " steps made " << t[0].news
                                             << " operator new and " << t[0].mallocs << " malloc calls; " << t[1].steps
                                             << " steps with a condition check made " << t[1].news << " and "
                                             << t[1].mallocs);
    CHECK(t[0].steps >= 240);
    CHECK(t[0].news + t[1].news == 0);
    if (counts_mallocs()) CHECK(t[0].mallocs == 0);
    CHECK(layer.stats().updates == 251);
  }
}

TEST_CASE("FactoredOutputLayer inverse refreshes, unfactorisations and dense fallbacks allocate nothing",
          "[spherical][allocation]") {
  const Eigen::MatrixXd w0 = lktest::normal(40, 6, 0.5);
  Minibatches batches(40, 6, 5);
  for (int path = 0; path < 3; ++path) {
    FactoredOutputLayer<double> layer(w0);
    layer.inverse_refresh_period = 3;
    layer.condition_check_period = 0;
    layer.condition_band = 1e30;  // no bound-triggered check either
    layer.unfactorize_period = 7;
    const std::array<Tally, 2> t =
        tally_allocations(layer, 100, [&](int step) { batches.step(layer, path, step, 0.01); });
    const auto& st = layer.stats();
    INFO("FactoredOutputLayer::train_step, " << kPaths[path] << ": " << t[0].news << " operator new and "
                                             << t[0].mallocs << " malloc calls in " << t[0].steps << " steps with "
                                             << st.inverse_refreshes << " inverse refreshes and "
                                             << st.unfactorizations << " unfactorisations");
    CHECK(t[1].steps == 0);
    CHECK(st.inverse_refreshes > 20);
    CHECK(st.unfactorizations > 10);
    CHECK(t[0].news == 0);
    if (counts_mallocs()) CHECK(t[0].mallocs == 0);
  }
}

TEST_CASE("FactoredOutputLayer applies a singular step densely without allocating", "[spherical][allocation]") {
  // The set-up of the singular-update test: η = 1/(2·g_q·‖h‖²) makes A singular.
  const Eigen::MatrixXd w = lktest::normal(30, 6, 0.5), h = lktest::normal(6, 1);
  const Eigen::VectorXd o = w * h;
  Eigen::Index c;
  o.maxCoeff(&c);
  Eigen::VectorXi y(1);
  y << int(c);
  const ZLoss<double> z;
  const auto terms = z.spherical_terms(o.sum(), o.squaredNorm(), o(c), 30);
  const double lr = 1.0 / (2.0 * terms.d_sum_squares * h.squaredNorm());
  FactoredOutputLayer<double> layer(w);
  layer.unfactorize_period = 0;
  Eigen::MatrixXd g(6, 1);
  layer.train_step(z, h, y, g, 0.0);  // sizes the buffers; lr = 0 leaves W as it is
  const lktest::AllocationCounter counter;
  layer.train_step(z, h, y, g, lr);
  const long news = counter.count(), mallocs = counter.heap_count();
  INFO("the singular step made " << news << " operator new and " << mallocs << " malloc calls");
  REQUIRE(layer.stats().dense_fallbacks == 1);
  CHECK(news == 0);
  if (counts_mallocs()) CHECK(mallocs == 0);
}

TEST_CASE("FactoredOutputLayer const members give the serial results from concurrent threads", "[spherical][threads]") {
  const Eigen::MatrixXd w0 = lktest::normal(40, 6, 0.5);
  FactoredOutputLayer<double> trained(w0);
  Minibatches batches(40, 6, 5);
  for (int t = 0; t < 20; ++t) batches.step(trained, t % 3, t, 0.3);  // U, ω away from I, 0
  const FactoredOutputLayer<double>& layer = trained;
  // Each thread evaluates every path on every minibatch, plus outputs() and weights().
  auto evaluate_all = [&](std::vector<double>& out) {
    out.clear();
    Eigen::MatrixXd g;
    for (int i = 0; i < Minibatches::kPool; ++i) {
      const std::size_t b = std::size_t(i);
      out.push_back(layer.value_and_gradient(ZLoss<double>{}, batches.hidden[b], batches.labels[b], g));
      out.insert(out.end(), g.data(), g.data() + g.size());
      out.push_back(layer.value_and_gradient(MSE<double>{}, batches.hidden[b], batches.labels[b], g));
      out.push_back(layer.value_and_gradient(MSE<double>{}, batches.hidden[b], batches.rows[b], batches.values[b], g));
      out.insert(out.end(), g.data(), g.data() + g.size());
      out.push_back(layer.outputs(batches.hidden[b]).sum());
    }
    out.push_back(layer.weights().sum());
    out.push_back(double(layer.stats().updates));
  };
  std::vector<double> serial;
  evaluate_all(serial);
  std::vector<std::vector<double>> results(4);
  std::vector<std::thread> threads;
  for (std::vector<double>& r : results) threads.emplace_back([&evaluate_all, &r] { evaluate_all(r); });
  for (std::thread& t : threads) t.join();
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("FactoredOutputLayer const members, thread " << i << " of 4");
    CHECK(results[i] == serial);
  }
}
