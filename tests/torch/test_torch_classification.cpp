// Cross-checks against libtorch 1.13 in double, for the per-sample losses:
// MSE (torch::mse_loss), CrossEntropy (cross_entropy), BCE with logits
// (binary_cross_entropy_with_logits), and the losses torch does not ship
// (comp-sum, LDR-KL, ALDR-KL, spherical Z-loss), written here in torch ops and
// differentiated by autograd. losskit's D×N column layout is torch's N×D row
// layout, so each input is handed to torch as the same bytes.
#include <losskit/mse.hpp>

#include "torch_util.hpp"

using losskit::Reduction;
using lktorch::kTol;

namespace F = torch::nn::functional;

TEST_CASE("MSE agrees with torch::mse_loss (mean, sum) in value, gradient and per-sample", "[torch][mse]") {
  const Eigen::MatrixXd pred = lktest::normal(17, 23), target = lktest::normal(17, 23, 2.0);
  for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
    losskit::MSE<double> mse;
    mse.reduction = r;
    Eigen::MatrixXd grad;
    const double v = mse.value_and_gradient(pred, target, grad);

    torch::Tensor p = lktorch::rows(pred, true);
    torch::Tensor ref = torch::mse_loss(p, lktorch::rows(target),
                                        r == Reduction::Mean ? at::Reduction::Mean : at::Reduction::Sum);
    ref.backward();
    INFO("MSE reduction " << r << ": losskit " << v << ", torch " << lktorch::item(ref));
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktest::max_rel_err(grad, lktorch::columns(p.grad())) < kTol);
  }
  // per_sample: the column mean of squared errors = torch's unreduced loss averaged over each row.
  const torch::Tensor none = torch::mse_loss(lktorch::rows(pred), lktorch::rows(target), at::Reduction::None);
  CHECK(lktest::max_rel_err(losskit::MSE<double>{}.per_sample(pred, target), lktorch::vector(none.mean(1))) < kTol);
}

#if __has_include(<losskit/cross_entropy.hpp>)
#include <losskit/cross_entropy.hpp>

namespace {

F::CrossEntropyFuncOptions::reduction_t reduction_of(Reduction r) {
  if (r == Reduction::Mean) return torch::kMean;
  return torch::kSum;
}

}  // namespace

TEST_CASE("CrossEntropy with integer labels agrees with torch cross_entropy (weights, ignore_index, smoothing)",
          "[torch][ce]") {
  const int classes = 7, n = 40;
  const Eigen::MatrixXd logits = lktest::normal(classes, n, 3.0);
  const Eigen::VectorXd weights = lktest::uniform(classes, 1, 0.2, 2.0);
  for (const long long ignore : {-100LL, 2LL}) {
    Eigen::VectorXi labels = lktest::labels(n, classes);
    for (int i = 0; i < n; i += 5) labels(i) = int(ignore);  // every fifth sample ignored
    for (const bool weighted : {false, true})
      for (const double eps : {0.0, 0.1, 1.0})
        for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
          losskit::CrossEntropy<double> ce;
          ce.reduction = r;
          ce.ignore_index = ignore;
          ce.label_smoothing = eps;
          if (weighted) ce.class_weights = weights;
          Eigen::MatrixXd grad;
          const double v = ce.value_and_gradient(logits, labels, grad);

          torch::Tensor x = lktorch::rows(logits, true);
          auto opts = F::CrossEntropyFuncOptions().ignore_index(ignore).label_smoothing(eps).reduction(reduction_of(r));
          if (weighted) opts.weight(lktorch::vector(weights));
          const torch::Tensor ref = F::cross_entropy(x, lktorch::labels(labels), opts);
          ref.backward();
          INFO("CrossEntropy ignore_index " << ignore << ", weighted " << weighted << ", smoothing " << eps
                                            << ", reduction " << r << ": losskit " << v << ", torch "
                                            << lktorch::item(ref));
          CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
          CHECK(lktest::max_rel_err(grad, lktorch::columns(x.grad()), 1e-300) < kTol);
          if (r == Reduction::Sum) {
            // torch's unreduced loss is the same per-sample ℓ_i (0 where ignored).
            const torch::Tensor none = F::cross_entropy(lktorch::rows(logits), lktorch::labels(labels),
                                                        opts.reduction(torch::kNone));
            CHECK(lktest::max_rel_err(ce.per_sample(logits, labels), lktorch::vector(none)) < kTol);
          }
        }
  }
}

