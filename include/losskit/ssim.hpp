#pragma once
/// SSIM and MS-SSIM losses (loss = 1 − index) with analytic gradients.
///
/// SSIM (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004), per plane X, Y and
/// W = valid correlation with an 11×11 Gaussian window (σ = 1.5):
///   μx = W X, μy = W Y, σx² = W(X²) − μx², σy² = W(Y²) − μy², σxy = W(XY) − μxμy
///   S  = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))
///   CS = (2σxy + C2) / (σx² + σy² + C2),      C1 = (k1·L)², C2 = (k2·L)²
///   index = mean of the valid S map; an image's index = mean over its channels.
/// MS-SSIM (Wang, Simoncelli, Bovik, Asilomar 2003): M scales with 2×2 average
/// pooling between them, v_j = mean CS at scales j < M, v_M = mean S at the
/// last one, index = Π_j max(v_j, 0)^{w_j}, computed per channel and averaged
/// over channels (as pytorch-msssim and piq do).
///
/// Conventions (chosen to match the reference MATLAB code, skimage with
/// gaussian_weights=True, use_sample_covariance=False, and pytorch-msssim):
///   window   Gaussian, `window_size` taps (odd, default 11), `sigma` 1.5, built
///            in double, rounded once to Scalar and renormalised; separable
///   padding  none ("valid"): the map is (H − ws + 1)×(W − ws + 1)
///   moments  population (weights sum to 1), variances clamped at 0
///   L        `data_range` = 1 by default (images in [0, 1]); pytorch-msssim
///            defaults to 255: set data_range = 255 for 8-bit-scaled images
///   pooling  odd sizes: OddSizePooling::ReplicateLast (default; MATLAB msssim.m
///            and TensorFlow: the last row/column is averaged with itself) or
///            OddSizePooling::ZeroFirst (pytorch-msssim avg_pool2d(padding = n % 2):
///            a zero row/column is averaged in at the start); output ⌈n/2⌉ either way
///   weights  MS-SSIM: 0.0448, 0.2856, 0.3001, 0.2363, 0.1333 by default, one per
///            scale; fewer scales = a shorter vector; divided by their sum
///            unless normalize_weights = false (the standard five sum to 1.0001)
///
/// Gradient (with respect to the first image only; see docs/ssim.md):
///   with upstream G per map entry, α = G ∂S/∂μx, β = G ∂S/∂W(X²), γ = G ∂S/∂W(XY),
///   ∇X = Wᵀα + 2X ⊙ Wᵀβ + Y ⊙ Wᵀγ, Wᵀ the exact adjoint of the valid filter
///   ("full" correlation). MS-SSIM: c_j = w_j·MS/v_j, r_M = c_M g_M,
///   r_j = c_j g_j + Dᵀ r_{j+1} with Dᵀ the exact adjoint of the 2×2 pooling.
///   A scale term v_j <= 0 makes that channel's MS-SSIM 0 and its gradient
///   exactly 0 (never NaN from 0^(w−1)).
///   Internally each image plane is shifted by its own mean at each scale
///   before the second moments (SSIM is not shift invariant, so the means are
///   shifted back in the luminance term), which keeps σ² = W(X²) − μ² accurate.
///
/// Layout: pred and target are (channels·height·width)×N, each column one image
/// of `channels` planes one after another. `layout` = ImageLayout::RowMajor
/// (default): each plane row after row, so an NCHW buffer (PyTorch, OpenCV,
/// stb, PNG decoders) is `Map<const MatrixXf>(data, C·H·W, N)` as it is;
/// ImageLayout::ColumnMajor: each plane an Eigen column-major H×W matrix.
/// ssim() / ms_ssim() take one H×W Eigen matrix of either storage order.
/// Volumes (SSIM3DLoss, MSSSIM3DLoss): rows channels·depth·height·width, each
/// channel a depth×height×width block, depth slowest, each depth slice a plane
/// in `layout` (RowMajor: NCDHW). The window is the 1-D window along all three
/// axes (valid: the map is (D − ws + 1)×(H − ws + 1)×(W − ws + 1)), MS-SSIM
/// pools 2×2×2 (the `pooling` rule along each axis; ReplicateFirst pads every
/// axis when any side is odd), sample_covariance uses N = taps³; `downsample`
/// and ssim_map() are 2-D only (Error). Same engine: for volumes each scale's
/// five moments are filtered whole, one 1-D pass per axis, and the gradient
/// goes back through the adjoint passes (sweep_volume).
/// Reduction Mean: (1/N) Σ_images (1 − index); Sum: Σ_images (1 − index).
/// Sample weights s_i (ColumnLoss, core/functor.hpp; each image counts once):
/// Sum = Σ s_i·(1 − index_i), Mean = that / Σ s_i.
/// MS-SSIM extras: `fit_scales` uses the first scales that fit a small image
/// (as if `weights` were truncated, then renormalised) instead of throwing;
/// `evaluate()` returns the loss and `clamped_images`, the images with a
/// non-positive scale term (MS-SSIM 0, zero gradient: training stalls there).
/// Non-finite inputs: a NaN or ±inf pixel makes that channel's index NaN
/// (so the loss is NaN) and its gradient plane NaN; other planes are unaffected.
/// Workspace and threads: each functor keeps its workspaces in a pool
/// (core/workspace.hpp) and every call checks one out for itself, so repeated
/// calls of the same size allocate nothing (with a presized grad) and one
/// functor may be called from several threads at once (concurrent calls get
/// distinct workspaces; the pool holds as many as were ever in use at once).
/// Images are processed in parallel with OpenMP when compiled with it.
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "core/checks.hpp"
#include "core/functor.hpp"
#include "core/gaussian_filter.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"
#include "core/workspace.hpp"

namespace losskit {

/// How MS-SSIM's 2×2 average pooling treats an odd height or width.
enum class OddSizePooling {
  ReplicateLast,  ///< MATLAB msssim.m / TensorFlow: last row/column averaged with itself
  ZeroFirst,      ///< pytorch-msssim: a zero row/column averaged in at the start
  /// piq: when the height or the width is odd, the first row and the first
  /// column are replicated before both axes (even ones too) are pooled in
  /// pairs, dropping a last unpaired row/column; output ⌈n/2⌉ either way
  ReplicateFirst
};

/// The 1-D window applied along each axis (separably).
enum class SSIMWindow {
  Gaussian,  ///< `window_size` taps of a Gaussian of standard deviation `sigma` (the default)
  Uniform,   ///< `window_size` equal taps (scikit-image's default with window_size = 7)
  Custom     ///< the taps of `taps`, divided by their sum (odd count; need not be symmetric)
};

/// How each plane of an image is stored within its column (design.md).
enum class ImageLayout {
  RowMajor,    ///< row after row (NCHW: PyTorch, OpenCV, stb, PNG decoders); the default
  ColumnMajor  ///< column after column (Eigen's default layout of an H×W matrix)
};

namespace detail {

constexpr int kMaxSSIMScales = 16;

template <class Scalar>
struct SSIMConfig {
  Eigen::Index height, width, channels, window;
  Eigen::Index depth;  ///< slices per volume (1 for planes)
  bool volume;         ///< SSIM3DLoss / MSSSIM3DLoss: the window spans depth too
  double sigma;
  Scalar c1, c2;
  int scales;  ///< 1: plain SSIM
  std::array<Scalar, kMaxSSIMScales> weights;
  OddSizePooling pooling;
  ImageLayout layout;
  SSIMWindow window_kind;
  const Scalar* custom_taps;  ///< window_kind == Custom: `window` taps (not yet normalised)
  Eigen::Index down;          ///< block-average factor applied before SSIM (1: none)
  bool nonnegative;           ///< SSIM: max(index, 0) per channel
  Scalar index_weight;        ///< α: the loss is α(1 − index) (+ (1 − α)·weighted L1)
  Eigen::Index l1_window;     ///< MSSSIML1Loss: taps of the L1 weighting Gaussian (0: no L1 term)
  double l1_sigma;

  /// The stored plane's sides as the engine reads it (see below), before downsampling.
  Eigen::Index raw_rows() const { return layout == ImageLayout::ColumnMajor ? height : width; }
  Eigen::Index raw_cols() const { return layout == ImageLayout::ColumnMajor ? width : height; }

