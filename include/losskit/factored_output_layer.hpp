#pragma once
/// FactoredOutputLayer: exact training of a huge linear output layer o = W·h
/// (W: D×d, D classes ≫ d hidden units) under a spherical loss in O(d²) per
/// example instead of O(D·d) (Vincent, de Brébisson & Bouthillier, "Efficient
/// Exact Gradient Update for training Deep Networks with Very Large Sparse
/// Targets", NeurIPS 2015, extended as arXiv 1606.08061; the Z-loss: de
/// Brébisson & Vincent, arXiv 1604.08859, 2016).
///
/// A spherical loss sees the outputs only through s = Σ_k o_k, q = Σ_k o_k²
/// and the K target outputs (see core/spherical_terms.hpp). With
/// Q = WᵀW (d×d) and w̄ = Wᵀ1 (d) kept up to date,
///     s = w̄ᵀh,  q = hᵀQh,  o_c = W_c·h                                 O(d² + Kd)
///     ∂L/∂h = 2·g_q·Qh + g_s·w̄ + Σ_c G_c·W_cᵀ    (g_q = ∂L/∂q, g_s = ∂L/∂s, G_c = ∂L/∂o_c)
/// The SGD step on a minibatch H (d×m), W ← W − η(∂L/∂W + λW), is dense in W
/// but structured: with G = ∂L/∂O = Ẏ + 1·g_sᵀ + 2·W·H·diag(g_q) (Ẏ: D×m,
/// sparse, G_c at the target rows), c = 1 − ηλ, A = c·I − 2η·H·diag(g_q)·Hᵀ,
///     W_new = W·A − η·1·(H·g_s)ᵀ − η·Ẏ·Hᵀ.
/// W is therefore held as W = V·U + 1·ωᵀ (V: D×d, U: d×d, ω: d) and updated by
///     U ← U·A,  ω ← A·ω − η·H·g_s,  V ← V − η·Ẏ·(U_new⁻ᵀ·H)ᵀ   (only the target rows of V)
/// with U⁻ᵀ kept by the Woodbury identity
///     A⁻¹ = (1/c)·(I + H·N⁻¹·diag(2η·g_q)·Hᵀ),   N = c·I − diag(2η·g_q)·HᵀH  (m×m),
/// and Q, w̄ updated exactly:
///     Q ← c²Q − cη(∇_H·Hᵀ + H·∇_Hᵀ) + η²·H·(GᵀG)·Hᵀ,   w̄ ← c·w̄ − η·H·(Gᵀ1),
/// where ∇_H = WᵀG is the returned ∂L/∂H, and GᵀG (m×m), Gᵀ1 (m) follow from
/// quantities already at hand in O(m²·d). Cost: about eight d×d by d×m
/// products per minibatch, i.e. O(d²) per example; the dense step is three
/// D×d by d×m products, so the speed-up is about 3D/(8d).
///
/// Stability (the paper's measures, with periods as options):
///  - U⁻ᵀ drifts under repeated Woodbury updates: recomputed from U every
///    `inverse_refresh_period` updates (O(d³)).
///  - U must stay well conditioned and of moderate scale (weight decay alone
///    shrinks it by c per step): its SVD is checked every
///    `condition_check_period` updates, and also whenever a cheap running
///    bound on its singular values (‖H·diag(2ηg_q)·Hᵀ‖ ≤ Σ_i 2η|g_q,i|·‖h_i‖²)
///    says they may have left [1/condition_band, condition_band], or a step
///    may be singular (below); singular values outside the band are reset to
///    1 by U ← F⁻¹U, V ← V·F with F symmetric and acting only on those
///    singular directions — W is unchanged, cost O(D·d) per reset direction.
///    A check rebuilds U⁻ᵀ from the SVD, so it counts as a refresh too.
///  - every `unfactorize_period` updates the layer unfactorises: V ← W, U = I,
///    ω = 0, and Q, w̄ are recomputed from W (O(D·d²)), which removes the
///    round-off accumulated in Q and w̄.
///  - a singular update: A has an eigenvalue near 0 (one example:
///    1 − 2η·g_q·‖h‖²/c ≈ 0; g_q changes sign for the Z-loss). Whenever the
///    bound above allows it (Σ_i 2η|g_q,i|·‖h_i‖² ≥ c/2), the eigenvalues of A
///    are computed (O(d³)); if min|λ(A)| < singular_threshold·c the factored
///    update cannot represent W_new. With on_singular = DenseFallback
///    (default) that step is applied exactly by unfactorising: V ← V·U·A +
///    1·ω_newᵀ (O(D·d²)), then the sparse −η·Ẏ·Hᵀ; with Throw, losskit::Error
///    is thrown and nothing (layer, gradient) is changed. stats() counts both.
/// A period counts updates since its measure last ran, whatever made it run
/// (an unfactorisation restarts all three). 0 means the same for the three
/// period options: no periodic action, and nothing else is turned off. With
/// condition_check_period = 0 the checks that the bound or a possibly
/// singular step asks for still run, since they keep W exact; with
/// unfactorize_period = 0, unfactorize() and the dense fallback still
/// unfactorise; with inverse_refresh_period = 0, condition checks still
/// rebuild U⁻ᵀ.
///
/// Losses: ZLoss<S> with integer labels (its a, b, reduction), and MSE<S>
/// against one-hot labels or sparse targets (K×m row indices and values, no
/// duplicate row within a sample): per sample Σ_k (o_k − t_k)² =
/// q − 2·Σ_j y_j·o_{r_j} + Σ_j y_j², Mean dividing by D·m like MSE<S>. Note
/// that q − 2Σy·o + Σy² cancels when the fit is close (absolute error about
/// ε·q), and the Z-loss's σ² = q/D − μ² cancels when |μ| ≫ σ (see z_loss.hpp).
/// The softmax is not spherical: this path does not apply to cross-entropy.
///
/// Evaluating all D outputs (accuracy, top-k) is O(D·d) by nature: outputs(H).
/// weights() materialises W (O(D·d²)).
///
/// Conventions: hidden H is d×m (samples are columns); labels m integers in
/// [0, D); the returned loss is the loss of the weights before the update, and
/// grad_hidden receives its ∂L/∂H. Weight decay is the update's λW term only,
/// not part of the returned loss. Non-finite hidden values or losses: the loss
/// and ∂L/∂H are returned as computed (NaN/inf) and the weights are left
/// unchanged (a non-finite term would spread to every row of W at once).
///
/// Concurrency: the const members (value_and_gradient, outputs, weights,
/// stats, ...) may run at the same time on one object: they write nothing of
/// it, and value_and_gradient keeps its buffers per call. train_step and
/// unfactorize change the layer and must not overlap any other call on it.
///
/// Allocation: train_step keeps its buffers in the object, sized on the first
/// call and again only when m or K change. After that a step allocates
/// nothing on the heap, in every branch but one: a condition check's SVD
/// (Eigen's BDCSVD allocates inside compute(); see check_condition). Eigen's
/// products also malloc their packing buffers where those exceed
/// EIGEN_STACK_ALLOCATION_LIMIT (128 KB unless defined before including
/// Eigen): in float with m = 64, none up to d = 128, four per step at d = 256.
/// value_and_gradient checks its buffers out of a pool (one set per
/// concurrent caller, core/workspace.hpp): a repeated call with the same m
/// and K allocates nothing either (the same Eigen packing caveat applies).
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/checks.hpp"
#include "core/numerics.hpp"
#include "core/reduction.hpp"
#include "core/workspace.hpp"
#include "mse.hpp"
#include "z_loss.hpp"