// Sample weights r: torch has no such argument; the reference is its
// reduction='none' loss times r, summed (Sum) or divided by Σ r_i·n_i (Mean,
// n_i = w_{y_i}, 0 if ignored), differentiated by autograd.
TEST_CASE("CrossEntropy and BCE with sample weights agree with torch's reduction='none' times the weights",
          "[torch][ce][weights]") {
  const int classes = 6, n = 30;
  const Eigen::MatrixXd logits = lktest::normal(classes, n, 2.0);
  const Eigen::VectorXd weights = lktest::uniform(classes, 1, 0.2, 2.0);
  Eigen::VectorXd r = lktest::uniform(n, 1, 0.0, 3.0);
  r(3) = 0;
  Eigen::VectorXi labels = lktest::labels(n, classes);
  for (int i = 0; i < n; i += 7) labels(i) = -100;
  const torch::Tensor rt = lktorch::vector(r);
  for (const double eps : {0.0, 0.2})
    for (Reduction red : {Reduction::Mean, Reduction::Sum}) {
      losskit::CrossEntropy<double> ce;
      ce.reduction = red;
      ce.label_smoothing = eps;
      ce.class_weights = weights;
      Eigen::MatrixXd grad;
      const double v = ce.value_and_gradient(logits, labels, r, grad);
      torch::Tensor x = lktorch::rows(logits, true);
      const torch::Tensor y = lktorch::labels(labels);
      const torch::Tensor w = lktorch::vector(weights);
      const torch::Tensor none = F::cross_entropy(
          x, y, F::CrossEntropyFuncOptions().weight(w).label_smoothing(eps).reduction(torch::kNone));
      const torch::Tensor counted = (y != -100).to(torch::kDouble);
      const torch::Tensor share = w.index({y.clamp_min(0)}) * counted;
      torch::Tensor ref = (none * rt).sum();
      if (red == Reduction::Mean) ref = ref / (rt * share).sum();
      ref.backward();
      INFO("weighted CrossEntropy, smoothing " << eps << ", reduction " << red);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad())) < kTol);
    }
  {
    const Eigen::MatrixXd q = lktest::uniform(classes, n);
    losskit::CrossEntropy<double> ce;
    ce.label_smoothing = 0.1;
    Eigen::MatrixXd grad;
    const double v = ce.value_and_gradient(logits, q, r, grad);
    torch::Tensor x = lktorch::rows(logits, true);
    const torch::Tensor none = F::cross_entropy(
        x, lktorch::rows(q), F::CrossEntropyFuncOptions().label_smoothing(0.1).reduction(torch::kNone));
    const torch::Tensor ref = (none * rt).sum() / rt.sum();
    ref.backward();
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad())) < kTol);
  }
  for (Reduction red : {Reduction::Mean, Reduction::Sum}) {
    const Eigen::MatrixXd targets = lktest::uniform(classes, n);
    losskit::BinaryCrossEntropyWithLogits<double> bce;
    bce.reduction = red;
    bce.pos_weight = lktest::uniform(classes, 1, 0.5, 3.0);
    Eigen::MatrixXd grad;
    const double v = bce.value_and_gradient(logits, targets, r, grad);
    torch::Tensor x = lktorch::rows(logits, true);
    const torch::Tensor none = F::binary_cross_entropy_with_logits(
        x, lktorch::rows(targets),
        F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(lktorch::vector(Eigen::VectorXd(bce.pos_weight))).reduction(
            torch::kNone));
    torch::Tensor ref = (none.sum(1) * rt).sum();
    if (red == Reduction::Mean) ref = ref / (double(classes) * rt.sum());
    ref.backward();
    INFO("weighted BCE, reduction " << red);
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad())) < kTol);
  }
  {
    const Eigen::MatrixXd target = lktest::normal(classes, n);
    Eigen::MatrixXd grad;
    const double v = losskit::MSE<double>{}.value_and_gradient(logits, target, r, grad);
    torch::Tensor x = lktorch::rows(logits, true);
    const torch::Tensor none = torch::mse_loss(x, lktorch::rows(target), at::Reduction::None);
    const torch::Tensor ref = (none.sum(1) * rt).sum() / (double(classes) * rt.sum());
    ref.backward();
    CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
    CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad())) < kTol);
  }
}

