#pragma once
/// libtorch adapter: every losskit loss as a torch autograd function on CPU
/// tensors in torch's own layouts. Optional: losskit.hpp does not include
/// this header; only code that includes it must compile and link against
/// libtorch (CMake: find_package(Torch) and target_link_libraries(... torch)).
///
///   #include <losskit/torch.hpp>
///   losskit::CrossEntropy<float> ce;  ce.label_smoothing = 0.1f;
///   at::Tensor loss = losskit::torch::cross_entropy(logits /*N×C*/, labels /*N, int64*/, ce);
///   loss.backward();                  // logits.grad() = grad_output · losskit's analytic gradient
///
/// Options: the last argument is the losskit functor itself (every option is
/// available as it is documented in the functor's header); without it the
/// functor's defaults are used, in the tensors' dtype.
///
/// Layouts (no transposition anywhere: the same bytes are read):
///   torch N×D row-major (samples are rows) = losskit D×N column-major
///   (samples are columns): logits N×C, outputs N×D, probabilities N×C;
///   labels: a 1-D integer tensor of length N (int64 as torch, or any integer
///   dtype, converted to int64); images N×C×H×W (NCHW) = losskit's
///   (C·H·W)×N with ImageLayout::RowMajor, the SSIM functors' default;
///   mse and binary_cross_entropy_with_logits take any shape (the last
///   dimension is D, e.g. for pos_weight); linear_cross_entropy takes hidden
///   N×d and weight C×d as torch::nn::Linear stores it, bias C or undefined.
/// Tensors: CPU, strided, of the functor's Scalar (float or double).
/// Contiguous inputs are read in place through Eigen::Map (no copy); others
/// are made contiguous first (one copy, as tensor.contiguous()).
///
/// Autograd: the loss is a 0-dim tensor of the inputs' dtype. When grad mode
/// is on and an input of the loss requires grad, losskit's fused
/// value_and_gradient runs once in the forward pass, the gradients are saved,
/// and backward returns grad_output · gradient (the reduced losses have a
/// scalar grad_output). Otherwise only the value is computed. Gradients are
/// given for the inputs losskit differentiates: predictions, logits, outputs,
/// x (SSIM), hidden / weight / bias, yhat and t (CS-IB), both logit tensors of
/// the smooth adversarial comp-sum. A target, label, y or x (CS-IB) tensor
/// that requires grad is an error rather than a silently missing gradient
/// (detach it). Double backward (create_graph = true) is not supported and
/// raises an error in backward.
///
/// Errors: every invalid input raises losskit::Error (std::invalid_argument)
/// with "losskit::torch::<function>: <argument>: ..." for the adapter's
/// checks (device, dtype, dimensions, shapes, image size against the
/// functor's) and the functor's own message for everything else (labels out
/// of range, options). Nothing is written to any tensor when a call throws.
/// Tensor operations the adapter calls (contiguous(), empty()) may raise
/// c10::Error (e.g. out of memory).
///
/// Namespace: inside this header `::torch` is libtorch and losskit::torch the
/// adapter; code with `using namespace losskit;` should spell libtorch
/// `::torch`.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <Eigen/Core>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "comp_sum.hpp"
#include "cross_entropy.hpp"
#include "cs_ib.hpp"
#include "ldr.hpp"
#include "linear_cross_entropy.hpp"
#include "mse.hpp"
#include "ssim.hpp"
#include "z_loss.hpp"

