// CrossEntropy and BinaryCrossEntropyWithLogits: closed forms, a brute-force
// long-double transcription of PyTorch's definitions, identities, gradients
// (random points, ties, |x| ~ 1e4), float vs double, errors, allocation,
// non-finite behaviour, sharded normalisation.
#include <losskit/cross_entropy.hpp>
#include <losskit/gradcheck.hpp>

#include <sstream>
#include <utility>

#include "test_util.hpp"

using losskit::BinaryCrossEntropyWithLogits;
using losskit::CrossEntropy;
using losskit::Reduction;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Reference: PyTorch's cross_entropy documentation transcribed literally, in
// long double, with the unshifted softmax log p_k = x_k − log Σ_j exp(x_j)
// (inputs are moderate so nothing overflows). Penalty per losskit's documented
// convention: z·w_{y_i}·lse² (labels), z·lse² (probabilities), same normaliser.
struct RefCE {
  long double total = 0, penalty = 0, normaliser = 0;
  double mean() const { return normaliser > 0 ? double((total + penalty) / normaliser) : 0.0; }
  double sum() const { return double(total + penalty); }
};

RefCE ref_ce_labels(const Eigen::MatrixXd& x, const Eigen::VectorXi& y, const Eigen::VectorXd& w, double eps,
                    double zc, int ignore = -100) {
  const Eigen::Index C = x.rows();
  RefCE r;
  for (Eigen::Index i = 0; i < x.cols(); ++i) {
    if (y(i) == ignore) continue;
    long double z = 0;
    for (Eigen::Index k = 0; k < C; ++k) z += std::exp((long double)x(k, i));
    const long double lse = std::log(z);
    auto wk = [&](Eigen::Index k) { return w.size() ? (long double)w(k) : 1.0L; };
    long double l = (1 - (long double)eps) * wk(y(i)) * -((long double)x(y(i), i) - lse);
    for (Eigen::Index k = 0; k < C; ++k)  // 0·log 0 = 0: classes without target mass add nothing
      if (eps > 0 && wk(k) > 0) l += (long double)eps / C * wk(k) * -((long double)x(k, i) - lse);
    r.total += l;
    r.penalty += (long double)zc * wk(y(i)) * lse * lse;
    r.normaliser += wk(y(i));
  }
  return r;
}

RefCE ref_ce_probs(const Eigen::MatrixXd& x, const Eigen::MatrixXd& q, const Eigen::VectorXd& w, double eps, double zc) {
  const Eigen::Index C = x.rows();
  RefCE r;
  for (Eigen::Index i = 0; i < x.cols(); ++i) {
    long double z = 0;
    for (Eigen::Index k = 0; k < C; ++k) z += std::exp((long double)x(k, i));
    const long double lse = std::log(z);
    for (Eigen::Index k = 0; k < C; ++k) {
      const long double qk = (1 - (long double)eps) * q(k, i) + (long double)eps / C;
      const long double wq = (w.size() ? (long double)w(k) : 1.0L) * qk;
      if (wq != 0) r.total += wq * -((long double)x(k, i) - lse);
    }
    r.penalty += (long double)zc * lse * lse;
    r.normaliser += 1;
  }
  return r;
}

Eigen::MatrixXd random_distributions(Eigen::Index C, Eigen::Index N) {
  Eigen::MatrixXd q = lktest::uniform(C, N, 0.0, 1.0);
  for (Eigen::Index j = 0; j < N; ++j) q.col(j) /= q.col(j).sum();
  return q;
}

Eigen::MatrixXd one_hot(const Eigen::VectorXi& y, Eigen::Index C) {
  Eigen::MatrixXd q = Eigen::MatrixXd::Zero(C, y.size());
  for (Eigen::Index i = 0; i < y.size(); ++i) q(y(i), i) = 1;
  return q;
}

template <class F>
void expect_gradient(const char* what, F&& loss, const Eigen::MatrixXd& x, const Eigen::MatrixXd& g,
                     losskit::GradientCheckOptions opt = {}) {
  const auto res = losskit::check_gradient(loss, x, g, opt);
  INFO(what << ": " << res.report());
  CHECK(res.passed);
  CHECK(res.max_rel_error <= 1e-6);
}

}  // namespace

// ---------------------------------------------------------------- CrossEntropy

TEST_CASE("CrossEntropy matches closed forms", "[ce]") {
  // Equal logits: p = 1/C for every class, so −log p_y = log C whatever the
  // label, smoothing or soft target; lse = log C gives the penalty z·log²C.
  const Eigen::MatrixXd x = Eigen::MatrixXd::Constant(5, 3, 2.5);  // lse = 2.5 + log 5
  const Eigen::VectorXi y = (Eigen::VectorXi(3) << 0, 4, 2).finished();
  CrossEntropy<double> ce;
  CHECK(ce(x, y) == Approx(std::log(5.0)).epsilon(1e-15));
  ce.label_smoothing = 0.3;
  CHECK(ce(x, y) == Approx(std::log(5.0)).epsilon(1e-15));
  CHECK(ce(x, random_distributions(5, 3)) == Approx(std::log(5.0)).epsilon(1e-14));
  ce.z_penalty = 1e-2;
  const double lse = 2.5 + std::log(5.0);
  const auto r = ce.evaluate(x, y);
  CHECK(r.cross_entropy == Approx(std::log(5.0)).epsilon(1e-15));
  CHECK(r.z_penalty == Approx(1e-2 * lse * lse).epsilon(1e-15));
  CHECK(r.loss == Approx(std::log(5.0) + 1e-2 * lse * lse).epsilon(1e-15));
  CHECK(r.normaliser == 3.0);

  // Two classes: CE = softplus(x_other − x_y) = log(1 + e^{-d}).
  Eigen::MatrixXd two(2, 1);
  two << 1.0, -0.5;
  CrossEntropy<double> plain;
  CHECK(plain(two, Eigen::VectorXi::Constant(1, 0)) == Approx(std::log1p(std::exp(-1.5))).epsilon(1e-15));
  CHECK(plain(two, Eigen::VectorXi::Constant(1, 1)) == Approx(std::log1p(std::exp(1.5))).epsilon(1e-15));
}