  /// The plane as the engine reads it: a column-major rows×cols matrix. A
  /// row-major H×W plane is the column-major W×H matrix of its transpose;
  /// the window, the valid filtering and the pooling rule are the same along
  /// both axes, so SSIM of the transposed planes is the same index and its
  /// gradient is the transposed gradient, stored in the same row-major order.
  /// Downsampling (by `down`, flooring) acts the same way on both axes.
  Eigen::Index plane_rows() const { return raw_rows() / down; }
  Eigen::Index plane_cols() const { return raw_cols() / down; }
  /// Values of one channel as stored (depth·height·width; depth = 1 for planes).
  Eigen::Index channel_size() const { return depth * height * width; }
  /// Spatial axes the window spans: the N of sample_covariance is window^dims.
  int dims() const { return volume ? 3 : 2; }
};

/// What one image gave: the sum of its channels' indices, and whether any
/// channel had a clamped (non-positive) MS-SSIM term.
template <class Acc>
struct ImageIndex {
  Acc index_sum = 0;
  bool clamped = false;
};

/// Smallest side that keeps `scales` scales at least `window` wide when each
/// pooling maps n to ⌈n/2⌉: (window − 1)·2^(scales−1) + 1.
inline Eigen::Index ssim_min_side(Eigen::Index window, int scales) {
  return (window - 1) * (Eigen::Index(1) << (scales - 1)) + 1;
}

template <class Scalar>
void check_ssim_options(const char* loss, Eigen::Index window, Scalar sigma, Scalar k1, Scalar k2,
                        Scalar data_range) {
  if (window < 1 || window % 2 == 0)
    fail(loss, "window_size", "must be odd and >= 1 (the window is centred), got ", window);
  check_positive(loss, "sigma", sigma);
  check_positive(loss, "k1", k1);
  check_positive(loss, "k2", k2);
  check_positive(loss, "data_range", data_range);
}

/// Every scale of an image (2-D) or a volume must hold the window (valid filtering).
template <class Scalar>
void check_ssim_size(const char* loss, const SSIMConfig<Scalar>& cfg) {
  const Eigen::Index min_side = ssim_min_side(cfg.window, cfg.scales);
  const Eigen::Index height = cfg.height / cfg.down, width = cfg.width / cfg.down;
  if (std::min({height, width, cfg.volume ? cfg.depth : min_side}) >= min_side) return;
  const Eigen::Index w = cfg.window;
  if (cfg.volume) {
    if (cfg.scales == 1)
      fail(loss, "volumes", "volume ", cfg.depth, "x", height, "x", width,
           " (depth x height x width) is smaller than the ", w, "x", w, "x", w,
           " window: each side must be at least ", min_side, " voxels (valid filtering); use a smaller window_size");
    fail(loss, "volumes", "volume ", cfg.depth, "x", height, "x", width, " is too small for ", cfg.scales,
         " scales with window_size ", w, ": each side (depth too) must be at least ", min_side,
         " voxels (every scale must hold the window; 2x2x2 pooling maps n to ceil(n/2)); use fewer scales "
         "(a shorter weights vector, renormalised), fit_scales or a smaller window_size");
  }
  const char* down = cfg.down > 1 ? " (after downsample)" : "";
  if (cfg.scales == 1)
    fail(loss, "images", "image ", height, "x", width, down, " is smaller than the ", w, "x", w,
         " window: each side must be at least ", min_side, " pixels (valid filtering); use a smaller window_size");
  fail(loss, "images", "image ", height, "x", width, down, " is too small for ", cfg.scales,
       " scales with window_size ", w, ": each side must be at least ", min_side,
       " pixels (every scale must hold the window; 2x2 pooling maps n to ceil(n/2)); use fewer scales "
       "(a shorter weights vector, renormalised) or a smaller window_size");
}

template <class Scalar, class P, class T>
void check_ssim_inputs(const char* loss, const SSIMConfig<Scalar>& cfg, const Eigen::DenseBase<P>& pred,
                       const Eigen::DenseBase<T>& target) {
  require_scalar<Scalar, P>();
  require_scalar<Scalar, T>();
  check_not_empty(loss, "pred", pred);
  const Eigen::Index rows = cfg.channels * cfg.channel_size();
  if (pred.rows() != rows && cfg.volume)
    fail(loss, "pred", "has ", pred.rows(), " rows, expected channels·depth·height·width = ", cfg.channels, "·",
         cfg.depth, "·", cfg.height, "·", cfg.width, " = ", rows);
  if (pred.rows() != rows)
    fail(loss, "pred", "has ", pred.rows(), " rows, expected channels·height·width = ", cfg.channels, "·",
         cfg.height, "·", cfg.width, " = ", rows);
  check_same_shape(loss, "target", pred, target);
  check_ssim_size(loss, cfg);
}

/// The shared SSIM / MS-SSIM machinery: per-plane forward (keeping what the
/// backward pass needs) and backward, over a reusable workspace. One engine
/// serves one call at a time (the functors keep a pool of them).
template <class Scalar>
class SSIMEngine {
 public:
  using Index = Eigen::Index;
  using Acc = acc_t<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// Sizes the workspace for one call whose image loop runs on `threads`
  /// OpenMP threads (detail::loop_threads of that loop).
  void prepare(const SSIMConfig<Scalar>& cfg, int threads) {
    layout(cfg);
    threads_ = threads;
    if (workspace_.size() < Index(threads) * slot_size_) workspace_.resize(Index(threads) * slot_size_);
  }

  /// Image x (target y), each a column of channels·height·width values: the
  /// sum of its channels' indices. With WithGrad, writes into grad (the
  /// image's gradient column) the gradient of upstream·Σ_channels index.
  /// Runs in the thread's own slot (the OpenMP thread number inside the
  /// call's parallel loop).
  /// `per_channel` (optional) receives each channel's index.
  template <bool WithGrad, class X, class Y, class G>
  ImageIndex<Acc> image(const SSIMConfig<Scalar>& cfg, const X& x, const Y& y, G&& grad, Scalar upstream,
                        Scalar* per_channel = nullptr) {
    int slot = 0;
#ifdef _OPENMP
    if (threads_ > 1) slot = omp_get_thread_num();
#endif
    Scalar* w = workspace_.data() + Index(slot) * slot_size_;
    const Index hw = cfg.channel_size();
    ImageIndex<Acc> out;
    for (Index c = 0; c < cfg.channels; ++c) {
      load(cfg, w, x, y, c);
      bool clamped = false;
      const Scalar index = plane<WithGrad>(cfg, w, upstream, clamped);
      if (per_channel) per_channel[c] = index;
      out.index_sum += Acc(index);
      out.clamped = out.clamped || clamped;
      if constexpr (WithGrad) {
        if (cfg.down == 1) {
          grad.segment(c * hw, hw) = CMapV(w + r_off_[0], hw);
        } else {
          block_pool_adjoint(w + r_off_[0], cfg.raw_rows(), cfg.raw_cols(), cfg.down, w + raw_off_);
          grad.segment(c * hw, hw) = CMapV(w + raw_off_, hw);
        }
      }
    }
    return out;
  }

  /// MSSSIML1Loss's term: Σ_channels Σ_pixels ω ⊙ |x − y|, ω = Wᵀ(1/N') the
  /// per-pixel weight of the mean of the Gaussian-filtered (valid) L1 map,
  /// separable: ω_ij = a_i b_j. With WithGrad adds coeff·ω ⊙ sign(x − y) to grad
  /// (sign 0 at 0).
  template <bool WithGrad, class X, class Y, class G>
  Acc weighted_l1(const SSIMConfig<Scalar>& cfg, const X& x, const Y& y, G&& grad, Scalar coeff) const {
    const Index rows = cfg.raw_rows(), cols = cfg.raw_cols(), hw = rows * cols;
    Acc total = 0;
    for (Index c = 0; c < cfg.channels; ++c)
      for (Index j = 0; j < cols; ++j) {
        const Index at = c * hw + j * rows;
        // (x, y may be array expressions: the difference is spelled out twice, not held by auto)
        total += Acc(l1_b_(j)) *
                 Acc((l1_a_.array() * (x.segment(at, rows) - y.segment(at, rows)).array().abs()).sum());
        if constexpr (WithGrad)
          grad.segment(at, rows).array() +=
              (coeff * l1_b_(j)) * l1_a_.array() * (x.segment(at, rows) - y.segment(at, rows)).array().sign();
      }
    return total;
  }

  /// The S map of channel c of image x (target y) at the first scale, in the
  /// engine's orientation: (plane_rows − window + 1)×(plane_cols − window + 1),
  /// column-major into `out`. Uses slot 0 (prepare with threads = 1).
  template <class X, class Y>
  void ssim_map(const SSIMConfig<Scalar>& cfg, const X& x, const Y& y, Index c, Scalar* out) {
    Scalar* w = workspace_.data();
    load(cfg, w, x, y, c);
    Scalar sx, sy;
    center(w, 0, sx, sy);
    sweep_scale<false>(cfg, w, 0, sx, sy, true, Scalar(1), out);
  }

 private:
  using MapV = Eigen::Map<Vector>;
  using CMapV = Eigen::Map<const Vector>;

  // Per-scale sizes and, within one thread's slot of the workspace, offsets
  // of the shifted planes (x, y) and the gradient plane r of each scale, then
  // shared column scratch: rings of the last `window` filtered moment columns
  // and derivative-map columns, and single columns.
  std::array<Index, kMaxSSIMScales> h_{}, w_{}, d_{}, x_off_{}, y_off_{}, r_off_{};
  // Volumes: the five filtered moments, the S/CS map and α, β, γ (valid size
  // at scale 0) and two whole-volume scratch buffers (see sweep_volume).
  Index deriv_off_ = 0, t1_off_ = 0, t2_off_ = 0;
  Index ring_off_ = 0, dring_off_ = 0, prod_off_ = 0, mom_off_ = 0, map_off_ = 0, hcol_off_ = 0, vcol_off_ = 0;
  Index raw_off_ = 0, slot_size_ = 0;
  int threads_ = 1;
  Index window_ = 0;
  double sigma_ = 0;
  SSIMWindow kind_ = SSIMWindow::Gaussian;
  bool symmetric_ = true;
  Vector taps_, flipped_, workspace_;
  Index l1_window_ = 0;
  double l1_sigma_ = 0;
  Vector l1_taps_, l1_a_, l1_b_;

  // ω's factors along each axis: the adjoint of the valid L1 filter applied
  // to the constant 1/N' (each axis's share of the mean).
  void set_l1_weights(const SSIMConfig<Scalar>& cfg) {
    if (cfg.l1_window == 0) return;
    if (l1_window_ != cfg.l1_window || l1_sigma_ != cfg.l1_sigma) {
      l1_taps_ = gaussian_window<Scalar>(cfg.l1_window, cfg.l1_sigma);
      l1_window_ = cfg.l1_window;
      l1_sigma_ = cfg.l1_sigma;
    }
    const Index rows = cfg.raw_rows(), cols = cfg.raw_cols(), rv = rows - l1_window_ + 1, cv = cols - l1_window_ + 1;
    l1_a_.resize(rows);
    l1_b_.resize(cols);
    correlate_valid_adjoint(l1_taps_, Vector::Constant(rv, Scalar(1) / Scalar(rv)), l1_a_);
    correlate_valid_adjoint(l1_taps_, Vector::Constant(cv, Scalar(1) / Scalar(cv)), l1_b_);
  }