namespace losskit {

/// What FactoredOutputLayer does with an update it cannot factorise.
enum class SingularUpdate { DenseFallback, Throw };

/// Counters of the stabilisation events, for monitoring and tests.
struct FactoredLayerStats {
  long updates = 0;               ///< train_step calls that changed the weights
  long inverse_refreshes = 0;     ///< U⁻ᵀ recomputed from U (periodic, or by a condition check)
  long condition_checks = 0;      ///< SVDs of U
  long condition_resets = 0;      ///< singular directions of U reset to 1
  long unfactorizations = 0;      ///< V ← W, U = I (periodic or by unfactorize())
  long dense_fallbacks = 0;       ///< singular updates applied densely
  long skipped_nonfinite = 0;     ///< steps not applied because of non-finite terms
};

template <class Scalar_>
class FactoredOutputLayer {
 public:
  using Scalar = Scalar_;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using IndexMatrix = Eigen::Matrix<Eigen::Index, Eigen::Dynamic, Eigen::Dynamic>;
  static_assert(std::is_floating_point<Scalar>::value, "losskit::FactoredOutputLayer: Scalar must be float or double");

  Scalar weight_decay = Scalar(0);     ///< λ >= 0: the update is W ← W − η(∂L/∂W + λW)
  /// U⁻ᵀ recomputed from U every this many updates; 0 = no periodic refresh
  /// (condition checks still rebuild U⁻ᵀ).
  int inverse_refresh_period = 100;
  /// SVD check of U every this many updates; 0 = no periodic check (the checks
  /// the running bound or a possibly singular step asks for still run: they
  /// keep W exact).
  int condition_check_period = 100;
  Scalar condition_band = Scalar(10);  ///< singular values of U are kept in [1/band, band]; > 1
  /// V ← W, U = I, Q and w̄ recomputed every this many updates; 0 = no periodic
  /// unfactorisation (unfactorize() and the dense fallback still unfactorise).
  int unfactorize_period = 1000;
  Scalar singular_threshold = Scalar(1e-3);  ///< min|λ(A)|/c below this is a singular update; in [0, 1)
  SingularUpdate on_singular = SingularUpdate::DenseFallback;

  /// Starts from the given D×d weights (D >= 1 classes, d >= 1; finite).
  template <class W>
  explicit FactoredOutputLayer(const Eigen::DenseBase<W>& weights) {
    detail::require_scalar<Scalar, W>();
    detail::check_not_empty("FactoredOutputLayer", "weights", weights);
    const detail::eval_t<W> w(weights.derived());
    if (!w.matrix().allFinite()) detail::fail("FactoredOutputLayer", "weights", "must be finite");
    vt_ = w.matrix().transpose();
    reset_factorization();
  }

  Eigen::Index classes() const { return vt_.cols(); }
  Eigen::Index hidden_size() const { return vt_.rows(); }
  const FactoredLayerStats& stats() const { return stats_; }