TEST_CASE("CrossEntropy matches a long-double transcription of PyTorch's definition", "[ce]") {
  const Eigen::Index C = 7, N = 9;
  const Eigen::MatrixXd x = lktest::normal(C, N, 2.0);
  Eigen::VectorXi y = lktest::labels(N, int(C));
  y(2) = -100;
  y(5) = -100;
  const Eigen::VectorXd w = lktest::uniform(C, 1, 0.2, 3.0);
  for (double eps : {0.0, 0.15}) {
    for (double zc : {0.0, 1e-3}) {
      for (bool weighted : {false, true}) {
        CrossEntropy<double> ce;
        ce.label_smoothing = eps;
        ce.z_penalty = zc;
        if (weighted) ce.class_weights = w;
        const Eigen::VectorXd wv = weighted ? w : Eigen::VectorXd();
        const RefCE ref = ref_ce_labels(x, y, wv, eps, zc);
        INFO("labels: eps " << eps << ", z " << zc << ", weighted " << weighted);
        const auto r = ce.evaluate(x, y);
        CHECK(lktest::rel_err(r.loss, ref.mean()) < 1e-13);
        CHECK(lktest::rel_err(r.normaliser, double(ref.normaliser)) < 1e-15);
        if (zc > 0) CHECK(lktest::rel_err(r.z_penalty, double(ref.penalty / ref.normaliser)) < 1e-13);
        const Eigen::VectorXd per = ce.per_sample(x, y);
        CHECK(per(2) == 0.0);
        CHECK(lktest::rel_err(per.sum() / r.normaliser, ref.mean()) < 1e-13);
        ce.reduction = Reduction::Sum;
        CHECK(lktest::rel_err(ce(x, y), ref.sum()) < 1e-13);

        const Eigen::MatrixXd q = random_distributions(C, N);
        const RefCE refp = ref_ce_probs(x, q, wv, eps, zc);
        INFO("probabilities");
        CHECK(lktest::rel_err(ce(x, q), refp.sum()) < 1e-13);
        ce.reduction = Reduction::Mean;
        CHECK(lktest::rel_err(ce(x, q), refp.mean()) < 1e-13);
        CHECK(ce.evaluate(x, q).normaliser == double(N));
      }
    }
  }
}

TEST_CASE("CrossEntropy with labels equals CrossEntropy with one-hot probabilities", "[ce]") {
  const Eigen::MatrixXd x = lktest::normal(6, 11, 3.0);
  const Eigen::VectorXi y = lktest::labels(11, 6);
  const Eigen::MatrixXd q = one_hot(y, 6);
  for (double eps : {0.0, 0.2}) {
    CrossEntropy<double> ce;
    ce.label_smoothing = eps;
    ce.z_penalty = 1e-3;
    Eigen::MatrixXd g_labels, g_probs;
    const double v_labels = ce.value_and_gradient(x, y, g_labels);
    const double v_probs = ce.value_and_gradient(x, q, g_probs);
    INFO("smoothing " << eps);
    CHECK(v_labels == Approx(v_probs).epsilon(1e-14));
    CHECK(lktest::max_rel_err(g_labels, g_probs, 1e-14) < 1e-12);
    // With class weights the Mean normalisers differ (Σ w_y vs N) by design;
    // the Sum of the cross-entropy parts agrees.
    ce.z_penalty = 0;
    ce.class_weights = lktest::uniform(6, 1, 0.5, 2.0);
    ce.reduction = Reduction::Sum;
    CHECK(ce.value_and_gradient(x, y, g_labels) == Approx(ce.value_and_gradient(x, q, g_probs)).epsilon(1e-14));
    CHECK(lktest::max_rel_err(g_labels, g_probs, 1e-14) < 1e-12);
  }
}

TEST_CASE("CrossEntropy: smoothing + ignore_index + class weights together", "[ce]") {
  // The combination PyTorch got wrong twice: ignored samples must not count
  // in the smoothing term or the denominator, and weights must enter the
  // smoothing term per class k.
  const Eigen::Index C = 4, N = 6;
  Eigen::MatrixXd x = lktest::normal(C, N);
  Eigen::VectorXi y(N);
  y << 1, 7, 3, 7, 0, 2;  // ignore_index = 7 (a custom value)
  x(0, 1) = kNaN;          // ignored columns are never read
  x(2, 3) = kInf;
  CrossEntropy<double> ce;
  ce.ignore_index = 7;
  ce.label_smoothing = 0.25;
  ce.class_weights = (Eigen::VectorXd(C) << 0.5, 2.0, 1.0, 3.0).finished();
  Eigen::MatrixXd xr = x;  // reference on the non-ignored columns only
  xr.col(1).setZero();
  xr.col(3).setZero();
  const RefCE ref = ref_ce_labels(xr, y, ce.class_weights, 0.25, 0.0, 7);
  // Normaliser by hand: w_1 + w_3 + w_0 + w_2 = 2 + 3 + 0.5 + 1.
  CHECK(double(ref.normaliser) == 6.5);
  Eigen::MatrixXd g;
  const auto r = ce.evaluate(x, y, g);
  CHECK(r.normaliser == 6.5);
  CHECK(ce.normaliser(y) == 6.5);
  CHECK(lktest::rel_err(r.loss, ref.mean()) < 1e-13);
  CHECK(g.col(1).isZero(0));
  CHECK(g.col(3).isZero(0));
  CHECK(g.allFinite());
  expect_gradient("CE smoothing+ignore+weights", [&](const Eigen::MatrixXd& z) {
    Eigen::MatrixXd zz = z;
    zz(0, 1) = kNaN;
    zz(2, 3) = kInf;
    return ce(zz, y);
  }, xr, g);
}

TEST_CASE("CrossEntropy with every sample ignored gives 0 and a zero gradient", "[ce]") {
  const Eigen::MatrixXd x = lktest::normal(5, 4);
  const Eigen::VectorXi y = Eigen::VectorXi::Constant(4, -100);
  CrossEntropy<double> ce;
  ce.label_smoothing = 0.1;
  ce.z_penalty = 1e-4;
  Eigen::MatrixXd g = lktest::sentinel(5, 4);
  const auto r = ce.evaluate(x, y, g);
  CHECK(r.loss == 0.0);
  CHECK(r.z_penalty == 0.0);
  CHECK(r.normaliser == 0.0);
  CHECK(g.isZero(0));
  // Zero class weights on every counted label: normaliser 0, same outcome.
  ce.class_weights = Eigen::VectorXd::Zero(5);
  CHECK(ce.value_and_gradient(x, lktest::labels(4, 5), g) == 0.0);
  CHECK(g.isZero(0));
}

TEST_CASE("CrossEntropy gradient passes the finite-difference check", "[ce][gradient]") {
  const Eigen::Index C = 6, N = 5;
  const Eigen::MatrixXd x = lktest::normal(C, N, 2.0);
  Eigen::VectorXi y = lktest::labels(N, int(C));
  y(3) = -100;
  const Eigen::MatrixXd q = random_distributions(C, N);
  for (Reduction red : {Reduction::Mean, Reduction::Sum}) {
    for (double eps : {0.0, 0.1}) {
      for (bool weighted : {false, true}) {
        CrossEntropy<double> ce;
        ce.reduction = red;
        ce.label_smoothing = eps;
        ce.z_penalty = 0.01;
        if (weighted) ce.class_weights = lktest::uniform(C, 1, 0.2, 2.0);
        INFO("reduction " << red << ", eps " << eps << ", weighted " << weighted);
        Eigen::MatrixXd g;
        CHECK(ce.value_and_gradient(x, y, g) == Approx(ce(x, y)).epsilon(1e-15));
        expect_gradient("CE labels", [&](const Eigen::MatrixXd& z) { return ce(z, y); }, x, g);
        CHECK(ce.value_and_gradient(x, q, g) == Approx(ce(x, q)).epsilon(1e-15));
        expect_gradient("CE probabilities", [&](const Eigen::MatrixXd& z) { return ce(z, q); }, x, g);
      }
    }
  }
}