  // The normalised taps (cached; rebuilt only when the window changes) and
  // their mirror image, which the adjoint of a valid correlation uses.
  void set_taps(const SSIMConfig<Scalar>& cfg) {
    const bool same = kind_ == cfg.window_kind && window_ == cfg.window &&
                      (cfg.window_kind != SSIMWindow::Gaussian || sigma_ == cfg.sigma);
    if (same && cfg.window_kind != SSIMWindow::Custom) return;
    if (cfg.window_kind == SSIMWindow::Gaussian) {
      taps_ = gaussian_window<Scalar>(cfg.window, cfg.sigma);
    } else if (cfg.window_kind == SSIMWindow::Uniform) {
      taps_.setConstant(cfg.window, Scalar(1) / Scalar(cfg.window));
    } else {
      const CMapV given(cfg.custom_taps, cfg.window);
      taps_ = given / Scalar(accurate_sum(given.array()));
    }
    kind_ = cfg.window_kind;
    window_ = cfg.window;
    sigma_ = cfg.sigma;
    flipped_ = taps_.reverse();
    symmetric_ = (taps_.array() == flipped_.array()).all();
  }

  // y = valid correlation of x with `taps` (paired multiplies when symmetric).
  template <class In, class Out>
  void correlate(const Vector& taps, const In& x, Out&& y) const {
    if (symmetric_) return correlate_valid(taps, x, y);
    const Index n = y.size();
    y = taps(0) * x.segment(0, n);
    for (Index k = 1; k < taps.size(); ++k) y += taps(k) * x.segment(k, n);
  }

  // Channel c of x and y into the scale-0 planes, block-averaged by cfg.down.
  template <class X, class Y>
  void load(const SSIMConfig<Scalar>& cfg, Scalar* w, const X& x, const Y& y, Index c) const {
    const Index hw = cfg.channel_size();
    if (cfg.down == 1) {
      MapV(w + x_off_[0], hw) = x.segment(c * hw, hw);
      MapV(w + y_off_[0], hw) = y.segment(c * hw, hw);
      return;
    }
    MapV(w + raw_off_, hw) = x.segment(c * hw, hw);
    block_pool(w + raw_off_, cfg.raw_rows(), cfg.raw_cols(), cfg.down, w + x_off_[0]);
    MapV(w + raw_off_, hw) = y.segment(c * hw, hw);
    block_pool(w + raw_off_, cfg.raw_rows(), cfg.raw_cols(), cfg.down, w + y_off_[0]);
  }

  // dst (⌊rows/f⌋×⌊cols/f⌋) = means of the f×f blocks of src (rows×cols);
  // a last partial block row/column is dropped (piq: avg_pool2d(kernel_size = f)).
  static void block_pool(const Scalar* src, Index rows, Index cols, Index f, Scalar* dst) {
    const Index r2 = rows / f, c2 = cols / f;
    const Scalar scale = Scalar(1) / Scalar(f * f);
    for (Index b = 0; b < c2; ++b) {
      MapV out(dst + b * r2, r2);
      out.setZero();
      for (Index q = b * f; q < (b + 1) * f; ++q)
        for (Index a = 0; a < f; ++a) out += Eigen::Map<const Vector, 0, Eigen::InnerStride<>>(
                                                 src + q * rows + a, r2, Eigen::InnerStride<>(f));
      out *= scale;
    }
  }

  // dst (rows×cols) = adjoint of block_pool applied to g: g/f² spread over
  // each block, zero on the dropped rows/columns.
  static void block_pool_adjoint(const Scalar* g, Index rows, Index cols, Index f, Scalar* dst) {
    const Index r2 = rows / f, c2 = cols / f;
    const Scalar scale = Scalar(1) / Scalar(f * f);
    MapV(dst, rows * cols).setZero();
    for (Index b = 0; b < c2; ++b)
      for (Index q = b * f; q < (b + 1) * f; ++q)
        for (Index a = 0; a < f; ++a)
          Eigen::Map<Vector, 0, Eigen::InnerStride<>>(dst + q * rows + a, r2, Eigen::InnerStride<>(f)) =
              scale * CMapV(g + b * r2, r2);
  }

  // Per-scale sizes (d_ = 1 for planes) and the x, y, r offsets; returns the offset after them.
  Index scale_layout(const SSIMConfig<Scalar>& cfg) {
    Index off = 0;
    for (int j = 0; j < cfg.scales; ++j) {
      h_[j] = j == 0 ? cfg.plane_rows() : (h_[j - 1] + 1) / 2;
      w_[j] = j == 0 ? cfg.plane_cols() : (w_[j - 1] + 1) / 2;
      d_[j] = j == 0 ? (cfg.volume ? cfg.depth : 1) : (d_[j - 1] + 1) / 2;
      const Index full = size(j);
      x_off_[j] = off;
      y_off_[j] = off += full;
      r_off_[j] = off += full;
      off += full;
    }
    return off;
  }

  Index size(int j) const { return h_[j] * w_[j] * d_[j]; }
  // Valid window positions at scale j.
  Index valid_count(const SSIMConfig<Scalar>& cfg, int j) const {
    const Index ws = cfg.window;
    return (h_[j] - ws + 1) * (w_[j] - ws + 1) * (cfg.volume ? d_[j] - ws + 1 : 1);
  }

  void layout(const SSIMConfig<Scalar>& cfg) {
    set_taps(cfg);
    Index off = scale_layout(cfg);
    if (cfg.volume) {
      const Index nv = valid_count(cfg, 0);
      mom_off_ = off;
      map_off_ = off += 5 * nv;
      deriv_off_ = off += nv;
      t1_off_ = off += 3 * nv;
      t2_off_ = off += size(0);
      slot_size_ = off + size(0);
      return;
    }
    set_l1_weights(cfg);
    const Index h = h_[0], hv = h - cfg.window + 1;
    ring_off_ = off;
    dring_off_ = off += 5 * cfg.window * hv;
    prod_off_ = off += 3 * cfg.window * hv;
    mom_off_ = off += 3 * h;
    map_off_ = off += 5 * hv;
    hcol_off_ = off += hv;
    vcol_off_ = off += 3 * (h + cfg.window - 1);
    raw_off_ = off += 3 * h;
    slot_size_ = off + (cfg.down > 1 ? cfg.height * cfg.width : 0);
  }

  template <bool WithGrad>
  Scalar plane(const SSIMConfig<Scalar>& cfg, Scalar* w, Scalar upstream, bool& clamped) const {
    const int m = cfg.scales;
    std::array<Scalar, kMaxSSIMScales> shift_x{}, shift_y{}, v{};
    for (int j = 0; j < m; ++j) {
      if (j > 0 && cfg.volume) {
        pool_volume(w + x_off_[j - 1], j - 1, shift_x[j - 1], w + x_off_[j], cfg.pooling, w);
        pool_volume(w + y_off_[j - 1], j - 1, shift_y[j - 1], w + y_off_[j], cfg.pooling, w);
      } else if (j > 0) {
        pool(w + x_off_[j - 1], h_[j - 1], w_[j - 1], shift_x[j - 1], w + x_off_[j], cfg.pooling, w + prod_off_);
        pool(w + y_off_[j - 1], h_[j - 1], w_[j - 1], shift_y[j - 1], w + y_off_[j], cfg.pooling, w + prod_off_);
      }
      center(w, j, shift_x[j], shift_y[j]);
      const Index valid = valid_count(cfg, j);
      // SSIM knows its upstream factor before the sweep; MS-SSIM's c_j needs
      // every scale, so each scale's gradient is kept unscaled and combined below.
      const Scalar coeff = m == 1 ? upstream / Scalar(valid) : Scalar(1);
      const Acc sum = cfg.volume ? sweep_volume<WithGrad>(cfg, w, j, shift_x[j], shift_y[j], j == m - 1, coeff)
                                 : sweep_scale<WithGrad>(cfg, w, j, shift_x[j], shift_y[j], j == m - 1, coeff);
      v[j] = Scalar(sum / Acc(valid));
    }
    return combine<WithGrad>(cfg, w, v, upstream, clamped);
  }

  // The index from the scale terms v (SSIM: v_0, clamped at 0 if nonnegative;
  // MS-SSIM: Π max(v_j, 0)^{w_j}) and, with WithGrad, the gradient plane
  // r_0 from the unscaled per-scale gradients g_j left in r_j by the sweeps.
  template <bool WithGrad>
  Scalar combine(const SSIMConfig<Scalar>& cfg, Scalar* w, const std::array<Scalar, kMaxSSIMScales>& v,
                 Scalar upstream, bool& clamped) const {
    const int m = cfg.scales;
    Scalar index = v[0];
    bool positive = true;
    if (m == 1 && cfg.nonnegative && index < Scalar(0)) {
      index = 0;
      positive = false;
      clamped = true;
    }
    if (m > 1) {
      Acc log_ms = 0;
      for (int j = 0; j < m; ++j) {
        if (std::isnan(v[j])) return nan_plane<WithGrad>(w);
        if (v[j] > Scalar(0))
          log_ms += Acc(cfg.weights[j]) * std::log(Acc(v[j]));
        else
          positive = false;
      }
      index = positive ? Scalar(std::exp(log_ms)) : Scalar(0);
      clamped = !positive;
    }
    if constexpr (WithGrad) {
      if (std::isnan(index)) return nan_plane<WithGrad>(w);
      if (!positive) {
        // MS-SSIM is 0 here and constant near points where a term is < 0:
        // its gradient is defined as 0 (not 0·∞ from v^(w−1)).
        MapV(w + r_off_[0], size(0)).setZero();
        return index;
      }
      if (m == 1) return index;
      // r_M = c_M g_M, r_j = c_j g_j + Dᵀ r_{j+1}, c_j = upstream·w_j·MS/v_j / N'_j.
      for (int j = m - 1; j >= 0; --j) {
        MapV(w + r_off_[j], size(j)) *= upstream * (cfg.weights[j] * index / v[j]) / Scalar(valid_count(cfg, j));
        if (j < m - 1 && cfg.volume) pool_volume_adjoint(w + r_off_[j + 1], j, w + r_off_[j], cfg.pooling, w);
        if (j < m - 1 && !cfg.volume)
          pool_adjoint(w + r_off_[j + 1], h_[j], w_[j], w + r_off_[j], cfg.pooling, w + vcol_off_);
      }
    }
    return index;
  }

