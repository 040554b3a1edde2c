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
///    says they may have left [1/condition_band, condition_band]; singular
///    values outside the band are reset to 1 by U ← F⁻¹U, V ← V·F with F
///    symmetric and acting only on those singular directions — W is unchanged,
///    cost O(D·d) per reset direction.
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
/// Not thread-safe for concurrent train_step calls on one object.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "core/checks.hpp"
#include "core/numerics.hpp"
#include "core/reduction.hpp"
#include "mse.hpp"
#include "z_loss.hpp"

namespace losskit {

/// What FactoredOutputLayer does with an update it cannot factorise.
enum class SingularUpdate { DenseFallback, Throw };

/// Counters of the stabilisation events, for monitoring and tests.
struct FactoredLayerStats {
  long updates = 0;               ///< train_step calls that changed the weights
  long inverse_refreshes = 0;     ///< U⁻ᵀ recomputed from U
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
  int inverse_refresh_period = 100;    ///< recompute U⁻ᵀ every this many updates (0 = never)
  int condition_check_period = 100;    ///< SVD check of U every this many updates (0 = only when the bound asks)
  Scalar condition_band = Scalar(10);  ///< singular values of U are kept in [1/band, band]; > 1
  int unfactorize_period = 1000;       ///< V ← W, U = I, Q and w̄ recomputed every this many updates (0 = never)
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
    vt_ = u_.transpose() * vt_;
    vt_.colwise() += omega_;
    reset_factorization();
    ++stats_.unfactorizations;
  }

  // ---- Z-loss with integer labels ---------------------------------------------------------

  /// Loss and ∂L/∂H without changing the layer.
  template <class H, class L, class G>
  Scalar value_and_gradient(const ZLoss<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                            const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<G>& grad_hidden) const {
    Workspace ws;
    // Update = false never touches the layer's state.
    return const_cast<FactoredOutputLayer&>(*this).template zloss_step<false>(ws, loss, hidden, labels, grad_hidden,
                                                                             Scalar(0));
  }

  /// Loss and ∂L/∂H at the current weights, then the exact SGD update of W.
  template <class H, class L, class G>
  Scalar train_step(const ZLoss<Scalar>& loss, const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<L>& labels,
                    const Eigen::DenseBase<G>& grad_hidden, Scalar learning_rate) {
    return zloss_step<true>(ws_, loss, hidden, labels, grad_hidden, learning_rate);
  }

  // ---- MSE against one-hot labels ---------------------------------------------------------

  template <class H, class L, class G>
  Scalar value_and_gradient(const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                            const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<G>& grad_hidden) const {
    Workspace ws;
    return const_cast<FactoredOutputLayer&>(*this).template onehot_step<false>(ws, loss, hidden, labels, grad_hidden,
                                                                              Scalar(0));
  }

  template <class H, class L, class G>
  Scalar train_step(const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<L>& labels,
                    const Eigen::DenseBase<G>& grad_hidden, Scalar learning_rate) {
    return onehot_step<true>(ws_, loss, hidden, labels, grad_hidden, learning_rate);
  }

  // ---- MSE against sparse targets: column i has value target_values(j, i) at row target_rows(j, i)

  template <class H, class R, class T, class G>
  Scalar value_and_gradient(const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                            const Eigen::DenseBase<R>& target_rows, const Eigen::DenseBase<T>& target_values,
                            const Eigen::DenseBase<G>& grad_hidden) const {
    Workspace ws;
    return const_cast<FactoredOutputLayer&>(*this).template sparse_step<false>(ws, loss, hidden, target_rows,
                                                                              target_values, grad_hidden, Scalar(0));
  }