TEST_CASE("CrossEntropy with probability targets agrees with torch cross_entropy (weights, smoothing)", "[torch][ce]") {
  const int classes = 6, n = 25;
  const Eigen::MatrixXd logits = lktest::normal(classes, n, 2.0);
  Eigen::MatrixXd q = lktest::uniform(classes, n, 0.0, 1.0);
  q.array().rowwise() /= q.colwise().sum().array();  // each column a distribution
  const Eigen::VectorXd weights = lktest::uniform(classes, 1, 0.2, 2.0);
  for (const bool weighted : {false, true})
    for (const double eps : {0.0, 0.25})
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        losskit::CrossEntropy<double> ce;
        ce.reduction = r;
        ce.label_smoothing = eps;
        if (weighted) ce.class_weights = weights;
        Eigen::MatrixXd grad;
        const double v = ce.value_and_gradient(logits, q, grad);

        torch::Tensor x = lktorch::rows(logits, true);
        auto opts = F::CrossEntropyFuncOptions().label_smoothing(eps).reduction(reduction_of(r));
        if (weighted) opts.weight(lktorch::vector(weights));
        const torch::Tensor ref = F::cross_entropy(x, lktorch::rows(q), opts);
        ref.backward();
        INFO("CrossEntropy soft targets, weighted " << weighted << ", smoothing " << eps << ", reduction " << r);
        CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
        CHECK(lktest::max_rel_err(grad, lktorch::columns(x.grad())) < kTol);
      }
}

TEST_CASE("CrossEntropy's log²Z penalty equals cross_entropy + z·Σ w_y·lse² / Σ w_y written in torch ops",
          "[torch][ce]") {
  // torch has no built-in z-loss: the PaLM/T5X penalty is written with
  // logsumexp and differentiated by autograd, sharing the weighted-mean
  // normaliser of the cross-entropy (the convention documented in the header).
  const int classes = 9, n = 30;
  const double z = 0.05;
  const Eigen::MatrixXd logits = lktest::normal(classes, n, 4.0);
  const Eigen::VectorXd weights = lktest::uniform(classes, 1, 0.5, 1.5);
  Eigen::VectorXi labels = lktest::labels(n, classes);
  labels(3) = -100;
  for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
    losskit::CrossEntropy<double> ce;
    ce.reduction = r;
    ce.class_weights = weights;
    ce.label_smoothing = 0.1;
    ce.z_penalty = z;
    Eigen::MatrixXd grad;
    const auto parts = ce.evaluate(logits, labels, grad);

    torch::Tensor x = lktorch::rows(logits, true);
    const torch::Tensor y = lktorch::labels(labels);
    const torch::Tensor counted = y.ne(-100);
    const torch::Tensor w_y = torch::where(counted, lktorch::vector(weights).index({y.clamp_min(0)}),
                                           torch::zeros({n}, torch::kDouble));
    const torch::Tensor lse = torch::logsumexp(x, 1);
    const torch::Tensor penalty_sum = z * (w_y * lse * lse).sum();
    const torch::Tensor ce_ref = F::cross_entropy(
        x, y, F::CrossEntropyFuncOptions().weight(lktorch::vector(weights)).label_smoothing(0.1).reduction(reduction_of(r)));
    const torch::Tensor penalty = r == Reduction::Mean ? penalty_sum / w_y.sum() : penalty_sum;
    const torch::Tensor ref = ce_ref + penalty;
    ref.backward();
    INFO("CrossEntropy z_loss " << z << ", reduction " << r);
    CHECK(lktest::rel_err(parts.loss, lktorch::item(ref)) < kTol);
    CHECK(lktest::rel_err(parts.cross_entropy, lktorch::item(ce_ref)) < kTol);
    CHECK(lktest::rel_err(parts.z_penalty, lktorch::item(penalty)) < kTol);
    CHECK(lktest::max_rel_err(grad, lktorch::columns(x.grad())) < kTol);
  }
}

TEST_CASE("CrossEntropy with every sample ignored gives 0 where torch gives NaN (deliberate convention)",
          "[torch][ce]") {
  const Eigen::MatrixXd logits = lktest::normal(4, 5);
  const Eigen::VectorXi labels = Eigen::VectorXi::Constant(5, -100);
  Eigen::MatrixXd grad;
  CHECK(losskit::CrossEntropy<double>{}.value_and_gradient(logits, labels, grad) == 0.0);
  CHECK(grad.isZero(0));
  // torch's weighted mean divides 0 by 0 (Optax returns 0, as losskit does).
  const torch::Tensor ref = F::cross_entropy(lktorch::rows(logits), lktorch::labels(labels));
  CHECK(std::isnan(lktorch::item(ref)));
}