  // Shifts the planes of scale j by their means (returned).
  void center(Scalar* w, int j, Scalar& shift_x, Scalar& shift_y) const {
    const Index n = size(j);
    MapV x(w + x_off_[j], n), y(w + y_off_[j], n);
    shift_x = Scalar(accurate_sum(x.array()) / Acc(n));
    shift_y = Scalar(accurate_sum(y.array()) / Acc(n));
    x.array() -= shift_x;
    y.array() -= shift_y;
  }

  template <bool WithGrad>
  Scalar nan_plane(Scalar* w) const {
    if constexpr (WithGrad)
      MapV(w + r_off_[0], size(0)).setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    return std::numeric_limits<Scalar>::quiet_NaN();
  }

  // One scale's forward and (WithGrad) backward pass in a single sweep over
  // the columns. Forward: each input column is filtered vertically into a
  // ring of the last `window` columns of the five moments (x, y, x², y², xy);
  // each full ring gives one valid output column by the horizontal pass, whose
  // derivative columns (α, β, γ) go to a second ring. Backward, `window − 1`
  // columns behind: gradient column jj needs exactly the derivative columns
  // jj − window + 1 .. jj, all still in that ring. So only a few columns are
  // live at a time, and the gradient plane r (times `coeff`) is written once.
  // Returns the sum of the S map (last scale) or of the CS map.
  template <bool WithGrad>
  // `map_out` (optional) receives the map, column after column.
  Acc sweep_scale(const SSIMConfig<Scalar>& cfg, Scalar* w, int j, Scalar shift_x, Scalar shift_y, bool last,
                  Scalar coeff, Scalar* map_out = nullptr) const {
    const Index h = h_[j], width = w_[j], ws = cfg.window, hv = h - ws + 1, half = ws / 2;
    const Scalar* x = w + x_off_[j];
    const Scalar* y = w + y_off_[j];
    Scalar* ring = w + ring_off_;
    Scalar* dring = w + dring_off_;
    Scalar* mom = w + mom_off_;
    MapV xx(w + prod_off_, h), yy(w + prod_off_ + h, h), xy(w + prod_off_ + 2 * h, h);
    auto ring_col = [&](Index moment, Index col) { return MapV(ring + (moment * ws + col % ws) * hv, hv); };
    auto dring_col = [&](Index map, Index col) { return dring + (map * ws + col % ws) * hv; };
    if constexpr (WithGrad) start_backward(cfg, w);
    Acc total = 0;
    const Index steps = WithGrad ? width + ws - 1 : width;
    for (Index jj = 0; jj < steps; ++jj) {
      if (jj < width) {
        const CMapV xc(x + jj * h, h), yc(y + jj * h, h);
        xx = xc.cwiseProduct(xc);
        yy = yc.cwiseProduct(yc);
        xy = xc.cwiseProduct(yc);
        correlate(taps_, xc, ring_col(0, jj));
        correlate(taps_, yc, ring_col(1, jj));
        correlate(taps_, xx, ring_col(2, jj));
        correlate(taps_, yy, ring_col(3, jj));
        correlate(taps_, xy, ring_col(4, jj));
        if (jj + 1 >= ws) {
          const Index col = jj + 1 - ws;
          for (Index k = 0; k < 5; ++k) {
            MapV o(mom + k * hv, hv);
            if (symmetric_) {
              o = taps_(half) * ring_col(k, col + half);
              for (Index t = 0; t < half; ++t) o += taps_(t) * (ring_col(k, col + t) + ring_col(k, col + ws - 1 - t));
            } else {
              o = taps_(0) * ring_col(k, col);
              for (Index t = 1; t < ws; ++t) o += taps_(t) * ring_col(k, col + t);
            }
          }
          total += pointwise<WithGrad>(cfg, mom, hv, shift_x, shift_y, last, w + map_off_, dring_col(0, col),
                                       dring_col(1, col), dring_col(2, col));
          if (map_out) MapV(map_out + col * hv, hv) = CMapV(w + map_off_, hv);
        }
      }
      if constexpr (WithGrad) {
        if (jj + 1 >= ws) backward_column(cfg, w, j, jj + 1 - ws, coeff);
      }
    }
    return total;
  }

  // S (or CS) and its partials with respect to the shifted moments
  // mx = W(X − sx), W((X − sx)²), W((X − sx)(Y − sy)) (and the same for Y);
  // μx = mx + sx enters only the luminance term. With these partials
  // ∂S/∂mx = [2μy·A2 − 2my·A1 + 2S(mx·B1 − μx·B2)] / (B1·B2) (the reference
  // formula when the shifts are 0), ∂S/∂W(X²) = −S/B2, ∂S/∂W(XY) = 2A1/(B1·B2);
  // ∂CS/∂mx = 2(mx·CS − my)/B2, ∂CS/∂W(X²) = −CS/B2, ∂CS/∂W(XY) = 2/B2.
  template <bool WithGrad>
  Acc pointwise(const SSIMConfig<Scalar>& cfg, const Scalar* mom, Index hv, Scalar shift_x, Scalar shift_y,
                bool last, Scalar* map, Scalar* alpha, Scalar* beta, Scalar* gamma) const {
    const Scalar *mx = mom, *my = mom + hv, *qx = mom + 2 * hv, *qy = mom + 3 * hv, *p = mom + 4 * hv;
    const Scalar c1 = cfg.c1, c2 = cfg.c2;
    if (last) {
      for (Index i = 0; i < hv; ++i) {
        const Scalar sxx = std::max(qx[i] - mx[i] * mx[i], Scalar(0));
        const Scalar syy = std::max(qy[i] - my[i] * my[i], Scalar(0));
        const Scalar a2 = 2 * (p[i] - mx[i] * my[i]) + c2, b2 = sxx + syy + c2;
        const Scalar ux = mx[i] + shift_x, uy = my[i] + shift_y;
        const Scalar a1 = 2 * ux * uy + c1, b1 = ux * ux + uy * uy + c1;
        const Scalar inv = Scalar(1) / (b1 * b2), s = a1 * a2 * inv;
        map[i] = s;
        if constexpr (WithGrad) {
          alpha[i] = 2 * (uy * a2 - my[i] * a1 + s * (mx[i] * b1 - ux * b2)) * inv;
          beta[i] = -s / b2;
          gamma[i] = 2 * a1 * inv;
        }
      }
    } else {
      for (Index i = 0; i < hv; ++i) {
        const Scalar sxx = std::max(qx[i] - mx[i] * mx[i], Scalar(0));
        const Scalar syy = std::max(qy[i] - my[i] * my[i], Scalar(0));
        const Scalar inv = Scalar(1) / (sxx + syy + c2), cs = (2 * (p[i] - mx[i] * my[i]) + c2) * inv;
        map[i] = cs;
        if constexpr (WithGrad) {
          alpha[i] = 2 * (mx[i] * cs - my[i]) * inv;
          beta[i] = -cs * inv;
          gamma[i] = 2 * inv;
        }
      }
    }
    return Acc(CMapV(map, hv).sum());
  }

  // Zero borders of the padded columns that backward_column fills.
  void start_backward(const SSIMConfig<Scalar>& cfg, Scalar* w) const {
    MapV(w + hcol_off_, 3 * (h_[0] + cfg.window - 1)).setZero();
  }

  // Column jj of coeff · (Wᵀα + 2X ⊙ Wᵀβ + Y ⊙ Wᵀγ): the horizontal adjoint
  // gathers the derivative columns that touched input column jj into the
  // middle of a zero-padded column, whose valid correlation is the vertical
  // adjoint (full correlation; the taps are symmetric). Away from the
  // left/right borders every tap is present and symmetric taps are paired.
  void backward_column(const SSIMConfig<Scalar>& cfg, Scalar* w, int j, Index jj, Scalar coeff) const {
    const Index h = h_[j], width = w_[j], ws = cfg.window, hv = h - ws + 1, wv = width - ws + 1, half = ws / 2;
    const Index padded = h + ws - 1;
    const Scalar* dring = w + dring_off_;
    const bool interior = symmetric_ && jj >= ws - 1 && jj <= wv - 1;
    for (int m = 0; m < 3; ++m) {
      auto col = [&](Index c) { return CMapV(dring + (m * ws + c % ws) * hv, hv); };
      Eigen::VectorBlock<MapV> mid = MapV(w + hcol_off_ + m * padded, padded).segment(ws - 1, hv);
      if (interior) {
        mid = taps_(half) * col(jj - half);
        for (Index k = 0; k < half; ++k) mid += taps_(k) * (col(jj - k) + col(jj - ws + 1 + k));
      } else {
        mid.setZero();
        const Index k_lo = std::max<Index>(0, jj - (wv - 1)), k_hi = std::min<Index>(ws - 1, jj);
        for (Index k = k_lo; k <= k_hi; ++k) mid += taps_(k) * col(jj - k);
      }
    }
    MapV va(w + vcol_off_, h), vb(w + vcol_off_ + h, h), vg(w + vcol_off_ + 2 * h, h);
    correlate(flipped_, CMapV(w + hcol_off_, padded), va);
    correlate(flipped_, CMapV(w + hcol_off_ + padded, padded), vb);
    correlate(flipped_, CMapV(w + hcol_off_ + 2 * padded, padded), vg);
    const Scalar *x = w + x_off_[j] + jj * h, *y = w + y_off_[j] + jj * h;
    MapV(w + r_off_[j] + jj * h, h) =
        coeff * (va.array() + 2 * CMapV(x, h).array() * vb.array() + CMapV(y, h).array() * vg.array()).matrix();
  }

