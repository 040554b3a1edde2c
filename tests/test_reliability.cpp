// Reliability across every functor (issue 11; the table is docs/reliability.md):
//  1. every invalid input is rejected with losskit::Error, a message naming the
//     loss, the argument and the value, and nothing written to any output —
//     one SECTION per row of the table;
//  2. non-finite inputs never throw and give what each header documents;
//  3. a numerical stress suite: magnitudes 1e4, 1e30, 1e-30, ties, constant
//     inputs, one class, one sample, huge C, in float and double — finite
//     wherever the mathematics is, and float close to double.
// References for (3) are identities independent of the code under test:
// shift invariance of softmax losses (x and x + 1e30·0 ... see each case),
// scale invariance of the Z-loss, SSIM(x, x) = 1, CS divergence of ŷ = y is 0.
#include <losskit/comp_sum.hpp>
#include <losskit/cross_entropy.hpp>
#include <losskit/cs_ib.hpp>
#include <losskit/gradcheck.hpp>
#include <losskit/ldr.hpp>
#include <losskit/mse.hpp>
#include <losskit/factored_output_layer.hpp>
#include <losskit/ssim.hpp>
#include <losskit/z_loss.hpp>

#include <limits>
#include <string>
#include <type_traits>

#include "svd_instances.hpp"
#include "test_util.hpp"

namespace {

using M = Eigen::MatrixXd;
using MF = Eigen::MatrixXf;
using VI = Eigen::VectorXi;
using Index = Eigen::Index;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// A gradient output holding the sentinel, remembering its shape.
struct Out {
  M m;
  Out(Index rows, Index cols) : m(lktest::sentinel(rows, cols)) {}
  bool untouched() const { return (m.array() == -12345.5).all(); }
};

/// The call throws losskit::Error whose message contains `message`, and every
/// output still holds its sentinel (same shape, same values).
template <class Call>
void rejects(Call&& call, const std::string& message, std::initializer_list<const Out*> outs = {}) {
  CHECK_THROWS_AS(call(), losskit::Error);
  CHECK_THROWS_WITH(call(), lktest::Contains(message));
  for (const Out* o : outs) CHECK(o->untouched());
}

VI labels(std::initializer_list<int> v) {
  VI y(Index(v.size()));
  Index i = 0;
  for (int l : v) y(i++) = l;
  return y;
}

}  // namespace

// ------------------------------------------------------------------------------- 1. rejections

TEST_CASE("MSE rejects invalid inputs with a clear message, writing nothing", "[reliability][mse]") {
  losskit::MSE<double> mse;
  const M a = M::Ones(2, 3);
  Out g(2, 3);
  SECTION("shape mismatch") { rejects([&] { mse.value_and_gradient(a, M::Ones(3, 3), g.m); }, "losskit::MSE: target: shape 3x3 does not match 2x3", {&g}); }
  SECTION("empty") { rejects([&] { mse.value_and_gradient(M(0, 3), M(0, 3), g.m); }, "losskit::MSE: pred: empty input (0x3)", {&g}); }
  SECTION("gradient view of the wrong shape") {
    M store = lktest::sentinel(2, 2);
    Eigen::Map<M> view(store.data(), 2, 2);
    rejects([&] { mse.value_and_gradient(a, a, view); }, "losskit::MSE: grad: output view has shape 2x2, expected 2x3");
    CHECK(lktest::untouched(store, 2, 2));
  }
}

TEST_CASE("CrossEntropy rejects invalid inputs with a clear message, writing nothing", "[reliability][ce]") {
  losskit::CrossEntropy<double> ce;
  const M x = M::Zero(3, 2);
  Out g(3, 2);
  SECTION("empty logits") { rejects([&] { ce.value_and_gradient(M(3, 0), VI(0), g.m); }, "losskit::CrossEntropy: logits: empty input (3x0)", {&g}); }
  SECTION("label out of range") {
    rejects([&] { ce.value_and_gradient(x, labels({0, 3}), g.m); },
            "losskit::CrossEntropy: labels: label 3 at sample 1 is outside [0, 3) and is not ignore_index (-100)", {&g});
  }
  SECTION("negative label that is not ignore_index") { rejects([&] { ce.value_and_gradient(x, labels({-1, 0}), g.m); }, "label -1 at sample 0 is outside [0, 3)", {&g}); }
  SECTION("labels of the wrong length") { rejects([&] { ce.value_and_gradient(x, labels({0, 1, 2, 0}), g.m); }, "losskit::CrossEntropy: labels: expected a vector of length 2, got 4x1", {&g}); }
  SECTION("labels as long as the logits' rows (N×C logits)") {
    rejects([&] { ce.value_and_gradient(x, labels({0, 1, 2}), g.m); },
            "losskit::CrossEntropy: labels: expected a vector of length N = 2 (one label per column of the logits), got 3, "
            "the logits' row count: logits are C×N with classes as rows",
            {&g});
  }
  SECTION("floating-point labels") {
    rejects([&] { ce.value_and_gradient(x, Eigen::VectorXd::Zero(2), g.m); },
            "losskit::CrossEntropy: target: a floating-point vector of shape 2x1 is neither integer labels nor probabilities",
            {&g});
  }
  SECTION("negative, NaN or infinite probability targets") {
    for (double bad : {-0.5, kNaN, std::numeric_limits<double>::infinity()}) {
      M q = M::Constant(3, 2, 0.25);
      q(1, 1) = bad;
      rejects([&] { ce.value_and_gradient(x, q, g.m); }, "losskit::CrossEntropy: target: probability ", {&g});
      rejects([&] { ce.value_and_gradient(x, q, g.m); }, " at (1, 1) must be finite and >= 0 (sums are not checked)", {&g});
    }
  }
  SECTION("sample weights of the wrong length, negative, NaN or infinite") {
    rejects([&] { ce.value_and_gradient(x, labels({0, 1}), Eigen::VectorXd::Ones(3), g.m); },
            "losskit::CrossEntropy: sample_weights: expected a vector of length 2, got 3x1", {&g});
    for (double bad : {-1.0, kNaN, std::numeric_limits<double>::infinity()}) {
      Eigen::VectorXd s = Eigen::VectorXd::Ones(2);
      s(1) = bad;
      rejects([&] { ce.value_and_gradient(x, labels({0, 1}), s, g.m); }, "losskit::CrossEntropy: sample_weights: weight ", {&g});
      rejects([&] { ce.value_and_gradient(x, labels({0, 1}), s, g.m); }, " of sample 1 must be finite and >= 0", {&g});
    }
  }
  SECTION("probability targets of the wrong shape") { rejects([&] { ce.value_and_gradient(x, M::Zero(2, 2), g.m); }, "losskit::CrossEntropy: target: shape 2x2 does not match 3x2", {&g}); }
  SECTION("label_smoothing outside [0, 1]") {
    ce.label_smoothing = 1.5;
    rejects([&] { ce.value_and_gradient(x, labels({0, 1}), g.m); }, "losskit::CrossEntropy: label_smoothing: must be in [0, 1], got 1.5", {&g});
  }
  SECTION("label_smoothing NaN") {
    ce.label_smoothing = kNaN;
    rejects([&] { ce.value_and_gradient(x, labels({0, 1}), g.m); }, "losskit::CrossEntropy: label_smoothing: must be in [0, 1], got nan", {&g});
  }
  SECTION("negative z_penalty") {
    ce.z_penalty = -1;
    rejects([&] { ce.value_and_gradient(x, labels({0, 1}), g.m); }, "losskit::CrossEntropy: z_penalty: must be finite and >= 0, got -1", {&g});
  }
  SECTION("class_weights of the wrong length") {
    ce.class_weights = Eigen::VectorXd::Ones(2);
    rejects([&] { ce.value_and_gradient(x, labels({0, 1}), g.m); }, "losskit::CrossEntropy: class_weights: expected a vector of length 3, got 2x1", {&g});
  }
  SECTION("negative or non-finite class weight") {
    ce.class_weights = Eigen::Vector3d(1, -1, 1);
    rejects([&] { ce.value_and_gradient(x, labels({0, 1}), g.m); }, "losskit::CrossEntropy: class_weights: weight -1 of class 1 must be finite and >= 0", {&g});
    ce.class_weights = Eigen::Vector3d(1, kInf, 1);
    rejects([&] { ce.value_and_gradient(x, labels({0, 1}), g.m); }, "weight inf of class 1 must be finite and >= 0", {&g});
  }
  SECTION("ignore_index inside [0, C) is not an error: that class's samples are skipped (PyTorch)") {
    ce.ignore_index = 1;
    CHECK_NOTHROW(ce.value_and_gradient(x, labels({0, 1}), g.m));
    CHECK(g.m.col(1).isZero(0));
  }
}

