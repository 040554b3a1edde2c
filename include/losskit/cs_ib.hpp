#pragma once
/// Cauchy–Schwarz divergence information bottleneck for regression (CS-IB):
/// Yu, Yu, Løkse, Jenssen, Príncipe, "Cauchy-Schwarz Divergence Information
/// Bottleneck for Regression", ICLR 2024.
///
///   CSIB        L = D̂_CS(p(y|x); q(ŷ|x)) + β·Î_CS(x; t)
///
/// Gaussian kernels κ_σ(a, b) = exp(−‖a − b‖²/(2σ²)) (no prefactor: it cancels)
/// over a batch of N samples (columns): K = κ(x_i, x_j), L¹ = κ(y_i, y_j),
/// L² = κ(ŷ_i, ŷ_j), E = K∘κ(ŷ_j, y_i) (row j), Q = κ(t_i, t_j).
///
///   CSDivergence (yhat, y, x), row weights w_j:
///     A = Σ_j w_j Σ_i K_ji L¹_ji,  B = Σ_j w_j Σ_i K_ji L²_ji,  C = Σ_j w_j Σ_i E_ji
///     D̂ = log A + log B − 2·log C                       (the paper's estimator)
///     weighting Paper: w_j = 1/(Σ_i K_ji)², OfficialCode: w_j = 1/Σ_i K_ji²
///     (the authors' released code), Uniform: w ≡ 1 (the plain joint CS divergence).
///     symmetric_cross_term: −2·log C → −log C − log C', C' = Σ_j w_j Σ_i K_ji κ(y_j, ŷ_i).
///   CSQuadraticMI (t, x):
///     Î = log a + log b + log s_K − 2·log c,  a = Σ K∘Q, b = 1ᵀQ1, s_K = 1ᵀK1, c = (K1)ᵀ(Q1)
///     normalized: I_n = Î(x;t)/√(Î(x;x)·Î(t;t))  (the official training script's form; not bounded by 1)
///
/// Gradients (samples as columns, σ the width of the differentiated variable):
///   ∂D̂/∂ŷ_k = (1/σ_y²)·[ Σ_i r_ki (ŷ_k − y_i) − Σ_i m_ki (ŷ_k − ŷ_i) ],
///     m_ki = (w_k + w_i) K_ki L²_ki / B,  r_ki = 2 w_k E_ki / C
///     (symmetric: r_ki = w_k E_ki / C + w_i E_ki / C')
///   ∂Î/∂t_k = −(1/σ_t²)·Σ_i S_ki (t_k − t_i),  S = 2Q∘(K/a + 11ᵀ/b − (k1ᵀ + 1kᵀ)/c), k = K1
///   ∂I_n/∂t = ∇Î/√(Î_xx Î_tt) − I_n·∇Î_tt/(2·Î_tt)
///
/// Conventions:
/// - Natural logarithm (the official code uses log2: divide by ln 2 to compare;
///   the normalised Î is the same in every base).
/// - Width 0 (the default of every width) = median heuristic: σ = median of
///   the nonzero pairwise distances of that variable's samples (1 if all samples
///   coincide, where every width gives the same all-ones kernel). σ_y is taken from
///   the targets y and σ_x from x, so those are constants of the loss; σ_t comes
///   from t, and the gradient treats it as a constant (stop-gradient, as usual for
///   kernel-width heuristics): set sigma_t > 0 for the exact gradient of the value.
///   width_rule = CSWidth::OfficialCode replaces the median heuristic, for every
///   width left at 0, by the official loss_cs.py's sigma=None rule (commit 252f86b):
///   σ = 10·m, m = median of the pairwise squared distances of the batch stacked on
///   itself ([X; X], strict lower triangle), their mean if m <= 0, at least 1e-2
///   (the code applies it in CS_QMI only; here it applies to every width left at 0).
///   The official training script uses σ = 1 for every variable.
/// - A batch-level estimator: no per_sample and no reduction (the estimators are
///   already normalised; the N-powers cancel in the log ratios).
/// - Targets are d_y×N (d_y = 1 allowed): the 1-D target collapse of the official
///   script (every y/ŷ Gram constant) cannot occur.
///
/// Numerics: log A, log B, log C (and C') are max-shifted log-sum-exps (core's
/// detail::log_sum_exp) of log w_j + (exponent of K) + (exponent of L) per
/// entry, so far predictions (ŷ = y + 20σ, float: every cross kernel
/// underflows) still give a finite loss and gradient. Squared distances are
/// clamped at 0. Î(x;t) = 0 exactly (zero gradient) when Q or K is all ones
/// (collapsed t or x); I_n = 0 (zero gradient) when Î(t;t) ≤ 0 or Î(x;x) ≤ 0
/// (collapsed: 0/0 otherwise). Gram matrices are built once per call, O(N²)
/// memory and O(N²(d_x + d_y + d_t)) time; large-d distances and the gradients'
/// N×N products are GEMMs. Per-sample loops run with OpenMP when compiled with it.
///
/// Threads: each functor keeps its workspaces in a pool (core/workspace.hpp):
/// repeated calls at the same sizes reuse one and allocate nothing, and
/// concurrent calls on one functor each check out their own, so one functor may
/// be called from several threads at once.
///
/// Non-finite inputs never crash: the loss and gradient are then NaN (or inf).
/// A NaN or infinite sample of ŷ, y or x makes D̂ NaN: an infinite sample's
/// distance to itself is inf − inf, and a NaN exponent makes the log-sum-exp
/// NaN (core's rule), rather than dropping that sample's kernel entries.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