TEST_CASE("BinaryCrossEntropyWithLogits agrees with torch binary_cross_entropy_with_logits (pos_weight)",
          "[torch][ce][bce]") {
  const int d = 5, n = 30;
  const Eigen::MatrixXd logits = lktest::normal(d, n, 4.0);
  const Eigen::MatrixXd targets = lktest::uniform(d, n);
  const Eigen::VectorXd pos_weight = lktest::uniform(d, 1, 0.1, 5.0);
  for (const bool weighted : {false, true})
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      losskit::BinaryCrossEntropyWithLogits<double> bce;
      bce.reduction = r;
      if (weighted) bce.pos_weight = pos_weight;
      Eigen::MatrixXd grad;
      const double v = bce.value_and_gradient(logits, targets, grad);

      torch::Tensor x = lktorch::rows(logits, true);
      // pos_weight broadcasts over torch's last dimension, which is losskit's row index d.
      auto opts = F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(reduction_of(r));
      if (weighted) opts.pos_weight(lktorch::vector(pos_weight));
      const torch::Tensor ref = F::binary_cross_entropy_with_logits(x, lktorch::rows(targets), opts);
      ref.backward();
      INFO("BCEWithLogits pos_weight " << weighted << ", reduction " << r);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktest::max_rel_err(grad, lktorch::columns(x.grad())) < kTol);
      const torch::Tensor none =
          F::binary_cross_entropy_with_logits(lktorch::rows(logits), lktorch::rows(targets), opts.reduction(torch::kNone));
      CHECK(lktest::max_rel_err(bce.per_sample(logits, targets), lktorch::vector(none.mean(1))) < kTol);
    }
}

TEST_CASE("BinaryCrossEntropyWithLogits element weight agrees with torch's weight (D×1 and D×N, pos_weight, "
          "sample weights)",
          "[torch][ce][bce][weight]") {
  const int d = 5, n = 30;
  const Eigen::MatrixXd logits = lktest::normal(d, n, 4.0);
  const Eigen::MatrixXd targets = lktest::uniform(d, n);
  const Eigen::VectorXd pos_weight = lktest::uniform(d, 1, 0.1, 5.0);
  Eigen::MatrixXd per_element = lktest::uniform(d, n, 0.0, 3.0);
  per_element(2, 7) = 0;
  const Eigen::MatrixXd per_output = lktest::uniform(d, 1, 0.2, 2.0);
  Eigen::VectorXd s = lktest::uniform(n, 1, 0.0, 3.0);
  s(4) = 0;
  const torch::Tensor st = lktorch::vector(s);
  int configurations = 0;
  for (const Eigen::MatrixXd* u : {&per_output, static_cast<const Eigen::MatrixXd*>(&per_element)})
    for (const bool positive : {false, true})
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        losskit::BinaryCrossEntropyWithLogits<double> bce;
        bce.reduction = r;
        bce.weight = *u;
        if (positive) bce.pos_weight = pos_weight;
        Eigen::MatrixXd grad, grad_s;
        const double v = bce.value_and_gradient(logits, targets, grad);
        const double v_s = bce.value_and_gradient(logits, targets, s, grad_s);

        // torch's weight broadcasts against the N×D input: a D×1 weight is a length-D
        // tensor (over the last dimension), a D×N one the same bytes as an N×D tensor.
        const torch::Tensor w = u->cols() == 1 ? lktorch::vector(Eigen::VectorXd(u->col(0))) : lktorch::rows(*u);
        auto opts = F::BinaryCrossEntropyWithLogitsFuncOptions().weight(w);
        if (positive) opts.pos_weight(lktorch::vector(pos_weight));
        torch::Tensor x = lktorch::rows(logits, true);
        const torch::Tensor ref = F::binary_cross_entropy_with_logits(x, lktorch::rows(targets), opts.reduction(reduction_of(r)));
        ref.backward();
        // Sample weights: torch's reduction='none' (already times weight) summed per
        // sample, times s; Mean divides by D·Σ s (weight is not in the denominator).
        torch::Tensor xs = lktorch::rows(logits, true);
        const torch::Tensor none = F::binary_cross_entropy_with_logits(xs, lktorch::rows(targets), opts.reduction(torch::kNone));
        torch::Tensor ref_s = (none.sum(1) * st).sum();
        if (r == Reduction::Mean) ref_s = ref_s / (double(d) * st.sum());
        ref_s.backward();
        INFO("BCEWithLogits weight " << u->rows() << "x" << u->cols() << ", pos_weight " << positive << ", reduction "
                                     << r << ": losskit " << v << ", torch " << lktorch::item(ref));
        CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
        CHECK(lktorch::grad_err(grad, lktorch::columns(x.grad())) < kTol);
        CHECK(lktest::rel_err(v_s, lktorch::item(ref_s)) < kTol);
        CHECK(lktorch::grad_err(grad_s, lktorch::columns(xs.grad())) < kTol);
        CHECK(lktest::max_rel_err(bce.per_sample(logits, targets), lktorch::vector(none.detach().mean(1))) < kTol);
        ++configurations;
      }
  CHECK(configurations == 8);
}
#endif

#if __has_include(<losskit/linear_cross_entropy.hpp>)
#include <losskit/linear_cross_entropy.hpp>