TEST_CASE("BinaryCrossEntropyWithLogits rejects invalid inputs with a clear message, writing nothing", "[reliability][ce]") {
  losskit::BinaryCrossEntropyWithLogits<double> bce;
  const M x = M::Zero(2, 2);
  M t = M::Constant(2, 2, 0.5);
  Out g(2, 2);
  SECTION("empty") { rejects([&] { bce.value_and_gradient(M(0, 2), M(0, 2), g.m); }, "losskit::BinaryCrossEntropyWithLogits: logits: empty input", {&g}); }
  SECTION("targets of the wrong shape") { rejects([&] { bce.value_and_gradient(x, M::Zero(2, 3), g.m); }, "losskit::BinaryCrossEntropyWithLogits: targets: shape 2x3 does not match 2x2", {&g}); }
  SECTION("target outside [0, 1]") {
    t(1, 0) = 1.5;
    rejects([&] { bce.value_and_gradient(x, t, g.m); }, "losskit::BinaryCrossEntropyWithLogits: targets: target 1.5 at (1, 0) is not in [0, 1]", {&g});
  }
  SECTION("NaN target") {
    t(0, 1) = kNaN;
    rejects([&] { bce.value_and_gradient(x, t, g.m); }, "targets: target nan at (0, 1) is not in [0, 1]", {&g});
  }
  SECTION("pos_weight of the wrong length") {
    bce.pos_weight = Eigen::VectorXd::Ones(3);
    rejects([&] { bce.value_and_gradient(x, t, g.m); }, "losskit::BinaryCrossEntropyWithLogits: pos_weight: expected a vector of length 2, got 3x1", {&g});
  }
  SECTION("negative pos_weight") {
    bce.pos_weight = Eigen::Vector2d(1, -2);
    rejects([&] { bce.value_and_gradient(x, t, g.m); }, "losskit::BinaryCrossEntropyWithLogits: pos_weight: weight -2 of row 1 must be finite and >= 0", {&g});
  }
}

TEST_CASE("CompSum and SmoothAdversarialCompSum reject invalid inputs with a clear message, writing nothing",
          "[reliability][comp_sum]") {
  losskit::CompSum<double> cs;
  losskit::SmoothAdversarialCompSum<double> sa;
  const M x = M::Zero(3, 2);
  Out g(3, 2), ga(3, 2);
  SECTION("tau < 0") {
    cs.tau = -1;
    rejects([&] { cs.value_and_gradient(x, labels({0, 1}), g.m); }, "losskit::CompSum: tau: must be finite and >= 0, got -1", {&g});
  }
  SECTION("tau NaN") {
    cs.tau = kNaN;
    rejects([&] { cs.value_and_gradient(x, labels({0, 1}), g.m); }, "losskit::CompSum: tau: must be finite and >= 0, got nan", {&g});
  }
  SECTION("empty") { rejects([&] { cs.value_and_gradient(M(0, 2), labels({0, 1}), g.m); }, "losskit::CompSum: logits: empty input (0x2)", {&g}); }
  SECTION("labels of the wrong length") { rejects([&] { cs.value_and_gradient(x, labels({0}), g.m); }, "losskit::CompSum: labels: expected a vector of length 2, got 1x1", {&g}); }
  SECTION("label out of range (no ignore_index)") { rejects([&] { cs.value_and_gradient(x, labels({0, -100}), g.m); }, "losskit::CompSum: labels: label -100 at sample 1 is outside [0, 3)", {&g}); }
  SECTION("adversarial: nu < 0") {
    sa.nu = -0.5;
    rejects([&] { sa.value_and_gradient(x, x, labels({0, 1}), g.m, ga.m); }, "losskit::SmoothAdversarialCompSum: nu: must be finite and >= 0, got -0.5", {&g, &ga});
  }
  SECTION("adversarial: tau infinite") {
    sa.tau = kInf;
    rejects([&] { sa.value_and_gradient(x, x, labels({0, 1}), g.m, ga.m); }, "losskit::SmoothAdversarialCompSum: tau: must be finite and >= 0, got inf", {&g, &ga});
  }
  SECTION("adversarial: adv_logits of the wrong shape") {
    rejects([&] { sa.value_and_gradient(x, M::Zero(2, 2), labels({0, 1}), g.m, ga.m); }, "losskit::SmoothAdversarialCompSum: adv_logits: shape 2x2 does not match 3x2", {&g, &ga});
  }
  SECTION("adversarial: label out of range") {
    rejects([&] { sa.value_and_gradient(x, x, labels({3, 1}), g.m, ga.m); }, "losskit::SmoothAdversarialCompSum: labels: label 3 at sample 0 is outside [0, 3)", {&g, &ga});
  }
}