namespace losskit {
namespace torch {
namespace detail {

using at::Tensor;
using losskit::detail::fail;
template <class S>
using Matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using RowMatrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using Vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;
using LabelMap = Eigen::Map<const Eigen::Matrix<int64_t, Eigen::Dynamic, 1>>;

template <class S>
constexpr at::ScalarType dtype_of() {
  return c10::CppTypeToScalarType<S>::value;
}

inline void check_cpu(const char* fn, const char* arg, const Tensor& t) {
  if (!t.defined()) fail(fn, arg, "undefined tensor");
  if (!t.device().is_cpu() || t.layout() != at::kStrided)
    fail(fn, arg, "expected a strided CPU tensor, got device ", t.device(), ", layout ", t.layout());
}

/// A floating input of the loss's Scalar with `dims` dimensions (-1: any),
/// contiguous (the same tensor when it already is).
template <class S>
Tensor floating(const char* fn, const char* arg, const Tensor& t, int64_t dims) {
  check_cpu(fn, arg, t);
  if (t.scalar_type() != dtype_of<S>())
    fail(fn, arg, "dtype ", t.scalar_type(), " does not match the loss's Scalar ", dtype_of<S>(),
         " (convert with .to(), or use a functor of that Scalar)");
  if (dims >= 0 && t.dim() != dims) fail(fn, arg, "expected a ", dims, "-D tensor, got shape ", t.sizes());
  const at::NoGradGuard no_graph;  // the copy of a non-contiguous input is read, never differentiated
  return t.contiguous();
}

/// Integer labels, one per sample: 1-D, length n, as contiguous int64.
inline Tensor labels_of(const char* fn, const Tensor& t, int64_t n) {
  check_cpu(fn, "labels", t);
  if (!at::isIntegralType(t.scalar_type(), /*includeBool=*/false))
    fail(fn, "labels", "expected an integer tensor (int64, as torch's class indices), got ", t.scalar_type(),
         "; probability targets are a floating N×C tensor");
  if (t.dim() != 1 || t.size(0) != n)
    fail(fn, "labels", "expected a 1-D tensor of N = ", n, " labels (one per row of the N×C input), got shape ",
         t.sizes());
  return t.to(at::kLong).contiguous();
}

inline LabelMap label_map(const Tensor& labels) { return LabelMap(labels.data_ptr<int64_t>(), labels.size(0)); }

/// The last dimension's length: the rows of losskit's view (1 for a 0-dim tensor).
inline Eigen::Index last_dim(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }

/// A contiguous tensor as the rows×(numel/rows) column-major matrix of the same bytes.
template <class S>
Eigen::Map<const Matrix<S>> columns(const Tensor& t, Eigen::Index rows) {
  const Eigen::Index cols = rows > 0 ? Eigen::Index(t.numel()) / rows : 0;
  return Eigen::Map<const Matrix<S>>(t.data_ptr<S>(), rows, cols);
}

template <class S>
Eigen::Map<Matrix<S>> columns_out(Tensor& t, Eigen::Index rows) {
  const Eigen::Index cols = rows > 0 ? Eigen::Index(t.numel()) / rows : 0;
  return Eigen::Map<Matrix<S>>(t.data_ptr<S>(), rows, cols);
}

inline void check_same_sizes(const char* fn, const char* arg, const Tensor& ref, const char* ref_arg,
                             const Tensor& t) {
  if (ref.sizes() != t.sizes())
    fail(fn, arg, "shape ", t.sizes(), " does not match ", ref_arg, "'s shape ", ref.sizes());
}

/// A tensor losskit gives no gradient for must not ask for one.
inline void check_no_grad(const char* fn, const char* arg, const Tensor& t) {
  if (t.defined() && t.requires_grad() && at::GradMode::is_enabled())
    fail(fn, arg, "requires grad, but losskit gives no gradient with respect to it (pass ", arg, ".detach())");
}

/// Whether autograd will want a gradient of one of these inputs.
inline bool wants_grad(std::initializer_list<Tensor> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

/// The autograd node of every adapter: forward receives the value and the
/// gradients losskit computed (grads[i] = d(loss)/d(inputs[i])), backward
/// scales them by grad_output.
struct LosskitFunction : public ::torch::autograd::Function<LosskitFunction> {
  static Tensor forward(::torch::autograd::AutogradContext* ctx, at::TensorList inputs, at::TensorList grads,
                        double value) {
    (void)inputs;
    ctx->save_for_backward(grads.vec());
    return at::scalar_tensor(value, grads[0].options());
  }

  static ::torch::autograd::variable_list backward(::torch::autograd::AutogradContext* ctx,
                                                   ::torch::autograd::variable_list grad_output) {
    if (at::GradMode::is_enabled())
      fail("torch", "backward", "double backward (create_graph = true) is not supported by losskit's losses");
    const ::torch::autograd::variable_list grads = ctx->get_saved_variables();
    // grad_output 1 (loss.backward()): the saved gradient itself, without a
    // copy; autograd clones it before accumulating while the graph keeps it,
    // and an in-place change to it is caught by the saved tensor's version check.
    const bool unit = grad_output[0].item<double>() == 1.0;
    // One entry per forward input: the inputs, then the gradients and the value (none).
    ::torch::autograd::variable_list out(2 * grads.size() + 1);
    for (std::size_t i = 0; i < grads.size(); ++i)
      if (ctx->needs_input_grad(i)) out[i] = unit ? grads[i] : grads[i] * grad_output[0];
    return out;
  }
};

template <class S>
Tensor value_tensor(S value) {
  return at::scalar_tensor(double(value), at::TensorOptions().dtype(dtype_of<S>()));
}

/// A fresh contiguous gradient tensor shaped like t.
inline Tensor gradient_like(const Tensor& t) { return at::empty(t.sizes(), t.options().requires_grad(false)); }

/// loss(pred, target) for a ColumnLoss functor: pred the user's tensor, x its
/// contiguous version viewed with `rows` rows, target an Eigen view.
template <class Loss, class T>
Tensor column_loss(const Loss& loss, const Tensor& pred, const Tensor& x, Eigen::Index rows, const T& target) {
  using S = typename Loss::Scalar;
  const auto xm = columns<S>(x, rows);
  if (!wants_grad({pred})) return value_tensor<S>(loss(xm, target));
  Tensor g = gradient_like(x);
  const S value = loss.value_and_gradient(xm, target, columns_out<S>(g, rows));
  return LosskitFunction::apply(at::TensorList{pred}, at::TensorList{g}, double(value));
}

/// Losses of N×C logits (or outputs) and integer labels.
template <class Loss>
Tensor labelled(const char* fn, const Loss& loss, const Tensor& logits, const Tensor& labels,
                const char* logits_arg = "logits") {
  using S = typename Loss::Scalar;
  const Tensor x = floating<S>(fn, logits_arg, logits, 2);
  check_no_grad(fn, "labels", labels);
  const Tensor y = labels_of(fn, labels, x.size(0));
  return column_loss(loss, logits, x, x.size(1), label_map(y));
}

/// Losses of a prediction and a same-shape floating target (any shape; the
/// last dimension is D).
template <class Loss>
Tensor elementwise(const char* fn, const Loss& loss, const Tensor& pred, const Tensor& target) {
  using S = typename Loss::Scalar;
  const Tensor x = floating<S>(fn, "input", pred, -1);
  const Tensor t = floating<S>(fn, "target", target, -1);
  check_same_sizes(fn, "target", x, "input", t);
  check_no_grad(fn, "target", target);
  return column_loss(loss, pred, x, last_dim(x), columns<S>(t, last_dim(x)));
}

/// SSIM family: N×C×H×W images against the functor's height, width, channels.
template <class Loss>
Tensor image_loss(const char* fn, const Loss& loss, const Tensor& x, const Tensor& y) {
  using S = typename Loss::Scalar;
  const Tensor a = floating<S>(fn, "x", x, 4), b = floating<S>(fn, "y", y, 4);
  check_same_sizes(fn, "y", a, "x", b);
  check_no_grad(fn, "y", y);
  if (a.size(1) != loss.channels() || a.size(2) != loss.height() || a.size(3) != loss.width())
    fail(fn, "x", "images of shape ", a.sizes(), " (N×C×H×W) do not match the functor's C×H×W = ", loss.channels(),
         "×", loss.height(), "×", loss.width());
  if (loss.layout != ImageLayout::RowMajor)
    fail(fn, "layout", "torch images are NCHW: the functor's layout must be ImageLayout::RowMajor (the default)");
  const Eigen::Index rows = loss.channels() * loss.height() * loss.width();
  return column_loss(loss, x, a, rows, columns<S>(b, rows));
}

/// Calls f(S{}) with S the Scalar of t's dtype (float or double).
template <class F>
Tensor by_dtype(const char* fn, const char* arg, const Tensor& t, F&& f) {
  check_cpu(fn, arg, t);
  if (t.scalar_type() == at::kDouble) return f(double{});
  if (t.scalar_type() == at::kFloat) return f(float{});
  fail(fn, arg, "dtype ", t.scalar_type(), " is not float or double");
}

/// The image size of an N×C×H×W tensor, for the default SSIM functors.
template <template <class> class Loss, class S>
Loss<S> image_functor(const char* fn, const Tensor& x) {
  if (x.dim() != 4) fail(fn, "x", "expected a 4-D tensor (N×C×H×W), got shape ", x.sizes());
  return Loss<S>(x.size(2), x.size(3), x.size(1));
}

}  // namespace detail

using at::Tensor;

/// Mean squared error (MSE<S>), input and target of the same shape.
template <class S>
Tensor mse(const Tensor& input, const Tensor& target, const MSE<S>& loss) {
  return detail::elementwise("torch::mse", loss, input, target);
}
inline Tensor mse(const Tensor& input, const Tensor& target) {
  return detail::by_dtype("torch::mse", "input", input, [&](auto s) { return mse(input, target, MSE<decltype(s)>{}); });
}

/// Binary cross-entropy with logits (BinaryCrossEntropyWithLogits<S>);
/// pos_weight has the length of the last dimension (or 1); the functor's
/// element weight is D×1 (D = the last dimension, as torch's weight of that
/// length) or D×N (N = the product of the other dimensions: the input's bytes).
template <class S>
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        const BinaryCrossEntropyWithLogits<S>& loss) {
  return detail::elementwise("torch::binary_cross_entropy_with_logits", loss, logits, target);
}
inline Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target) {
  return detail::by_dtype("torch::binary_cross_entropy_with_logits", "input", logits, [&](auto s) {
    return binary_cross_entropy_with_logits(logits, target, BinaryCrossEntropyWithLogits<decltype(s)>{});
  });
}

/// Softmax cross-entropy (CrossEntropy<S>): logits N×C; target integer
/// labels (length N, int64 like torch's class indices) or floating
/// probabilities (N×C), as torch::nn::functional::cross_entropy.
template <class S>
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropy<S>& loss) {
  const char* fn = "torch::cross_entropy";
  detail::check_cpu(fn, "target", target);
  if (!at::isFloatingType(target.scalar_type())) return detail::labelled(fn, loss, logits, target);
  const Tensor x = detail::floating<S>(fn, "logits", logits, 2);
  const Tensor q = detail::floating<S>(fn, "target", target, 2);
  detail::check_same_sizes(fn, "target", x, "logits", q);
  detail::check_no_grad(fn, "target", target);
  return detail::column_loss(loss, logits, x, x.size(1), detail::columns<S>(q, x.size(1)));
}
inline Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  return detail::by_dtype("torch::cross_entropy", "logits", logits,
                          [&](auto s) { return cross_entropy(logits, target, CrossEntropy<decltype(s)>{}); });
}