#include "core/checks.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/workspace.hpp"

namespace losskit {

/// Row weights w_j of the conditional CS divergence estimator.
enum class CSWeighting {
  Paper,         ///< w_j = 1/(Σ_i K_ji)² (Yu et al. 2024, the default)
  OfficialCode,  ///< w_j = 1/Σ_i K_ji² (the authors' released code)
  Uniform        ///< w_j = 1: the plain joint CS divergence between (x, y) and (x, ŷ)
};

/// How a kernel width left at 0 is chosen from its variable's batch (held
/// constant in the gradient either way).
enum class CSWidth {
  MedianDistance,  ///< σ = median of the nonzero pairwise distances (1 if all coincide); the default
  OfficialCode     ///< σ = 10·median of the pairwise squared distances of [X; X], floor 1e-2 (loss_cs.py's sigma=None)
};

namespace detail {

template <class Scalar>
using cs_mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using cs_vec = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Up to this many dimensions squared distances are summed directly (exact 0
/// for equal samples, no cancellation); above it they come from one GEMM.
constexpr Eigen::Index kCSDirectDistanceMaxDim = 16;

template <class Scalar>
struct CSDistanceScratch {
  cs_mat<Scalar> a, b;
  cs_vec<Scalar> na, nb, mean;
};

/// out(i, j) = ‖a_i − b_j‖² over columns, clamped at 0. `same`: b is a, and the
/// result is then exactly symmetric with an exact zero diagonal.
template <class Scalar, class A, class B>
void cs_squared_distances(const A& a, const B& b, bool same, cs_mat<Scalar>& out, CSDistanceScratch<Scalar>& s) {
  const Eigen::Index d = a.rows(), n = a.cols();
  out.resize(n, n);
  if (d <= kCSDirectDistanceMaxDim) {
    s.a = a.matrix().transpose();
    column_for(n, n * d, [&](Eigen::Index j) {
      auto col = out.col(j).array();
      col = (s.a.col(0).array() - b(0, j)).square();
      for (Eigen::Index r = 1; r < d; ++r) col += (s.a.col(r).array() - b(r, j)).square();
    });
    return;
  }
  // ‖a‖² + ‖b‖² − 2aᵀb cancels badly when the data sit far from the origin;
  // centring on a's mean (distances are translation invariant) removes that.
  if (same && (a.matrix().colwise() - a.matrix().col(0)).isZero(0)) {
    out.setZero();  // all samples equal: exact zeros, not rounding noise
    return;
  }
  s.mean = a.matrix().rowwise().mean();
  s.a = a.matrix().colwise() - s.mean;
  if (!same) s.b = b.matrix().colwise() - s.mean;
  const cs_mat<Scalar>& bc = same ? s.a : s.b;
  s.na = s.a.colwise().squaredNorm().transpose();
  s.nb = bc.colwise().squaredNorm().transpose();
  out.noalias() = s.a.transpose() * bc;
  column_for(n, n, [&](Eigen::Index j) {
    out.col(j) = (s.na.array() + s.nb(j) - Scalar(2) * out.col(j).array()).max(Scalar(0));
    if (same) out(j, j) = Scalar(0);
  });
  if (same) {
    // GEMM rounding is not symmetric; the gradients assume it is. The upper
    // triangle is mirrored in cache-sized tiles (a plain row read is strided).
    constexpr Eigen::Index tile = 64;
    const Eigen::Index tiles = (n + tile - 1) / tile;
    column_for(tiles, n * tile, [&](Eigen::Index tj) {
      const Eigen::Index j0 = tj * tile, nj = std::min(tile, n - j0);
      for (Eigen::Index i0 = j0; i0 < n; i0 += tile) {
        const Eigen::Index ni = std::min(tile, n - i0);
        for (Eigen::Index j = 0; j < nj; ++j)
          for (Eigen::Index i = (i0 == j0 ? j + 1 : 0); i < ni; ++i) out(i0 + i, j0 + j) = out(j0 + j, i0 + i);
      }
    });
  }
}

template <class Scalar>
struct CSMedianScratch {
  cs_vec<Scalar> values;
  Eigen::Matrix<long long, Eigen::Dynamic, 1> histogram;
};

/// Bucket of a pair value for the selection below: the top 16 bits of its
/// IEEE pattern (monotone as integers for values >= +0).
template <class Scalar>
Eigen::Index cs_bucket(Scalar v) {
  using Bits = typename std::conditional<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>::type;
  constexpr int kShift = int(sizeof(Scalar)) * 8 - 16;
  Bits b;
  std::memcpy(&b, &v, sizeof b);
  return Eigen::Index(b >> kShift);
}

/// Calls f(v) for each pair value d2(i, j), i < j, a selection counts: the
/// positive ones, or (kKeepZeros) every one that is not NaN, a −0 read as +0.
/// The rule is a compile-time one, so that the O(N²) passes below have no
/// run-time branch on it.
template <bool kKeepZeros, class Scalar, class F>
void cs_for_counted(const cs_mat<Scalar>& d2, F&& f) {
  const Eigen::Index n = d2.cols();
  for (Eigen::Index j = 1; j < n; ++j)
    for (Eigen::Index i = 0; i < j; ++i) {
      const Scalar v = d2(i, j);
      if constexpr (kKeepZeros) {
        if (!std::isnan(v)) f(v > Scalar(0) ? v : Scalar(0));
      } else if (v > Scalar(0)) {
        f(v);
      }
    }
}

struct CSPairCount {
  long long count = 0;  ///< counted pair values
  double sum = 0;       ///< their sum (kKeepZeros only: the official width's fallback)
};

/// First pass of the selection: the histogram of the counted pair values.
template <bool kKeepZeros, class Scalar>
CSPairCount cs_pair_histogram(const cs_mat<Scalar>& d2, CSMedianScratch<Scalar>& s) {
  s.histogram.setZero(Eigen::Index(1) << 16);
  CSPairCount c;
  cs_for_counted<kKeepZeros>(d2, [&](Scalar v) {
    ++s.histogram(cs_bucket(v));
    ++c.count;
    if constexpr (kKeepZeros) c.sum += double(v);
  });
  return c;
}

/// The counted pair values of 0-based ranks lower and upper (upper − lower is
/// 0 or 1), from the histogram of cs_pair_histogram: only the bucket(s)
/// holding them are gathered and nth_element'd, so the selection stays O(N²)
/// and allocation-free once the scratch has its size.
template <bool kKeepZeros, class Scalar>
std::pair<Scalar, Scalar> cs_pair_ranks(const cs_mat<Scalar>& d2, long long lower_rank,
                                        long long upper_rank, CSMedianScratch<Scalar>& s) {
  const Eigen::Index n = d2.cols();
  Eigen::Index first = -1, last = -1;
  long long before_first = 0, cumulative = 0;
  for (Eigen::Index b = 0; b < s.histogram.size() && last < 0; ++b) {
    if (first < 0 && cumulative + s.histogram(b) > lower_rank) {
      first = b;
      before_first = cumulative;
    }
    if (cumulative + s.histogram(b) > upper_rank) last = b;
    cumulative += s.histogram(b);
  }
  const long long pairs = static_cast<long long>(n) * (n - 1) / 2;
  if (s.values.size() < pairs) s.values.resize(Eigen::Index(pairs));
  Scalar* p = s.values.data();
  Eigen::Index m = 0;
  cs_for_counted<kKeepZeros>(d2, [&](Scalar v) {
    const Eigen::Index b = cs_bucket(v);
    if (b >= first && b <= last) p[m++] = v;
  });
  // The gathered values are exactly the ranks before_first, before_first + 1, ...
  const Eigen::Index at = Eigen::Index(upper_rank - before_first);
  std::nth_element(p, p + at, p + m);
  const Scalar upper = p[at];
  return {lower_rank == upper_rank ? upper : *std::max_element(p, p + at), upper};
}

/// Median heuristic over a symmetric squared-distance matrix: the median of
/// the nonzero pairwise distances (mean of the two middle ones for an even
/// count), 1 when every distance is 0. NaN distances are ignored.
///
/// Selection over the N(N−1)/2 pairs is O(N²) like everything else, but a
/// plain nth_element over all of them costs more than the kernels. So: one
/// histogram pass over the top 16 bits of the (positive, hence monotone as
/// integers) IEEE bit patterns, then only the bucket(s) holding the middle
/// ranks are gathered and nth_element'd.
template <class Scalar>
Scalar cs_median_width(const cs_mat<Scalar>& d2, CSMedianScratch<Scalar>& s) {
  const long long count = cs_pair_histogram<false>(d2, s).count;
  if (count == 0) return Scalar(1);
  const long long upper_rank = count / 2, lower_rank = count % 2 ? upper_rank : upper_rank - 1;
  const auto v = cs_pair_ranks<false>(d2, lower_rank, upper_rank, s);
  if (lower_rank == upper_rank) return std::sqrt(v.second);
  return (std::sqrt(v.first) + std::sqrt(v.second)) / Scalar(2);
}

/// The width of the official code's sigma=None (loss_cs.py, sigma_estimation
/// at commit 252f86b, times 10): m = median of the N(2N−1) strict-lower-
/// triangle entries of the squared-distance matrix of the 2N samples [X; X],
/// the mean of those entries if m <= 0, then at least 1e-2; σ = 10·m. A
/// squared distance, not a distance, as the code writes it.
///
/// Those entries are N zeros (each sample against its copy) and every pair
/// d_ij, i < j, four times ((i, j), (i+N, j), (i, j+N), (i+N, j+N)). Sorted,
/// the k-th (1-based) is 0 for k <= N and the pair value of 0-based rank
/// ⌊(k − N − 1)/4⌋ above: the two middle entries are read off the N×N matrix
/// by the same selection as the median heuristic, without the 2N×2N one. A
/// NaN distance gives NaN (as np.median).
template <class Scalar>
Scalar cs_official_width(const cs_mat<Scalar>& d2, CSMedianScratch<Scalar>& s) {
  const long long n = d2.cols(), pairs = n * (n - 1) / 2, entries = n * (2 * n - 1);
  const CSPairCount c = cs_pair_histogram<true>(d2, s);
  if (c.count < pairs) return std::numeric_limits<Scalar>::quiet_NaN();
  const long long k_hi = entries / 2 + 1, k_lo = entries % 2 ? k_hi : entries / 2;
  auto rank = [n](long long k) { return (k - n - 1) / 4; };
  Scalar lo = 0, hi = 0;
  if (k_lo > n) {
    std::tie(lo, hi) = cs_pair_ranks<true>(d2, rank(k_lo), rank(k_hi), s);
  } else if (k_hi > n) {
    hi = cs_pair_ranks<true>(d2, rank(k_hi), rank(k_hi), s).second;
  }
  Scalar m = (lo + hi) / Scalar(2);
  if (!(m > Scalar(0))) m = static_cast<Scalar>(4 * c.sum / double(entries));
  if (m < Scalar(1e-2)) m = Scalar(1e-2);
  return Scalar(10) * m;
}

/// exp-coefficient of a Gaussian kernel: κ = exp(coef · ‖a − b‖²).
template <class Scalar>
Scalar cs_coef(Scalar sigma) {
  // Clamped so that a width whose square underflows still gives exp(0) = 1 on
  // the diagonal rather than exp(−inf·0) = NaN.
  return static_cast<Scalar>(std::max(-0.5 / (double(sigma) * double(sigma)),
                                      -double(std::numeric_limits<Scalar>::max())));
}

/// The shared machinery of the three functors: the x Gram (distances, width,
/// row sums, weights) computed once, then the prediction and compression terms.
/// The workspace of one call at a time (the functors keep a pool of them).
template <class Scalar>
class CSEngine {
 public:
  using Mat = cs_mat<Scalar>;
  using Vec = cs_vec<Scalar>;
  using Acc = acc_t<Scalar>;
  using AccVec = cs_vec<Acc>;

  /// Builds everything that depends on x alone. `weighting` picks w (divergence),
  /// `need_kernel_squares` the Σ_i K_ji² sums (normalised MI, OfficialCode).
  /// `rule` chooses every width left at 0 in this call (x's here, y's and t's later).
  template <class X>
  void set_x(const X& x, Scalar sigma_option, CSWidth rule, CSWeighting weighting, bool need_kernel_squares) {
    cs_squared_distances<Scalar>(x, x, true, dx_, scratch_x_);
    const Eigen::Index n = x.cols();
    width_rule_ = rule;
    sigma_x_ = width(dx_, sigma_option);
    cx_ = cs_coef(sigma_x_);
    k_.resize(n);
    ksq_.resize(n);
    lw_.resize(n);
    w_.resize(n);
    const bool squares = need_kernel_squares || weighting == CSWeighting::OfficialCode;
    column_for(n, n, [&](Eigen::Index j) {
      k_(j) = (cx_ * dx_.col(j).array()).exp().sum();
      ksq_(j) = squares ? (Scalar(2) * cx_ * dx_.col(j).array()).exp().sum() : Scalar(0);
    });
    // Every row sum includes K_jj = 1, so the logs below are finite.
    for (Eigen::Index j = 0; j < n; ++j) {
      switch (weighting) {
        case CSWeighting::Paper: lw_(j) = Scalar(-2) * std::log(k_(j)); break;
        case CSWeighting::OfficialCode: lw_(j) = -std::log(ksq_(j)); break;
        case CSWeighting::Uniform: lw_(j) = Scalar(0); break;
      }
    }
    w_ = lw_.array().exp().matrix();
    x_all_ones_ = (k_.array() == Scalar(n)).all();
  }

  /// D̂_CS(p(y|x); q(ŷ|x)); with WithGrad writes ∂D̂/∂ŷ into g (d_y×N, sized).
  template <bool WithGrad, class YH, class Y, class G>
  Acc divergence(const YH& yhat, const Y& y, Scalar sigma_option, bool symmetric, G* g) {
    const Eigen::Index n = y.cols();
    cs_squared_distances<Scalar>(y, y, true, dy_, scratch_y_);
    cs_squared_distances<Scalar>(yhat, yhat, true, dyhat_, scratch_yhat_);
    cs_squared_distances<Scalar>(y, yhat, false, dcross_, scratch_cross_);  // (i, k): ‖y_i − ŷ_k‖²
    const Scalar sigma_y = width(dy_, sigma_option);
    const Scalar cy = cs_coef(sigma_y), cx = cx_;

    // Column k holds row k of every (symmetric or ŷ_k-indexed) Gram: per
    // column, the max-shifted log of Σ_i exp(exponent).
    col_a_.resize(n);
    col_b_.resize(n);
    col_c_.resize(n);
    col_c2_.resize(n);
    column_for(n, 4 * n, [&](Eigen::Index k) {
      col_a_(k) = lw_(k) + log_sum_exp<Acc>(cx * dx_.col(k).array() + cy * dy_.col(k).array());
      col_b_(k) = lw_(k) + log_sum_exp<Acc>(cx * dx_.col(k).array() + cy * dyhat_.col(k).array());
      col_c_(k) = lw_(k) + log_sum_exp<Acc>(cx * dx_.col(k).array() + cy * dcross_.col(k).array());
      if (symmetric)
        col_c2_(k) = log_sum_exp<Acc>(lw_.array() + cx * dx_.col(k).array() + cy * dcross_.col(k).array());
    });
    const Acc log_a = log_sum_exp(col_a_), log_b = log_sum_exp(col_b_), log_c = log_sum_exp(col_c_);
    const Acc log_c2 = symmetric ? log_sum_exp(col_c2_) : log_c;
    const Acc value = log_a + log_b - log_c - log_c2;
    if constexpr (WithGrad) {
      // m and r overwrite the ŷ and cross distances column by column (column k
      // is read only by iteration k). Every exponent below is <= 2·log N.
      const Scalar sb = Scalar(log_b), sc = Scalar(log_c), sc2 = Scalar(log_c2);
      const Scalar alpha = symmetric ? Scalar(1) : Scalar(2), beta = symmetric ? Scalar(1) : Scalar(0);
      diag_.resize(n);
      column_for(n, 4 * n, [&](Eigen::Index k) {
        auto mcol = dyhat_.col(k).array();
        auto rcol = dcross_.col(k).array();
        mcol = (cx * dx_.col(k).array() + cy * mcol - sb).exp() * (w_(k) + w_.array());
        rcol = cx * dx_.col(k).array() + cy * rcol;
        if (symmetric)
          rcol = alpha * w_(k) * (rcol - sc).exp() + beta * w_.array() * (rcol - sc2).exp();
        else
          rcol = alpha * w_(k) * (rcol - sc).exp();
        diag_(k) = rcol.sum() - mcol.sum();
      });
      G& grad = *g;
      auto&& gm = grad.matrix();
      gm.noalias() = yhat.matrix() * dyhat_;
      gm.noalias() -= y.matrix() * dcross_;
      gm += yhat.matrix() * diag_.asDiagonal();
      gm *= Scalar(1) / (sigma_y * sigma_y);
    }
    return value;
  }

  /// Î_CS(x; t) or its normalised form; with WithGrad writes scale·∂I/∂t into g.
  template <bool WithGrad, class T, class G>
  Acc mutual_information(const T& t, Scalar sigma_option, bool normalized, Scalar scale, G* g) {
    const Eigen::Index n = t.cols();
    cs_squared_distances<Scalar>(t, t, true, dt_, scratch_t_);
    const Scalar sigma_t = width(dt_, sigma_option);
    const Scalar ct = cs_coef(sigma_t), cx = cx_;
    col_a_.resize(n);
    col_b_.resize(n);
    col_c_.resize(n);
    qmin_.resize(n);
    column_for(n, 2 * n, [&](Eigen::Index j) {
      auto q = dt_.col(j).array();
      q = (ct * q).exp();  // Q replaces the t distances
      col_a_(j) = Acc(((cx * dx_.col(j).array()).exp() * q).sum());
      col_b_(j) = Acc(q.sum());
      col_c_(j) = normalized ? Acc(q.square().sum()) : Acc(0);
      qmin_(j) = q.minCoeff();
    });
    const bool t_all_ones = (qmin_.array() == Scalar(1)).all();
    auto zero = [&]() {
      if constexpr (WithGrad) g->setZero();
      return Acc(0);
    };
    if (t_all_ones || x_all_ones_) return zero();  // Q or K constant: Î = 0 exactly

    MISums m;
    m.a = col_a_.sum();
    m.b = col_b_.sum();
    const Acc s_k = k_.template cast<Acc>().sum();
    m.c = (k_.template cast<Acc>().array() * col_b_.array()).sum();  // q = Q1 = col_b_
    const Acc mi = std::log(m.a) + std::log(m.b) + std::log(s_k) - Acc(2) * std::log(m.c);
    Acc value = mi;
    if (normalized) {
      m.a2 = col_c_.sum();
      m.c2 = col_b_.squaredNorm();
      const Acc i_tt = std::log(m.a2) + Acc(2) * std::log(m.b) - Acc(2) * std::log(m.c2);
      const Acc i_xx = std::log(ksq_.template cast<Acc>().sum()) + Acc(2) * std::log(s_k) -
                       Acc(2) * std::log(k_.template cast<Acc>().squaredNorm());
      if (std::isnan(i_tt) || std::isnan(i_xx)) {  // non-finite t or x: NaN, not the collapsed 0
        if constexpr (WithGrad) g->setConstant(std::numeric_limits<Scalar>::quiet_NaN());
        return std::numeric_limits<Acc>::quiet_NaN();
      }
      if (!(i_tt > Acc(0)) || !(i_xx > Acc(0))) return zero();  // collapsed: 0/0, defined as 0
      const Acc root = std::sqrt(i_xx * i_tt);
      value = mi / root;
      m.g_mi = Acc(1) / root;
      m.g_tt = -value / (Acc(2) * i_tt);
    }
    if constexpr (WithGrad) mi_gradient(t, m, normalized, scale / (sigma_t * sigma_t), *g);
    return value;
  }

  Scalar sigma_x() const { return sigma_x_; }

 private:
  /// The width of a variable with squared distances d2: the option, or the rule's for 0.
  Scalar width(const Mat& d2, Scalar sigma_option) {
    if (sigma_option > Scalar(0)) return sigma_option;
    return width_rule_ == CSWidth::OfficialCode ? cs_official_width<Scalar>(d2, median_)
                                                : cs_median_width<Scalar>(d2, median_);
  }

  /// The sums Î is made of, and ∂(value)/∂Î, ∂(value)/∂Î_tt (normalised form).
  struct MISums {
    Acc a = 0, b = 0, c = 0, a2 = 0, c2 = 0, g_mi = 1, g_tt = 0;
  };

  /// scale·∂I/∂t from the sums (dt_ holds Q on entry and is overwritten).
  template <class T, class G>
  void mi_gradient(const T& t, const MISums& m, bool normalized, Scalar scale, G& grad) {
    const Eigen::Index n = t.cols();
    const Scalar cx = cx_;
    const Scalar inv_a = Scalar(1 / m.a), inv_b = Scalar(1 / m.b), inv_c = Scalar(1 / m.c);
    const Scalar inv_a2 = normalized ? Scalar(1 / m.a2) : Scalar(0), inv_c2 = normalized ? Scalar(1 / m.c2) : Scalar(0);
    const Scalar f1 = Scalar(2 * m.g_mi), f2 = Scalar(4 * m.g_tt);
    diag_.resize(n);
    qsum_ = col_b_.template cast<Scalar>();
    column_for(n, 2 * n, [&](Eigen::Index k) {
      auto s = dt_.col(k).array();  // S replaces Q
      if (normalized)
        s = f1 * s * ((cx * dx_.col(k).array()).exp() * inv_a + inv_b - (k_(k) + k_.array()) * inv_c) +
            f2 * s * (s * inv_a2 + inv_b - (qsum_(k) + qsum_.array()) * inv_c2);
      else
        s = f1 * s * ((cx * dx_.col(k).array()).exp() * inv_a + inv_b - (k_(k) + k_.array()) * inv_c);
      diag_(k) = s.sum();
    });
    auto&& gm = grad.matrix();
    gm.noalias() = t.matrix() * dt_;
    gm -= t.matrix() * diag_.asDiagonal();
    gm *= scale;
  }

  Mat dx_, dy_, dyhat_, dcross_, dt_;
  Vec k_, ksq_, lw_, w_, diag_, qsum_, qmin_;
  CSMedianScratch<Scalar> median_;
  AccVec col_a_, col_b_, col_c_, col_c2_;
  CSDistanceScratch<Scalar> scratch_x_, scratch_y_, scratch_yhat_, scratch_cross_, scratch_t_;
  Scalar sigma_x_ = 1, cx_ = -0.5;
  CSWidth width_rule_ = CSWidth::MedianDistance;
  bool x_all_ones_ = false;
};

template <class A>
void cs_check_batch(const char* loss, const char* arg, const Eigen::DenseBase<A>& a, Eigen::Index n) {
  check_not_empty(loss, arg, a);
  if (a.cols() != n) fail(loss, arg, "has ", a.cols(), " samples (columns), expected ", n);
  if (n < 2) fail(loss, arg, "needs at least 2 samples (columns) for a kernel estimator, got ", n);
}

inline void cs_check_width_rule(const char* loss, CSWidth rule) {
  if (rule != CSWidth::MedianDistance && rule != CSWidth::OfficialCode)
    fail(loss, "width_rule", "value ", static_cast<int>(rule), " is not a CSWidth");
}

}  // namespace detail

/// The kernel width the functors use for width 0 under `rule`: by default the
/// median of the nonzero pairwise distances between the columns of `samples`
/// (1 if all coincide); CSWidth::OfficialCode: the official code's sigma=None
/// width (see the header comment).
template <class D>
typename D::Scalar median_heuristic_width(const Eigen::DenseBase<D>& samples,
                                          CSWidth rule = CSWidth::MedianDistance) {
  using Scalar = typename D::Scalar;
  detail::check_not_empty("median_heuristic_width", "samples", samples);
  detail::cs_check_width_rule("median_heuristic_width", rule);
  const detail::eval_t<D> s(samples.derived());
  detail::cs_mat<Scalar> d2;
  detail::CSDistanceScratch<Scalar> scratch;
  detail::CSMedianScratch<Scalar> median;
  detail::cs_squared_distances<Scalar>(s, s, true, d2, scratch);
  return rule == CSWidth::OfficialCode ? detail::cs_official_width<Scalar>(d2, median)
                                       : detail::cs_median_width<Scalar>(d2, median);
}

/// Conditional CS divergence D̂_CS(p(y|x); q(ŷ|x)) (Yu et al., ICLR 2024).
/// Inputs (yhat, y, x): d_y×N predictions, d_y×N targets, d_x×N inputs.
template <class Scalar_>
class CSDivergence {
 public:
  using Scalar = Scalar_;
  static_assert(std::is_floating_point<Scalar>::value, "losskit::CSDivergence: Scalar must be float or double");