TEST_CASE("CrossEntropy gradient at ties and at logits of magnitude 1e4", "[ce][gradient]") {
  CrossEntropy<double> ce;
  ce.label_smoothing = 0.1;
  ce.z_penalty = 1e-4;
  // Ties: all logits equal, and two equal maxima.
  Eigen::MatrixXd ties(4, 2);
  ties << 1, 3, 1, 3, 1, -2, 1, 0.5;
  const Eigen::VectorXi y = (Eigen::VectorXi(2) << 2, 1).finished();
  Eigen::MatrixXd g;
  ce.value_and_gradient(ties, y, g);
  expect_gradient("CE ties", [&](const Eigen::MatrixXd& z) { return ce(z, y); }, ties, g);

  // |x| ~ 1e4 with O(1) gaps: the loss is O(1), lse ~ 1e4, so the penalty's
  // gradient 2·z·lse·p is O(1) too. Steps absolute: a 1e-3·1e4 step would
  // cross the gaps.
  const Eigen::MatrixXd big = (Eigen::MatrixXd::Constant(5, 3, 1e4) + lktest::normal(5, 3)).eval();
  Eigen::MatrixXd big_mixed = big;
  big_mixed.row(4).array() -= 2e4;  // one entry ~ -1e4: probability exp(-2e4) = 0
  const Eigen::VectorXi yb = (Eigen::VectorXi(3) << 0, 4, 2).finished();
  losskit::GradientCheckOptions opt;
  opt.relative_step = false;
  for (const Eigen::MatrixXd* xp : {&big, static_cast<const Eigen::MatrixXd*>(&big_mixed)}) {
    const double v = ce.value_and_gradient(*xp, yb, g);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    expect_gradient("CE |x| ~ 1e4", [&](const Eigen::MatrixXd& z) { return ce(z, yb); }, *xp, g, opt);
  }
  // Shift invariance of the CE part checks the value at 1e4 independently:
  // CE(x + c) = CE(x) for any constant c.
  CrossEntropy<double> plain;
  const Eigen::MatrixXd small = big.array() - 1e4;
  CHECK(plain(big, yb) == Approx(plain(small, yb)).epsilon(1e-11));
  CrossEntropy<float> plain_f;
  CHECK(double(plain_f(big.cast<float>(), yb)) == Approx(plain(big, yb)).epsilon(2e-3));
}

TEST_CASE("CrossEntropy in float agrees with double", "[ce][float]") {
  for (Eigen::Index C : {Eigen::Index(3), Eigen::Index(2500)}) {
    const Eigen::Index N = 40;
    const Eigen::MatrixXf xf = lktest::normal<float>(C, N, 3.0);
    const Eigen::VectorXi y = lktest::labels(N, int(C));
    CrossEntropy<float> cf;
    CrossEntropy<double> cd;
    cf.label_smoothing = 0.1f;
    cd.label_smoothing = 0.1;
    cf.z_penalty = 1e-3f;
    cd.z_penalty = 1e-3;
    Eigen::MatrixXf gf;
    Eigen::MatrixXd gd;
    const float vf = cf.value_and_gradient(xf, y, gf);
    const double vd = cd.value_and_gradient(xf.cast<double>(), y, gd);
    INFO("CE float vs double, C = " << C << ": " << vf << " vs " << vd);
    CHECK(lktest::rel_err(vf, vd) < 1e-5);
    CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-5 * gd.cwiseAbs().maxCoeff());
  }
}

TEST_CASE("CrossEntropy over many chunks: running max rising, -inf blocks, C above 64 chunks", "[ce]") {
  // The column is processed in chunks with a running max; these columns make
  // the max rise in every chunk (ramp), sit in the first chunk, or follow a
  // first chunk of -inf logits. Reference: the long-double transcription.
  for (Eigen::Index C : {Eigen::Index(3000), Eigen::Index(70000)}) {
    Eigen::MatrixXd x = lktest::normal(C, 4);
    for (Eigen::Index k = 0; k < C; ++k) x(k, 0) = 30.0 * double(k) / double(C);  // rising ramp
    x(0, 1) = 25.0;                                                                // max in the first chunk
    x.col(2).head(1500).setConstant(-kInf);                                         // a -inf block first
    const Eigen::VectorXi y = (Eigen::VectorXi(4) << int(C) - 1, 0, 1600, 5).finished();
    const Eigen::VectorXd w = lktest::uniform(C, 1, 0.5, 1.5);
    Eigen::MatrixXd q = random_distributions(C, 4);
    q.col(2).head(1500).setZero();  // no mass on the -inf logits: finite loss
    q.col(2) /= q.col(2).sum();
    CrossEntropy<double> ce;
    ce.label_smoothing = 0.1;
    ce.class_weights = w;
    ce.z_penalty = 1e-3;
    ce.reduction = Reduction::Sum;
    INFO("C = " << C);
    // Labels with smoothing on a -inf logit give +inf (mass ε/C there): check
    // the finite columns against the reference, the -inf column separately.
    Eigen::MatrixXd g;
    const Eigen::VectorXd per = ce.per_sample(x, y);
    const Eigen::MatrixXd finite_x = x(Eigen::all, std::vector<Eigen::Index>{0, 1, 3});
    const Eigen::VectorXi finite_y = y(std::vector<Eigen::Index>{0, 1, 3});
    CHECK(lktest::rel_err(per(0) + per(1) + per(3), ref_ce_labels(finite_x, finite_y, w, 0.1, 1e-3).sum()) < 1e-12);
    CHECK(per(2) == kInf);
    ce.label_smoothing = 0;
    CHECK(lktest::rel_err(ce(x, y), ref_ce_labels(x, y, w, 0.0, 1e-3).sum()) < 1e-12);
    ce.label_smoothing = 0.1;
    // Probabilities: ref_ce_probs smooths q itself, so compare without smoothing here.
    ce.label_smoothing = 0;
    CHECK(lktest::rel_err(ce.value_and_gradient(x, q, g), ref_ce_probs(x, q, w, 0.0, 1e-3).sum()) < 1e-12);
    CHECK(g.allFinite());
    // Gradient along random directions (every coordinate at once).
    losskit::GradientCheckOptions opt;
    opt.max_coordinates = 20;
    opt.directions = 2;
    Eigen::MatrixXd xf = x;
    xf.col(2).head(1500).setConstant(-50.0);  // finite stand-in: finite differences need finite points
    ce.value_and_gradient(xf, y, g);
    expect_gradient("CE many chunks", [&](const Eigen::MatrixXd& z) { return ce(z, y); }, xf, g, opt);
  }
}