/// Comp-sum loss (CompSum<S>): logits N×C, labels N.
template <class S>
Tensor comp_sum(const Tensor& logits, const Tensor& labels, const CompSum<S>& loss) {
  return detail::labelled("torch::comp_sum", loss, logits, labels);
}
inline Tensor comp_sum(const Tensor& logits, const Tensor& labels) {
  return detail::by_dtype("torch::comp_sum", "logits", logits,
                          [&](auto s) { return comp_sum(logits, labels, CompSum<decltype(s)>{}); });
}

/// LDR-KL (LDRKL<S>): logits N×C, labels N.
template <class S>
Tensor ldr_kl(const Tensor& logits, const Tensor& labels, const LDRKL<S>& loss) {
  return detail::labelled("torch::ldr_kl", loss, logits, labels);
}
inline Tensor ldr_kl(const Tensor& logits, const Tensor& labels) {
  return detail::by_dtype("torch::ldr_kl", "logits", logits,
                          [&](auto s) { return ldr_kl(logits, labels, LDRKL<decltype(s)>{}); });
}

/// ALDR-KL (ALDRKL<S>): logits N×C, labels N.
template <class S>
Tensor aldr_kl(const Tensor& logits, const Tensor& labels, const ALDRKL<S>& loss) {
  return detail::labelled("torch::aldr_kl", loss, logits, labels);
}
inline Tensor aldr_kl(const Tensor& logits, const Tensor& labels) {
  return detail::by_dtype("torch::aldr_kl", "logits", logits,
                          [&](auto s) { return aldr_kl(logits, labels, ALDRKL<decltype(s)>{}); });
}