  Scalar sigma_x = 0;                         ///< width of the x kernel; 0 = width_rule on x
  Scalar sigma_y = 0;                         ///< width of the y / ŷ kernels; 0 = width_rule on y
  CSWidth width_rule = CSWidth::MedianDistance;  ///< how every width left at 0 is chosen
  CSWeighting weighting = CSWeighting::Paper;
  bool symmetric_cross_term = false;          ///< −log C − log C' instead of −2·log C (see the header comment)

  template <class YH, class Y, class X>
  Scalar operator()(const Eigen::DenseBase<YH>& yhat, const Eigen::DenseBase<Y>& y,
                    const Eigen::DenseBase<X>& x) const {
    check(yhat, y, x);
    const detail::eval_t<YH> p(yhat.derived());
    const detail::eval_t<Y> t(y.derived());
    const detail::eval_t<X> in(x.derived());
    const auto engine = engines_.acquire();
    engine->set_x(in, sigma_x, width_rule, weighting, false);
    return Scalar(engine->template divergence<false>(p, t, sigma_y, symmetric_cross_term, no_grad()));
  }

  template <class YH, class Y, class X, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<YH>& yhat, const Eigen::DenseBase<Y>& y,
                            const Eigen::DenseBase<X>& x, const Eigen::DenseBase<G>& grad_yhat) const {
    check(yhat, y, x);
    detail::check_output("CSDivergence", "grad_yhat", grad_yhat, yhat.rows(), yhat.cols());
    const detail::eval_t<YH> p(yhat.derived());
    const detail::eval_t<Y> t(y.derived());
    const detail::eval_t<X> in(x.derived());
    G& g = detail::prepare_output("CSDivergence", "grad_yhat", grad_yhat, yhat.rows(), yhat.cols());
    const auto engine = engines_.acquire();
    engine->set_x(in, sigma_x, width_rule, weighting, false);
    return Scalar(engine->template divergence<true>(p, t, sigma_y, symmetric_cross_term, &g));
  }

