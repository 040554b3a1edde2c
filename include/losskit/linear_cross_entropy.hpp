#pragma once
/// LinearCrossEntropy<S> — softmax cross-entropy on a linear head, computed
/// block by block without ever holding the C×N logits (Cut Cross-Entropy:
/// Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
/// ICLR 2025, arXiv 2411.09009; Liger-Kernel's fused linear cross-entropy).
///
/// Hidden states H (d×N, samples are columns), weight W (C×d, one row per
/// class, as torch.nn.Linear stores it), optional bias b (length C; an empty
/// vector = no bias), integer labels y (length N):
///
///   logits X = W·H + b·1ᵀ (C×N),   L = CrossEntropy(X, y)
///
/// with every CrossEntropy option and exactly its semantics (class_weights,
/// ignore_index, label_smoothing, z_penalty, reduction, sample weights:
/// Mean = Σ s_i·ℓ_i / Σ s_i·w_{y_i}; see cross_entropy.hpp). Gradients by the
/// chain rule from G = ∂L/∂X:
///
///   ∂L/∂H = Wᵀ·G,   ∂L/∂W = G·Hᵀ,   ∂L/∂b = G·1.
///
/// Algorithm, for class blocks X_B = W_B·H + b_B of `block_size` rows:
///   pass 1: X_B by Eigen's GEMM into one reusable block buffer; per column an
///           online max m, Σ exp(x − m), Σ u·(x − m) (smoothing) and the
///           label's logit (Milakov & Gimelshein's online softmax, per block
///           across all N columns instead of per chunk of one column);
///   close:  per column, the loss and the gradient coefficients, by the same
///           formulas as CrossEntropy (detail::CrossEntropyColumn, shared);
///   pass 2: X_B recomputed (unless C <= block_size: one block, still in the
///           buffer) and turned in place into G_B (same formula and grouping
///           as CrossEntropy), then grad_H += W_Bᵀ·G_B, grad_W_B = G_B·Hᵀ,
///           grad_b_B = G_B·1.
/// The value alone costs one GEMM (2·C·d·N flops); value and gradient four
/// (8·C·d·N, against 6·C·d·N when the logits are materialised: recomputing
/// X_B is the price of not storing X). The alternative, chunks of columns
/// with every class computed once (6·C·d·N), streams and repacks all of W
/// and grad_W for every chunk; a trial (chunks of N/32, C = 32768, d = 512,
/// one thread, loaded machine) took 1.6× the materialised path against 1.4×
/// for this algorithm in the same runs, so it is not used.
///
/// Memory: a call uses one block (block_size×N), a few length-N vectors
/// and Eigen's GEMM packing buffers (bounded by the cache sizes): with the
/// default block_size and C >= 32768 that is at most 1/16 of the C×N logits
/// (tested with a counting allocator). The block and the vectors come from a
/// pool with one workspace per concurrent caller (core/workspace.hpp), so
/// concurrent const calls share nothing and a repeated call with the same
/// shapes allocates only what Eigen's GEMM packs on the heap (nothing where
/// the packing fits EIGEN_STACK_ALLOCATION_LIMIT). Outputs of the right size
/// are not reallocated.
///
/// Sparsity filter (CCE's gradient filtering, off by default): with
/// sparsity_threshold τ > 0 and no label smoothing, pass 2 skips a block (no
/// recomputation, no gradient GEMMs; its grad_W rows and grad_b entries are
/// 0) when every counted column's softmax entries in the block are below τ
/// and no counted label falls in it. The loss is unchanged. Each dropped
/// entry of G is |G_kj| = c_j·p_kj < τ·c_j, c_j = f·r_j·(mass_j +
/// 2·z_penalty·w_{y_j}·|lse_j|) (f the reduction factor, r_j the sample
/// weight, mass_j = (1−ε)·w_{y_j}), so the error is bounded by
///   |Δ∂L/∂b_k| < τ·Σ_j c_j,   |Δ∂L/∂W_ki| < τ·Σ_j c_j·|H_ij|,
///   |Δ∂L/∂H_ij| < τ·c_j·Σ_{k skipped} |W_ki|;
/// for the plain Mean loss Σ_j c_j = 1: |Δ∂L/∂b| < τ, |Δ∂L/∂W| < τ·max|H|.
/// It keeps one block maximum per block and column (C/block_size × N).
///
/// Non-finite values: a column whose largest logit is +inf or NaN gives NaN
/// loss and a NaN gradient column (as CrossEntropy); finite H, W, b give a
/// finite loss and gradient unless the logits overflow.
#include <Eigen/Core>
#include <cmath>
#include <functional>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/checks.hpp"
#include "core/functor.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"
#include "core/workspace.hpp"
#include "cross_entropy.hpp"