/// Spherical Z-loss (ZLoss<S>): outputs N×D (D >= 2), labels N.
template <class S>
Tensor z_loss(const Tensor& outputs, const Tensor& labels, const ZLoss<S>& loss) {
  return detail::labelled("torch::z_loss", loss, outputs, labels, "outputs");
}
inline Tensor z_loss(const Tensor& outputs, const Tensor& labels) {
  return detail::by_dtype("torch::z_loss", "outputs", outputs,
                          [&](auto s) { return z_loss(outputs, labels, ZLoss<decltype(s)>{}); });
}

/// SSIM loss 1 − SSIM (SSIMLoss<S>) of N×C×H×W images; the gradient is with
/// respect to x. Without a functor: SSIMLoss(H, W, C) with its defaults.
template <class S>
Tensor ssim_loss(const Tensor& x, const Tensor& y, const SSIMLoss<S>& loss) {
  return detail::image_loss("torch::ssim_loss", loss, x, y);
}
inline Tensor ssim_loss(const Tensor& x, const Tensor& y) {
  const char* fn = "torch::ssim_loss";
  return detail::by_dtype(fn, "x", x, [&](auto s) {
    return ssim_loss(x, y, detail::image_functor<SSIMLoss, decltype(s)>(fn, x));
  });
}