 private:
  template <class YH, class Y, class X>
  void check(const Eigen::DenseBase<YH>& yhat, const Eigen::DenseBase<Y>& y, const Eigen::DenseBase<X>& x) const {
    detail::require_scalar<Scalar, YH>();
    detail::require_scalar<Scalar, Y>();
    detail::require_scalar<Scalar, X>();
    detail::check_not_empty("CSDivergence", "yhat", yhat);
    detail::check_same_shape("CSDivergence", "y", yhat, y);
    detail::cs_check_batch("CSDivergence", "yhat", yhat, yhat.cols());
    detail::cs_check_batch("CSDivergence", "x", x, yhat.cols());
    detail::check_non_negative("CSDivergence", "sigma_x", sigma_x);
    detail::check_non_negative("CSDivergence", "sigma_y", sigma_y);
    detail::cs_check_width_rule("CSDivergence", width_rule);
  }

  static detail::cs_mat<Scalar>* no_grad() { return nullptr; }
  detail::WorkspacePool<detail::CSEngine<Scalar>> engines_;
};

/// CS quadratic mutual information Î_CS(x; t) (Yu et al., ICLR 2024).
/// Inputs (t, x): the d_t×N representation first (what the model produced),
/// then the d_x×N inputs.
template <class Scalar_>
class CSQuadraticMI {
 public:
  using Scalar = Scalar_;
  static_assert(std::is_floating_point<Scalar>::value, "losskit::CSQuadraticMI: Scalar must be float or double");