  /// W = V·U + 1·ωᵀ, materialised (D×d); O(D·d²).
  Matrix weights() const {
    Matrix w = (u_.transpose() * vt_).transpose();
    w.rowwise() += omega_.transpose();
    return w;
  }

  /// All D outputs W·H for the columns of H (d×m); O(D·d·m).
  template <class H>
  Matrix outputs(const Eigen::DenseBase<H>& hidden) const {
    detail::require_scalar<Scalar, H>();
    check_hidden(hidden);
    const detail::eval_t<H> h(hidden.derived());
    const Matrix uh = u_ * h.matrix();
    Matrix o = vt_.transpose() * uh;
    o.rowwise() += omega_.transpose() * h.matrix();
    return o;
  }

  /// Folds U and ω into V (V ← W, U = I, ω = 0) and recomputes Q = WᵀW and
  /// w̄ = Wᵀ1 from W. O(D·d²).
  void unfactorize() {
    fold_factors_into_v();
    reset_factorization();
    ++stats_.unfactorizations;
  }

  // ---- ZLoss, or MSE against one-hot labels: integer labels (length m) ------------------

  /// Loss and ∂L/∂H without changing the layer; `loss` is a ZLoss<Scalar> or
  /// an MSE<Scalar> (against the one-hot rows of the labels).
  template <class Loss, class H, class L, class G>
  Scalar value_and_gradient(const Loss& loss, const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<L>& labels,
                            const Eigen::DenseBase<G>& grad_hidden) const {
    require_labelled_loss<Loss>();
    const auto ev = evaluations_.acquire();
    return labelled_step(*this, *ev, loss, hidden, labels, grad_hidden, Scalar(0));
  }

  /// Loss and ∂L/∂H at the current weights, then the exact SGD update of W.
  template <class Loss, class H, class L, class G>
  Scalar train_step(const Loss& loss, const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<L>& labels,
                    const Eigen::DenseBase<G>& grad_hidden, Scalar learning_rate) {
    require_labelled_loss<Loss>();
    return labelled_step(*this, ev_, loss, hidden, labels, grad_hidden, learning_rate);
  }

  // ---- MSE against sparse targets: column i has value target_values(j, i) at row target_rows(j, i)

  template <class H, class R, class T, class G>
  Scalar value_and_gradient(const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                            const Eigen::DenseBase<R>& target_rows, const Eigen::DenseBase<T>& target_values,
                            const Eigen::DenseBase<G>& grad_hidden) const {
    const auto ev = evaluations_.acquire();
    return sparse_step(*this, *ev, loss, hidden, target_rows, target_values, grad_hidden, Scalar(0));
  }