TEST_CASE("LDRKL and ALDRKL reject invalid inputs with a clear message, writing nothing", "[reliability][ldr]") {
  losskit::LDRKL<double> ldr;
  losskit::ALDRKL<double> aldr;
  const M x = M::Zero(3, 2);
  const VI y = labels({0, 1});
  Out g(3, 2);
  SECTION("lambda <= 0") {
    ldr.lambda = 0;
    rejects([&] { ldr.value_and_gradient(x, y, g.m); }, "losskit::LDRKL: lambda: must be finite and > 0, got 0", {&g});
  }
  SECTION("margin not finite") {
    ldr.margin = kNaN;
    rejects([&] { ldr.value_and_gradient(x, y, g.m); }, "losskit::LDRKL: margin: must be finite, got nan", {&g});
  }
  SECTION("empty") { rejects([&] { ldr.value_and_gradient(M(3, 0), VI(0), g.m); }, "losskit::LDRKL: logits: empty input (3x0)", {&g}); }
  SECTION("label out of range") { rejects([&] { ldr.value_and_gradient(x, labels({0, 5}), g.m); }, "losskit::LDRKL: labels: label 5 at sample 1 is outside [0, 3)", {&g}); }
  SECTION("ALDRKL: alpha <= 1") {
    aldr.alpha = 1;
    rejects([&] { aldr.value_and_gradient(x, y, g.m); }, "losskit::ALDRKL: alpha: must be finite and > 1", {&g});
  }
  SECTION("ALDRKL: lambda0 <= 0") {
    aldr.lambda0 = -1;
    rejects([&] { aldr.value_and_gradient(x, y, g.m); }, "losskit::ALDRKL: lambda0: must be finite and > 0, got -1", {&g});
  }
  SECTION("ALDRKL: margin infinite") {
    aldr.margin = kInf;
    rejects([&] { aldr.value_and_gradient(x, y, g.m); }, "losskit::ALDRKL: margin: must be finite, got inf", {&g});
  }
  SECTION("ALDRKL: labels of the wrong length") { rejects([&] { aldr.value_and_gradient(x, labels({0}), g.m); }, "losskit::ALDRKL: labels: expected a vector of length 2, got 1x1", {&g}); }
}

TEST_CASE("ZLoss rejects invalid inputs with a clear message, writing nothing", "[reliability][z_loss]") {
  losskit::ZLoss<double> z;
  const M o = lktest::normal(3, 2);
  Out g(3, 2);
  SECTION("one class") {
    Out g1(1, 2);
    rejects([&] { z.value_and_gradient(M::Zero(1, 2), labels({0, 0}), g1.m); }, "losskit::ZLoss: outputs: needs at least 2 classes (rows), got 1", {&g1});
  }
  SECTION("a <= 0") {
    z.a = 0;
    rejects([&] { z.value_and_gradient(o, labels({0, 1}), g.m); }, "losskit::ZLoss: a: must be finite and > 0, got 0", {&g});
  }
  SECTION("b not finite") {
    z.b = -kInf;
    rejects([&] { z.value_and_gradient(o, labels({0, 1}), g.m); }, "losskit::ZLoss: b: must be finite, got -inf", {&g});
  }
  SECTION("empty") { rejects([&] { z.value_and_gradient(M(3, 0), VI(0), g.m); }, "losskit::ZLoss: outputs: empty input (3x0)", {&g}); }
  SECTION("label out of range") { rejects([&] { z.value_and_gradient(o, labels({0, 3}), g.m); }, "losskit::ZLoss: labels: label 3 at sample 1 is outside [0, 3)", {&g}); }
  SECTION("spherical_terms with one class") { rejects([&] { z.spherical_terms(1.0, 1.0, 1.0, 1); }, "losskit::ZLoss: outputs: needs at least 2 classes (rows), got 1"); }
}