namespace losskit {

template <class Scalar_>
class LinearCrossEntropy : public detail::CrossEntropyOptions<Scalar_> {
  using Options = detail::CrossEntropyOptions<Scalar_>;

 public:
  using Scalar = Scalar_;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Result = typename CrossEntropy<Scalar>::Result;
  using Options::class_weights;
  using Options::ignore_index;
  using Options::label_smoothing;
  using Options::z_penalty;
  static_assert(std::is_floating_point<Scalar>::value, "losskit: a loss's Scalar must be float or double");

  Reduction reduction = Reduction::Mean;  ///< Mean (default): divide by Σ s_i·w_{y_i}; Sum: add
  /// Classes per block, >= 1. The block buffer is block_size×N, and Eigen's
  /// GEMM packs up to as much again for grad_W = G_B·Hᵀ: 512 keeps both
  /// under 1/16 of the logits from C = 16384 on, a float block of 2048
  /// columns (4 MiB) in a server's L3, and the GEMMs near Eigen's rate.
  Eigen::Index block_size = 512;
  Scalar sparsity_threshold = 0;  ///< τ of the sparsity filter, in [0, 1); 0 (default) = off

  using Accumulator = detail::acc_t<Scalar>;  ///< double for float and double
  /// Vocabulary-parallel (as Megatron-LM splits the head): this caller's W
  /// and b hold classes [class_offset, class_offset + W.rows()) of
  /// total_classes; labels and class_weights stay global (length
  /// total_classes). total_classes = 0 (default): W holds every class.
  Eigen::Index class_offset = 0;
  Eigen::Index total_classes = 0;
  /// With a slice, the two in-place element-wise all-reduces over the ranks
  /// (max of n Scalars, sum of n Accumulators), e.g. MPI_Allreduce with
  /// MPI_IN_PLACE; each is called once per call, by every rank.
  std::function<void(Scalar* values, Eigen::Index n)> all_reduce_max;
  std::function<void(Accumulator* values, Eigen::Index n)> all_reduce_sum;

  template <class H, class W, class B, class L>
  Scalar operator()(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<W>& weight,
                    const Eigen::DenseBase<B>& bias, const Eigen::DenseBase<L>& labels) const {
    return run(hidden, weight, bias, labels, detail::UnitWeights{}, no_grad, no_grad, no_grad).loss;
  }

  template <class H, class W, class B, class L, class S>
  Scalar operator()(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<W>& weight,
                    const Eigen::DenseBase<B>& bias, const Eigen::DenseBase<L>& labels,
                    const Eigen::DenseBase<S>& sample_weights) const {
    return run(hidden, weight, bias, labels, sample_weights, no_grad, no_grad, no_grad).loss;
  }

  /// grad_b: length C, or (b empty) an empty or resizable object.
  template <class H, class W, class B, class L, class GH, class GW, class GB>
  Scalar value_and_gradient(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<W>& weight,
                            const Eigen::DenseBase<B>& bias, const Eigen::DenseBase<L>& labels,
                            const Eigen::DenseBase<GH>& grad_H, const Eigen::DenseBase<GW>& grad_W,
                            const Eigen::DenseBase<GB>& grad_b) const {
    return run(hidden, weight, bias, labels, detail::UnitWeights{}, grad_H.derived(), grad_W.derived(), grad_b.derived())
        .loss;
  }