  template <class H, class R, class T, class G>
  Scalar train_step(const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<R>& target_rows,
                    const Eigen::DenseBase<T>& target_values, const Eigen::DenseBase<G>& grad_hidden,
                    Scalar learning_rate) {
    return sparse_step(*this, ev_, loss, hidden, target_rows, target_values, grad_hidden, learning_rate);
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "FactoredOutputLayer";
  // Operations on all D rows of V run over blocks of this many rows, so that
  // they need a d×kRowBlock buffer rather than a D×d temporary.
  static constexpr Eigen::Index kRowBlock = 256;

  // One evaluation of the loss at the current weights, and what the update
  // reads back from it. value_and_gradient keeps its own per call, so that
  // concurrent const calls share nothing; train_step reuses ev_.
  struct Evaluation {
    IndexMatrix rows;        // K×m target rows
    Matrix values;           // K×m target outputs o_c
    Matrix g_target;         // K×m ∂L/∂o_c (reduced)
    Vector g_sum, g_sq, s;   // m: ∂L/∂s, ∂L/∂q (reduced), s = w̄ᵀh
    Vector omega_h, ybar;    // m: Hᵀω, Σ_c ∂L/∂o_c
    Matrix uh, qh, vy, wty;  // d×m: U·H, Q·H, VᵀẎ, WᵀẎ
    Matrix grad;             // d×m: ∂L/∂H
  };

  // Buffers of the update, sized by fit() on the first train_step and again
  // only when m or K change, so that a step with known shapes does not
  // allocate; the rare branches' buffers are sized up front too.
  struct UpdateWorkspace {
    Eigen::Index m = -1, k = -1;
    Vector dk, h_norm2, colsum, tmp_m;                   // m
    Vector tmp_d, sigma, ss;                             // d
    Matrix gram, gram_sym, tmp_mm, hth, n, dk_diag, p;   // m×m
    Matrix tmp_dm, uinvt_h, unew_h;                      // d×m
    Matrix tmp_dd, a, ps, ps_scaled;                     // d×d
    Matrix row_block;                                    // d×min(D, kRowBlock)
    std::vector<std::pair<Eigen::Index, Eigen::Index>> entries;  // K·m (row, flat index j + K·i)
    // Constructed in place (emplace): Eigen's sized constructors leave the
    // solvers' status uninitialised, which a move-assignment would read.
    std::optional<Eigen::PartialPivLU<Matrix>> lu_n, lu_u;     // of N (m×m) and of U (d×d)
    std::optional<Eigen::SelfAdjointEigenSolver<Matrix>> eig;  // of A (d×d)
    std::optional<Eigen::BDCSVD<Matrix>> svd;                  // of U (d×d)

    void fit(Eigen::Index d, Eigen::Index classes, Eigen::Index m_new, Eigen::Index k_new) {
      if (tmp_d.size() != d) {
        tmp_d.resize(d);
        sigma.resize(d);
        ss.resize(d);
        for (Matrix* x : {&tmp_dd, &a, &ps, &ps_scaled}) x->resize(d, d);
        row_block.resize(d, std::min(classes, kRowBlock));
        lu_u.emplace(d);
        eig.emplace(d);
        svd.emplace(d, d, Eigen::ComputeFullU | Eigen::ComputeFullV);
      }
      if (m_new == m && k_new == k) return;
      m = m_new;
      k = k_new;
      for (Vector* x : {&dk, &h_norm2, &colsum, &tmp_m}) x->resize(m);
      for (Matrix* x : {&gram, &gram_sym, &tmp_mm, &hth, &n, &dk_diag, &p}) x->resize(m, m);
      for (Matrix* x : {&tmp_dm, &uinvt_h, &unew_h}) x->resize(d, m);
      entries.reserve(std::size_t(k * m));
      lu_n.emplace(m);
    }
  };

  Matrix vt_;        // Vᵀ (d×D): column c is row c of V, contiguous
  Matrix u_, uinvt_; // U and U⁻ᵀ (d×d)
  Vector omega_;     // ω (d)
  Matrix q_;         // Q = WᵀW (d×d)
  Vector wbar_;      // w̄ = Wᵀ1 (d)
  Scalar smin_bound_ = 1, smax_bound_ = 1;  // bounds on U's singular values since the last SVD
  long since_refresh_ = 0, since_check_ = 0, since_unfactorize_ = 0;
  FactoredLayerStats stats_;
  Evaluation ev_;                                  // train_step's
  detail::WorkspacePool<Evaluation> evaluations_;  // value_and_gradient's, one per concurrent caller
  UpdateWorkspace uw_;

  template <class Loss>
  static constexpr void require_labelled_loss() {
    static_assert(std::is_same<Loss, ZLoss<Scalar>>::value || std::is_same<Loss, MSE<Scalar>>::value,
                  "losskit: FactoredOutputLayer takes a ZLoss<Scalar> or an MSE<Scalar> of its own Scalar");
  }

  void reset_factorization() {
    const Eigen::Index d = vt_.rows();
    u_.setIdentity(d, d);
    uinvt_.setIdentity(d, d);
    omega_.setZero(d);
    q_.setZero(d, d);
    q_.template selfadjointView<Eigen::Lower>().rankUpdate(vt_);
    q_.template triangularView<Eigen::StrictlyUpper>() = q_.transpose();
    wbar_ = vt_.rowwise().sum();
    smin_bound_ = smax_bound_ = Scalar(1);
    since_refresh_ = since_check_ = since_unfactorize_ = 0;
  }

  template <class H>
  void check_hidden(const Eigen::DenseBase<H>& hidden) const {
    detail::check_not_empty(kName, "hidden", hidden);
    if (hidden.rows() != hidden_size())
      detail::fail(kName, "hidden", "has ", hidden.rows(), " rows, the layer's hidden size is ", hidden_size());
  }

  void check_options(bool update, Scalar lr) const {
    if (!update) return;
    detail::check_non_negative(kName, "learning_rate", lr);
    detail::check_non_negative(kName, "weight_decay", weight_decay);
    if (!(lr * weight_decay < Scalar(1)))
      detail::fail(kName, "weight_decay", "learning_rate * weight_decay must be < 1, got ", lr * weight_decay);
    if (inverse_refresh_period < 0) detail::fail(kName, "inverse_refresh_period", "must be >= 0, got ", inverse_refresh_period);
    if (condition_check_period < 0) detail::fail(kName, "condition_check_period", "must be >= 0, got ", condition_check_period);
    if (unfactorize_period < 0) detail::fail(kName, "unfactorize_period", "must be >= 0, got ", unfactorize_period);
    if (!(condition_band > Scalar(1)) || !std::isfinite(double(condition_band)))
      detail::fail(kName, "condition_band", "must be finite and > 1, got ", condition_band);
    if (!(singular_threshold >= Scalar(0) && singular_threshold < Scalar(1)))
      detail::fail(kName, "singular_threshold", "must be in [0, 1), got ", singular_threshold);
  }

  template <class H, class G>
  void check_common(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<G>& grad, bool update, Scalar lr) const {
    detail::require_scalar<Scalar, H>();
    check_hidden(hidden);
    detail::check_output(kName, "grad_hidden", grad, hidden.rows(), hidden.cols());
    check_options(update, lr);
  }

  // The steps are static and take the layer as `Layer&`: value_and_gradient
  // passes a const layer, so the compiler itself keeps that path read-only;
  // train_step passes itself and the update runs.
  template <class Layer>
  static constexpr bool kUpdates = !std::is_const<Layer>::value;

  template <class Layer, class H, class L, class G>
  static Scalar labelled_step(Layer& layer, Evaluation& ev, const ZLoss<Scalar>& loss,
                              const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<L>& labels,
                              const Eigen::DenseBase<G>& grad, Scalar lr) {
    layer.check_common(hidden, grad, kUpdates<Layer>, lr);
    detail::check_positive("ZLoss", "a", loss.a);
    detail::check_finite("ZLoss", "b", loss.b);
    const Eigen::Index m = hidden.cols(), dim = layer.classes();
    if (dim < 2) detail::fail("ZLoss", "outputs", "needs at least 2 classes (rows), got ", dim);
    detail::check_labels("ZLoss", labels, m, dim);
    set_label_rows(ev, labels, m);
    const Scalar factor = detail::reduction_factor<Scalar>(loss.reduction, Acc(m));
    const detail::eval_t<H> h(hidden.derived());
    return run(layer, ev, h.matrix(), grad, lr, factor, [&](Eigen::Index i, Scalar s, Scalar q) {
      const SphericalTerms<Scalar> t = loss.terms_unchecked(s, q, ev.values(0, i), dim);
      ev.g_target(0, i) = t.d_target;
      ev.g_sum(i) = t.d_sum;
      ev.g_sq(i) = t.d_sum_squares;
      return t.value;
    });
  }

  template <class Layer, class H, class L, class G>
  static Scalar labelled_step(Layer& layer, Evaluation& ev, const MSE<Scalar>& loss,
                              const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<L>& labels,
                              const Eigen::DenseBase<G>& grad, Scalar lr) {
    layer.check_common(hidden, grad, kUpdates<Layer>, lr);
    detail::check_labels("MSE", labels, hidden.cols(), layer.classes());
    const Eigen::Index m = hidden.cols();
    set_label_rows(ev, labels, m);
    const Scalar factor = detail::reduction_factor<Scalar>(loss.reduction, Acc(m) * Acc(layer.classes()));
    const detail::eval_t<H> h(hidden.derived());
    return run(layer, ev, h.matrix(), grad, lr, factor, [&](Eigen::Index i, Scalar, Scalar q) {
      // Σ_k (o_k − [k = c])² = q − 2·o_c + 1.
      const Scalar oc = ev.values(0, i);
      ev.g_target(0, i) = Scalar(-2);
      ev.g_sum(i) = Scalar(0);
      ev.g_sq(i) = Scalar(1);
      return q - Scalar(2) * oc + Scalar(1);
    });
  }

  template <class Layer, class H, class R, class T, class G>
  static Scalar sparse_step(Layer& layer, Evaluation& ev, const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                            const Eigen::DenseBase<R>& target_rows, const Eigen::DenseBase<T>& target_values,
                            const Eigen::DenseBase<G>& grad, Scalar lr) {
    layer.check_common(hidden, grad, kUpdates<Layer>, lr);
    layer.check_sparse_targets(target_rows, target_values, hidden.cols());
    const Eigen::Index m = hidden.cols(), k = target_rows.rows();
    ev.rows.resize(k, m);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) ev.rows(j, i) = Eigen::Index(target_rows.derived().coeff(j, i));
    const Scalar factor = detail::reduction_factor<Scalar>(loss.reduction, Acc(m) * Acc(layer.classes()));
    const detail::eval_t<H> h(hidden.derived());
    const detail::eval_t<T> y(target_values.derived());
    return run(layer, ev, h.matrix(), grad, lr, factor, [&](Eigen::Index i, Scalar, Scalar q) {
      // Σ_k (o_k − t_k)² = q − 2·Σ_j y_j·o_{r_j} + Σ_j y_j².
      Scalar v = q;
      for (Eigen::Index j = 0; j < k; ++j) {
        const Scalar yj = y.coeff(j, i);
        v += yj * (yj - Scalar(2) * ev.values(j, i));
        ev.g_target(j, i) = Scalar(-2) * yj;
      }
      ev.g_sum(i) = Scalar(0);
      ev.g_sq(i) = Scalar(1);
      return v;
    });
  }