  template <class H, class R, class T, class G>
  Scalar train_step(const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<R>& target_rows,
                    const Eigen::DenseBase<T>& target_values, const Eigen::DenseBase<G>& grad_hidden,
                    Scalar learning_rate) {
    return sparse_step<true>(ws_, loss, hidden, target_rows, target_values, grad_hidden, learning_rate);
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  static constexpr const char* kName = "FactoredOutputLayer";

  // Per-step buffers; kept as a member so that repeated train_step calls reuse them.
  struct Workspace {
    IndexMatrix rows;       // K×m target rows
    Matrix values;          // K×m target values (MSE) / target outputs o_c
    Matrix g_target;        // K×m ∂L/∂o_c (reduced)
    Vector g_sum, g_sq, s;  // m
    Matrix uh, qh, vy, grad, x, n, p, zt, m_mat, tmp;  // d×m and m×m
  };

  Matrix vt_;        // Vᵀ (d×D): column c is row c of V, contiguous
  Matrix u_, uinvt_; // U and U⁻ᵀ (d×d)
  Vector omega_;     // ω (d)
  Matrix q_;         // Q = WᵀW (d×d)
  Vector wbar_;      // w̄ = Wᵀ1 (d)
  Scalar smin_bound_ = 1, smax_bound_ = 1;  // bounds on U's singular values since the last SVD
  long since_refresh_ = 0, since_check_ = 0, since_unfactorize_ = 0;
  FactoredLayerStats stats_;
  Workspace ws_;

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

  template <bool Update, class H, class L, class G>
  Scalar zloss_step(Workspace& ws, const ZLoss<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                    const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<G>& grad, Scalar lr) {
    check_common(hidden, grad, Update, lr);
    detail::check_positive("ZLoss", "a", loss.a);
    detail::check_finite("ZLoss", "b", loss.b);
    if (classes() < 2) detail::fail("ZLoss", "outputs", "needs at least 2 classes (rows), got ", classes());
    detail::check_labels("ZLoss", labels, hidden.cols(), classes());
    const Eigen::Index m = hidden.cols(), dim = classes();
    ws.rows.resize(1, m);
    for (Eigen::Index i = 0; i < m; ++i) ws.rows(0, i) = Eigen::Index(labels.derived().coeff(i));
    const Scalar factor = detail::reduction_factor<Scalar>(loss.reduction, Acc(m));
    const detail::eval_t<H> h(hidden.derived());
    return run<Update>(ws, h.matrix(), grad, lr, factor, [&](Eigen::Index i, Scalar s, Scalar q) {
      const SphericalTerms<Scalar> t = loss.terms_unchecked(s, q, ws.values(0, i), dim);
      ws.g_target(0, i) = t.d_target;
      ws.g_sum(i) = t.d_sum;
      ws.g_sq(i) = t.d_sum_squares;
      return t.value;
    });
  }

  template <bool Update, class H, class L, class G>
  Scalar onehot_step(Workspace& ws, const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                     const Eigen::DenseBase<L>& labels, const Eigen::DenseBase<G>& grad, Scalar lr) {
    check_common(hidden, grad, Update, lr);
    detail::check_labels("MSE", labels, hidden.cols(), classes());
    const Eigen::Index m = hidden.cols();
    ws.rows.resize(1, m);
    for (Eigen::Index i = 0; i < m; ++i) ws.rows(0, i) = Eigen::Index(labels.derived().coeff(i));
    const Scalar factor = detail::reduction_factor<Scalar>(loss.reduction, Acc(m) * Acc(classes()));
    const detail::eval_t<H> h(hidden.derived());
    return run<Update>(ws, h.matrix(), grad, lr, factor, [&](Eigen::Index i, Scalar, Scalar q) {
      // Σ_k (o_k − [k = c])² = q − 2·o_c + 1.
      const Scalar oc = ws.values(0, i);
      ws.g_target(0, i) = Scalar(-2);
      ws.g_sum(i) = Scalar(0);
      ws.g_sq(i) = Scalar(1);
      return q - Scalar(2) * oc + Scalar(1);
    });
  }

  template <bool Update, class H, class R, class T, class G>
  Scalar sparse_step(Workspace& ws, const MSE<Scalar>& loss, const Eigen::DenseBase<H>& hidden,
                     const Eigen::DenseBase<R>& target_rows, const Eigen::DenseBase<T>& target_values,
                     const Eigen::DenseBase<G>& grad, Scalar lr) {
    check_common(hidden, grad, Update, lr);
    detail::require_integer_labels<R>();
    detail::require_scalar<Scalar, T>();
    const Eigen::Index m = hidden.cols(), k = target_rows.rows();
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
    ws.rows.resize(k, m);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) ws.rows(j, i) = Eigen::Index(target_rows.derived().coeff(j, i));
    const Scalar factor = detail::reduction_factor<Scalar>(loss.reduction, Acc(m) * Acc(classes()));
    const detail::eval_t<H> h(hidden.derived());
    const detail::eval_t<T> y(target_values.derived());
    return run<Update>(ws, h.matrix(), grad, lr, factor, [&](Eigen::Index i, Scalar, Scalar q) {
      // Σ_k (o_k − t_k)² = q − 2·Σ_j y_j·o_{r_j} + Σ_j y_j².
      Scalar v = q;
      for (Eigen::Index j = 0; j < k; ++j) {
        const Scalar yj = y.coeff(j, i);
        v += yj * (yj - Scalar(2) * ws.values(j, i));
        ws.g_target(j, i) = Scalar(-2) * yj;
      }
      ws.g_sum(i) = Scalar(0);
      ws.g_sq(i) = Scalar(1);
      return v;
    });
  }