  template <class H, class W, class B, class L, class S, class GH, class GW, class GB>
  Scalar value_and_gradient(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<W>& weight,
                            const Eigen::DenseBase<B>& bias, const Eigen::DenseBase<L>& labels,
                            const Eigen::DenseBase<S>& sample_weights, const Eigen::DenseBase<GH>& grad_H,
                            const Eigen::DenseBase<GW>& grad_W, const Eigen::DenseBase<GB>& grad_b) const {
    return run(hidden, weight, bias, labels, sample_weights, grad_H.derived(), grad_W.derived(), grad_b.derived())
        .loss;
  }

  /// The loss with its cross-entropy and penalty parts (as CrossEntropy::evaluate).
  template <class H, class W, class B, class L>
  Result evaluate(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<W>& weight,
                  const Eigen::DenseBase<B>& bias, const Eigen::DenseBase<L>& labels) const {
    return run(hidden, weight, bias, labels, detail::UnitWeights{}, no_grad, no_grad, no_grad);
  }

  /// With sample weights; each gradient may be losskit::no_grad only all together.
  template <class H, class W, class B, class L, class S, class GH, class GW, class GB>
  Result evaluate(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<W>& weight,
                  const Eigen::DenseBase<B>& bias, const Eigen::DenseBase<L>& labels,
                  const Eigen::DenseBase<S>& sample_weights, const GH& grad_H, const GW& grad_W,
                  const GB& grad_b) const {
    return run(hidden, weight, bias, labels, sample_weights, grad_H, grad_W, grad_b);
  }

 private:
  using Acc = detail::acc_t<Scalar>;
  using AccVector = Eigen::Matrix<Acc, Eigen::Dynamic, 1>;
  using Column = detail::CrossEntropyColumn<Scalar>;
  static constexpr const char* kName = "LinearCrossEntropy";

  /// Per column after pass 1: inactive (ignored label or sample weight 0),
  /// counted, or non-finite (NaN loss and gradient).
  enum State : unsigned char { kInactive, kCounted, kNonFinite };

  using Part = detail::CrossEntropyParts<Acc>;

  /// What pass 1 gathers per column, and what the closing turns it into.
  struct Stats {
    Vector m, x_y;
    AccVector sum_e, dot;
    std::vector<Column> column;
    Eigen::Matrix<unsigned char, Eigen::Dynamic, 1> state;
    Matrix block_max;  ///< (blocks × N), only with the sparsity filter
    Vector global_max;  ///< combine_ranks' scratch: N, and 3N sums
    AccVector sums;
  };

  /// What a call reuses: checked out of workspaces_, one per concurrent
  /// caller, so a repeated call with the same shapes allocates nothing.
  struct Workspace {
    Matrix buffer;  ///< one block of logits (block_size × N)
    Stats st;
  };
  detail::WorkspacePool<Workspace> workspaces_;

  bool sliced(Eigen::Index classes) const { return total_classes != 0 && total_classes != classes; }