  template <class R, class T>
  void check_sparse_targets(const Eigen::DenseBase<R>& target_rows, const Eigen::DenseBase<T>& target_values,
                            Eigen::Index m) const {
    detail::require_integer_labels<R>();
    detail::require_scalar<Scalar, T>();
    const Eigen::Index k = target_rows.rows();
    if (target_rows.cols() != m || k == 0)
      detail::fail("MSE", "target_rows", "expected K x ", m, " with K >= 1, got ", target_rows.rows(), "x",
                   target_rows.cols());
    detail::check_same_shape("MSE", "target_values", target_rows, target_values);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) {
        const long long r = static_cast<long long>(target_rows.derived().coeff(j, i));
        if (r < 0 || r >= static_cast<long long>(classes()))
          detail::fail("MSE", "target_rows", "row ", r, " at (", j, ", ", i, ") is outside [0, ", classes(), ")");
        for (Eigen::Index l = 0; l < j; ++l)
          if (static_cast<long long>(target_rows.derived().coeff(l, i)) == r)
            detail::fail("MSE", "target_rows", "row ", r, " appears twice in sample ", i);
      }
  }

  template <class L>
  static void set_label_rows(Evaluation& ev, const Eigen::DenseBase<L>& labels, Eigen::Index m) {
    ev.rows.resize(1, m);
    for (Eigen::Index i = 0; i < m; ++i) ev.rows(0, i) = Eigen::Index(labels.derived().coeff(i));
  }