TEST_CASE("FactoredOutputLayer rejects invalid inputs with a clear message, changing nothing",
          "[reliability][spherical]") {
  using Layer = losskit::FactoredOutputLayer<double>;
  const M w = lktest::normal(5, 2), h = lktest::normal(2, 3);
  Layer layer(w);
  const losskit::ZLoss<double> z;
  const losskit::MSE<double> mse;
  const VI y = labels({0, 1, 4});
  Out g(2, 3);
  auto unchanged = [&] { CHECK((layer.weights() - w).cwiseAbs().maxCoeff() < 1e-12); };
  SECTION("non-finite or empty weights") {
    M bad = w;
    bad(1, 1) = kNaN;
    rejects([&] { Layer l(bad); }, "losskit::FactoredOutputLayer: weights: must be finite");
    rejects([&] { Layer l(M(0, 2)); }, "losskit::FactoredOutputLayer: weights: empty input (0x2)");
  }
  SECTION("hidden of the wrong height") {
    rejects([&] { layer.train_step(z, M::Zero(3, 3), y, g.m, 0.1); }, "losskit::FactoredOutputLayer: hidden: has 3 rows, the layer's hidden size is 2", {&g});
    unchanged();
  }
  SECTION("negative learning rate") {
    rejects([&] { layer.train_step(z, h, y, g.m, -0.1); }, "losskit::FactoredOutputLayer: learning_rate: must be finite and >= 0, got -0.1", {&g});
    unchanged();
  }
  SECTION("learning_rate * weight_decay >= 1") {
    layer.weight_decay = 20;
    rejects([&] { layer.train_step(z, h, y, g.m, 0.1); }, "losskit::FactoredOutputLayer: weight_decay: learning_rate * weight_decay must be < 1, got 2", {&g});
    unchanged();
  }
  SECTION("condition_band <= 1") {
    layer.condition_band = 1;
    rejects([&] { layer.train_step(z, h, y, g.m, 0.1); }, "losskit::FactoredOutputLayer: condition_band: must be finite and > 1, got 1", {&g});
  }
  SECTION("singular_threshold outside [0, 1)") {
    layer.singular_threshold = 1;
    rejects([&] { layer.train_step(z, h, y, g.m, 0.1); }, "losskit::FactoredOutputLayer: singular_threshold: must be in [0, 1), got 1", {&g});
  }
  SECTION("negative period") {
    layer.unfactorize_period = -1;
    rejects([&] { layer.train_step(z, h, y, g.m, 0.1); }, "losskit::FactoredOutputLayer: unfactorize_period: must be >= 0, got -1", {&g});
  }
  SECTION("label out of range") {
    rejects([&] { layer.value_and_gradient(z, h, labels({0, 1, 5}), g.m); }, "losskit::ZLoss: labels: label 5 at sample 2 is outside [0, 5)", {&g});
    rejects([&] { layer.value_and_gradient(mse, h, labels({0, 1, 5}), g.m); }, "losskit::MSE: labels: label 5 at sample 2 is outside [0, 5)", {&g});
  }
  SECTION("sparse targets: duplicate row, row out of range, wrong shape") {
    Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic> rows(2, 3);
    rows << 0, 1, 2, 0, 3, 4;
    const M vals = M::Ones(2, 3);
    rejects([&] { layer.value_and_gradient(mse, h, rows, vals, g.m); }, "losskit::MSE: target_rows: row 0 appears twice in sample 0", {&g});
    rows(1, 0) = 7;
    rejects([&] { layer.value_and_gradient(mse, h, rows, vals, g.m); }, "losskit::MSE: target_rows: row 7 at (1, 0) is outside [0, 5)", {&g});
    rejects([&] { layer.value_and_gradient(mse, h, rows.leftCols(2), M::Ones(2, 2), g.m); }, "losskit::MSE: target_rows: expected K x 3 with K >= 1, got 2x2", {&g});
  }
  SECTION("Z-loss on a one-class layer") {
    Layer one(M::Ones(1, 2));
    rejects([&] { one.value_and_gradient(z, h, labels({0, 0, 0}), g.m); }, "losskit::ZLoss: outputs: needs at least 2 classes (rows), got 1", {&g});
  }
  SECTION("singular update with on_singular = Throw") {
    // One sample: A = 1 − 2·lr·g_q·‖h‖², made exactly singular by the choice of lr.
    Layer l1(w);
    l1.on_singular = losskit::SingularUpdate::Throw;
    const M h1 = h.col(0);
    const VI y1 = labels({2});
    M g1;
    const double v = z.value_and_gradient(w * h1, y1, g1);
    (void)v;
    const losskit::SphericalTerms<double> t =
        z.spherical_terms((w * h1).sum(), (w * h1).squaredNorm(), (w * h1)(2), 5);
    if (t.d_sum_squares > 0) {
      const double lr = 1 / (2 * t.d_sum_squares * h1.squaredNorm());
      Out gs(2, 1);
      rejects([&] { l1.train_step(z, h1, y1, gs.m, lr); }, "losskit::FactoredOutputLayer: learning_rate: singular update", {&gs});
      CHECK((l1.weights() - w).cwiseAbs().maxCoeff() < 1e-12);
    }
  }
}

TEST_CASE("SSIMLoss and MSSSIMLoss reject invalid inputs with a clear message, writing nothing", "[reliability][ssim]") {
  const M x = lktest::uniform(16 * 16, 2), t = lktest::uniform(16 * 16, 2);
  losskit::SSIMLoss<double> s(16, 16);
  losskit::MSSSIMLoss<double> ms(16, 16);
  Out g(256, 2);
  SECTION("size < 1") { rejects([&] { losskit::SSIMLoss<double> bad(0, 16); }, "losskit::SSIMLoss: size: height, width and channels must be >= 1, got 0, 16, 1"); }
  SECTION("even window") {
    s.window_size = 4;
    rejects([&] { s.value_and_gradient(x, t, g.m); }, "losskit::SSIMLoss: window_size: must be odd and >= 1 (the window is centred), got 4", {&g});
  }
  SECTION("sigma <= 0") {
    s.sigma = 0;
    rejects([&] { s.value_and_gradient(x, t, g.m); }, "losskit::SSIMLoss: sigma: must be finite and > 0, got 0", {&g});
  }
  SECTION("k1, k2 <= 0") {
    s.k2 = -0.03;
    rejects([&] { s.value_and_gradient(x, t, g.m); }, "losskit::SSIMLoss: k2: must be finite and > 0, got -0.03", {&g});
  }
  SECTION("data_range <= 0") {
    s.data_range = 0;
    rejects([&] { s.value_and_gradient(x, t, g.m); }, "losskit::SSIMLoss: data_range: must be finite and > 0, got 0", {&g});
  }
  SECTION("rows that are not channels·height·width") {
    Out g2(255, 2);
    rejects([&] { s.value_and_gradient(M::Zero(255, 2), M::Zero(255, 2), g2.m); }, "losskit::SSIMLoss: pred: has 255 rows, expected channels·height·width = 1·16·16 = 256", {&g2});
  }
  SECTION("target of the wrong shape") { rejects([&] { s.value_and_gradient(x, t.leftCols(1), g.m); }, "losskit::SSIMLoss: target: shape 256x1 does not match 256x2", {&g}); }
  SECTION("image smaller than the window") {
    losskit::SSIMLoss<double> small(8, 8);
    Out g8(64, 1);
    rejects([&] { small.value_and_gradient(M::Zero(64, 1), M::Zero(64, 1), g8.m); }, "losskit::SSIMLoss: images: image 8x8 is smaller than the 11x11 window", {&g8});
  }
  SECTION("MS-SSIM: image too small for the scales") {
    rejects([&] { ms.value_and_gradient(x, t, g.m); }, "losskit::MSSSIMLoss: images: image 16x16 is too small for 5 scales with window_size 11", {&g});
  }
  SECTION("MS-SSIM: no weights, or too many") {
    ms.weights.clear();
    rejects([&] { ms.value_and_gradient(x, t, g.m); }, "losskit::MSSSIMLoss: weights: need 1 to 16 scales, got 0", {&g});
  }
  SECTION("MS-SSIM: weight <= 0 or not finite") {
    ms.weights = {0.5, 0};
    rejects([&] { ms.value_and_gradient(x, t, g.m); }, "losskit::MSSSIMLoss: weights: every weight must be finite and > 0, got 0 at scale 1", {&g});
  }
  SECTION("ssim() on planes of different shapes") { rejects([&] { losskit::ssim(M::Zero(16, 16), M::Zero(16, 15)); }, "losskit::SSIMLoss: y: shape 16x15 does not match 16x16"); }
}