TEST_CASE("LinearCrossEntropy agrees with torch autograd of linear + cross_entropy (every option, sample weights)",
          "[torch][lce]") {
  const int classes = 50, d = 7, n = 30;
  const Eigen::MatrixXd h = lktest::normal(d, n, 1.5), w = lktest::normal(classes, d);
  const Eigen::VectorXd bias = lktest::normal(classes, 1, 0.5), weights = lktest::uniform(classes, 1, 0.2, 2.0);
  Eigen::VectorXd sample_weights = lktest::uniform(n, 1, 0.0, 3.0);
  sample_weights(2) = 0;
  Eigen::VectorXi labels = lktest::labels(n, classes);
  for (int i = 0; i < n; i += 6) labels(i) = -100;
  const torch::Tensor mask = lktorch::labels(labels).ne(-100);
  const torch::Tensor safe_labels = torch::where(mask, lktorch::labels(labels), torch::zeros_like(mask, torch::kLong));
  double worst = 0;
  int combos = 0;
  for (const bool with_bias : {false, true})
    for (const bool weighted : {false, true})
      for (const double eps : {0.0, 0.1})
        for (const double z : {0.0, 1e-3})
          for (Reduction r : {Reduction::Mean, Reduction::Sum})
            for (const bool sw : {false, true}) {
              losskit::LinearCrossEntropy<double> lce;
              lce.block_size = 8;  // C = 50: six full blocks and a partial one
              lce.reduction = r;
              lce.label_smoothing = eps;
              lce.z_penalty = z;
              if (weighted) lce.class_weights = weights;
              const Eigen::VectorXd b = with_bias ? bias : Eigen::VectorXd();
              Eigen::MatrixXd gh, gw;
              Eigen::VectorXd gb;
              const double v = sw ? lce.value_and_gradient(h, w, b, labels, sample_weights, gh, gw, gb)
                                  : lce.value_and_gradient(h, w, b, labels, gh, gw, gb);

              torch::Tensor th = lktorch::rows(h, true);                        // N×d
              torch::Tensor tw = lktorch::rows(Eigen::MatrixXd(w.transpose()), true);  // C×d, row k = class k
              torch::Tensor tb = lktorch::vector(bias).requires_grad_(true);
              const torch::Tensor logits = with_bias ? F::linear(th, tw, tb) : F::linear(th, tw);
              auto opts = F::CrossEntropyFuncOptions().label_smoothing(eps).reduction(torch::kNone);
              if (weighted) opts.weight(lktorch::vector(weights));
              // torch has no sample weights or log²Z penalty: Σ s_i·(ℓ_i + z·w_{y_i}·lse_i²) over
              // counted samples, divided by Σ s_i·w_{y_i} for Mean (losskit's documented semantics).
              const torch::Tensor s = sw ? lktorch::vector(sample_weights) : torch::ones({n}, torch::kDouble);
              const torch::Tensor w_y =
                  (weighted ? lktorch::vector(weights).index_select(0, safe_labels) : torch::ones({n}, torch::kDouble)) *
                  mask.to(torch::kDouble);
              const torch::Tensor lse = torch::logsumexp(logits, 1);
              const torch::Tensor per = F::cross_entropy(logits, lktorch::labels(labels), opts) + z * w_y * lse * lse;
              torch::Tensor ref = (s * per).sum();
              if (r == Reduction::Mean) ref = ref / (s * w_y).sum();
              ref.backward();
              const double e = std::max({lktest::rel_err(v, lktorch::item(ref)), lktorch::grad_err(gh, lktorch::columns(th.grad())),
                                         lktorch::grad_err(gw, Eigen::MatrixXd(lktorch::columns(tw.grad()).transpose())),
                                         with_bias ? lktorch::grad_err(gb, lktorch::vector(tb.grad())) : 0.0});
              INFO("LinearCrossEntropy bias " << with_bias << ", class weights " << weighted << ", smoothing " << eps
                                             << ", z_penalty " << z << ", reduction " << r << ", sample weights " << sw
                                             << ": losskit " << v << ", torch " << lktorch::item(ref) << ", worst error "
                                             << e);
              CHECK(e <= 1e-12);
              worst = std::max(worst, e);
              ++combos;
            }
  WARN("LinearCrossEntropy vs torch linear + cross_entropy, double, " << combos
                                                                      << " combinations: worst relative error " << worst);
}
#endif

#if __has_include(<losskit/z_loss.hpp>)
#include <losskit/z_loss.hpp>