  Scalar sigma_x = 0;       ///< width of the x kernel; 0 = width_rule on x
  Scalar sigma_t = 0;       ///< width of the t kernel; 0 = width_rule on t (held constant in the gradient)
  CSWidth width_rule = CSWidth::MedianDistance;  ///< how every width left at 0 is chosen
  bool normalized = false;  ///< Î(x;t)/√(Î(x;x)·Î(t;t)), as in the official training script

  template <class T, class X>
  Scalar operator()(const Eigen::DenseBase<T>& t, const Eigen::DenseBase<X>& x) const {
    check(t, x);
    const detail::eval_t<T> rep(t.derived());
    const detail::eval_t<X> in(x.derived());
    const auto engine = engines_.acquire();
    engine->set_x(in, sigma_x, width_rule, CSWeighting::Uniform, normalized);
    return Scalar(engine->template mutual_information<false>(rep, sigma_t, normalized, Scalar(1), no_grad()));
  }

  template <class T, class X, class G>
  Scalar value_and_gradient(const Eigen::DenseBase<T>& t, const Eigen::DenseBase<X>& x,
                            const Eigen::DenseBase<G>& grad_t) const {
    check(t, x);
    detail::check_output("CSQuadraticMI", "grad_t", grad_t, t.rows(), t.cols());
    const detail::eval_t<T> rep(t.derived());
    const detail::eval_t<X> in(x.derived());
    G& g = detail::prepare_output("CSQuadraticMI", "grad_t", grad_t, t.rows(), t.cols());
    const auto engine = engines_.acquire();
    engine->set_x(in, sigma_x, width_rule, CSWeighting::Uniform, normalized);
    return Scalar(engine->template mutual_information<true>(rep, sigma_t, normalized, Scalar(1), &g));
  }

