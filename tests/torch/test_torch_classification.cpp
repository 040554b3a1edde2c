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
    ce.z_loss = z;
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
#endif