namespace {

// The spherical Z-loss written in torch ops (de Brébisson & Vincent 2016,
// population variance over the D outputs of each sample).
torch::Tensor torch_z_loss_per_sample(const torch::Tensor& o, const torch::Tensor& y, double a, double b) {
  const torch::Tensor mu = o.mean(1, true);
  const torch::Tensor sigma = (o - mu).square().mean(1, true).sqrt();
  const torch::Tensor z_c = ((o - mu) / sigma).gather(1, y.unsqueeze(1)).squeeze(1);
  return torch::softplus(a * (b - z_c)) / a;
}

}  // namespace

TEST_CASE("ZLoss agrees with the Z-loss written in torch ops and differentiated by autograd", "[torch][z_loss]") {
  const int d = 11, n = 35;
  const Eigen::MatrixXd outputs = lktest::normal(d, n, 2.0, 0.7);
  const Eigen::VectorXi labels = lktest::labels(n, d);
  for (const auto& ab : {std::pair<double, double>{1.0, 0.0}, {3.0, 0.5}, {0.25, -1.0}})
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      losskit::ZLoss<double> zl;
      zl.a = ab.first;
      zl.b = ab.second;
      zl.reduction = r;
      Eigen::MatrixXd grad;
      const double v = zl.value_and_gradient(outputs, labels, grad);

      torch::Tensor o = lktorch::rows(outputs, true);
      const torch::Tensor per = torch_z_loss_per_sample(o, lktorch::labels(labels), ab.first, ab.second);
      const torch::Tensor ref = r == Reduction::Mean ? per.mean() : per.sum();
      ref.backward();
      INFO("ZLoss a " << ab.first << ", b " << ab.second << ", reduction " << r);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktest::max_rel_err(grad, lktorch::columns(o.grad()), 1e-12) < kTol);
      CHECK(lktest::max_rel_err(zl.per_sample(outputs, labels), lktorch::vector(per)) < kTol);
    }
}

TEST_CASE("ZLoss::spherical_terms agrees with autograd through s, q and o_c", "[torch][z_loss]") {
  // The same loss as a function of the spherical statistics only:
  // μ = s/D, σ² = q/D − μ², z_c = (o_c − μ)/σ.
  const int d = 9;
  const Eigen::MatrixXd o = lktest::normal(d, 1, 1.5, 0.3);
  const double s = o.sum(), q = o.squaredNorm(), oc = o(4);
  losskit::ZLoss<double> zl;
  zl.a = 2.0;
  zl.b = 0.3;
  const auto terms = zl.spherical_terms(s, q, oc, d);

  const auto opt = torch::dtype(torch::kDouble).requires_grad(true);
  torch::Tensor ts = torch::tensor(s, opt), tq = torch::tensor(q, opt), toc = torch::tensor(oc, opt);
  const torch::Tensor mu = ts / d;
  const torch::Tensor z = (toc - mu) / (tq / d - mu * mu).sqrt();
  const torch::Tensor ref = torch::softplus(zl.a * (zl.b - z)) / zl.a;
  ref.backward();
  // q/D − μ² cancels a little: both sides form it the same way, so agreement is still ~1e-12.
  CHECK(lktest::rel_err(terms.value, lktorch::item(ref)) < kTol);
  CHECK(lktest::rel_err(terms.d_sum, lktorch::item(ts.grad())) < kTol);
  CHECK(lktest::rel_err(terms.d_sum_squares, lktorch::item(tq.grad())) < kTol);
  CHECK(lktest::rel_err(terms.d_target, lktorch::item(toc.grad())) < kTol);
}
#endif

#if __has_include(<losskit/comp_sum.hpp>)
#include <losskit/comp_sum.hpp>

namespace {

// Comp-sum in the paper's form Φ^τ(u), u = Σ_{k≠y} exp(h_k − h_y)
// (Mao, Mohri, Zhong, ICML 2023, Eq. for Φ^τ) — a different route from
// losskit's evaluation through log p_y.
torch::Tensor torch_comp_sum_per_sample(const torch::Tensor& h, const torch::Tensor& y, double tau) {
  const torch::Tensor h_y = h.gather(1, y.unsqueeze(1));
  const torch::Tensor others = torch::ones_like(h).scatter(1, y.unsqueeze(1), 0.0);
  const torch::Tensor u = ((h - h_y).exp() * others).sum(1);
  if (tau == 1.0) return torch::log1p(u);
  return ((1.0 + u).pow(1.0 - tau) - 1.0) / (1.0 - tau);
}

}  // namespace