TEST_CASE("CrossEntropy summed over shards and divided by the global normaliser equals the batch Mean", "[ce]") {
  const Eigen::MatrixXd x = lktest::normal(5, 10);
  Eigen::VectorXi y = lktest::labels(10, 5);
  y(1) = y(8) = -100;
  CrossEntropy<double> ce;
  ce.class_weights = lktest::uniform(5, 1, 0.1, 2.0);
  ce.label_smoothing = 0.1;
  ce.z_penalty = 1e-3;
  Eigen::MatrixXd g_full;
  const double full = ce.value_and_gradient(x, y, g_full);

  CrossEntropy<double> shard = ce;
  shard.reduction = Reduction::Sum;
  const double global = shard.normaliser(y.head(4)) + shard.normaliser(y.tail(6));
  Eigen::MatrixXd g(5, 10);
  const double sum = shard.value_and_gradient(x.leftCols(4), y.head(4), g.leftCols(4)) +
                     shard.value_and_gradient(x.rightCols(6), y.tail(6), g.rightCols(6));
  CHECK(sum / global == Approx(full).epsilon(1e-14));
  CHECK(lktest::max_rel_err(g / global, g_full, 1e-15) < 1e-13);
}

TEST_CASE("CrossEntropy with sample weights: the weighted PyTorch definition, shards, gradient", "[ce][weights]") {
  // Reference: ref_ce_labels (the long-double transcription) applied to one
  // sample at a time gives ℓ_i and n_i = w_{y_i}; the weighted Mean is
  // Σ r_i·ℓ_i / Σ r_i·n_i (torch: (cross_entropy(reduction='none') * r).sum()
  // / (r * w[y]).sum()).
  const Eigen::Index C = 6, N = 9;
  const Eigen::MatrixXd x = lktest::normal(C, N);
  Eigen::VectorXi y = lktest::labels(N, int(C));
  y(2) = -100;
  const Eigen::VectorXd w = lktest::uniform(C, 1, 0.2, 2.0);
  Eigen::VectorXd r = lktest::uniform(N, 1, 0.0, 3.0);
  r(4) = 0;
  CrossEntropy<double> ce;
  ce.class_weights = w;
  ce.label_smoothing = 0.2;
  ce.z_penalty = 1e-2;
  long double num = 0, den = 0;
  for (Eigen::Index i = 0; i < N; ++i) {
    const RefCE one = ref_ce_labels(x.col(i), y.segment(i, 1), w, 0.2, 1e-2);
    num += (long double)r(i) * (one.total + one.penalty);
    den += (long double)r(i) * one.normaliser;
  }
  CHECK(ce(x, y, r) == Approx(double(num / den)).epsilon(1e-13));
  CHECK(ce.normaliser(y, r) == Approx(double(den)).epsilon(1e-14));
  Eigen::MatrixXd g;
  CHECK(ce.value_and_gradient(x, y, r, g) == Approx(double(num / den)).epsilon(1e-13));
  CHECK(g.col(2).isZero(0));  // ignored
  CHECK(g.col(4).isZero(0));  // weight 0
  expect_gradient("weighted CE", [&](const Eigen::MatrixXd& z) { return ce(z, y, r); }, x, g);

  // Sharded: Sum per shard / the all-reduced weighted normaliser == the batch Mean.
  CrossEntropy<double> shard = ce;
  shard.reduction = Reduction::Sum;
  const double global = shard.normaliser(y.head(4), r.head(4)) + shard.normaliser(y.tail(5), r.tail(5));
  const double sum = shard(x.leftCols(4), y.head(4), r.head(4)) + shard(x.rightCols(5), y.tail(5), r.tail(5));
  CHECK(sum / global == Approx(ce(x, y, r)).epsilon(1e-14));

  // evaluate() with weights and no gradient reports the parts and the normaliser.
  const auto parts = ce.evaluate(x, y, r, losskit::no_grad);
  CHECK(parts.loss == Approx(double(num / den)).epsilon(1e-13));
  CHECK(parts.cross_entropy + parts.z_penalty == Approx(parts.loss).epsilon(1e-14));
  CHECK(parts.normaliser == Approx(double(den)).epsilon(1e-14));

  // Probability targets: n_i = 1.
  const Eigen::MatrixXd q = lktest::uniform(C, N, 0.0, 1.0);
  const Eigen::VectorXd ps = ce.per_sample(x, q);
  CHECK(ce(x, q, r) == Approx(r.dot(ps) / r.sum()).epsilon(1e-13));
}

TEST_CASE("CrossEntropy and BCE vector options take braced lists; pos_weight of length 1 broadcasts", "[ce][options]") {
  CrossEntropy<float> ce;
  ce.class_weights = {1.f, 1.f, 5.f};
  CHECK(ce.class_weights.size() == 3);
  CHECK(ce.class_weights(2) == 5.f);
  ce.class_weights = Eigen::Vector3f(2.f, 1.f, 1.f);
  CHECK(ce.class_weights(0) == 2.f);

  const Eigen::MatrixXd x = lktest::normal(4, 5), t = lktest::uniform(4, 5);
  BinaryCrossEntropyWithLogits<double> one, all;
  one.pos_weight = {2.5};
  all.pos_weight = Eigen::VectorXd::Constant(4, 2.5);
  Eigen::MatrixXd g1, g4;
  CHECK(one.value_and_gradient(x, t, g1) == Approx(all.value_and_gradient(x, t, g4)).epsilon(1e-15));
  CHECK(lktest::max_rel_err(g1, g4) < 1e-15);
}

TEST_CASE("CrossEntropy parallel column loop agrees with per-column sums", "[ce]") {
  // 64 x 2048 exceeds the parallel threshold when built with OpenMP.
  const Eigen::MatrixXf x = lktest::normal<float>(64, 2048, 2.0);
  const Eigen::VectorXi y = lktest::labels(2048, 64);
  CrossEntropy<float> ce;
  ce.reduction = Reduction::Sum;
  const Eigen::VectorXf per = ce.per_sample(x, y);
  double serial = 0;
  for (Eigen::Index i = 0; i < per.size(); ++i) serial += per(i);
  CHECK(lktest::rel_err(ce(x, y), serial) < 1e-6);
}