  // The shared step. `terms(i, s_i, q_i)` reads the target outputs from
  // ws.values(:, i), writes the unreduced partials into ws.g_target(:, i),
  // ws.g_sum(i), ws.g_sq(i), and returns the unreduced loss of sample i.
  template <bool Update, class H, class G, class Terms>
  Scalar run(Workspace& ws, const H& h, const Eigen::DenseBase<G>& grad_out, Scalar lr, Scalar factor, Terms&& terms) {
    const Eigen::Index m = h.cols(), k = ws.rows.rows();
    ws.uh.noalias() = u_ * h;
    ws.qh.noalias() = q_ * h;
    ws.s.noalias() = h.transpose() * wbar_;
    const Vector omega_h = h.transpose() * omega_;
    ws.values.resize(k, m);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) ws.values(j, i) = vt_.col(ws.rows(j, i)).dot(ws.uh.col(i)) + omega_h(i);
    ws.g_target.resize(k, m);
    ws.g_sum.resize(m);
    ws.g_sq.resize(m);
    Acc total(0);
    for (Eigen::Index i = 0; i < m; ++i) total += Acc(terms(i, ws.s(i), h.col(i).dot(ws.qh.col(i))));
    ws.g_target *= factor;
    ws.g_sum *= factor;
    ws.g_sq *= factor;
    const Scalar value = Scalar(total * Acc(factor));