 private:
  template <class T, class X>
  void check(const Eigen::DenseBase<T>& t, const Eigen::DenseBase<X>& x) const {
    detail::require_scalar<Scalar, T>();
    detail::require_scalar<Scalar, X>();
    detail::cs_check_batch("CSQuadraticMI", "t", t, t.cols());
    detail::cs_check_batch("CSQuadraticMI", "x", x, t.cols());
    detail::check_non_negative("CSQuadraticMI", "sigma_x", sigma_x);
    detail::check_non_negative("CSQuadraticMI", "sigma_t", sigma_t);
    detail::cs_check_width_rule("CSQuadraticMI", width_rule);
  }

  static detail::cs_mat<Scalar>* no_grad() { return nullptr; }
  detail::WorkspacePool<detail::CSEngine<Scalar>> engines_;
};

/// CS-IB objective D̂_CS(p(y|x); q(ŷ|x)) + β·Î_CS(x; t) (Yu et al., ICLR 2024).
/// Inputs (yhat, y, t, x); both terms share the x Gram matrix and sigma_x.
template <class Scalar_>
class CSIB {
 public:
  using Scalar = Scalar_;
  static_assert(std::is_floating_point<Scalar>::value, "losskit::CSIB: Scalar must be float or double");

  Scalar beta = Scalar(0.01);  ///< weight of the compression term (>= 0)
  Scalar sigma_x = 0;          ///< width of the x kernel; 0 = width_rule on x
  Scalar sigma_y = 0;          ///< width of the y / ŷ kernels; 0 = width_rule on y
  Scalar sigma_t = 0;          ///< width of the t kernel; 0 = width_rule on t (held constant in the gradient)
  CSWidth width_rule = CSWidth::MedianDistance;  ///< how every width left at 0 is chosen
  CSWeighting weighting = CSWeighting::Paper;
  bool symmetric_cross_term = false;  ///< see CSDivergence
  bool normalized = false;            ///< normalised Î, see CSQuadraticMI