TEST_CASE("CS-IB family rejects invalid inputs with a clear message, writing nothing", "[reliability][cs_ib]") {
  const M yhat = lktest::normal(1, 4), y = lktest::normal(1, 4), t = lktest::normal(2, 4), x = lktest::normal(3, 4);
  losskit::CSDivergence<double> div;
  losskit::CSQuadraticMI<double> mi;
  losskit::CSIB<double> ib;
  Out gy(1, 4), gt(2, 4);
  SECTION("one sample") {
    Out g1(1, 1);
    rejects([&] { div.value_and_gradient(yhat.leftCols(1), y.leftCols(1), x.leftCols(1), g1.m); }, "losskit::CSDivergence: yhat: needs at least 2 samples (columns) for a kernel estimator, got 1", {&g1});
  }
  SECTION("x with a different number of samples") { rejects([&] { div.value_and_gradient(yhat, y, x.leftCols(3), gy.m); }, "losskit::CSDivergence: x: has 3 samples (columns), expected 4", {&gy}); }
  SECTION("y of the wrong shape") { rejects([&] { div.value_and_gradient(yhat, M::Zero(2, 4), x, gy.m); }, "losskit::CSDivergence: y: shape 2x4 does not match 1x4", {&gy}); }
  SECTION("negative width") {
    div.sigma_y = -1;
    rejects([&] { div.value_and_gradient(yhat, y, x, gy.m); }, "losskit::CSDivergence: sigma_y: must be finite and >= 0, got -1", {&gy});
    mi.sigma_t = kNaN;
    rejects([&] { mi.value_and_gradient(t, x, gt.m); }, "losskit::CSQuadraticMI: sigma_t: must be finite and >= 0, got nan", {&gt});
  }
  SECTION("empty") { rejects([&] { mi.value_and_gradient(M(2, 0), M(3, 0), gt.m); }, "losskit::CSQuadraticMI: t: empty input (2x0)", {&gt}); }
  SECTION("CSIB: negative beta") {
    ib.beta = -0.1;
    rejects([&] { ib.value_and_gradient(yhat, y, t, x, gy.m, gt.m); }, "losskit::CSIB: beta: must be finite and >= 0, got -0.1", {&gy, &gt});
  }
  SECTION("CSIB: t with a different number of samples") {
    rejects([&] { ib.value_and_gradient(yhat, y, t.leftCols(2), x, gy.m, gt.m); }, "losskit::CSIB: t: has 2 samples (columns), expected 4", {&gy, &gt});
  }
  SECTION("median_heuristic_width of nothing") { rejects([&] { losskit::median_heuristic_width(M(2, 0)); }, "losskit::median_heuristic_width: samples: empty input (2x0)"); }
}

TEST_CASE("check_gradient rejects a gradient of the wrong shape", "[reliability]") {
  rejects([&] { losskit::check_gradient([](const M& z) { return z.sum(); }, M::Zero(2, 2), M::Zero(2, 3)); },
          "losskit::check_gradient: analytic: shape 2x3");
}

// ------------------------------------------------------------------------------- 2. non-finite inputs

TEST_CASE("Non-finite inputs never throw and give the documented results", "[reliability][nonfinite]") {
  M x = lktest::normal(3, 2);
  x(1, 0) = kNaN;
  const VI y = labels({0, 1});
  M g;
  // NaN anywhere in a sample's column makes that sample (hence a Mean loss) NaN.
  CHECK(std::isnan(losskit::MSE<double>{}.value_and_gradient(x, M::Zero(3, 2), g)));
  CHECK(std::isnan(losskit::CrossEntropy<double>{}.value_and_gradient(x, y, g)));
  CHECK(g.col(0).array().isNaN().all());
  CHECK(g.col(1).allFinite());
  CHECK(std::isnan(losskit::BinaryCrossEntropyWithLogits<double>{}.value_and_gradient(x, M::Zero(3, 2), g)));
  CHECK(std::isnan(losskit::CompSum<double>{}.value_and_gradient(x, y, g)));
  CHECK(g.col(1).allFinite());
  M ga;
  CHECK(std::isnan(losskit::SmoothAdversarialCompSum<double>{}.value_and_gradient(x, x, y, g, ga)));
  CHECK(std::isnan(losskit::LDRKL<double>{}.value_and_gradient(x, y, g)));
  CHECK(std::isnan(losskit::ALDRKL<double>{}.value_and_gradient(x, y, g)));
  CHECK(std::isnan(losskit::ZLoss<double>{}.value_and_gradient(x, y, g)));
  CHECK(g.col(1).allFinite());
  // −inf logits at a non-target class are valid (probability 0).
  M xi = lktest::normal(3, 2);
  xi(2, 0) = -kInf;
  CHECK(std::isfinite(losskit::CrossEntropy<double>{}.value_and_gradient(xi, y, g)));
  CHECK(std::isfinite(losskit::CompSum<double>{}.value_and_gradient(xi, y, g)));
  CHECK(std::isfinite(losskit::LDRKL<double>{}.value_and_gradient(xi, y, g)));
  // BCE: infinite logits give the limits (finite where the limit is).
  M b(1, 2);
  b << kInf, -kInf;
  M tb(1, 2);
  tb << 1, 0;  // x = +inf with t = 1 and x = −inf with t = 0: both limits are 0
  CHECK(losskit::BinaryCrossEntropyWithLogits<double>{}.value_and_gradient(b, tb, g) == 0);
  // SSIM: a NaN pixel makes its channel's index NaN and leaves the other planes alone.
  losskit::SSIMLoss<double> s(11, 11, 2);
  M img = lktest::uniform(2 * 121, 1);
  img(5, 0) = kNaN;
  CHECK(std::isnan(s.value_and_gradient(img, img, g)));
  CHECK(g.bottomRows(121).allFinite());
  // CS-IB: a NaN sample makes the loss and ∂/∂ŷ NaN; an infinite ŷ sample
  // a NaN loss (its distance to itself is inf − inf) and a non-finite ∂/∂ŷ.
  // Never an exception.
  M yh = lktest::normal(1, 5);
  const M yt = lktest::normal(1, 5), tt = lktest::normal(2, 5), xt = lktest::normal(2, 5);
  losskit::CSIB<double> ib;
  M gt;
  yh(0, 2) = kNaN;
  CHECK(std::isnan(ib.value_and_gradient(yh, yt, tt, xt, g, gt)));
  CHECK(g.array().isNaN().all());
  yh(0, 2) = kInf;
  CHECK_NOTHROW(ib.value_and_gradient(yh, yt, tt, xt, g, gt));
  CHECK(!g.allFinite());
  // FactoredOutputLayer: a non-finite hidden value skips the update.
  losskit::FactoredOutputLayer<double> layer(lktest::normal(4, 2));
  const M w0 = layer.weights();
  M h = lktest::normal(2, 2);
  h(0, 0) = kNaN;
  CHECK_NOTHROW(layer.train_step(losskit::ZLoss<double>{}, h, labels({0, 1}), g, 0.1));
  CHECK(layer.stats().skipped_nonfinite == 1);
  CHECK(layer.weights() == w0);
}