// Expression inputs and gradient views, for every functor: tests/contract_checks.hpp.
TEST_CASE("CrossEntropy rejects invalid input and options, writing nothing", "[ce][errors]") {
  const Eigen::MatrixXd x = lktest::normal(4, 3);
  const Eigen::VectorXi y = (Eigen::VectorXi(3) << 0, 3, 1).finished();
  Eigen::MatrixXd g = lktest::sentinel(4, 3);
  CrossEntropy<double> ce;
  SECTION("label out of range") {
    const Eigen::VectorXi bad = (Eigen::VectorXi(3) << 0, 4, 1).finished();
    CHECK_THROWS_WITH(ce.value_and_gradient(x, bad, g), lktest::Contains("CrossEntropy") &&
                                                            lktest::Contains("labels") && lktest::Contains("4"));
    const Eigen::VectorXi negative = (Eigen::VectorXi(3) << 0, -1, 1).finished();
    CHECK_THROWS_AS(ce.value_and_gradient(x, negative, g), losskit::Error);
    CHECK_THROWS_WITH(ce.normaliser(negative), lktest::Contains("labels") && lktest::Contains("-1"));
    CHECK(ce.normaliser(bad) == 3.0);  // without weights only the sign of a label can be checked
    ce.class_weights = Eigen::VectorXd::Ones(4);
    CHECK_THROWS_AS(ce.normaliser(bad), losskit::Error);
  }
  SECTION("wrong lengths and shapes") {
    CHECK_THROWS_AS(ce.value_and_gradient(x, Eigen::VectorXi::Zero(4), g), losskit::Error);
    CHECK_THROWS_AS(ce.value_and_gradient(x, lktest::normal(4, 2), g), losskit::Error);
    ce.class_weights = Eigen::VectorXd::Ones(5);
    CHECK_THROWS_WITH(ce.value_and_gradient(x, y, g), lktest::Contains("class_weights") && lktest::Contains("5"));
    Eigen::MatrixXd owner = lktest::sentinel(5, 5);
    ce.class_weights.resize(0);
    CHECK_THROWS_AS(ce.value_and_gradient(x, y, owner.block(0, 0, 3, 3)), losskit::Error);
    CHECK(lktest::untouched(owner, 5, 5));
    CHECK_THROWS_AS(ce(Eigen::MatrixXd(0, 3), Eigen::VectorXi::Zero(3)), losskit::Error);
  }
  SECTION("invalid options") {
    ce.class_weights = (Eigen::VectorXd(4) << 1, -0.5, 1, 1).finished();
    CHECK_THROWS_WITH(ce.value_and_gradient(x, y, g), lktest::Contains("class_weights") && lktest::Contains("-0.5"));
    CHECK_THROWS_AS(ce.normaliser(y), losskit::Error);
    ce.class_weights(1) = kNaN;
    CHECK_THROWS_AS(ce.value_and_gradient(x, y, g), losskit::Error);
    ce.class_weights.resize(0);
    ce.label_smoothing = 1.5;
    CHECK_THROWS_WITH(ce.value_and_gradient(x, y, g), lktest::Contains("label_smoothing"));
    ce.label_smoothing = -0.1;
    CHECK_THROWS_AS(ce(x, y), losskit::Error);
    ce.label_smoothing = 0;
    ce.z_penalty = -1e-4;
    CHECK_THROWS_WITH(ce.value_and_gradient(x, lktest::normal(4, 3), g), lktest::Contains("z_penalty"));
  }
  CHECK(lktest::untouched(g, 4, 3));
}

TEST_CASE("CrossEntropy value_and_gradient allocates nothing with a presized gradient", "[ce][alloc]") {
  const Eigen::MatrixXf x = lktest::normal<float>(50, 60);
  const Eigen::VectorXi y = lktest::labels(60, 50);
  const Eigen::MatrixXf q = random_distributions(50, 60).cast<float>();
  Eigen::MatrixXf g(50, 60);
  CrossEntropy<float> ce;
  ce.label_smoothing = 0.1f;
  ce.z_penalty = 1e-4f;
  ce.class_weights = Eigen::VectorXf::Ones(50);
  lktest::AllocationCounter counter;
  const float v1 = ce.value_and_gradient(x, y, g);
  const float v2 = ce.value_and_gradient(x, q, g);
  const auto r = ce.evaluate(x, y, g);
  CHECK(counter.count() == 0);
  CHECK(std::isfinite(v1 + v2 + r.loss));
}

TEST_CASE("CrossEntropy non-finite logits: -inf is probability 0, +inf and NaN give NaN", "[ce][nonfinite]") {
  Eigen::MatrixXd x = lktest::normal(3, 2);
  const Eigen::VectorXi y = (Eigen::VectorXi(2) << 0, 1).finished();
  CrossEntropy<double> ce;
  Eigen::MatrixXd g;
  SECTION("-inf on a non-target class: same as dropping that class") {
    x(2, 0) = -kInf;
    ce.value_and_gradient(x, y, g);
    const Eigen::MatrixXd x2 = x.col(0).head(2);
    CHECK(ce.per_sample(x, y)(0) == Approx(ce(x2, y.head(1))).epsilon(1e-15));
    CHECK(g.allFinite());
    // Eigen 3.4's vectorised exp floors at exp(-709.78) instead of 0.
    CHECK(std::abs(g(2, 0)) < 1e-300);
  }
  SECTION("-inf on the target class: infinite loss, finite gradient") {
    x(0, 0) = -kInf;
    CHECK(ce.value_and_gradient(x, y, g) == kInf);
    CHECK(g.allFinite());
  }
  SECTION("+inf or NaN: NaN") {
    x(1, 0) = kInf;
    CHECK(std::isnan(ce.value_and_gradient(x, y, g)));
    CHECK(g.col(0).array().isNaN().all());
    CHECK(g.col(1).allFinite());
    x(1, 0) = kNaN;
    CHECK(std::isnan(ce(x, y)));
    x.col(0).setConstant(-kInf);
    CHECK(std::isnan(ce(x, y)));
  }
}

// ---------------------------------------------------------------- BCE with logits

namespace {
// Reference: PyTorch's formula ℓ = −w_p·t·log σ(x) − (1 − t)·log(1 − σ(x)),
// evaluated naively in long double (moderate x only).
long double ref_bce(long double x, long double t, long double wp) {
  const long double s = 1 / (1 + std::exp(-x));
  return -wp * t * std::log(s) - (1 - t) * std::log(1 - s);
}
}  // namespace