TEST_CASE("CompSum agrees with Φ^τ(Σ_{k≠y} exp(h_k − h_y)) in torch ops, differentiated by autograd",
          "[torch][comp_sum]") {
  const int classes = 8, n = 30;
  const Eigen::MatrixXd logits = lktest::normal(classes, n, 1.5);
  const Eigen::VectorXi labels = lktest::labels(n, classes);
  for (const double tau : {0.0, 0.5, 1.0, 1.7, 2.0, 3.0})
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      losskit::CompSum<double> cs;
      cs.tau = tau;
      cs.reduction = r;
      Eigen::MatrixXd grad;
      const double v = cs.value_and_gradient(logits, labels, grad);

      torch::Tensor h = lktorch::rows(logits, true);
      const torch::Tensor per = torch_comp_sum_per_sample(h, lktorch::labels(labels), tau);
      const torch::Tensor ref = r == Reduction::Mean ? per.mean() : per.sum();
      ref.backward();
      INFO("CompSum tau " << tau << ", reduction " << r);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktest::max_rel_err(grad, lktorch::columns(h.grad()), 1e-12) < kTol);
      CHECK(lktest::max_rel_err(cs.per_sample(logits, labels), lktorch::vector(per)) < kTol);
    }
}

TEST_CASE("SmoothAdversarialCompSum agrees with ℓ^τ(h) + ν·‖Δ' − Δ‖₂ in torch ops, both gradients by autograd",
          "[torch][comp_sum]") {
  const int classes = 6, n = 20;
  const Eigen::MatrixXd clean = lktest::normal(classes, n, 1.5);
  const Eigen::MatrixXd adv = clean + lktest::normal(classes, n, 0.3);
  const Eigen::VectorXi labels = lktest::labels(n, classes);
  for (const double tau : {0.5, 1.0, 2.0})
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      const losskit::SmoothAdversarialCompSum<double> sac(tau, 0.7, r);
      Eigen::MatrixXd g_clean, g_adv;
      const double v = sac.value_and_gradient(clean, adv, labels, g_clean, g_adv);

      torch::Tensor h = lktorch::rows(clean, true), ha = lktorch::rows(adv, true);
      const torch::Tensor y = lktorch::labels(labels);
      const torch::Tensor delta = h - h.gather(1, y.unsqueeze(1));
      const torch::Tensor delta_adv = ha - ha.gather(1, y.unsqueeze(1));
      const torch::Tensor per =
          torch_comp_sum_per_sample(h, y, tau) + 0.7 * (delta_adv - delta).square().sum(1).sqrt();
      const torch::Tensor ref = r == Reduction::Mean ? per.mean() : per.sum();
      ref.backward();
      INFO("SmoothAdversarialCompSum tau " << tau << ", reduction " << r);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      CHECK(lktest::max_rel_err(g_clean, lktorch::columns(h.grad()), 1e-12) < kTol);
      CHECK(lktest::max_rel_err(g_adv, lktorch::columns(ha.grad()), 1e-12) < kTol);
      CHECK(lktest::max_rel_err(sac.per_sample(clean, adv, labels), lktorch::vector(per)) < kTol);
    }
}
#endif

#if __has_include(<losskit/ldr.hpp>)
#include <losskit/ldr.hpp>

namespace {

using losskit::LogitScaling;

// Scores: the raw logits, or the official code's softplus(s)/mean softplus(s)
// or s/mean|s| (its s/(‖s‖₁/C)).
torch::Tensor ldr_scores(const torch::Tensor& s, LogitScaling scaling) {
  if (scaling == LogitScaling::None) return s;
  if (scaling == LogitScaling::MeanAbs) return s / s.abs().mean(1, true);
  const torch::Tensor sp = torch::softplus(s);
  return sp / sp.mean(1, true);
}

// z_k = c·[k ≠ y] + f_k − f_y (Zhu, Ying, Yang, ICML 2023).
torch::Tensor ldr_z(const torch::Tensor& f, const torch::Tensor& y, double margin) {
  const torch::Tensor others = torch::ones_like(f).scatter(1, y.unsqueeze(1), 0.0);
  return margin * others + f - f.gather(1, y.unsqueeze(1));
}

// λ·lse_u(z/λ) = λ·(logsumexp(z/λ) − log C), per row; lambda may be a column tensor.
torch::Tensor ldr_psi(const torch::Tensor& z, const torch::Tensor& lambda) {
  return lambda.squeeze(1) * (torch::logsumexp(z / lambda, 1) - std::log(double(z.size(1))));
}

}  // namespace