/// A contiguous batch with few rows runs in blocks of whole columns
/// (ColumnLoss::kBlockRows); the same batch seen through a Block view runs
/// column by column, the path the other tests check against closed forms.
/// The two must agree to round-off, non-finite columns (which the block
/// kernels hand back to the column kernel) included, across several blocks,
/// with and without sample weights (0 included), in value and gradient.
template <class Loss, class T>
void check_blocks_match_columns(const Loss& loss, const M& x, const T& t) {
  const Index rows = x.rows(), n = x.cols();
  M padded(rows + 1, n);
  padded.topRows(rows) = x;
  padded.row(rows).setZero();
  Eigen::VectorXd s = lktest::uniform(n, 1, 0.0, 2.0);
  s(1) = 0;
  M g_block(rows, n), g_column(rows, n);
  const double v_block = loss.value_and_gradient(x, t, s, g_block);
  const double v_column = loss.value_and_gradient(padded.topRows(rows), t, s, g_column);
  auto agree = [](double a, double b) {
    return (std::isnan(a) && std::isnan(b)) || a == b || lktest::rel_err(a, b) < 1e-13;
  };
  CHECK(agree(v_block, v_column));
  CHECK(agree(loss(x, t), loss(padded.topRows(rows), t)));
  CHECK((g_block.array().isNaN() == g_column.array().isNaN()).all());
  const M finite_block = g_block.array().isFinite().select(g_block, 0);
  const M finite_column = g_column.array().isFinite().select(g_column, 0);
  CHECK((g_block.array().isFinite() == g_column.array().isFinite()).all());
  // Relative to 1e-3: entries far below the largest (|∂| <= 1/N) carry absolute round-off.
  CHECK(lktest::max_rel_err(finite_block, finite_column, 1e-3 / double(n)) < 1e-12);
}

TEST_CASE("Blocks of columns for a few classes agree with the column kernel", "[reliability][blocks]") {
  const Index n = 1500;  // several blocks of 2048 elements for every row count below
  for (const Index c : {Index(1), Index(3), Index(10), Index(128)}) {
    CAPTURE(c);
    for (const bool non_finite : {false, true}) {
      CAPTURE(non_finite);
      M x = lktest::normal(c, n, 3.0);
      VI y = lktest::labels(n, int(c));
      if (non_finite) {
        x(0, 3) = -kInf;
        x(c - 1, 4) = kNaN;
        x(0, 5) = kInf;
        x(y(6), 6) = -kInf;
      }
      losskit::CrossEntropy<double> ce;
      ce.class_weights = lktest::uniform(c, 1, 0.5, 2.0);
      ce.z_penalty = 1e-3;
      ce.ignore_index = -7;
      y(8) = -7;
      check_blocks_match_columns(ce, x, y);
      ce.label_smoothing = 0.1;
      check_blocks_match_columns(ce, x, y);
      // Probability targets (a few zeros, so −inf logits meet zero mass too).
      M q = lktest::uniform(c, n);
      if (c > 1) q.row(0).head(20).setZero();
      q.array().rowwise() /= q.colwise().sum().array();
      check_blocks_match_columns(ce, x, q);
      ce.class_weights.resize(0);
      check_blocks_match_columns(ce, x, q);
      ce.label_smoothing = 0;
      check_blocks_match_columns(ce, x, q);
      y(8) = 0;
      for (const double tau : {0.0, 0.5, 1.0, 1.7}) check_blocks_match_columns(losskit::CompSum<double>(tau), x, y);
      losskit::LDRKL<double> ldr;
      for (const double lambda : {1e-3, 0.5, 4.0}) {
        ldr.lambda = lambda;
        check_blocks_match_columns(ldr, x, y);
      }
      // ALDRKL: λ0 = 10 and 1 are mostly the solver's concave case (the
      // block's Newton passes), λ0 = 0.1 mostly branch and bound (handed to
      // the column kernel); with margin 0 a constant column is its flat case.
      losskit::ALDRKL<double> aldr;
      for (const double lambda0 : {10.0, 1.0, 0.1}) {
        aldr.lambda0 = lambda0;
        check_blocks_match_columns(aldr, x, y);
      }
      aldr.margin = 0;
      M flat = x;
      flat.col(9).setConstant(0.25);
      check_blocks_match_columns(aldr, flat, y);
      if (c > 1) {  // ZLoss needs two classes; the constant column is its σ = 0 case
        losskit::ZLoss<double> zl;
        zl.a = 2;
        zl.b = 0.5;
        check_blocks_match_columns(zl, flat, y);
      }
      const M t = lktest::uniform(c, n);
      losskit::BinaryCrossEntropyWithLogits<double> bce;
      bce.pos_weight = lktest::uniform(c, 1, 0.5, 3.0);
      check_blocks_match_columns(bce, x, t);
      bce.weight = lktest::uniform(c, n, 0.0, 2.0);
      check_blocks_match_columns(bce, x, t);
    }
  }
}