TEST_CASE("BinaryCrossEntropyWithLogits matches the naive formula in long double", "[ce][bce]") {
  const Eigen::MatrixXd x = lktest::normal(3, 5, 4.0), t = lktest::uniform(3, 5);
  const Eigen::VectorXd wp = (Eigen::VectorXd(3) << 0.5, 1.0, 3.0).finished();
  for (bool weighted : {false, true}) {
    BinaryCrossEntropyWithLogits<double> bce;
    if (weighted) bce.pos_weight = wp;
    long double total = 0;
    Eigen::VectorXd per_ref(5);
    for (Eigen::Index j = 0; j < 5; ++j) {
      long double col = 0;
      for (Eigen::Index d = 0; d < 3; ++d) col += ref_bce(x(d, j), t(d, j), weighted ? wp(d) : 1.0);
      per_ref(j) = double(col / 3);
      total += col;
    }
    INFO("weighted " << weighted);
    CHECK(lktest::rel_err(bce(x, t), double(total / 15)) < 1e-13);
    CHECK(lktest::max_rel_err(bce.per_sample(x, t), per_ref) < 1e-13);
    bce.reduction = Reduction::Sum;
    CHECK(lktest::rel_err(bce(x, t), double(total)) < 1e-13);
  }
  // Closed form: x = 0 gives log 2 for any t (w_p = 1).
  CHECK(BinaryCrossEntropyWithLogits<double>{}(Eigen::MatrixXd::Zero(2, 2), lktest::uniform(2, 2)) ==
        Approx(std::log(2.0)).epsilon(1e-15));
}

TEST_CASE("BinaryCrossEntropyWithLogits gradient passes the finite-difference check", "[ce][bce][gradient]") {
  Eigen::MatrixXd x = lktest::normal(4, 6, 3.0);
  x(0, 0) = 0.0;
  x(1, 0) = 40.0;
  x(2, 0) = -40.0;
  Eigen::MatrixXd t = lktest::uniform(4, 6);
  t(0, 1) = 0;
  t(1, 1) = 1;
  for (bool weighted : {false, true}) {
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      BinaryCrossEntropyWithLogits<double> bce;
      bce.reduction = r;
      if (weighted) bce.pos_weight = (Eigen::VectorXd(4) << 0.0, 0.5, 2.0, 7.0).finished();
      Eigen::MatrixXd g;
      CHECK(bce.value_and_gradient(x, t, g) == Approx(bce(x, t)).epsilon(1e-15));
      INFO("weighted " << weighted << ", reduction " << r);
      expect_gradient("BCE", [&](const Eigen::MatrixXd& z) { return bce(z, t); }, x, g);
    }
  }
  // |x| = 1e4: the loss is linear there (slope 1 − t or −w_p·t); absolute steps.
  const Eigen::MatrixXd big = lktest::normal(3, 3, 1e4);
  Eigen::MatrixXd g;
  BinaryCrossEntropyWithLogits<double> bce;
  const double v = bce.value_and_gradient(big, t.topLeftCorner(3, 3), g);
  CHECK(std::isfinite(v));
  losskit::GradientCheckOptions opt;
  opt.relative_step = false;
  expect_gradient("BCE |x| ~ 1e4", [&](const Eigen::MatrixXd& z) { return bce(z, t.topLeftCorner(3, 3)); }, big, g,
                  opt);
}

TEST_CASE("BinaryCrossEntropyWithLogits defines the limits at +-inf", "[ce][bce][nonfinite]") {
  // Limits of ℓ = (1 − t)x + r·softplus(−x), r = 1 + (w_p − 1)t:
  //   x → +inf: ℓ ~ (1 − t)x → +inf (t < 1) or 0 (t = 1); ℓ' → 1 − t
  //   x → −inf: ℓ ~ w_p·t·|x| → +inf (w_p·t > 0) or 0;   ℓ' → −w_p·t
  BinaryCrossEntropyWithLogits<double> bce;
  bce.reduction = Reduction::Sum;
  bce.pos_weight = (Eigen::VectorXd(4) << 1.0, 1.0, 2.0, 0.0).finished();
  Eigen::MatrixXd x(4, 2), t(4, 2);
  x << kInf, -kInf, kInf, -kInf, kInf, -kInf, kInf, -kInf;
  t << 1.0, 0.0, 0.3, 0.3, 0.0, 1.0, 1.0, 1.0;
  Eigen::MatrixXd g;
  const Eigen::VectorXd per = bce.per_sample(x.col(0), t.col(0));
  CHECK(std::isinf(per(0)));  // rows 1 and 2 of column 0 have t < 1
  Eigen::MatrixXd expected_g(4, 2);
  expected_g << 0.0, 0.0, 0.7, -0.3, 1.0, -2.0, 0.0, 0.0;
  CHECK(bce.value_and_gradient(x, t, g) == kInf);
  CHECK(g.isApprox(expected_g, 1e-15));
  // Only the finite limits: every entry with a zero linear coefficient.
  Eigen::MatrixXd xf(3, 1), tf(3, 1);
  xf << kInf, -kInf, -kInf;
  tf << 1.0, 0.0, 1.0;
  BinaryCrossEntropyWithLogits<double> finite;
  finite.reduction = Reduction::Sum;
  finite.pos_weight = (Eigen::VectorXd(3) << 1.0, 1.0, 0.0).finished();
  CHECK(finite.value_and_gradient(xf, tf, g) == 0.0);
  CHECK(g.isZero(0));
  // Large finite logits give the same linear asymptote without overflow.
  Eigen::MatrixXf xl(2, 1), tl(2, 1);
  xl << 1e30f, -1e30f;
  tl << 0.25f, 0.5f;
  BinaryCrossEntropyWithLogits<float> bf;
  bf.reduction = Reduction::Sum;
  Eigen::MatrixXf gl;
  CHECK(bf.value_and_gradient(xl, tl, gl) == Approx(0.75e30 + 0.5e30).epsilon(1e-6));
  CHECK(gl(0) == 0.75f);
  CHECK(gl(1) == -0.5f);
  // NaN logits propagate; NaN targets are rejected.
  xl(0) = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(bf(xl, tl)));
  tl(1) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(bf(xl, tl), losskit::Error);
}

TEST_CASE("BinaryCrossEntropyWithLogits in float agrees with double", "[ce][bce][float]") {
  const Eigen::MatrixXf x = lktest::normal<float>(100, 300, 5.0), t = lktest::uniform<float>(100, 300);
  BinaryCrossEntropyWithLogits<float> bf;
  BinaryCrossEntropyWithLogits<double> bd;
  bf.pos_weight = lktest::uniform<float>(100, 1, 0.5, 3.0);
  bd.pos_weight = bf.pos_weight.cast<double>();
  Eigen::MatrixXf gf;
  Eigen::MatrixXd gd;
  const float vf = bf.value_and_gradient(x, t, gf);
  const double vd = bd.value_and_gradient(x.cast<double>(), t.cast<double>(), gd);
  CHECK(lktest::rel_err(vf, vd) < 1e-6);
  CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-6 * gd.cwiseAbs().maxCoeff());
}