TEST_CASE("LDRKL agrees with λ·lse_u(z/λ) in torch ops, differentiated by autograd", "[torch][ldr]") {
  const int classes = 10, n = 24;
  const Eigen::MatrixXd logits = lktest::normal(classes, n, 2.0);
  const Eigen::VectorXi labels = lktest::labels(n, classes);
  for (const double lambda : {0.1, 1.0, 10.0})
    for (const double margin : {0.0, 0.1})
      for (const LogitScaling scaling : {LogitScaling::None, LogitScaling::Softplus, LogitScaling::MeanAbs})
        for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
          losskit::LDRKL<double> ldr;
          ldr.lambda = lambda;
          ldr.margin = margin;
          ldr.logit_scaling = scaling;
          ldr.reduction = r;
          Eigen::MatrixXd grad;
          const double v = ldr.value_and_gradient(logits, labels, grad);

          torch::Tensor s = lktorch::rows(logits, true);
          const torch::Tensor z = ldr_z(ldr_scores(s, scaling), lktorch::labels(labels), margin);
          const torch::Tensor per = ldr_psi(z, torch::full({n, 1}, lambda, torch::kDouble));
          const torch::Tensor ref = r == Reduction::Mean ? per.mean() : per.sum();
          ref.backward();
          INFO("LDRKL lambda " << lambda << ", margin " << margin << ", scaling " << scaling << ", reduction " << r);
          CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
          CHECK(lktest::max_rel_err(grad, lktorch::columns(s.grad()), 1e-12) < kTol);
          CHECK(lktest::max_rel_err(ldr.per_sample(logits, labels), lktorch::vector(per), 1e-12) < kTol);
        }
}

TEST_CASE("ALDRKL at losskit's λ* agrees with g(λ*) and its autograd gradient, and λ* maximises g on a torch grid",
          "[torch][ldr]") {
  // At fixed λ* (taken from lambda_star and treated as a constant), torch
  // evaluates g(λ*) = λ*·lse_u(z/λ*) − (a/2)(λ* − λ0)², a = α·log C/λ0, and
  // autograd's gradient in the scores is the envelope-theorem gradient.
  // Independently, g evaluated by torch on a 2001-point grid over
  // [λ0(1 − 1/α), λ0] never exceeds g(λ*) (λ* is the global maximiser).
  const int classes = 12, n = 16;
  const Eigen::MatrixXd logits = lktest::normal(classes, n, 3.0);
  const Eigen::VectorXi labels = lktest::labels(n, classes);
  for (const double lambda0 : {0.1, 1.0, 10.0})
    for (const LogitScaling scaling : {LogitScaling::None, LogitScaling::Softplus, LogitScaling::MeanAbs}) {
      losskit::ALDRKL<double> aldr;
      aldr.lambda0 = lambda0;
      aldr.alpha = 2.0;
      aldr.logit_scaling = scaling;
      Eigen::MatrixXd grad;
      const double v = aldr.value_and_gradient(logits, labels, grad);
      const Eigen::VectorXd lambda_star = aldr.lambda_star(logits, labels);
      const double a = aldr.alpha * std::log(double(classes)) / lambda0;

      torch::Tensor s = lktorch::rows(logits, true);
      const torch::Tensor z = ldr_z(ldr_scores(s, scaling), lktorch::labels(labels), aldr.margin);
      const torch::Tensor lam = lktorch::vector(lambda_star).unsqueeze(1);
      const torch::Tensor g = ldr_psi(z, lam) - 0.5 * a * (lam.squeeze(1) - lambda0).square();
      const torch::Tensor ref = g.mean();
      ref.backward();
      INFO("ALDRKL lambda0 " << lambda0 << ", scaling " << scaling);
      CHECK(lktest::rel_err(v, lktorch::item(ref)) < kTol);
      // Small λ0 makes softmax(z/λ*) one-hot at the label for some samples:
      // their gradient is round-off (~1e-16) on both sides, so entries are
      // compared relative to the largest gradient entry (lktorch::grad_err).
      CHECK(lktorch::grad_err(grad, lktorch::columns(s.grad())) < kTol);

      torch::NoGradGuard no_grad;
      const double lo = lambda0 * (1.0 - 1.0 / aldr.alpha);
      const torch::Tensor grid = torch::linspace(lo, lambda0, 2001, torch::kDouble);
      const torch::Tensor zd = z.detach();
      for (int i = 0; i < n; ++i) {
        CHECK(lambda_star(i) >= lo * (1 - 1e-12));
        CHECK(lambda_star(i) <= lambda0 * (1 + 1e-12));
        const torch::Tensor zi = zd[i].unsqueeze(0).expand({grid.size(0), classes});
        const torch::Tensor g_grid = ldr_psi(zi, grid.unsqueeze(1)) - 0.5 * a * (grid - lambda0).square();
        const double best_grid = g_grid.max().item<double>(), at_star = g[i].item<double>();
        INFO("sample " << i << ": g(λ*) = " << at_star << " at λ* = " << lambda_star(i) << ", grid max " << best_grid);
        CHECK(at_star >= best_grid - 1e-12 * (1 + std::abs(best_grid)));
      }
    }
}
#endif