  // Source index of tap t (0 or 1) of pooled index a along an axis of length
  // n, or -1 for a zero pad.
  // `padded`: ReplicateFirst with an odd side (either axis).
  static Index pool_source(Index a, int t, Index n, OddSizePooling conv, bool padded) {
    if (conv == OddSizePooling::ReplicateLast) return std::min(2 * a + t, n - 1);
    if (conv == OddSizePooling::ReplicateFirst) return padded ? std::max<Index>(2 * a + t - 1, 0) : 2 * a + t;
    return 2 * a + t - (n % 2);
  }
  static bool pool_padded(Index h, Index width, OddSizePooling conv) {
    return conv == OddSizePooling::ReplicateFirst && (h % 2 == 1 || width % 2 == 1);
  }

  // Rows of one column pooled in pairs: ReplicateLast pairs (2a, 2a+1) for
  // a < ⌊h/2⌋ and, for odd h, averages the last row with itself; ZeroFirst
  // (odd h) averages row 0 with the zero pad and pairs (2a−1, 2a) after it.
  struct RowPairs {
    Index first_pair_out, first_pair_in, pairs, single_out, single_in;
    Scalar single_weight;  // 0 when h is even
  };
  // ReplicateFirst (padded) averages row 0 with itself and pairs (2a−1, 2a)
  // after it, dropping the last row of an even h.
  static RowPairs row_pairs(Index h, OddSizePooling conv, bool padded) {
    const Index odd = h % 2;
    if (conv == OddSizePooling::ReplicateFirst)
      return padded ? RowPairs{1, 1, (h + 1) / 2 - 1, 0, 0, Scalar(2)} : RowPairs{0, 0, h / 2, 0, 0, Scalar(0)};
    if (conv == OddSizePooling::ReplicateLast) return {0, 0, h / 2, (h + 1) / 2 - 1, h - 1, Scalar(odd ? 2 : 0)};
    return {odd, odd, h / 2, 0, 0, Scalar(odd ? 1 : 0)};
  }
  using StridedV = Eigen::Map<Vector, 0, Eigen::InnerStride<2>>;
  using CStridedV = Eigen::Map<const Vector, 0, Eigen::InnerStride<2>>;

  // dst = 2×2 average of (src + add) (the zero pads of ZeroFirst stay zero).
  // `scratch` holds one column of src.
  static void pool(const Scalar* src, Index h, Index width, Scalar add, Scalar* dst, OddSizePooling conv,
                   Scalar* scratch) {
    const Index h2 = (h + 1) / 2, w2 = (width + 1) / 2;
    const bool padded = pool_padded(h, width, conv);
    const RowPairs rp = row_pairs(h, conv, padded);
    MapV col(scratch, h);
    for (Index b = 0; b < w2; ++b) {
      const Index q0 = pool_source(b, 0, width, conv, padded), q1 = pool_source(b, 1, width, conv, padded);
      if (q0 >= 0)
        col = (CMapV(src + q0 * h, h).array() + CMapV(src + q1 * h, h).array() + 2 * add).matrix();
      else
        col = (CMapV(src + q1 * h, h).array() + add).matrix();
      MapV out(dst + b * h2, h2);
      out.segment(rp.first_pair_out, rp.pairs) =
          Scalar(0.25) * (CStridedV(scratch + rp.first_pair_in, rp.pairs) +
                          CStridedV(scratch + rp.first_pair_in + 1, rp.pairs));
      if (rp.single_weight != Scalar(0)) out(rp.single_out) = Scalar(0.25) * rp.single_weight * col(rp.single_in);
    }
  }

  // r += adjoint of pool applied to r2 (r is h×width, r2 the pooled size).
  static void pool_adjoint(const Scalar* r2, Index h, Index width, Scalar* r, OddSizePooling conv,
                           Scalar* scratch) {
    const Index h2 = (h + 1) / 2, w2 = (width + 1) / 2;
    const bool padded = pool_padded(h, width, conv);
    const RowPairs rp = row_pairs(h, conv, padded);
    MapV spread(scratch, h);
    if (padded && h % 2 == 0) spread(h - 1) = Scalar(0);  // the dropped last row
    for (Index b = 0; b < w2; ++b) {
      const CMapV g(r2 + b * h2, h2);
      StridedV(scratch + rp.first_pair_in, rp.pairs) = Scalar(0.25) * g.segment(rp.first_pair_out, rp.pairs);
      StridedV(scratch + rp.first_pair_in + 1, rp.pairs) = Scalar(0.25) * g.segment(rp.first_pair_out, rp.pairs);
      if (rp.single_weight != Scalar(0)) spread(rp.single_in) = Scalar(0.25) * rp.single_weight * g(rp.single_out);
      for (int t = 0; t < 2; ++t) {
        const Index q = pool_source(b, t, width, conv, padded);
        if (q >= 0) MapV(r + q * h, h) += spread;
      }
    }
  }

  // ---- Volumes (SSIM3DLoss, MSSSIM3DLoss). A channel is a column-major
  // rows×cols×depth array (each slice read as a plane above, slices one after
  // another). Every step is separable: one pass per axis, the axis viewed as
  // the middle index of an inner×n×outer array (inner contiguous).
  struct Axis {
    Index inner, n, outer;
  };
  static Axis axis_view(Index rows, Index cols, Index depth, int axis) {
    if (axis == 0) return {1, rows, cols * depth};
    if (axis == 1) return {rows, cols, depth};
    return {rows * cols, depth, 1};
  }

  // dst = valid correlation of src with the taps along the axis (n → n − ws + 1).
  void filter_axis(const Scalar* src, Axis a, Scalar* dst) const {
    const Index ws = taps_.size(), nv = a.n - ws + 1;
    for (Index o = 0; o < a.outer; ++o) {
      if (a.inner == 1) {
        correlate(taps_, CMapV(src + o * a.n, a.n), MapV(dst + o * nv, nv));
        continue;
      }
      auto in = [&](Index i) { return CMapV(src + (o * a.n + i) * a.inner, a.inner); };
      for (Index i = 0; i < nv; ++i) {
        MapV out(dst + (o * nv + i) * a.inner, a.inner);
        if (symmetric_) {  // paired taps, as correlate_valid
          out = taps_(ws / 2) * in(i + ws / 2);
          for (Index k = 0; k < ws / 2; ++k) out += taps_(k) * (in(i + k) + in(i + ws - 1 - k));
        } else {
          out = taps_(0) * in(i);
          for (Index k = 1; k < ws; ++k) out += taps_(k) * in(i + k);
        }
      }
    }
  }

  // dst (length n along the axis) = the exact adjoint of filter_axis applied to src (n − ws + 1).
  void filter_axis_adjoint(const Scalar* src, Axis a, Scalar* dst) const {
    const Index ws = taps_.size(), nv = a.n - ws + 1;
    for (Index o = 0; o < a.outer; ++o) {
      if (a.inner == 1) {
        correlate_valid_adjoint(taps_, CMapV(src + o * nv, nv), MapV(dst + o * a.n, a.n));
        continue;
      }
      MapV(dst + o * a.n * a.inner, a.n * a.inner).setZero();
      for (Index i = 0; i < nv; ++i) {
        const CMapV g(src + (o * nv + i) * a.inner, a.inner);
        for (Index k = 0; k < ws; ++k) MapV(dst + (o * a.n + i + k) * a.inner, a.inner) += taps_(k) * g;
      }
    }
  }

  // dst = the valid 3-D window filter of src (scale j's size); src may be t1.
  // Passes: rows into t2, columns into t1, depth into dst.
  void filter_volume(const Scalar* src, int j, Scalar* dst, Scalar* t1, Scalar* t2) const {
    const Index ws = taps_.size(), rv = h_[j] - ws + 1, cv = w_[j] - ws + 1;
    filter_axis(src, axis_view(h_[j], w_[j], d_[j], 0), t2);
    filter_axis(t2, axis_view(rv, w_[j], d_[j], 1), t1);
    filter_axis(t1, axis_view(rv, cv, d_[j], 2), dst);
  }

  // dst (scale j's size) = the adjoint of filter_volume applied to src; dst may be t1.
  void filter_volume_adjoint(const Scalar* src, int j, Scalar* dst, Scalar* t1, Scalar* t2) const {
    const Index ws = taps_.size(), rv = h_[j] - ws + 1, cv = w_[j] - ws + 1;
    filter_axis_adjoint(src, axis_view(rv, cv, d_[j], 2), t1);
    filter_axis_adjoint(t1, axis_view(rv, w_[j], d_[j], 1), t2);
    filter_axis_adjoint(t2, axis_view(h_[j], w_[j], d_[j], 0), dst);
  }