  template <class HX, class WX, class BX, class LX, class SW, class GH, class GW, class GB>
  void check(const HX& h, const WX& w, const BX& b, const LX& y, const SW& s, const GH& grad_H, const GW& grad_W,
             const GB& grad_b) const {
    detail::check_not_empty(kName, "H", h);
    detail::check_not_empty(kName, "W", w);
    const Eigen::Index d = h.rows(), n = h.cols(), classes = w.rows();
    if (w.cols() != d)
      detail::fail(kName, "W", "has ", w.cols(), " columns, expected H's row count d = ", d,
                   " (W is C×d, one row per class; H is d×N, one column per sample)");
    if (b.size() != 0 && ((b.rows() != 1 && b.cols() != 1) || b.size() != classes))
      detail::fail(kName, "b", "expected a vector of length C = ", classes, " (W's row count) or an empty one, got ",
                   b.rows(), "x", b.cols());
    if (block_size < 1) detail::fail(kName, "block_size", "must be >= 1, got ", block_size);
    if (!(sparsity_threshold >= Scalar(0) && sparsity_threshold < Scalar(1)))
      detail::fail(kName, "sparsity_threshold", "must be in [0, 1), got ", sparsity_threshold);
    if (class_offset < 0) detail::fail(kName, "class_offset", "must be >= 0, got ", class_offset);
    if (total_classes == 0 && class_offset != 0)
      detail::fail(kName, "class_offset", "is ", class_offset, " but total_classes is 0 (no slice)");
    if (total_classes != 0 && total_classes < class_offset + classes)
      detail::fail(kName, "total_classes", total_classes, " is less than class_offset + W's row count = ", class_offset,
                   " + ", classes);
    if (sliced(classes) && (!all_reduce_max || !all_reduce_sum))
      detail::fail(kName, "all_reduce_max", "and all_reduce_sum must both be set when W is a slice (classes ",
                   class_offset, "..", class_offset + classes, " of ", total_classes, ")");
    const Eigen::Index total = total_classes != 0 ? total_classes : classes;
    this->check_options(kName, total);
    if ((y.rows() != 1 && y.cols() != 1) || y.size() != n)
      detail::fail(kName, "labels", "expected a vector of length N = ", n, " (one label per column of H), got ",
                   y.rows(), "x", y.cols());
    detail::check_labels(kName, y, n, total, true, ignore_index);
    if constexpr (detail::is_weighted<SW>) detail::check_sample_weights<Scalar>(kName, s, n);
    if constexpr (detail::wants_grad<GH>) {
      static_assert(detail::wants_grad<GW> && detail::wants_grad<GB>,
                    "losskit: LinearCrossEntropy gives all three gradients or none");
      detail::check_output(kName, "grad_H", grad_H, d, n);
      detail::check_output(kName, "grad_W", grad_W, classes, d);
      if (b.size() != 0) {
        detail::check_output(kName, "grad_b", grad_b, classes, 1);
      } else if constexpr (!std::is_base_of<Eigen::PlainObjectBase<GB>, GB>::value) {
        if (grad_b.size() != 0)
          detail::fail(kName, "grad_b", "must be empty (or resizable) when b is empty, got ", grad_b.rows(), "x",
                       grad_b.cols());
      }
    }
  }

  template <class H, class W, class B, class L, class S, class GH, class GW, class GB>
  Result run(const Eigen::DenseBase<H>& hidden, const Eigen::DenseBase<W>& weight, const Eigen::DenseBase<B>& bias,
             const Eigen::DenseBase<L>& labels, const S& sample_weights, const GH& grad_H, const GW& grad_W,
             const GB& grad_b) const {
    detail::require_scalar<Scalar, H>();
    detail::require_scalar<Scalar, W>();
    detail::require_scalar<Scalar, B>();
    const detail::eval_t<H> h(hidden.derived());
    const detail::eval_t<W> w(weight.derived());
    const detail::eval_t<B> b(bias.derived());
    const detail::eval_t<L> y(labels.derived());
    decltype(auto) s = eval_weights(sample_weights);
    check(h, w, b, y, s, grad_H, grad_W, grad_b);
    if (class_weights.size() > 0) return passes(h, w, b, y, s, detail::ClassWeightMass<Scalar>{class_weights}, grad_H, grad_W, grad_b);
    return passes(h, w, b, y, s, detail::UnitMass<Scalar>{}, grad_H, grad_W, grad_b);
  }

  static detail::UnitWeights eval_weights(detail::UnitWeights w) { return w; }
  template <class S>
  static detail::eval_t<S> eval_weights(const Eigen::DenseBase<S>& s) {
    return s.derived();
  }

  template <class SW>
  static Scalar sample_weight(const SW& s, Eigen::Index j) {
    if constexpr (detail::is_weighted<SW>)
      return s.coeff(j);
    else
      return Scalar(1);
  }