TEST_CASE("BinaryCrossEntropyWithLogits rejects invalid input, writing nothing", "[ce][bce][errors]") {
  const Eigen::MatrixXd x = lktest::normal(3, 4);
  Eigen::MatrixXd t = lktest::uniform(3, 4);
  Eigen::MatrixXd g = lktest::sentinel(3, 4);
  BinaryCrossEntropyWithLogits<double> bce;
  CHECK_THROWS_AS(bce.value_and_gradient(x, lktest::uniform(3, 5), g), losskit::Error);
  t(2, 3) = 1.5;
  CHECK_THROWS_WITH(bce.value_and_gradient(x, t, g), lktest::Contains("targets") && lktest::Contains("1.5"));
  t(2, 3) = -0.0;
  bce.pos_weight = Eigen::VectorXd::Ones(4);
  CHECK_THROWS_WITH(bce.value_and_gradient(x, t, g), lktest::Contains("pos_weight"));
  bce.pos_weight = (Eigen::VectorXd(3) << 1, -1, 1).finished();
  CHECK_THROWS_AS(bce.value_and_gradient(x, t, g), losskit::Error);
  CHECK(lktest::untouched(g, 3, 4));
}

TEST_CASE("BinaryCrossEntropyWithLogits allocates nothing with a presized gradient", "[ce][bce][alloc]") {
  const Eigen::MatrixXf x = lktest::normal<float>(40, 50), t = lktest::uniform<float>(40, 50);
  Eigen::MatrixXf g(40, 50);
  BinaryCrossEntropyWithLogits<float> bce;
  bce.pos_weight = Eigen::VectorXf::Constant(40, 2.0f);
  lktest::AllocationCounter counter;
  const float v = bce.value_and_gradient(x, t, g);
  CHECK(counter.count() == 0);
  CHECK(std::isfinite(v));
}

// ---------------------------------------------------------------- BCE element weights

namespace {
// PyTorch's weighted, unreduced BCE summed per sample: Σ_d u_{d,i}·ℓ(x_{d,i}, t_{d,i}; w_p,d),
// in long double from the naive formula (u of one column broadcasts over the samples).
Eigen::Matrix<long double, Eigen::Dynamic, 1> ref_bce_columns(const Eigen::MatrixXd& x, const Eigen::MatrixXd& t,
                                                              const Eigen::MatrixXd& u, const Eigen::VectorXd& wp) {
  Eigen::Matrix<long double, Eigen::Dynamic, 1> col = Eigen::Matrix<long double, Eigen::Dynamic, 1>::Zero(x.cols());
  for (Eigen::Index j = 0; j < x.cols(); ++j)
    for (Eigen::Index d = 0; d < x.rows(); ++d) {
      const long double ud = u.cols() == 1 ? u(d, 0) : u(d, j);
      col(j) += ud * ref_bce(x(d, j), t(d, j), wp.size() ? wp(d) : 1.0);
    }
  return col;
}
}  // namespace

TEST_CASE("BCE element weight: Mean/Sum/per_sample/sample weights against PyTorch's formula in long double",
          "[ce][bce][weight]") {
  const Eigen::Index D = 3, N = 5;
  const Eigen::MatrixXd x = lktest::normal(D, N, 4.0), t = lktest::uniform(D, N);
  const Eigen::VectorXd wp = (Eigen::VectorXd(3) << 0.5, 1.0, 3.0).finished();
  Eigen::MatrixXd per_element = lktest::uniform(D, N, 0.0, 2.0);
  per_element(1, 2) = 0;  // a zero weight counts as an element that adds nothing
  const Eigen::MatrixXd per_output = (Eigen::MatrixXd(3, 1) << 0.25, 2.0, 0.0).finished();
  Eigen::VectorXd s = lktest::uniform(N, 1, 0.1, 3.0);
  s(3) = 0;
  for (const Eigen::MatrixXd* u : {&per_output, static_cast<const Eigen::MatrixXd*>(&per_element)})
    for (bool positive : {false, true}) {
      BinaryCrossEntropyWithLogits<double> bce;
      bce.weight = *u;
      if (positive) bce.pos_weight = wp;
      const auto cols = ref_bce_columns(x, t, *u, positive ? wp : Eigen::VectorXd());
      long double total = 0, weighted = 0, s_total = 0;
      for (Eigen::Index j = 0; j < N; ++j) {
        total += cols(j);
        weighted += s(j) * cols(j);
        s_total += s(j);
      }
      INFO("weight " << u->rows() << "x" << u->cols() << ", pos_weight " << positive);
      // PyTorch's mean is over elements of the weighted loss: u is not in the denominator.
      CHECK(lktest::rel_err(bce(x, t), double(total / (D * N))) < 1e-13);
      CHECK(lktest::max_rel_err(bce.per_sample(x, t), (cols / D).cast<double>()) < 1e-13);
      // losskit's contract: Mean = Σ s_i ℓ_i / Σ s_i n_i, n_i = D.
      CHECK(lktest::rel_err(bce(x, t, s), double(weighted / (D * s_total))) < 1e-13);
      bce.reduction = Reduction::Sum;
      CHECK(lktest::rel_err(bce(x, t), double(total)) < 1e-13);
      CHECK(lktest::rel_err(bce(x, t, s), double(weighted)) < 1e-13);
    }
}

TEST_CASE("BCE element weight: a braced list is a D×1 weight; all ones equals no weight", "[ce][bce][weight][options]") {
  const Eigen::MatrixXd x = lktest::normal(3, 700), t = lktest::uniform(3, 700);  // > one flat chunk
  BinaryCrossEntropyWithLogits<double> listed, matrix, ones, none;
  listed.weight = {0.5, 1.0, 2.0};
  CHECK(listed.weight.rows() == 3);
  CHECK(listed.weight.cols() == 1);
  matrix.weight = Eigen::Vector3d(0.5, 1.0, 2.0);
  ones.weight = Eigen::MatrixXd::Ones(3, 700);
  Eigen::MatrixXd gl, gm, go, gn;
  CHECK(listed.value_and_gradient(x, t, gl) == matrix.value_and_gradient(x, t, gm));
  CHECK(gl == gm);
  // The column path with u = 1 against the flat path without a weight.
  CHECK(ones.value_and_gradient(x, t, go) == Approx(none.value_and_gradient(x, t, gn)).epsilon(1e-14));
  // The same formula, vectorised over other packets: rounding-level differences (relative to
  // the gradient's scale; an entry where σ(x) ≈ t is a cancellation either way).
  INFO("max |go - gn| " << (go - gn).cwiseAbs().maxCoeff() << " of max |gn| " << gn.cwiseAbs().maxCoeff());
  CHECK((go - gn).cwiseAbs().maxCoeff() <= 1e-15 * gn.cwiseAbs().maxCoeff());
  listed.weight = {};  // the empty list: no weight
  CHECK(listed.weight.size() == 0);
  CHECK(listed(x, t) == none(x, t));
}