  // The volume counterpart of sweep_scale: the five moments filtered whole,
  // the pointwise S (or CS) map and partials (the same formulas), and with
  // WithGrad r_j = coeff · (Wᵀα + 2X ⊙ Wᵀβ + Y ⊙ Wᵀγ), Wᵀ filter_volume_adjoint.
  template <bool WithGrad>
  Acc sweep_volume(const SSIMConfig<Scalar>& cfg, Scalar* w, int j, Scalar shift_x, Scalar shift_y, bool last,
                   Scalar coeff) const {
    const Index n = size(j), nv = valid_count(cfg, j);
    const CMapV x(w + x_off_[j], n), y(w + y_off_[j], n);
    Scalar *t1 = w + t1_off_, *t2 = w + t2_off_, *mom = w + mom_off_, *d = w + deriv_off_;
    MapV prod(t1, n);
    filter_volume(x.data(), j, mom, t1, t2);
    filter_volume(y.data(), j, mom + nv, t1, t2);
    prod = x.cwiseProduct(x);
    filter_volume(t1, j, mom + 2 * nv, t1, t2);
    prod = y.cwiseProduct(y);
    filter_volume(t1, j, mom + 3 * nv, t1, t2);
    prod = x.cwiseProduct(y);
    filter_volume(t1, j, mom + 4 * nv, t1, t2);
    const Acc total = pointwise<WithGrad>(cfg, mom, nv, shift_x, shift_y, last, w + map_off_, d, d + nv, d + 2 * nv);
    if constexpr (WithGrad) {
      MapV r(w + r_off_[j], n);
      const CMapV back(t1, n);
      filter_volume_adjoint(d, j, w + r_off_[j], t1, t2);
      r *= coeff;
      filter_volume_adjoint(d + nv, j, t1, t1, t2);
      r.array() += (2 * coeff) * x.array() * back.array();
      filter_volume_adjoint(d + 2 * nv, j, t1, t1, t2);
      r.array() += coeff * y.array() * back.array();
    }
    return total;
  }

  // dst = src + add averaged in pairs along the axis (n → ⌈n/2⌉), the pair of
  // output a being pool_source(a, 0 / 1) (a zero pad where that is −1).
  static void pool_axis(const Scalar* src, Axis a, Scalar add, Scalar* dst, OddSizePooling conv, bool padded) {
    const Index n2 = (a.n + 1) / 2;
    for (Index o = 0; o < a.outer; ++o)
      for (Index b = 0; b < n2; ++b) {
        const Index q0 = pool_source(b, 0, a.n, conv, padded), q1 = pool_source(b, 1, a.n, conv, padded);
        MapV out(dst + (o * n2 + b) * a.inner, a.inner);
        out = (Scalar(0.5) * (CMapV(src + (o * a.n + q1) * a.inner, a.inner).array() + add)).matrix();
        if (q0 >= 0) out.array() += Scalar(0.5) * (CMapV(src + (o * a.n + q0) * a.inner, a.inner).array() + add);
      }
  }

  // dst (n along the axis) = the adjoint of pool_axis (without add) applied to g (⌈n/2⌉).
  static void pool_axis_adjoint(const Scalar* g, Axis a, Scalar* dst, OddSizePooling conv, bool padded) {
    const Index n2 = (a.n + 1) / 2;
    MapV(dst, a.n * a.inner * a.outer).setZero();
    for (Index o = 0; o < a.outer; ++o)
      for (Index b = 0; b < n2; ++b)
        for (int t = 0; t < 2; ++t) {
          const Index q = pool_source(b, t, a.n, conv, padded);
          if (q >= 0)
            MapV(dst + (o * a.n + q) * a.inner, a.inner) += Scalar(0.5) * CMapV(g + (o * n2 + b) * a.inner, a.inner);
        }
  }

  // ReplicateFirst pads the first entry of every axis when any side is odd
  // (piq's 2-D rule, extended to the depth axis).
  bool volume_padded(int j, OddSizePooling conv) const {
    return conv == OddSizePooling::ReplicateFirst && (h_[j] % 2 == 1 || w_[j] % 2 == 1 || d_[j] % 2 == 1);
  }

  // dst (scale j + 1) = 2×2×2 average of src + add (scale j): a pair pass per axis.
  void pool_volume(const Scalar* src, int j, Scalar add, Scalar* dst, OddSizePooling conv, Scalar* w) const {
    const bool padded = volume_padded(j, conv);
    Scalar *t1 = w + t1_off_, *t2 = w + t2_off_;
    const Index r2 = (h_[j] + 1) / 2, c2 = (w_[j] + 1) / 2;
    pool_axis(src, axis_view(h_[j], w_[j], d_[j], 0), add, t1, conv, padded);
    pool_axis(t1, axis_view(r2, w_[j], d_[j], 1), Scalar(0), t2, conv, padded);
    pool_axis(t2, axis_view(r2, c2, d_[j], 2), Scalar(0), dst, conv, padded);
  }

  // r (scale j) += the adjoint of pool_volume applied to g (scale j + 1).
  void pool_volume_adjoint(const Scalar* g, int j, Scalar* r, OddSizePooling conv, Scalar* w) const {
    const bool padded = volume_padded(j, conv);
    Scalar *t1 = w + t1_off_, *t2 = w + t2_off_;
    const Index r2 = (h_[j] + 1) / 2, c2 = (w_[j] + 1) / 2;
    pool_axis_adjoint(g, axis_view(r2, c2, d_[j], 2), t1, conv, padded);
    pool_axis_adjoint(t1, axis_view(r2, w_[j], d_[j], 1), t2, conv, padded);
    pool_axis_adjoint(t2, axis_view(h_[j], w_[j], d_[j], 0), t1, conv, padded);
    MapV(r, size(j)) += CMapV(t1, size(j));
  }
};

/// What SSIMLoss and MSSSIMLoss share: the options of the index, the image
/// size, and the per-image kernel of ColumnLoss (ℓ_j = 1 − index_j, n_j = 1).
/// Derived supplies kName and config_scales(cfg) (scales, weights, pooling).
template <class Derived, class Scalar_>
class SSIMFamily : public ColumnLoss<Derived, Scalar_> {
  using Base = ColumnLoss<Derived, Scalar_>;
  friend Base;

 public:
  using Scalar = Scalar_;
  using typename Base::Vector;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  Eigen::Index window_size = 11;  ///< Gaussian window taps per axis (odd)
  Scalar sigma = Scalar(1.5);     ///< Gaussian standard deviation, pixels
  Scalar k1 = Scalar(0.01);       ///< C1 = (k1·data_range)²
  Scalar k2 = Scalar(0.03);       ///< C2 = (k2·data_range)²
  Scalar data_range = Scalar(1);  ///< L: 1 for images in [0, 1], 255 for 8-bit values
  ImageLayout layout = ImageLayout::RowMajor;  ///< how each plane is stored (NCHW by default)
  /// Gaussian (default), Uniform (`window_size` equal taps) or Custom (`taps`).
  SSIMWindow window = SSIMWindow::Gaussian;
  /// window == Custom: the 1-D taps applied along each axis (odd count, finite,
  /// positive sum; divided by their sum; window_size and sigma are then unused).
  std::vector<Scalar> taps;
  /// scikit-image's use_sample_covariance: variances and covariance times
  /// N/(N − 1), N = taps² (the window's pixel count); needs more than one tap.
  bool sample_covariance = false;
  /// piq's downsample: average f×f blocks (last partial blocks dropped) before
  /// SSIM, f = max(1, round(min(height, width)/256)), ties to even (Python round).
  bool downsample = false;
  /// pytorch-msssim's nonnegative_ssim: SSIM: each channel's index max(index, 0)
  /// (gradient 0 where clamped). MS-SSIM already clamps each scale term at 0.
  bool nonnegative_ssim = false;

  Eigen::Index depth() const { return depth_; }  ///< 1 for the 2-D functors
  Eigen::Index height() const { return height_; }
  Eigen::Index width() const { return width_; }
  Eigen::Index channels() const { return channels_; }

  /// The block-average factor `downsample` applies (1 when off).
  Eigen::Index downsample_factor() const {
    if (!downsample) return 1;
    const double r = std::nearbyint(double(std::min(height_, width_)) / 256.0);  // ties to even
    return std::max<Eigen::Index>(1, Eigen::Index(r));
  }

  /// The index per image (mean over its channels), length N.
  template <class P, class T>
  Vector index(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) const {
    Vector out(pred.cols());
    each_image(pred, target, [&](auto& engine, const auto& cfg, const auto& x, const auto& t, Eigen::Index j) {
      out(j) = Scalar(engine.template image<false>(cfg, x.col(j), t.col(j), NoGrad{}, Scalar(0)).index_sum /
                      Acc(channels_));
    });
    return out;
  }

  /// The index of each channel of each image: channels×N (column j image j).
  template <class P, class T>
  Matrix channel_index(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target) const {
    Matrix out(channels_, pred.cols());
    each_image(pred, target, [&](auto& engine, const auto& cfg, const auto& x, const auto& t, Eigen::Index j) {
      engine.template image<false>(cfg, x.col(j), t.col(j), NoGrad{}, Scalar(0), out.col(j).data());
    });
    return out;
  }

  /// The SSIM map (S at every valid window position, first scale, after
  /// `downsample`) of `channel` of one image: pred and target one column of
  /// channels·height·width values. Entry (r, c) is the window whose top-left
  /// pixel is (r, c) of the (downsampled) plane, whatever the layout:
  /// (height' − taps + 1)×(width' − taps + 1), height' = height/f. Its mean is
  /// the SSIM index of that channel (for MS-SSIM functors too: the map is SSIM's).
  template <class P, class T>
  Matrix ssim_map(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target,
                  Eigen::Index channel = 0) const {
    require_scalar<Scalar, P>();
    const eval_t<P> x(pred.derived());
    const eval_t<T> t(target.derived());
    if (volume_)
      fail(Derived::kName, "ssim_map", "takes 2-D images; the 3-D functors have no map (use channel_index)");
    if (x.cols() != 1) fail(Derived::kName, "pred", "ssim_map takes one image (one column), got ", x.cols());
    if (channel < 0 || channel >= channels_)
      fail(Derived::kName, "channel", "must be in [0, ", channels_, "), got ", channel);
    SSIMConfig<Scalar> cfg = common_config();
    check_ssim_inputs(Derived::kName, cfg, x, t);
    const Eigen::Index rows = cfg.plane_rows() - cfg.window + 1, cols = cfg.plane_cols() - cfg.window + 1;
    Matrix engine_map(rows, cols);
    {
      auto engine = engines_.acquire();
      engine->prepare(cfg, 1);
      engine->ssim_map(cfg, x.col(0), t.col(0), channel, engine_map.data());
    }
    if (layout == ImageLayout::ColumnMajor) return engine_map;
    return engine_map.transpose();
  }