  /// Everything after the checks; U is the smoothing mass's per-class factor.
  template <class HX, class WX, class BX, class LX, class SW, class U, class GH, class GW, class GB>
  Result passes(const HX& h, const WX& w, const BX& b, const LX& y, const SW& s, const U& u, const GH& grad_H,
                const GW& grad_W, const GB& grad_b) const {
    const Eigen::Index n = h.cols(), classes = w.rows();
    Acc normaliser(0);
    for (Eigen::Index j = 0; j < n; ++j) {
      const Acc share = this->label_share(static_cast<long long>(y.coeff(j)));
      normaliser += detail::is_weighted<SW> ? Acc(sample_weight(s, j)) * share : share;
    }
    const Scalar factor = detail::reduction_factor<Scalar>(reduction, normaliser);
    const Eigen::Index total = total_classes != 0 ? total_classes : classes;
    const Scalar keep = Scalar(1) - label_smoothing, spread = label_smoothing / Scalar(total);
    const Acc weight_total = class_weights.size() > 0 ? Acc(class_weights.sum()) : Acc(total);
    const Eigen::Index bs = std::min(block_size, classes);
    const bool filter = detail::wants_grad<GH> && sparsity_threshold > Scalar(0) && spread == Scalar(0);

    const auto ws = workspaces_.acquire();
    Matrix& buffer = ws->buffer;
    Stats& st = ws->st;
    buffer.resize(bs, n);
    first_pass(h, w, b, y, s, u, buffer, st, spread > Scalar(0), filter);

    const Part sum = detail::column_sum<Part>(n, 1, [&](Eigen::Index j) {
      if (st.state(j) != kCounted) return st.state(j) == kNonFinite ? nan_part() : Part{};
      const Eigen::Index l = static_cast<Eigen::Index>(y.coeff(j));
      const Scalar w_y = class_weights.size() > 0 ? class_weights(l) : Scalar(1), r = sample_weight(s, j);
      const auto lm = Column::label_mass(keep, spread, weight_total, w_y, st.x_y(j), st.m(j), st.dot(j));
      st.column[std::size_t(j)] =
          Column::close(lm.mass, lm.shifted, Acc(w_y), st.m(j), st.sum_e(j), z_penalty, Scalar(factor * r));
      const Column& c = st.column[std::size_t(j)];
      return Part{c.ce, c.z}.scaled(Acc(r));
    });
    Result out;
    out.normaliser = static_cast<double>(normaliser);
    out.cross_entropy = static_cast<Scalar>(sum.ce * Acc(factor));
    out.z_penalty = static_cast<Scalar>(sum.z * Acc(factor));
    out.loss = static_cast<Scalar>((sum.ce + sum.z) * Acc(factor));
    if constexpr (detail::wants_grad<GH>) {
      auto& gh = detail::prepare_output(kName, "grad_H", grad_H, h.rows(), n);
      auto& gw = detail::prepare_output(kName, "grad_W", grad_W, classes, h.rows());
      // With b empty a view grad_b (checked empty) is left alone, a plain object emptied.
      GB& gb = const_cast<GB&>(grad_b);
      if (b.size() != 0 || std::is_base_of<Eigen::PlainObjectBase<GB>, GB>::value)
        detail::prepare_output(kName, "grad_b", grad_b, b.size() != 0 ? classes : 0, 1);
      second_pass(h, w, b, y, s, u, factor, keep, spread, buffer, st, filter, gh, gw, gb);
    }
    return out;
  }

  static Part nan_part() {
    return {std::numeric_limits<Acc>::quiet_NaN(), std::numeric_limits<Acc>::quiet_NaN()};
  }

  /// The logits of classes [k0, k0 + len) into the block buffer's first len
  /// rows (a contiguous len×N matrix).
  template <class HX, class WX, class BX>
  static Eigen::Map<Matrix> logits_block(const HX& h, const WX& w, const BX& b, Eigen::Index k0, Eigen::Index len,
                                         Matrix& buffer) {
    Eigen::Map<Matrix> x(buffer.data(), len, h.cols());
    x.noalias() = w.matrix().middleRows(k0, len) * h.matrix();
    if (b.size() != 0) x.colwise() += b.matrix().reshaped().segment(k0, len);
    return x;
  }