// ------------------------------------------------------------------------------- 3. stress

namespace {

/// Finite value and gradient in double and float, float within `rtol` of double.
template <class LossD, class LossF, class X, class T>
void finite_in_both(const LossD& ld, const LossF& lf, const X& x, const T& target, double rtol) {
  M g;
  const double v = ld.value_and_gradient(x, target, g);
  CHECK(std::isfinite(v));
  CHECK(g.allFinite());
  MF gf;
  float vf;
  if constexpr (std::is_floating_point<typename T::Scalar>::value)
    vf = lf.value_and_gradient(x.template cast<float>().eval(), target.template cast<float>().eval(), gf);
  else
    vf = lf.value_and_gradient(x.template cast<float>().eval(), target, gf);
  CHECK(std::isfinite(vf));
  CHECK(gf.allFinite());
  CHECK(std::abs(double(vf) - v) <= rtol * std::max(1.0, std::abs(v)));
}

}  // namespace

TEST_CASE("Stress: softmax-family losses at 1e4, 1e30, 1e-30, ties, one class, one sample, huge C",
          "[reliability][stress]") {
  const M base = lktest::normal(5, 3);
  const VI y = labels({0, 2, 4});
  // Shift invariance: every loss here depends on the logits only through
  // differences (CE, CompSum, LDR without normalisation), so base + s·1 gives
  // the value of base — an identity, not the code's own output.
  losskit::CrossEntropy<double> ce;
  losskit::CompSum<double> cs(0.5);
  losskit::LDRKL<double> ldr;
  losskit::ALDRKL<double> aldr;
  const double ce0 = ce(base, y), cs0 = cs(base, y), ldr0 = ldr(base, y), aldr0 = aldr(base, y);
  for (double shift : {1e4, -1e4, 1e30, 1e-30}) {
    CAPTURE(shift);
    const M x = base.array() + shift;
    const double tol = shift == 1e30 ? kInf : 1e-9 + 1e-15 * std::abs(shift) * 10;  // 1e30: the differences are lost
    M g;
    CHECK(std::isfinite(ce.value_and_gradient(x, y, g)));
    CHECK(g.allFinite());
    CHECK(std::abs(ce(x, y) - ce0) <= tol);
    CHECK(std::isfinite(cs.value_and_gradient(x, y, g)));
    CHECK(g.allFinite());
    CHECK(std::abs(cs(x, y) - cs0) <= tol * 10);
    CHECK(std::isfinite(ldr.value_and_gradient(x, y, g)));
    CHECK(g.allFinite());
    CHECK(std::abs(ldr(x, y) - ldr0) <= tol);
    CHECK(std::isfinite(aldr.value_and_gradient(x, y, g)));
    CHECK(g.allFinite());
    CHECK(std::abs(aldr(x, y) - aldr0) <= tol * 10);
  }
  SECTION("large logit gaps (1e4) in float and double") {
    M x = base;
    x(1, 0) = 1e4;   // a wrong class far ahead: loss ≈ 1e4 (CE), finite
    x(2, 1) = -1e4;  // the target far behind
    finite_in_both(losskit::CrossEntropy<double>{}, losskit::CrossEntropy<float>{}, x, y, 1e-5);
    finite_in_both(losskit::CompSum<double>(1.5), losskit::CompSum<float>(1.5f), x, y, 1e-4);
    finite_in_both(losskit::LDRKL<double>{}, losskit::LDRKL<float>{}, x, y, 1e-5);
    finite_in_both(losskit::ALDRKL<double>{}, losskit::ALDRKL<float>{}, x, y, 1e-4);
    losskit::BinaryCrossEntropyWithLogits<double> bce;
    finite_in_both(bce, losskit::BinaryCrossEntropyWithLogits<float>{}, x, M::Constant(5, 3, 0.25), 1e-5);
  }
  SECTION("ties and constant logits: exactly log C (CE) and the closed forms") {
    const M x = M::Constant(5, 3, 7.25);
    CHECK(ce(x, y) == Approx(std::log(5.0)).epsilon(1e-15));
    CHECK(cs(x, y) == Approx((1 - std::pow(0.2, -0.5)) / -0.5).epsilon(1e-14));  // (1 − p^{τ−1})/(τ−1), p = 1/5
    CHECK(ldr(x, y) == Approx(std::log((1 + 4 * std::exp(0.1)) / 5)).epsilon(1e-14));
    finite_in_both(losskit::ZLoss<double>{}, losskit::ZLoss<float>{}, x, y, 1e-6);  // σ = 0: softplus(a·b)/a
  }
  SECTION("one class (C = 1): loss 0 where defined") {
    const M x = lktest::normal(1, 3);
    const VI y0 = VI::Zero(3);
    M g;
    CHECK(ce.value_and_gradient(x, y0, g) == 0);
    CHECK(g.isZero(0));
    CHECK(cs.value_and_gradient(x, y0, g) == 0);
    CHECK(aldr.value_and_gradient(x, y0, g) == Approx(0).margin(1e-15));
  }
  SECTION("one sample, and huge C (2^17 classes) in float and double") {
    const M x = lktest::normal(1 << 17, 1, 3.0);
    const VI y1 = VI::Constant(1, 12345);
    finite_in_both(losskit::CrossEntropy<double>{}, losskit::CrossEntropy<float>{}, x, y1, 1e-5);
    finite_in_both(losskit::CompSum<double>(0.0), losskit::CompSum<float>(0.0f), x, y1, 1e-3);
    finite_in_both(losskit::LDRKL<double>{}, losskit::LDRKL<float>{}, x, y1, 1e-5);
    finite_in_both(losskit::ZLoss<double>{}, losskit::ZLoss<float>{}, x, y1, 1e-4);
  }
}