 protected:
  using Acc = acc_t<Scalar>;

  /// index() and channel_index(): checks and evaluates the inputs once, then
  /// calls body(engine, cfg, x, t, j) for every image j (in parallel over
  /// images when compiled with OpenMP).
  template <class P, class T, class Body>
  void each_image(const Eigen::DenseBase<P>& pred, const Eigen::DenseBase<T>& target, Body&& body) const {
    require_scalar<Scalar, P>();
    const eval_t<P> x(pred.derived());
    const eval_t<T> t(target.derived());
    const Context context = prepare(x, t);
    column_for(x.cols(), column_work(x), [&](Eigen::Index j) { body(*context.engine, context.cfg, x, t, j); });
  }

  /// ℓ_j and whether image j had a clamped MS-SSIM term; a weighted sum
  /// scales the loss, never the count.
  struct Part {
    Acc loss = 0;
    Eigen::Index clamped = 0;
    Part& operator+=(const Part& o) {
      loss += o.loss;
      clamped += o.clamped;
      return *this;
    }
    Part scaled(Acc s) const { return {loss * s, clamped}; }
    Acc total() const { return loss; }
  };

  SSIMFamily(Eigen::Index height, Eigen::Index width, Eigen::Index channels)
      : depth_(1), height_(height), width_(width), channels_(channels), volume_(false) {
    if (height < 1 || width < 1 || channels < 1)
      fail(Derived::kName, "size", "height, width and channels must be >= 1, got ", height, ", ", width, ", ",
           channels);
  }

  /// Volumes: `channels` blocks of depth×height×width (SSIM3DLoss, MSSSIM3DLoss).
  SSIMFamily(Eigen::Index depth, Eigen::Index height, Eigen::Index width, Eigen::Index channels)
      : depth_(depth), height_(height), width_(width), channels_(channels), volume_(true) {
    if (depth < 1 || height < 1 || width < 1 || channels < 1)
      fail(Derived::kName, "size", "depth, height, width and channels must be >= 1, got ", depth, ", ", height,
           ", ", width, ", ", channels);
  }

  bool is_volume() const { return volume_; }

  /// The options shared by both functors; Derived sets scales and weights.
  SSIMConfig<Scalar> common_config() const {
    const Eigen::Index window_n = window_taps();  // Custom: checked there; else window_size
    check_ssim_options(Derived::kName, window_n, sigma, k1, k2, data_range);
    SSIMConfig<Scalar> cfg{};
    cfg.height = height_;
    cfg.width = width_;
    cfg.depth = depth_;
    cfg.volume = volume_;
    cfg.channels = channels_;
    cfg.window = window_n;
    cfg.sigma = double(sigma);
    cfg.c1 = (k1 * data_range) * (k1 * data_range);
    cfg.c2 = (k2 * data_range) * (k2 * data_range);
    if (sample_covariance) {
      // κ(2σxy) + C2 over κ(σx² + σy²) + C2 is the population CS with C2/κ.
      const Scalar n = Scalar(std::pow(double(cfg.window), cfg.dims()));
      if (cfg.window < 2)
        fail(Derived::kName, "sample_covariance", "needs a window of more than one tap (N − 1 > 0), got ",
             cfg.window);
      cfg.c2 = cfg.c2 * (n - 1) / n;
    }
    cfg.window_kind = window;
    cfg.custom_taps = taps.data();
    if (volume_ && downsample)
      fail(Derived::kName, "downsample", "is piq's 2-D rule (blocks of round(min(height, width)/256)); it is not "
           "available for volumes");
    cfg.down = downsample_factor();
    cfg.nonnegative = nonnegative_ssim;
    cfg.index_weight = Scalar(1);
    cfg.l1_window = 0;
    cfg.l1_sigma = 0;
    cfg.scales = 1;
    cfg.weights[0] = Scalar(1);
    cfg.pooling = OddSizePooling::ReplicateLast;
    cfg.layout = layout;
    return cfg;
  }

 private:
  Eigen::Index depth_, height_, width_, channels_;
  bool volume_;
  WorkspacePool<SSIMEngine<Scalar>> engines_;

  /// The window's tap count (checking Custom taps and the Uniform size).
  Eigen::Index window_taps() const {
    if (window != SSIMWindow::Custom) return window_size;
    const Eigen::Index n = Eigen::Index(taps.size());
    if (n < 1 || n % 2 == 0)
      fail(Derived::kName, "taps", "window == Custom needs an odd number of taps (the window is centred), got ", n);
    Acc sum = 0;
    for (Eigen::Index k = 0; k < n; ++k) {
      if (!std::isfinite(taps[std::size_t(k)]))
        fail(Derived::kName, "taps", "must be finite, got ", taps[std::size_t(k)], " at tap ", k);
      sum += Acc(taps[std::size_t(k)]);
    }
    if (!(sum > Acc(0))) fail(Derived::kName, "taps", "must sum to a positive value (they are divided by it), got ", sum);
    return n;
  }

  /// Per call: the checked configuration and an engine of the pool, sized
  /// for the threads of the image loop (loop_threads of column_work).
  struct Context {
    Context(const SSIMConfig<Scalar>& config, const WorkspacePool<SSIMEngine<Scalar>>& pool, int threads)
        : cfg(config), engine(pool.acquire()) {
      engine->prepare(cfg, threads);
    }
    SSIMConfig<Scalar> cfg;
    typename WorkspacePool<SSIMEngine<Scalar>>::Lease engine;
  };

  template <class X>
  Eigen::Index column_work(const X& x) const {
    return x.rows() * (window == SSIMWindow::Custom ? Eigen::Index(taps.size()) : window_size);
  }

  template <class X, class T>
  Context prepare(const X& x, const T& t) const {
    const SSIMConfig<Scalar> cfg = static_cast<const Derived&>(*this).config();
    check_ssim_inputs(Derived::kName, cfg, x, t);
    return Context(cfg, engines_, loop_threads(x.cols(), column_work(x)));
  }

  template <class X, class T, class G>
  Part column(const Context& context, const X& x, const T& t, Eigen::Index j, Scalar factor, G&& grad) const {
    const SSIMConfig<Scalar>& cfg = context.cfg;
    const Scalar upstream = -factor * cfg.index_weight / Scalar(channels_);
    const auto r = context.engine->template image<wants_grad<G>>(cfg, x.col(j), t.col(j), grad, upstream);
    Acc loss = Acc(cfg.index_weight) * (Acc(1) - r.index_sum / Acc(channels_));
    if (cfg.l1_window > 0) {
      const Scalar l1_weight = Scalar(1) - cfg.index_weight;
      loss += Acc(l1_weight) / Acc(channels_) *
              context.engine->template weighted_l1<wants_grad<G>>(cfg, x.col(j), t.col(j), grad,
                                                                  factor * l1_weight / Scalar(channels_));
    }
    return {loss, r.clamped ? 1 : 0};
  }
};

}  // namespace detail

/// SSIM loss 1 − SSIM on batches of images; see the file comment.
template <class Scalar_>
class SSIMLoss : public detail::SSIMFamily<SSIMLoss<Scalar_>, Scalar_> {
  using Base = detail::SSIMFamily<SSIMLoss<Scalar_>, Scalar_>;
  friend Base;

 public:
  static constexpr const char* kName = "SSIMLoss";

  /// Images of `channels` planes of height×width (rows = channels·height·width).
  SSIMLoss(Eigen::Index height, Eigen::Index width, Eigen::Index channels = 1) : Base(height, width, channels) {}

 private:
  detail::SSIMConfig<Scalar_> config() const { return this->common_config(); }
};

namespace detail {
/// What MSSSIMLoss and MSSSIML1Loss share: the scales and their weights,
/// evaluate() with the count of clamped images.
template <class Derived, class Scalar_>
class MSSSIMFamily : public SSIMFamily<Derived, Scalar_>, public EvaluateCalls<Derived> {
  using Base = SSIMFamily<Derived, Scalar_>;
  friend EvaluateCalls<Derived>;

 public:
  using Scalar = Scalar_;

  /// One exponent per scale, finest first (Wang et al. 2003); 1 to 16 scales.
  std::vector<Scalar> weights = {Scalar(0.0448), Scalar(0.2856), Scalar(0.3001), Scalar(0.2363), Scalar(0.1333)};
  bool normalize_weights = true;  ///< divide the weights (of the scales used) by their sum
  OddSizePooling pooling = OddSizePooling::ReplicateLast;
  /// false (default): an image too small for every scale throws. true: use
  /// the first scales that fit (at least one), exactly as if `weights` had
  /// been truncated to them (so normalize_weights renormalises those).
  bool fit_scales = false;

  /// The loss and how many images had a clamped term: some channel's
  /// v_j <= 0, so its MS-SSIM is 0 with a zero gradient (images of weight 0
  /// are not evaluated and not counted).
  struct Result {
    Scalar loss = 0;                 ///< what operator() returns
    Eigen::Index clamped_images = 0;  ///< images with a non-positive scale term
  };

  using EvaluateCalls<Derived>::evaluate;  ///< evaluate(pred, target[, sample_weights], grad): the Result