  template <class LX, class SW>
  bool active(const LX& y, const SW& s, Eigen::Index j) const {
    return static_cast<long long>(y.coeff(j)) != ignore_index && sample_weight(s, j) != Scalar(0);
  }

  template <class HX, class WX, class BX, class LX, class SW, class U>
  void first_pass(const HX& h, const WX& w, const BX& b, const LX& y, const SW& s, const U& u, Matrix& buffer,
                  Stats& st, bool need_dot, bool filter) const {
    const Eigen::Index n = h.cols(), classes = w.rows(), bs = buffer.rows();
    st.m.setConstant(n, std::numeric_limits<Scalar>::lowest());
    st.x_y.setZero(n);
    st.sum_e.setZero(n);
    st.dot.setZero(n);
    st.column.resize(std::size_t(n));
    st.state.resize(n);
    for (Eigen::Index j = 0; j < n; ++j) st.state(j) = active(y, s, j) ? kCounted : kInactive;
    if (filter) st.block_max.resize((classes + bs - 1) / bs, n);
    Acc u_before(0);  // Σ u over the classes of the blocks already seen
    for (Eigen::Index k0 = 0, blk = 0; k0 < classes; k0 += bs, ++blk) {
      const Eigen::Index len = std::min(bs, classes - k0);
      const Eigen::Map<Matrix> x = logits_block(h, w, b, k0, len, buffer);
      detail::column_for(n, len, [&](Eigen::Index j) {
        if (st.state(j) == kInactive) return;
        const auto xs = x.col(j).array();
        const Scalar cm = xs.maxCoeff();
        if (filter) st.block_max(blk, j) = cm;
        Scalar& m = st.m(j);
        if (cm > m) {
          // (Skipped for the first block: exp(lowest − cm) takes libm's slow underflow path.)
          if (st.sum_e(j) != Acc(0)) st.sum_e(j) *= static_cast<Acc>(std::exp(m - cm));
          if (u_before != Acc(0)) st.dot(j) -= (Acc(cm) - Acc(m)) * u_before;
          m = cm;
        }
        st.sum_e(j) += static_cast<Acc>((xs - m).exp().sum());
        if (need_dot) st.dot(j) += static_cast<Acc>((u.segment(class_offset + k0, len) * (xs - m)).sum());
        const Eigen::Index l = static_cast<Eigen::Index>(y.coeff(j)) - class_offset - k0;
        if (l >= 0 && l < len) st.x_y(j) = xs(l);
      });
      if (need_dot) u_before += static_cast<Acc>(u.segment(class_offset + k0, len).sum());
    }
    if (sliced(classes)) combine_ranks(st, u_before);
    for (Eigen::Index j = 0; j < n; ++j)
      if (st.state(j) == kCounted && !Column::finite(st.m(j), st.sum_e(j))) st.state(j) = kNonFinite;
  }

  /// A slice's statistics made global: every rank's max, its sums moved to
  /// that max (as pass 1 moves them between blocks), then summed; the
  /// label's logit is held by one rank and 0 elsewhere, so its sum is exact.
  void combine_ranks(Stats& st, Acc u_local) const {
    const Eigen::Index n = st.m.size();
    Vector& global_max = st.global_max;
    global_max = st.m;
    all_reduce_max(global_max.data(), n);
    AccVector& sums = st.sums;
    sums.resize(3 * n);
    for (Eigen::Index j = 0; j < n; ++j) {
      const Scalar m = st.m(j), gm = global_max(j);
      if (st.state(j) == kCounted && gm > m) {
        if (st.sum_e(j) != Acc(0)) st.sum_e(j) *= static_cast<Acc>(std::exp(m - gm));
        if (u_local != Acc(0)) st.dot(j) -= (Acc(gm) - Acc(m)) * u_local;
      }
      sums(j) = st.sum_e(j);
      sums(n + j) = st.dot(j);
      sums(2 * n + j) = Acc(st.x_y(j));
    }
    all_reduce_sum(sums.data(), 3 * n);
    st.m = global_max;
    st.sum_e = sums.head(n);
    st.dot = sums.segment(n, n);
    st.x_y = sums.tail(n).template cast<Scalar>();
  }