    // ∇_H = WᵀẎ + w̄·g_sᵀ + 2·Q·H·diag(g_q), with WᵀẎ = Uᵀ(VᵀẎ) + ω·ȳᵀ.
    ws.vy.setZero(h.rows(), m);
    Vector ybar = Vector::Zero(m);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) {
        ws.vy.col(i) += ws.g_target(j, i) * vt_.col(ws.rows(j, i));
        ybar(i) += ws.g_target(j, i);
      }
    ws.grad.noalias() = u_.transpose() * ws.vy;  // WᵀẎ, completed below
    ws.grad.noalias() += omega_ * ybar.transpose();
    ws.zt = ws.grad;  // keep WᵀẎ (= Rᵀ) for GᵀG
    ws.grad.noalias() += wbar_ * ws.g_sum.transpose();
    ws.grad.noalias() += ws.qh * (Scalar(2) * ws.g_sq).asDiagonal();

    const bool finite = std::isfinite(double(value)) && ws.g_target.allFinite() && ws.g_sum.allFinite() &&
                        ws.g_sq.allFinite() && ws.grad.allFinite();
    if constexpr (Update) {
      if (finite && lr > Scalar(0)) {
        update(ws, h, ybar, lr);  // may throw (singular update, Throw policy) before changing anything
      } else if (!finite) {
        ++stats_.skipped_nonfinite;
      }
    } else {
      (void)lr;
    }
    G& g = detail::prepare_output(kName, "grad_hidden", grad_out, h.rows(), m);
    g = ws.grad;
    return value;
  }

  // Sum over pairs of entries of Ẏ sharing a row: (ẎᵀẎ)_{ij}.
  static void sparse_gram(const IndexMatrix& rows, const Matrix& vals, Matrix& out) {
    const Eigen::Index k = rows.rows(), m = rows.cols();
    out.setZero(m, m);
    std::vector<std::pair<Eigen::Index, Eigen::Index>> entries;  // (row, flat index j + k·i)
    entries.reserve(std::size_t(k * m));
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
  void update(Workspace& ws, const H& h, const Vector& ybar, Scalar lr) {
    const Eigen::Index d = h.rows(), m = h.cols(), k = ws.rows.rows();
    const Scalar c = Scalar(1) - lr * weight_decay;
    const Vector dk = Scalar(2) * lr * ws.g_sq;  // A = c·I − H·diag(dk)·Hᵀ
    const Vector h_norm2 = h.colwise().squaredNorm().transpose();
    const Scalar tau = dk.cwiseAbs().dot(h_norm2);  // ‖H·diag(dk)·Hᵀ‖₂ <= tau

    bool singular = false;
    if (tau >= c / Scalar(2)) {
      Matrix a = -h * dk.asDiagonal() * h.transpose();
      a.diagonal().array() += c;
      const Eigen::SelfAdjointEigenSolver<Matrix> eig(a, Eigen::EigenvaluesOnly);
      singular = !(eig.eigenvalues().cwiseAbs().minCoeff() >= singular_threshold * c);
    }
    if (singular && on_singular == SingularUpdate::Throw)
      detail::fail(kName, "learning_rate",
                   "singular update: the factor (1 - lr*weight_decay)I - 2*lr*H*diag(dL/dq)*H^T has an eigenvalue "
                   "below singular_threshold (one sample: 1 - 2*lr*g_q*|h|^2 ~ 0); lower the learning rate or use "
                   "SingularUpdate::DenseFallback");

    // Q and w̄ first: they need ∇_H, Rᵀ and the old state only.
    const Vector colsum = ybar + Scalar(classes()) * ws.g_sum + Scalar(2) * ws.g_sq.cwiseProduct(ws.s);  // Gᵀ1
    sparse_gram(ws.rows, ws.g_target, ws.m_mat);                                                        // ẎᵀẎ
    ws.tmp.noalias() = ws.zt.transpose() * h;                                                           // ẎᵀW·H
    ws.m_mat.noalias() += ybar * ws.g_sum.transpose();
    ws.m_mat.noalias() += Scalar(2) * ws.tmp * ws.g_sq.asDiagonal();
    ws.m_mat.noalias() += ws.g_sum * colsum.transpose();
    ws.tmp.noalias() = h.transpose() * ws.grad;
    ws.m_mat.noalias() += Scalar(2) * ws.g_sq.asDiagonal() * ws.tmp;  // GᵀG
    const Matrix m_sym = (ws.m_mat + ws.m_mat.transpose()) * Scalar(0.5);
    ws.x.noalias() = ws.grad * h.transpose();  // ∇_H·Hᵀ (d×d)
    q_ *= c * c;
    q_.noalias() -= (c * lr) * (ws.x + ws.x.transpose());
    ws.tmp.noalias() = h * m_sym;
    q_.noalias() += (lr * lr) * ws.tmp * h.transpose();
    wbar_ = c * wbar_ - lr * (h * colsum);

    const Vector omega_h = h.transpose() * omega_;
    omega_ = c * omega_ - h * (dk.cwiseProduct(omega_h) + lr * ws.g_sum);

    if (singular) {
      // W·A − η·1·(H·g_s)ᵀ is V·(U·A) + 1·ω_newᵀ: fold it into V, then the sparse part.
      u_ *= c;
      u_.noalias() -= ws.uh * dk.asDiagonal() * h.transpose();
      vt_ = u_.transpose() * vt_;
      vt_.colwise() += omega_;
      for (Eigen::Index i = 0; i < m; ++i)
        for (Eigen::Index j = 0; j < k; ++j) vt_.col(ws.rows(j, i)) -= (lr * ws.g_target(j, i)) * h.col(i);
      reset_factorization();  // also recomputes Q, w̄ exactly
      ++stats_.dense_fallbacks;
      ++stats_.updates;
      return;
    }

    // Woodbury: N = c·I − diag(dk)·HᵀH, P = N⁻¹·diag(dk); A⁻¹ = (1/c)(I + H·P·Hᵀ).
    const Matrix hth = h.transpose() * h;
    ws.n = -(dk.asDiagonal() * hth);
    ws.n.diagonal().array() += c;
    ws.p = ws.n.partialPivLu().solve(Matrix(dk.asDiagonal()));
    ws.x.resize(d, m);
    ws.x.noalias() = uinvt_ * h;  // U⁻ᵀH
    // U_new⁻ᵀ·H = (1/c)(X + X·P·HᵀH), used for the rows of V.
    ws.tmp.noalias() = ws.p * hth;
    Matrix unew_h = ws.x;
    unew_h.noalias() += ws.x * ws.tmp;
    unew_h /= c;
    // U_new⁻ᵀ = (1/c)(U⁻ᵀ + X·P·Hᵀ);  U_new = c·U − (U·H)·diag(dk)·Hᵀ.
    ws.tmp.noalias() = ws.x * ws.p;
    uinvt_.noalias() += ws.tmp * h.transpose();
    uinvt_ /= c;
    u_ *= c;
    ws.tmp.noalias() = ws.uh * dk.asDiagonal();
    u_.noalias() -= ws.tmp * h.transpose();
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < k; ++j) vt_.col(ws.rows(j, i)) -= (lr * ws.g_target(j, i)) * unew_h.col(i);

    ++stats_.updates;
    smin_bound_ *= std::max(c - tau, Scalar(0));
    smax_bound_ *= c + tau;
    stabilise(tau >= c / Scalar(2));
  }

  void stabilise(bool force_check) {
    ++since_refresh_;
    ++since_check_;
    ++since_unfactorize_;
    if (unfactorize_period > 0 && since_unfactorize_ >= unfactorize_period) {
      unfactorize();
      return;
    }
    const bool bound_out = smin_bound_ < Scalar(1) / condition_band || smax_bound_ > condition_band;
    if (force_check || bound_out || (condition_check_period > 0 && since_check_ >= condition_check_period)) {
      check_condition();
      return;
    }
    if (inverse_refresh_period > 0 && since_refresh_ >= inverse_refresh_period) {
      uinvt_ = u_.inverse().transpose();
      since_refresh_ = 0;
      ++stats_.inverse_refreshes;
    }
  }

  // U = P·Σ·Rᵀ. Singular values outside the band are reset to 1 by
  // U ← F⁻¹U, V ← V·F, F = I + P_S(Σ_S − I)P_Sᵀ, which leaves W = V·U unchanged.
  void check_condition() {
    ++stats_.condition_checks;
    const Eigen::Index d = u_.rows();
    Eigen::BDCSVD<Matrix> svd(u_, Eigen::ComputeFullU | Eigen::ComputeFullV);
    Vector sigma = svd.singularValues();
    const Matrix& left = svd.matrixU();
    std::vector<Eigen::Index> out;
    for (Eigen::Index i = 0; i < d; ++i)
      if (sigma(i) < Scalar(1) / condition_band || sigma(i) > condition_band) out.push_back(i);
    if (!out.empty()) {
      const Eigen::Index ns = Eigen::Index(out.size());
      Matrix ps(d, ns);
      Vector ss(ns);
      for (Eigen::Index j = 0; j < ns; ++j) {
        ps.col(j) = left.col(out[std::size_t(j)]);
        ss(j) = sigma(out[std::size_t(j)]);
        sigma(out[std::size_t(j)]) = Scalar(1);
      }
      const Matrix pv = ps.transpose() * vt_;  // ns×D
      vt_.noalias() += ps * (ss.array() - Scalar(1)).matrix().asDiagonal() * pv;
      stats_.condition_resets += ns;
    }
    // Rebuild U and U⁻ᵀ from the (corrected) SVD: exact inverse, no drift.
    u_.noalias() = left * sigma.asDiagonal() * svd.matrixV().transpose();
    uinvt_.noalias() = left * sigma.cwiseInverse().asDiagonal() * svd.matrixV().transpose();
    smin_bound_ = sigma.minCoeff();
    smax_bound_ = sigma.maxCoeff();
    since_check_ = since_refresh_ = 0;
    ++stats_.inverse_refreshes;
  }
};

}  // namespace losskit