TEST_CASE("Stress: Z-loss is scale and shift invariant from 1e-30 to 1e30", "[reliability][stress][z_loss]") {
  const M o = lktest::normal(6, 3);
  const VI y = labels({0, 3, 5});
  losskit::ZLoss<double> z;
  const double v0 = z(o, y);
  for (double scale : {1e-30, 1e-4, 1e4, 1e30}) {
    CAPTURE(scale);
    const M os = (o.array() * scale + 3 * scale).matrix();
    M g;
    CHECK(z.value_and_gradient(os, y, g) == Approx(v0).epsilon(1e-12));
    CHECK(g.allFinite());
    MF gf;
    const float vf = losskit::ZLoss<float>{}.value_and_gradient(os.cast<float>().eval(), y, gf);
    CHECK(gf.allFinite());
    // float: σ² underflows (1e-30) or overflows (1e30) and the σ = 0
    // convention applies; exact only where σ² is representable (see
    // docs/reliability.md).
    if (scale >= 1e-4 && scale <= 1e4) CHECK(vf == Approx(v0).epsilon(1e-5));
  }
}

TEST_CASE("Stress: MSE and BCE at 1e30 and 1e-30 in double, float where representable", "[reliability][stress]") {
  const M a = M::Constant(2, 2, 1e30), b = M::Constant(2, 2, -1e30);
  M g;
  CHECK(losskit::MSE<double>{}.value_and_gradient(a, b, g) == Approx(4e60).epsilon(1e-15));
  CHECK(g.allFinite());
  const M t = M::Constant(2, 2, 1e-30);
  CHECK(losskit::MSE<double>{}(t, M::Zero(2, 2)) == Approx(1e-60).epsilon(1e-15));
  CHECK(losskit::MSE<float>{}(t.cast<float>(), MF::Zero(2, 2)) == Approx(1e-60).margin(1e-44));  // underflows to ~0 in float
  losskit::BinaryCrossEntropyWithLogits<double> bce;
  CHECK(bce.value_and_gradient(a, M::Zero(2, 2), g) == Approx(1e30).epsilon(1e-15));  // ℓ = x for t = 0, x ≫ 0
  CHECK(g.allFinite());
}

TEST_CASE("Stress: SSIM and MS-SSIM of an image with itself is 1 at every scale of the data", "[reliability][stress][ssim]") {
  const M base = lktest::uniform(32 * 32, 1);
  losskit::SSIMLoss<double> s(32, 32);
  losskit::MSSSIMLoss<double> ms(32, 32);
  ms.window_size = 3;
  ms.weights = {0.3, 0.3, 0.4};
  for (double scale : {1e-30, 1.0, 1e4, 1e30}) {
    CAPTURE(scale);
    const M x = base * scale;
    s.data_range = ms.data_range = scale;
    M g;
    CHECK(s.value_and_gradient(x, x, g) == Approx(0).margin(1e-12));  // loss = 1 − SSIM(x, x) = 0
    CHECK(g.allFinite());
    CHECK(ms.value_and_gradient(x, x, g) == Approx(0).margin(1e-12));
    CHECK(g.allFinite());
    // A constant image (σ = 0 everywhere) against itself: still exactly 1.
    const M c = M::Constant(32 * 32, 1, 0.5 * scale);
    CHECK(s(c, c) == Approx(0).margin(1e-12));
    // float: μ² and C1 = (k1·L)² under/overflow beyond about 1e±15 (see
    // docs/reliability.md); within that range float agrees with double.
    if (scale >= 1e-4 && scale <= 1e4) {
      losskit::SSIMLoss<float> sf(32, 32);
      sf.data_range = float(scale);
      MF gf;
      CHECK(sf.value_and_gradient(x.cast<float>().eval(), (x * 0.9).cast<float>().eval(), gf) ==
            Approx(s(x, (x * 0.9).eval())).margin(1e-4));
      CHECK(gf.allFinite());
    }
  }
}

TEST_CASE("Stress: CS divergence is 0 at yhat = y and finite for far, tiny or tied samples", "[reliability][stress][cs_ib]") {
  const M y = lktest::normal(1, 6), x = lktest::normal(2, 6), t = lktest::normal(2, 6);
  losskit::CSDivergence<double> div;
  losskit::CSIB<double> ib;
  M gy, gt;
  CHECK(div.value_and_gradient(y, y, x, gy) == Approx(0).margin(1e-12));  // log A + log B − 2 log C with A = B = C
  for (double scale : {1e-30, 1e4, 1e30}) {
    CAPTURE(scale);
    // Scaling every variable together scales every median-heuristic width too:
    // the kernels, hence the loss, are unchanged (an identity).
    const M ys = y * scale, yh = (y + lktest::normal(1, 6) * 0.3) * scale;
    CHECK(std::isfinite(ib.value_and_gradient(yh, ys, t * scale, x * scale, gy, gt)));
    CHECK((gy.allFinite() && gt.allFinite()));
    CHECK(ib(yh, ys, t * scale, x * scale) == Approx(ib(yh / scale, y, t, x)).epsilon(1e-8).margin(1e-10));
    losskit::CSIB<float> ibf;
    Eigen::MatrixXf gyf, gtf;
    if (scale < 1e30) {
      CHECK(std::isfinite(ibf.value_and_gradient(yh.cast<float>().eval(), ys.cast<float>().eval(), (t * scale).cast<float>().eval(),
                                                 (x * scale).cast<float>().eval(), gyf, gtf)));
      CHECK((gyf.allFinite() && gtf.allFinite()));
    }
  }
  // Far predictions (every cross kernel underflows in float) and tied samples.
  const M far = (y.array() + 20 * losskit::median_heuristic_width(y)).matrix();
  CHECK(std::isfinite(div.value_and_gradient(far, y, x, gy)));
  CHECK(gy.allFinite());
  const M tied = M::Constant(2, 6, 1.5);
  CHECK(std::isfinite(ib.value_and_gradient(y, y, tied, tied, gy, gt)));
  CHECK(gt.isZero(0));  // collapsed t: Î = 0 with zero gradient (documented)
}