TEST_CASE("BCE element weight: gradients pass the finite-difference check", "[ce][bce][weight][gradient]") {
  Eigen::MatrixXd x = lktest::normal(4, 6, 3.0);
  x(1, 0) = 40.0;
  x(2, 0) = -40.0;
  const Eigen::MatrixXd t = lktest::uniform(4, 6);
  Eigen::MatrixXd per_element = lktest::uniform(4, 6, 0.0, 3.0);
  per_element(0, 1) = 0;
  const Eigen::MatrixXd per_output = (Eigen::MatrixXd(4, 1) << 0.3, 0.0, 1.5, 4.0).finished();
  Eigen::VectorXd s = lktest::uniform(6, 1, 0.1, 3.0);
  s(2) = 0;
  for (const Eigen::MatrixXd* u : {&per_output, static_cast<const Eigen::MatrixXd*>(&per_element)})
    for (bool positive : {false, true})
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        BinaryCrossEntropyWithLogits<double> bce;
        bce.reduction = r;
        bce.weight = *u;
        if (positive) bce.pos_weight = (Eigen::VectorXd(4) << 0.0, 0.5, 2.0, 7.0).finished();
        Eigen::MatrixXd g, gs;
        CHECK(bce.value_and_gradient(x, t, g) == Approx(bce(x, t)).epsilon(1e-15));
        CHECK(bce.value_and_gradient(x, t, s, gs) == Approx(bce(x, t, s)).epsilon(1e-15));
        INFO("weight " << u->cols() << " columns, pos_weight " << positive << ", reduction " << r);
        expect_gradient("BCE weight", [&](const Eigen::MatrixXd& z) { return bce(z, t); }, x, g);
        expect_gradient("BCE weight + sample weights", [&](const Eigen::MatrixXd& z) { return bce(z, t, s); }, x,
                        gs);
        CHECK(gs.col(2).isZero(0));
      }
}

TEST_CASE("BCE element weight: a zero weight drops an infinite or NaN element", "[ce][bce][weight][nonfinite]") {
  Eigen::MatrixXd x(3, 2), t(3, 2), u(3, 2);
  x << kInf, 0.5, -kInf, kNaN, 1.0, -2.0;
  t << 0.0, 0.5, 1.0, 0.5, 0.25, 1.0;
  u << 0.0, 1.0, 0.0, 0.0, 2.0, 0.5;
  BinaryCrossEntropyWithLogits<double> bce;
  bce.reduction = Reduction::Sum;
  bce.weight = u;
  Eigen::MatrixXd g;
  const double v = bce.value_and_gradient(x, t, g);
  // Left: element (2,0) u=2, x=1, t=0.25; (0,1) u=1, x=0.5, t=0.5; (2,1) u=0.5, x=−2, t=1.
  const double ref = double(2 * ref_bce(1.0, 0.25, 1) + ref_bce(0.5, 0.5, 1) + 0.5 * ref_bce(-2.0, 1.0, 1));
  CHECK(v == Approx(ref).epsilon(1e-14));
  CHECK(g(0, 0) == 0.0);
  CHECK(g(1, 0) == 0.0);
  CHECK(g(1, 1) == 0.0);
  CHECK(g(2, 0) == Approx(2 * (1 / (1 + std::exp(-1.0)) - 0.25)).epsilon(1e-14));  // u·(σ(x) − t)
  // A weight that is not 0 keeps PyTorch-style propagation of a NaN logit.
  u(1, 1) = 1.0;
  bce.weight = u;
  CHECK(std::isnan(bce(x, t)));
}

TEST_CASE("BCE element weight in float agrees with double; no allocation", "[ce][bce][weight][float][alloc]") {
  const Eigen::MatrixXf x = lktest::normal<float>(100, 300, 5.0), t = lktest::uniform<float>(100, 300);
  BinaryCrossEntropyWithLogits<float> bf;
  BinaryCrossEntropyWithLogits<double> bd;
  bf.weight = lktest::uniform<float>(100, 300, 0.0, 3.0);
  bf.pos_weight = lktest::uniform<float>(100, 1, 0.5, 3.0);
  bd.weight = bf.weight.cast<double>();
  bd.pos_weight = bf.pos_weight.cast<double>();
  Eigen::MatrixXf gf(100, 300);
  Eigen::MatrixXd gd;
  lktest::AllocationCounter counter;
  const float vf = bf.value_and_gradient(x, t, gf);
  CHECK(counter.count() == 0);
  const double vd = bd.value_and_gradient(x.cast<double>(), t.cast<double>(), gd);
  CHECK(lktest::rel_err(vf, vd) < 1e-6);
  CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-6 * gd.cwiseAbs().maxCoeff());
}

TEST_CASE("BCE element weight: bad shapes and entries are an Error naming weight, writing nothing",
          "[ce][bce][weight][errors]") {
  const Eigen::MatrixXd x = lktest::normal(3, 4), t = lktest::uniform(3, 4);
  const Eigen::VectorXd s = Eigen::VectorXd::Ones(4);
  Eigen::MatrixXd g = lktest::sentinel(3, 4);
  BinaryCrossEntropyWithLogits<double> bce;
  for (auto shape : {std::pair<int, int>{4, 1}, {3, 2}, {1, 4}, {1, 1}, {3, 5}, {4, 4}}) {
    bce.weight = Eigen::MatrixXd::Ones(shape.first, shape.second);
    std::ostringstream got;
    got << shape.first << "x" << shape.second;
    INFO("weight " << got.str());
    CHECK_THROWS_WITH(bce.value_and_gradient(x, t, g), lktest::Contains("BinaryCrossEntropyWithLogits") &&
                                                           lktest::Contains("weight") &&
                                                           lktest::Contains(got.str()) && lktest::Contains("3x4"));
    CHECK_THROWS_AS(bce(x, t), losskit::Error);
    CHECK_THROWS_AS(bce.per_sample(x, t), losskit::Error);
  }
  for (double bad : {-0.5, kNaN, kInf}) {
    for (Eigen::Index cols : {1, 4}) {
      Eigen::MatrixXd u = Eigen::MatrixXd::Ones(3, cols);
      u(2, cols - 1) = bad;
      bce.weight = u;
      std::ostringstream value;
      value << bad;
      INFO("weight entry " << bad << ", " << cols << " columns");
      CHECK_THROWS_WITH(bce.value_and_gradient(x, t, g), lktest::Contains("weight") &&
                                                             lktest::Contains(value.str()) &&
                                                             lktest::Contains("must be finite and >= 0"));
      CHECK_THROWS_AS(bce.value_and_gradient(x, t, s, g), losskit::Error);
    }
  }
  CHECK(lktest::untouched(g, 3, 4));
}