  template <class YH, class Y, class T, class X>
  Scalar operator()(const Eigen::DenseBase<YH>& yhat, const Eigen::DenseBase<Y>& y, const Eigen::DenseBase<T>& t,
                    const Eigen::DenseBase<X>& x) const {
    check(yhat, y, t, x);
    const detail::eval_t<YH> p(yhat.derived());
    const detail::eval_t<Y> target(y.derived());
    const detail::eval_t<T> rep(t.derived());
    const detail::eval_t<X> in(x.derived());
    const auto engine = engines_.acquire();
    engine->set_x(in, sigma_x, width_rule, weighting, normalized);
    const auto d = engine->template divergence<false>(p, target, sigma_y, symmetric_cross_term, no_grad());
    if (beta == Scalar(0)) return Scalar(d);
    const auto i = engine->template mutual_information<false>(rep, sigma_t, normalized, beta, no_grad());
    return Scalar(d + decltype(d)(beta) * i);
  }

  template <class YH, class Y, class T, class X, class GY, class GT>
  Scalar value_and_gradient(const Eigen::DenseBase<YH>& yhat, const Eigen::DenseBase<Y>& y,
                            const Eigen::DenseBase<T>& t, const Eigen::DenseBase<X>& x,
                            const Eigen::DenseBase<GY>& grad_yhat, const Eigen::DenseBase<GT>& grad_t) const {
    check(yhat, y, t, x);
    detail::check_output("CSIB", "grad_yhat", grad_yhat, yhat.rows(), yhat.cols());
    detail::check_output("CSIB", "grad_t", grad_t, t.rows(), t.cols());
    const detail::eval_t<YH> p(yhat.derived());
    const detail::eval_t<Y> target(y.derived());
    const detail::eval_t<T> rep(t.derived());
    const detail::eval_t<X> in(x.derived());
    GY& gy = detail::prepare_output("CSIB", "grad_yhat", grad_yhat, yhat.rows(), yhat.cols());
    GT& gt = detail::prepare_output("CSIB", "grad_t", grad_t, t.rows(), t.cols());
    const auto engine = engines_.acquire();
    engine->set_x(in, sigma_x, width_rule, weighting, normalized);
    const auto d = engine->template divergence<true>(p, target, sigma_y, symmetric_cross_term, &gy);
    if (beta == Scalar(0)) {
      gt.setZero();
      return Scalar(d);
    }
    const auto i = engine->template mutual_information<true>(rep, sigma_t, normalized, beta, &gt);
    return Scalar(d + decltype(d)(beta) * i);
  }