  /// The sparsity filter's test for classes [k0, k0 + len): every counted
  /// column's softmax below τ there, and no counted label in it.
  template <class LX>
  bool skippable(const LX& y, const Stats& st, Eigen::Index blk, Eigen::Index k0, Eigen::Index len) const {
    const Acc log_tau = std::log(Acc(sparsity_threshold));
    for (Eigen::Index j = 0; j < st.state.size(); ++j) {
      if (st.state(j) == kInactive) continue;
      if (st.state(j) == kNonFinite) return false;
      const Eigen::Index l = static_cast<Eigen::Index>(y.coeff(j)) - class_offset - k0;
      if (l >= 0 && l < len) return false;
      const Acc lse = Acc(st.m(j)) + std::log(st.sum_e(j));
      if (!(Acc(st.block_max(blk, j)) - lse < log_tau)) return false;
    }
    return true;
  }

  template <class HX, class WX, class BX, class LX, class SW, class U, class GHo, class GWo, class GBo>
  void second_pass(const HX& h, const WX& w, const BX& b, const LX& y, const SW& s, const U& u, Scalar factor,
                   Scalar keep, Scalar spread, Matrix& buffer, const Stats& st, bool filter, GHo& gh, GWo& gw,
                   GBo& gb) const {
    const Eigen::Index n = h.cols(), classes = w.rows(), bs = buffer.rows();
    const bool one_block = bs == classes;  // then pass 1's logits are still in the buffer
    gh.setZero();
    for (Eigen::Index k0 = 0, blk = 0; k0 < classes; k0 += bs, ++blk) {
      const Eigen::Index len = std::min(bs, classes - k0);
      if (filter && skippable(y, st, blk, k0, len)) {
        gw.middleRows(k0, len).setZero();
        if (b.size() != 0) gb.reshaped().segment(k0, len).setZero();
        continue;
      }
      Eigen::Map<Matrix> g =
          one_block ? Eigen::Map<Matrix>(buffer.data(), len, n) : logits_block(h, w, b, k0, len, buffer);
      detail::column_for(n, len, [&](Eigen::Index j) {
        auto gs = g.col(j).array();
        if (st.state(j) != kCounted) {
          if (st.state(j) == kInactive)
            gs.setZero();
          else
            gs.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
          return;
        }
        const Scalar m = st.m(j), fj = Scalar(factor * sample_weight(s, j));
        const Column& c = st.column[std::size_t(j)];
        gs = (gs - m).exp();
        c.gradient(gs, u.segment(class_offset + k0, len), Acc(1), fj * spread);
        const Eigen::Index yj = static_cast<Eigen::Index>(y.coeff(j)), l = yj - class_offset - k0;
        if (l >= 0 && l < len) {
          const Scalar w_y = class_weights.size() > 0 ? class_weights(yj) : Scalar(1);
          const Acc e_y = std::exp(Acc(st.x_y(j)) - Acc(m));
          gs(l) = c.label_gradient(e_y, Acc(fj) * (Acc(keep) * Acc(w_y) + Acc(spread) * Acc(u.segment(yj, 1)(0))));
        }
      });
      gh.matrix().noalias() += w.matrix().middleRows(k0, len).transpose() * g;  // .matrix(): Array outputs too
      gw.matrix().middleRows(k0, len).noalias() = g * h.matrix().transpose();
      if (b.size() != 0) gb.reshaped().segment(k0, len) = g.rowwise().sum();
    }
  }
};

}  // namespace losskit