  /// The number of scales a call uses (weights.size(), or fewer with fit_scales).
  int scales() const {
    const int m = int(weights.size());
    if (!fit_scales) return m;
    Eigen::Index side = std::min(this->height(), this->width()) / this->downsample_factor();
    if (this->is_volume()) side = std::min(side, this->depth());
    int fit = m;
    const Eigen::Index ws = this->window == SSIMWindow::Custom ? Eigen::Index(this->taps.size()) : this->window_size;
    while (fit > 1 && side < detail::ssim_min_side(ws, fit)) --fit;
    return fit;
  }

 protected:
  MSSSIMFamily(Eigen::Index height, Eigen::Index width, Eigen::Index channels) : Base(height, width, channels) {}
  MSSSIMFamily(Eigen::Index depth, Eigen::Index height, Eigen::Index width, Eigen::Index channels)
      : Base(depth, height, width, channels) {}

  template <class Totals>
  static Result result(const Totals& t) {
    return {t.value(), t.sum.clamped};
  }

  detail::SSIMConfig<Scalar> ms_config() const {
    const char* kName = Derived::kName;
    detail::SSIMConfig<Scalar> cfg = this->common_config();
    const std::size_t given = weights.size();
    if (given < 1 || given > std::size_t(detail::kMaxSSIMScales))
      detail::fail(kName, "weights", "need 1 to ", detail::kMaxSSIMScales, " scales, got ", given);
    for (std::size_t j = 0; j < given; ++j)
      if (!(weights[j] > Scalar(0)) || !std::isfinite(weights[j]))
        detail::fail(kName, "weights", "every weight must be finite and > 0, got ", weights[j], " at scale ", j);
    const std::size_t m = std::size_t(scales());
    Scalar sum = 0;
    for (std::size_t j = 0; j < m; ++j) sum += weights[j];
    for (std::size_t j = 0; j < m; ++j) cfg.weights[j] = normalize_weights ? weights[j] / sum : weights[j];
    cfg.scales = int(m);
    cfg.pooling = pooling;
    return cfg;
  }
};
}  // namespace detail

/// MS-SSIM loss 1 − MS-SSIM on batches of images; see the file comment.
template <class Scalar_>
class MSSSIMLoss : public detail::MSSSIMFamily<MSSSIMLoss<Scalar_>, Scalar_> {
  using Base = detail::MSSSIMFamily<MSSSIMLoss<Scalar_>, Scalar_>;
  friend detail::SSIMFamily<MSSSIMLoss<Scalar_>, Scalar_>;

 public:
  static constexpr const char* kName = "MSSSIMLoss";

  /// Images of `channels` planes of height×width (rows = channels·height·width).
  MSSSIMLoss(Eigen::Index height, Eigen::Index width, Eigen::Index channels = 1) : Base(height, width, channels) {}

 private:
  detail::SSIMConfig<Scalar_> config() const { return this->ms_config(); }
};

/// SSIM loss 1 − SSIM on batches of volumes (3-D images, video as T×H×W): the
/// window is the separable 3-D window (the 1-D taps along depth, height and
/// width), valid mode; every option of SSIMLoss except `downsample` (2-D only)
/// and ssim_map(). Rows = channels·depth·height·width, each channel's
/// depth×height×width block depth slowest, each slice laid out by `layout`
/// (RowMajor: NCDHW as PyTorch stores it). See the file comment and docs/ssim.md.
template <class Scalar_>
class SSIM3DLoss : public detail::SSIMFamily<SSIM3DLoss<Scalar_>, Scalar_> {
  using Base = detail::SSIMFamily<SSIM3DLoss<Scalar_>, Scalar_>;
  friend Base;

 public:
  static constexpr const char* kName = "SSIM3DLoss";

  SSIM3DLoss(Eigen::Index depth, Eigen::Index height, Eigen::Index width, Eigen::Index channels = 1)
      : Base(depth, height, width, channels) {}

 private:
  detail::SSIMConfig<Scalar_> config() const { return this->common_config(); }
};

/// MS-SSIM loss 1 − MS-SSIM on batches of volumes: SSIM3DLoss's window at every
/// scale, 2×2×2 average pooling between scales (odd sides by `pooling`:
/// ZeroFirst is pytorch-msssim's avg_pool3d(padding = n % 2); ReplicateFirst
/// pads the first entry of every axis when any side is odd), every side (depth
/// too) at least (window − 1)·2^(scales−1) + 1 unless fit_scales.
template <class Scalar_>
class MSSSIM3DLoss : public detail::MSSSIMFamily<MSSSIM3DLoss<Scalar_>, Scalar_> {
  using Base = detail::MSSSIMFamily<MSSSIM3DLoss<Scalar_>, Scalar_>;
  friend detail::SSIMFamily<MSSSIM3DLoss<Scalar_>, Scalar_>;

 public:
  static constexpr const char* kName = "MSSSIM3DLoss";

  MSSSIM3DLoss(Eigen::Index depth, Eigen::Index height, Eigen::Index width, Eigen::Index channels = 1)
      : Base(depth, height, width, channels) {}

 private:
  detail::SSIMConfig<Scalar_> config() const { return this->ms_config(); }
};

/// The mixed loss of Zhao, Gallo, Frosio, Kautz, "Loss Functions for Image
/// Restoration with Neural Networks" (IEEE TCI 2017, eq. 14), per image:
///   ℓ = α·(1 − MS-SSIM) + (1 − α)·GL1,  α = 0.84,
///   GL1 = mean over channels of the mean of the valid map G_σ * |x − y|,
/// G_σ the Gaussian of the largest scale, σ_G^M = 8 in the paper (its scales use
/// σ = 0.5, 1, 2, 4, 8), `l1_window_size` = 49 taps (±3σ) by default, each
/// built and normalised as the SSIM window. GL1 = Σ ω_p |x_p − y_p| with
/// ω = Wᵀ(1/N') (weights summing to 1 per channel: lower near the borders);
/// its gradient is (1 − α)·ω ⊙ sign(x − y)/channels (0 where x = y). GL1 is
/// taken on the images as given (before `downsample`). See docs/ssim.md.
template <class Scalar_>
class MSSSIML1Loss : public detail::MSSSIMFamily<MSSSIML1Loss<Scalar_>, Scalar_> {
  using Base = detail::MSSSIMFamily<MSSSIML1Loss<Scalar_>, Scalar_>;
  friend detail::SSIMFamily<MSSSIML1Loss<Scalar_>, Scalar_>;

 public:
  using Scalar = Scalar_;
  static constexpr const char* kName = "MSSSIML1Loss";

  Scalar alpha = Scalar(0.84);           ///< weight of 1 − MS-SSIM, in [0, 1]
  Scalar l1_sigma = Scalar(8);           ///< σ of the L1 weighting Gaussian, pixels
  Eigen::Index l1_window_size = 49;      ///< its taps per axis (odd, at most each side)

  /// Images of `channels` planes of height×width (rows = channels·height·width).
  MSSSIML1Loss(Eigen::Index height, Eigen::Index width, Eigen::Index channels = 1) : Base(height, width, channels) {}

 private:
  detail::SSIMConfig<Scalar> config() const {
    detail::SSIMConfig<Scalar> cfg = this->ms_config();
    if (!(alpha >= Scalar(0) && alpha <= Scalar(1)))
      detail::fail(kName, "alpha", "must be in [0, 1], got ", alpha);
    detail::check_positive(kName, "l1_sigma", l1_sigma);
    if (l1_window_size < 1 || l1_window_size % 2 == 0)
      detail::fail(kName, "l1_window_size", "must be odd and >= 1 (the window is centred), got ", l1_window_size);
    if (l1_window_size > std::min(this->height(), this->width()))
      detail::fail(kName, "l1_window_size", l1_window_size, " taps do not fit the ", this->height(), "x",
                   this->width(), " image (valid filtering)");
    cfg.index_weight = alpha;
    cfg.l1_window = l1_window_size;
    cfg.l1_sigma = double(l1_sigma);
    return cfg;
  }
};

namespace detail {
/// Loss's index of a single H×W plane of either storage order, read in its own order.
template <template <class> class Loss, class X, class Y>
typename X::Scalar single_plane_index(const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Y>& y,
                                      typename X::Scalar data_range) {
  using Scalar = typename X::Scalar;
  Loss<Scalar> loss(x.rows(), x.cols(), 1);
  loss.data_range = data_range;
  require_scalar<Scalar, Y>();
  check_same_shape(Loss<Scalar>::kName, "y", x, y);
  constexpr bool row_major = bool(X::Flags & Eigen::RowMajorBit);
  using Plane = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, row_major ? Eigen::RowMajor : Eigen::ColMajor>;
  const Plane xm = x.derived(), ym = y.derived();
  using Column = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>;
  loss.layout = row_major ? ImageLayout::RowMajor : ImageLayout::ColumnMajor;
  return loss.index(Column(xm.data(), xm.size()), Column(ym.data(), ym.size()))(0);
}
}  // namespace detail

/// SSIM index of two single-channel H×W images of either storage order
/// (default options otherwise; use SSIMLoss(H, W).index(...) to change the
/// window or k1, k2).
template <class X, class Y>
typename X::Scalar ssim(const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Y>& y,
                        typename X::Scalar data_range = 1) {
  return detail::single_plane_index<SSIMLoss>(x, y, data_range);
}

/// MS-SSIM index of two single-channel H×W images of either storage order
/// with the standard five scales (use MSSSIMLoss(H, W).index(...) for other
/// weights or pooling).
template <class X, class Y>
typename X::Scalar ms_ssim(const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Y>& y,
                           typename X::Scalar data_range = 1) {
  return detail::single_plane_index<MSSSIMLoss>(x, y, data_range);
}

}  // namespace losskit