/// MS-SSIM loss 1 − MS-SSIM (MSSSIMLoss<S>) of N×C×H×W images.
template <class S>
Tensor ms_ssim_loss(const Tensor& x, const Tensor& y, const MSSSIMLoss<S>& loss) {
  return detail::image_loss("torch::ms_ssim_loss", loss, x, y);
}
inline Tensor ms_ssim_loss(const Tensor& x, const Tensor& y) {
  const char* fn = "torch::ms_ssim_loss";
  return detail::by_dtype(fn, "x", x, [&](auto s) {
    return ms_ssim_loss(x, y, detail::image_functor<MSSSIMLoss, decltype(s)>(fn, x));
  });
}

/// Smooth adversarial comp-sum (SmoothAdversarialCompSum<S>): clean and
/// perturbed logits N×C, labels N; gradients for both logit tensors.
template <class S>
Tensor smooth_adversarial_comp_sum(const Tensor& clean_logits, const Tensor& adv_logits, const Tensor& labels,
                                   const SmoothAdversarialCompSum<S>& loss) {
  const char* fn = "torch::smooth_adversarial_comp_sum";
  const Tensor h = detail::floating<S>(fn, "clean_logits", clean_logits, 2);
  const Tensor a = detail::floating<S>(fn, "adv_logits", adv_logits, 2);
  detail::check_same_sizes(fn, "adv_logits", h, "clean_logits", a);
  detail::check_no_grad(fn, "labels", labels);
  const Tensor y = detail::labels_of(fn, labels, h.size(0));
  const Eigen::Index c = h.size(1);
  const auto hm = detail::columns<S>(h, c), am = detail::columns<S>(a, c);
  if (!detail::wants_grad({clean_logits, adv_logits})) return detail::value_tensor<S>(loss(hm, am, detail::label_map(y)));
  Tensor gh = detail::gradient_like(h), ga = detail::gradient_like(a);
  const S value = loss.value_and_gradient(hm, am, detail::label_map(y), detail::columns_out<S>(gh, c),
                                          detail::columns_out<S>(ga, c));
  return detail::LosskitFunction::apply(at::TensorList{clean_logits, adv_logits}, at::TensorList{gh, ga},
                                        double(value));
}

namespace detail {

/// LinearCrossEntropy's inputs, checked and viewed: hidden N×d as d×N,
/// weight C×d (row-major, as nn::Linear), bias C or none.
template <class S>
struct LinearInputs {
  Tensor h, w, b, y;

  LinearInputs(const char* fn, const Tensor& hidden, const Tensor& weight, const Tensor& bias, const Tensor& labels)
      : h(floating<S>(fn, "hidden", hidden, 2)), w(floating<S>(fn, "weight", weight, 2)) {
    if (w.size(1) != h.size(1))
      fail(fn, "weight", "shape ", w.sizes(), " does not match hidden's ", h.sizes(), ": expected C×", h.size(1),
           " (as torch::nn::Linear stores it)");
    if (bias.defined()) {
      b = floating<S>(fn, "bias", bias, 1);
      if (b.size(0) != w.size(0)) fail(fn, "bias", "expected length C = ", w.size(0), ", got shape ", b.sizes());
    }
    check_no_grad(fn, "labels", labels);
    y = labels_of(fn, labels, h.size(0));
  }
  auto hidden() const { return columns<S>(h, h.size(1)); }
  auto weight() const { return Eigen::Map<const RowMatrix<S>>(w.data_ptr<S>(), w.size(0), w.size(1)); }
  Eigen::Map<const Vector<S>> bias() const {
    return b.defined() ? Eigen::Map<const Vector<S>>(b.data_ptr<S>(), b.size(0)) : Eigen::Map<const Vector<S>>(nullptr, 0);
  }
};

}  // namespace detail