  // Evaluates, updates (train_step only), then writes ∂L/∂H: an update that
  // throws leaves grad_hidden untouched.
  template <class Layer, class H, class G, class Terms>
  static Scalar run(Layer& layer, Evaluation& ev, const H& h, const Eigen::DenseBase<G>& grad_out, Scalar lr,
                    Scalar factor, Terms&& terms) {
    const Scalar value = layer.evaluate(ev, h, factor, terms);
    if constexpr (kUpdates<Layer>) {
      layer.apply_step(ev, h, value, lr);
    } else {
      (void)lr;
    }
    G& g = detail::prepare_output(kName, "grad_hidden", grad_out, h.rows(), h.cols());
    g = ev.grad;
    return value;
  }

  // `terms(i, s_i, q_i)` reads the target outputs from ev.values(:, i), writes
  // the unreduced partials into ev.g_target(:, i), ev.g_sum(i), ev.g_sq(i),
  // and returns the unreduced loss of sample i.
  template <class H, class Terms>
  Scalar evaluate(Evaluation& ev, const H& h, Scalar factor, Terms& terms) const {
    const Eigen::Index m = h.cols(), k = ev.rows.rows();
    ev.uh.noalias() = u_ * h;
    ev.qh.noalias() = q_ * h;
    ev.s.noalias() = h.transpose() * wbar_;
    ev.omega_h.noalias() = h.transpose() * omega_;
    ev.values.resize(k, m);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j)
        ev.values(j, i) = vt_.col(ev.rows(j, i)).dot(ev.uh.col(i)) + ev.omega_h(i);
    ev.g_target.resize(k, m);
    ev.g_sum.resize(m);
    ev.g_sq.resize(m);
    Acc total(0);
    for (Eigen::Index i = 0; i < m; ++i) total += Acc(terms(i, ev.s(i), h.col(i).dot(ev.qh.col(i))));
    ev.g_target *= factor;
    ev.g_sum *= factor;
    ev.g_sq *= factor;
    hidden_gradient(ev);
    return Scalar(total * Acc(factor));
  }

  // ∇_H = WᵀẎ + w̄·g_sᵀ + 2·Q·H·diag(g_q), with WᵀẎ = Uᵀ(VᵀẎ) + ω·ȳᵀ.
  void hidden_gradient(Evaluation& ev) const {
    const Eigen::Index m = ev.rows.cols(), k = ev.rows.rows();
    ev.vy.setZero(hidden_size(), m);
    ev.ybar.setZero(m);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) {
        ev.vy.col(i) += ev.g_target(j, i) * vt_.col(ev.rows(j, i));
        ev.ybar(i) += ev.g_target(j, i);
      }
    ev.wty.noalias() = u_.transpose() * ev.vy;
    ev.wty.noalias() += omega_ * ev.ybar.transpose();
    ev.grad = ev.wty;
    ev.grad.noalias() += wbar_ * ev.g_sum.transpose();
    ev.grad.noalias() += ev.qh * (Scalar(2) * ev.g_sq).asDiagonal();
  }

  // A non-finite term would spread to every row of W at once: such a step is skipped.
  template <class H>
  void apply_step(const Evaluation& ev, const H& h, Scalar value, Scalar lr) {
    uw_.fit(hidden_size(), classes(), h.cols(), ev.rows.rows());
    const bool finite = std::isfinite(double(value)) && ev.g_target.allFinite() && ev.g_sum.allFinite() &&
                        ev.g_sq.allFinite() && ev.grad.allFinite();
    if (!finite) {
      ++stats_.skipped_nonfinite;
      return;
    }
    if (lr > Scalar(0)) update(ev, h, lr);
  }

  // Sum over pairs of entries of Ẏ sharing a row: (ẎᵀẎ)_{ij}. Sorting the
  // entries by row keeps it O(K·m·log(K·m) + pairs) for any K.
  static void sparse_gram(const IndexMatrix& rows, const Matrix& vals,
                          std::vector<std::pair<Eigen::Index, Eigen::Index>>& entries, Matrix& out) {
    const Eigen::Index k = rows.rows(), m = rows.cols();
    out.setZero(m, m);
    entries.clear();
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) entries.emplace_back(rows(j, i), j + k * i);
    std::sort(entries.begin(), entries.end());
    for (std::size_t a = 0; a < entries.size();) {
      std::size_t b = a;
      while (b < entries.size() && entries[b].first == entries[a].first) ++b;
      for (std::size_t x = a; x < b; ++x)
        for (std::size_t y = a; y < b; ++y) {
          const Eigen::Index ex = entries[x].second, ey = entries[y].second;
          out(ex / k, ey / k) += vals(ex % k, ex / k) * vals(ey % k, ey / k);
        }
      a = b;
    }
  }

  template <class H>
  void update(const Evaluation& ev, const H& h, Scalar lr) {
    const Scalar c = Scalar(1) - lr * weight_decay;
    uw_.dk = Scalar(2) * lr * ev.g_sq;  // A = c·I − H·diag(dk)·Hᵀ
    uw_.h_norm2 = h.colwise().squaredNorm().transpose();
    const Scalar tau = uw_.dk.cwiseAbs().dot(uw_.h_norm2);  // ‖H·diag(dk)·Hᵀ‖₂ <= tau
    const bool may_be_singular = tau >= c / Scalar(2);
    const bool singular = may_be_singular && is_singular(h, c);
    if (singular && on_singular == SingularUpdate::Throw)
      detail::fail(kName, "learning_rate",
                   "singular update: the factor (1 - lr*weight_decay)I - 2*lr*H*diag(dL/dq)*H^T has an eigenvalue "
                   "below singular_threshold (one sample: 1 - 2*lr*g_q*|h|^2 ~ 0); lower the learning rate or use "
                   "SingularUpdate::DenseFallback");
    update_gram_terms(ev, h, lr, c);
    if (singular) {
      dense_fallback(ev, h, lr, c);
      return;
    }
    woodbury_update(ev, h, lr, c);
    ++stats_.updates;
    smin_bound_ *= std::max(c - tau, Scalar(0));
    smax_bound_ *= c + tau;
    stabilise(may_be_singular);
  }

  // min|λ(A)| < singular_threshold·c, from the eigenvalues of A (O(d³)).
  template <class H>
  bool is_singular(const H& h, Scalar c) {
    uw_.tmp_dm.noalias() = -h * uw_.dk.asDiagonal();
    uw_.a.noalias() = uw_.tmp_dm * h.transpose();
    uw_.a.diagonal().array() += c;
    uw_.eig->compute(uw_.a, Eigen::EigenvaluesOnly);
    return !(uw_.eig->eigenvalues().cwiseAbs().minCoeff() >= singular_threshold * c);
  }

  // Q, w̄ and ω: they need ∇_H, WᵀẎ and the old state only.
  template <class H>
  void update_gram_terms(const Evaluation& ev, const H& h, Scalar lr, Scalar c) {
    UpdateWorkspace& w = uw_;
    w.colsum = ev.ybar + Scalar(classes()) * ev.g_sum + Scalar(2) * ev.g_sq.cwiseProduct(ev.s);  // Gᵀ1
    sparse_gram(ev.rows, ev.g_target, w.entries, w.gram);                                        // ẎᵀẎ
    w.tmp_mm.noalias() = ev.wty.transpose() * h;                                                 // ẎᵀW·H
    w.gram.noalias() += ev.ybar * ev.g_sum.transpose();
    w.gram.noalias() += Scalar(2) * w.tmp_mm * ev.g_sq.asDiagonal();
    w.gram.noalias() += ev.g_sum * w.colsum.transpose();
    w.tmp_mm.noalias() = h.transpose() * ev.grad;
    w.gram.noalias() += Scalar(2) * ev.g_sq.asDiagonal() * w.tmp_mm;  // GᵀG
    w.gram_sym = (w.gram + w.gram.transpose()) * Scalar(0.5);
    w.tmp_dd.noalias() = ev.grad * h.transpose();  // ∇_H·Hᵀ (d×d)
    q_ *= c * c;
    q_.noalias() -= (c * lr) * (w.tmp_dd + w.tmp_dd.transpose());
    w.tmp_dm.noalias() = h * w.gram_sym;
    q_.noalias() += (lr * lr) * w.tmp_dm * h.transpose();
    w.tmp_d.noalias() = h * w.colsum;
    wbar_ = c * wbar_ - lr * w.tmp_d;

    w.tmp_m = w.dk.cwiseProduct(ev.omega_h) + lr * ev.g_sum;
    w.tmp_d.noalias() = h * w.tmp_m;
    omega_ = c * omega_ - w.tmp_d;
  }

  // W·A − η·1·(H·g_s)ᵀ is V·(U·A) + 1·ω_newᵀ: fold it into V, then the sparse part.
  template <class H>
  void dense_fallback(const Evaluation& ev, const H& h, Scalar lr, Scalar c) {
    u_ *= c;
    uw_.tmp_dm.noalias() = ev.uh * uw_.dk.asDiagonal();
    u_.noalias() -= uw_.tmp_dm * h.transpose();
    fold_factors_into_v();
    for (Eigen::Index i = 0; i < h.cols(); ++i)
      for (Eigen::Index j = 0; j < ev.rows.rows(); ++j)
        vt_.col(ev.rows(j, i)) -= (lr * ev.g_target(j, i)) * h.col(i);
    reset_factorization();  // also recomputes Q, w̄ exactly
    ++stats_.dense_fallbacks;
    ++stats_.updates;
  }

  // Woodbury: N = c·I − diag(dk)·HᵀH, P = N⁻¹·diag(dk); A⁻¹ = (1/c)(I + H·P·Hᵀ).
  template <class H>
  void woodbury_update(const Evaluation& ev, const H& h, Scalar lr, Scalar c) {
    UpdateWorkspace& w = uw_;
    w.hth.noalias() = h.transpose() * h;
    w.n = -(w.dk.asDiagonal() * w.hth);
    w.n.diagonal().array() += c;
    w.lu_n->compute(w.n);
    w.dk_diag = w.dk.asDiagonal();
    w.p = w.lu_n->solve(w.dk_diag);
    w.uinvt_h.noalias() = uinvt_ * h;  // U⁻ᵀH
    // U_new⁻ᵀ·H = (1/c)(X + X·P·HᵀH) with X = U⁻ᵀH, used for the rows of V.
    w.tmp_mm.noalias() = w.p * w.hth;
    w.unew_h = w.uinvt_h;
    w.unew_h.noalias() += w.uinvt_h * w.tmp_mm;
    w.unew_h /= c;
    // U_new⁻ᵀ = (1/c)(U⁻ᵀ + X·P·Hᵀ);  U_new = c·U − (U·H)·diag(dk)·Hᵀ.
    w.tmp_dm.noalias() = w.uinvt_h * w.p;
    uinvt_.noalias() += w.tmp_dm * h.transpose();
    uinvt_ /= c;
    u_ *= c;
    w.tmp_dm.noalias() = ev.uh * w.dk.asDiagonal();
    u_.noalias() -= w.tmp_dm * h.transpose();
    for (Eigen::Index i = 0; i < h.cols(); ++i)
      for (Eigen::Index j = 0; j < ev.rows.rows(); ++j)
        vt_.col(ev.rows(j, i)) -= (lr * ev.g_target(j, i)) * w.unew_h.col(i);
  }

  static bool due(int period, long since) { return period > 0 && since >= period; }

  void stabilise(bool force_check) {
    ++since_refresh_;
    ++since_check_;
    ++since_unfactorize_;
    if (due(unfactorize_period, since_unfactorize_)) {
      unfactorize();
      return;
    }
    const bool bound_out = smin_bound_ < Scalar(1) / condition_band || smax_bound_ > condition_band;
    if (force_check || bound_out || due(condition_check_period, since_check_)) {
      check_condition();
      return;
    }
    if (due(inverse_refresh_period, since_refresh_)) {
      // Through the kept LU and an explicit identity: u_.inverse() builds a
      // new LU, and lu.inverse() evaluates its identity into temporaries.
      uw_.lu_u->compute(u_);
      uw_.tmp_dd.setIdentity();
      uinvt_ = uw_.lu_u->solve(uw_.tmp_dd);
      uinvt_.transposeInPlace();
      since_refresh_ = 0;
      ++stats_.inverse_refreshes;
    }
  }

  // U = P·Σ·Rᵀ. Singular values outside the band are reset to 1 by
  // U ← F⁻¹U, V ← V·F, F = I + P_S(Σ_S − I)P_Sᵀ, which leaves W = V·U unchanged.
  // BDCSVD::compute allocates its own temporaries even into a kept solver;
  // JacobiSVD would not, but is about 15× slower at d = 256. This O(d³)
  // branch is the only one of train_step that allocates once sized.
  void check_condition() {
    ++stats_.condition_checks;
    UpdateWorkspace& w = uw_;
    w.svd->compute(u_, Eigen::ComputeFullU | Eigen::ComputeFullV);
    w.sigma = w.svd->singularValues();
    const Matrix& left = w.svd->matrixU();
    Eigen::Index ns = 0;
    for (Eigen::Index i = 0; i < w.sigma.size(); ++i)
      if (w.sigma(i) < Scalar(1) / condition_band || w.sigma(i) > condition_band) {
        w.ps.col(ns) = left.col(i);
        w.ss(ns++) = w.sigma(i);
        w.sigma(i) = Scalar(1);
      }
    if (ns > 0) {
      w.ps_scaled.leftCols(ns).noalias() =
          w.ps.leftCols(ns) * (w.ss.head(ns).array() - Scalar(1)).matrix().asDiagonal();
      for_each_row_block([&](Eigen::Index first, Eigen::Index count) {
        w.row_block.topLeftCorner(ns, count).noalias() = w.ps.leftCols(ns).transpose() * vt_.middleCols(first, count);
        vt_.middleCols(first, count).noalias() += w.ps_scaled.leftCols(ns) * w.row_block.topLeftCorner(ns, count);
      });
      stats_.condition_resets += ns;
    }
    // Rebuild U and U⁻ᵀ from the (corrected) SVD: exact inverse, no drift.
    w.tmp_dd.noalias() = left * w.sigma.asDiagonal();
    u_.noalias() = w.tmp_dd * w.svd->matrixV().transpose();
    w.tmp_dd.noalias() = left * w.sigma.cwiseInverse().asDiagonal();
    uinvt_.noalias() = w.tmp_dd * w.svd->matrixV().transpose();
    smin_bound_ = w.sigma.minCoeff();
    smax_bound_ = w.sigma.maxCoeff();
    since_check_ = since_refresh_ = 0;
    ++stats_.inverse_refreshes;
  }

  // Vᵀ ← Uᵀ·Vᵀ + ω·1ᵀ, i.e. V ← W.
  void fold_factors_into_v() {
    for_each_row_block([&](Eigen::Index first, Eigen::Index count) {
      uw_.row_block.leftCols(count).noalias() = u_.transpose() * vt_.middleCols(first, count);
      vt_.middleCols(first, count) = uw_.row_block.leftCols(count).colwise() + omega_;
    });
  }

  template <class F>
  void for_each_row_block(F&& f) {
    uw_.row_block.resize(hidden_size(), std::min(classes(), kRowBlock));
    for (Eigen::Index first = 0; first < classes(); first += kRowBlock)
      f(first, std::min(kRowBlock, classes() - first));
  }
};

}  // namespace losskit