 private:
  template <class YH, class Y, class T, class X>
  void check(const Eigen::DenseBase<YH>& yhat, const Eigen::DenseBase<Y>& y, const Eigen::DenseBase<T>& t,
             const Eigen::DenseBase<X>& x) const {
    detail::require_scalar<Scalar, YH>();
    detail::require_scalar<Scalar, Y>();
    detail::require_scalar<Scalar, T>();
    detail::require_scalar<Scalar, X>();
    detail::check_not_empty("CSIB", "yhat", yhat);
    detail::check_same_shape("CSIB", "y", yhat, y);
    detail::cs_check_batch("CSIB", "yhat", yhat, yhat.cols());
    detail::cs_check_batch("CSIB", "t", t, yhat.cols());
    detail::cs_check_batch("CSIB", "x", x, yhat.cols());
    detail::check_non_negative("CSIB", "beta", beta);
    detail::check_non_negative("CSIB", "sigma_x", sigma_x);
    detail::check_non_negative("CSIB", "sigma_y", sigma_y);
    detail::check_non_negative("CSIB", "sigma_t", sigma_t);
    detail::cs_check_width_rule("CSIB", width_rule);
  }

  static detail::cs_mat<Scalar>* no_grad() { return nullptr; }
  detail::WorkspacePool<detail::CSEngine<Scalar>> engines_;
};

}  // namespace losskit