/// Softmax cross-entropy of the linear head hidden·weightᵀ + bias
/// (LinearCrossEntropy<S>, never holding the N×C logits): hidden N×d,
/// weight C×d (torch::nn::Linear's weight), bias C or an undefined tensor,
/// labels N. Gradients for hidden, weight and bias.
template <class S>
Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias, const Tensor& labels,
                            const LinearCrossEntropy<S>& loss) {
  const detail::LinearInputs<S> in("torch::linear_cross_entropy", hidden, weight, bias, labels);
  const auto y = detail::label_map(in.y);
  if (!detail::wants_grad({hidden, weight, bias})) return detail::value_tensor<S>(loss(in.hidden(), in.weight(), in.bias(), y));
  Tensor gh = detail::gradient_like(in.h), gw = detail::gradient_like(in.w);
  Eigen::Map<detail::RowMatrix<S>> gw_map(gw.data_ptr<S>(), gw.size(0), gw.size(1));
  const auto gh_map = detail::columns_out<S>(gh, gh.size(1));
  if (!bias.defined()) {
    detail::Vector<S> no_bias_grad;
    const S value = loss.value_and_gradient(in.hidden(), in.weight(), in.bias(), y, gh_map, gw_map, no_bias_grad);
    return detail::LosskitFunction::apply(at::TensorList{hidden, weight}, at::TensorList{gh, gw}, double(value));
  }
  Tensor gb = detail::gradient_like(in.b);
  Eigen::Map<detail::Vector<S>> gb_map(gb.data_ptr<S>(), gb.size(0));
  const S value = loss.value_and_gradient(in.hidden(), in.weight(), in.bias(), y, gh_map, gw_map, gb_map);
  return detail::LosskitFunction::apply(at::TensorList{hidden, weight, bias}, at::TensorList{gh, gw, gb},
                                        double(value));
}
inline Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                   const Tensor& labels) {
  return detail::by_dtype("torch::linear_cross_entropy", "hidden", hidden, [&](auto s) {
    return linear_cross_entropy(hidden, weight, bias, labels, LinearCrossEntropy<decltype(s)>{});
  });
}

/// CS-IB objective (CSIB<S>): yhat, y N×D_y, t N×D_t, x N×D_x (samples are
/// rows); gradients for yhat and t (y and x are data).
template <class S>
Tensor cs_ib(const Tensor& yhat, const Tensor& y, const Tensor& t, const Tensor& x, const CSIB<S>& loss) {
  const char* fn = "torch::cs_ib";
  const Tensor p = detail::floating<S>(fn, "yhat", yhat, 2), q = detail::floating<S>(fn, "y", y, 2);
  const Tensor r = detail::floating<S>(fn, "t", t, 2), d = detail::floating<S>(fn, "x", x, 2);
  detail::check_no_grad(fn, "y", y);
  detail::check_no_grad(fn, "x", x);
  const auto pm = detail::columns<S>(p, p.size(1)), qm = detail::columns<S>(q, q.size(1));
  const auto rm = detail::columns<S>(r, r.size(1)), dm = detail::columns<S>(d, d.size(1));
  if (!detail::wants_grad({yhat, t})) return detail::value_tensor<S>(loss(pm, qm, rm, dm));
  Tensor gp = detail::gradient_like(p), gr = detail::gradient_like(r);
  const S value =
      loss.value_and_gradient(pm, qm, rm, dm, detail::columns_out<S>(gp, p.size(1)), detail::columns_out<S>(gr, r.size(1)));
  return detail::LosskitFunction::apply(at::TensorList{yhat, t}, at::TensorList{gp, gr}, double(value));
}
inline Tensor cs_ib(const Tensor& yhat, const Tensor& y, const Tensor& t, const Tensor& x) {
  return detail::by_dtype("torch::cs_ib", "yhat", yhat, [&](auto s) { return cs_ib(yhat, y, t, x, CSIB<decltype(s)>{}); });
}

}  // namespace torch
}  // namespace losskit
