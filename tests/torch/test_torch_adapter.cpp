// The libtorch adapter (include/losskit/torch.hpp): for every family, the
// adapter's value and autograd gradient equal the functor called directly on
// the same data (float and double, grad_output != 1), a finite-difference
// gradient check through torch in double (libtorch 1.13 has no C++
// torch::autograd::gradcheck; this is its check with its default tolerances),
// non-contiguous inputs, no copy of contiguous ones, and the errors.
// One translation unit: each one that includes torch costs 10-15 s to compile.
#include <losskit/torch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "torch_util.hpp"

namespace {

namespace lt = losskit::torch;
using Tensors = std::vector<torch::Tensor>;

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

template <class S>
Mat<S> normal(Eigen::Index rows, Eigen::Index cols, double scale = 1.0) {
  return lktest::normal(rows, cols, scale).template cast<S>();
}

/// A D×N losskit matrix as the tensor of the given torch shape (same bytes, a copy).
template <class S>
torch::Tensor tensor(const Mat<S>& m, std::vector<int64_t> sizes) {
  return torch::from_blob(const_cast<S*>(m.data()), {m.size()}, c10::CppTypeToScalarType<S>::value)
      .clone()
      .view(sizes);
}

torch::Tensor label_tensor(const Eigen::VectorXi& y) { return lktorch::labels(y); }

/// One adapter call: the tensors it differentiates (leaves), the call on
/// them, and the functor called directly on the same data with its gradients
/// as tensors of the same shapes.
struct Case {
  std::string name;
  Tensors wrt;
  std::function<torch::Tensor(const Tensors&)> adapter;
  std::function<std::pair<double, Tensors>()> direct;
};

template <class S>
Case mse_case() {
  const Mat<S> p = normal<S>(5, 7), t = normal<S>(5, 7);
  losskit::MSE<S> loss;
  loss.reduction = losskit::Reduction::Sum;
  const torch::Tensor target = tensor<S>(t, {7, 5});
  return {"mse", {tensor<S>(p, {7, 5})}, [=](const Tensors& w) { return lt::mse(w[0], target, loss); }, [=] {
            Mat<S> g;
            const double v = loss.value_and_gradient(p, t, g);
            return std::make_pair(v, Tensors{tensor<S>(g, {7, 5})});
          }};
}

template <class S>
Case bce_case() {
  const Mat<S> x = normal<S>(4, 6, 2.0), t = lktest::uniform(4, 6, 0.0, 1.0).cast<S>();
  losskit::BinaryCrossEntropyWithLogits<S> loss;
  loss.pos_weight = {S(0.5), S(2), S(1), S(3)};
  const torch::Tensor target = tensor<S>(t, {6, 4});
  return {"binary_cross_entropy_with_logits", {tensor<S>(x, {6, 4})},
          [=](const Tensors& w) { return lt::binary_cross_entropy_with_logits(w[0], target, loss); }, [=] {
            Mat<S> g;
            const double v = loss.value_and_gradient(x, t, g);
            return std::make_pair(v, Tensors{tensor<S>(g, {6, 4})});
          }};
}

/// The losses of C×N logits and labels, the functor given.
template <class S, class Loss>
Case labelled_case(const std::string& name, const Loss& loss,
                   torch::Tensor (*adapter)(const torch::Tensor&, const torch::Tensor&, const Loss&),
                   Eigen::VectorXi labels, Eigen::Index classes = 6) {
  const Eigen::Index n = labels.size();
  const Mat<S> x = normal<S>(classes, n, 2.0);
  const torch::Tensor y = label_tensor(labels);
  return {name, {tensor<S>(x, {n, classes})}, [=](const Tensors& w) { return adapter(w[0], y, loss); }, [=] {
            Mat<S> g;
            const double v = loss.value_and_gradient(x, labels, g);
            return std::make_pair(v, Tensors{tensor<S>(g, {n, classes})});
          }};
}

template <class S>
Case ce_probabilities_case() {
  const Mat<S> x = normal<S>(5, 8, 2.0);
  Mat<S> q = lktest::uniform(5, 8, 0.0, 1.0).cast<S>();
  q.array().rowwise() /= q.array().colwise().sum();
  losskit::CrossEntropy<S> loss;
  loss.label_smoothing = S(0.05);
  loss.class_weights = {S(1), S(2), S(0.5), S(1), S(1.5)};
  const torch::Tensor target = tensor<S>(q, {8, 5});
  return {"cross_entropy (probabilities)", {tensor<S>(x, {8, 5})},
          [=](const Tensors& w) { return lt::cross_entropy(w[0], target, loss); }, [=] {
            Mat<S> g;
            const double v = loss.value_and_gradient(x, q, g);
            return std::make_pair(v, Tensors{tensor<S>(g, {8, 5})});
          }};
}

/// SSIM or MS-SSIM on N×C×H×W images, the functor given.
template <class S, class Loss>
Case image_case(const std::string& name, const Loss& loss,
                torch::Tensor (*adapter)(const torch::Tensor&, const torch::Tensor&, const Loss&)) {
  const int64_t n = 2, c = loss.channels(), h = loss.height(), w = loss.width();
  const Mat<S> x = (lktest::uniform(c * h * w, n, 0.2, 0.8)).cast<S>();
  const Mat<S> y = (x.template cast<double>() + lktest::normal(c * h * w, n, 0.05)).template cast<S>();
  const torch::Tensor target = tensor<S>(y, {n, c, h, w});
  return {name, {tensor<S>(x, {n, c, h, w})}, [=](const Tensors& t) { return adapter(t[0], target, loss); }, [=] {
            Mat<S> g;
            const double v = loss.value_and_gradient(x, y, g);
            return std::make_pair(v, Tensors{tensor<S>(g, {n, c, h, w})});
          }};
}

template <class S>
Case smooth_adversarial_case() {
  const Eigen::VectorXi labels = lktest::labels(7, 5);
  const Mat<S> h = normal<S>(5, 7, 2.0);
  const Mat<S> a = (h.template cast<double>() + lktest::normal(5, 7, 0.1)).template cast<S>();
  const losskit::SmoothAdversarialCompSum<S> loss(S(0.7), S(0.5));
  const torch::Tensor y = label_tensor(labels);
  return {"smooth_adversarial_comp_sum", {tensor<S>(h, {7, 5}), tensor<S>(a, {7, 5})},
          [=](const Tensors& w) { return lt::smooth_adversarial_comp_sum(w[0], w[1], y, loss); }, [=] {
            Mat<S> gh, ga;
            const double v = loss.value_and_gradient(h, a, labels, gh, ga);
            return std::make_pair(v, Tensors{tensor<S>(gh, {7, 5}), tensor<S>(ga, {7, 5})});
          }};
}

template <class S>
Case linear_cross_entropy_case() {
  const Eigen::Index d = 4, c = 9, n = 6;
  const Mat<S> hidden = normal<S>(d, n), weight = normal<S>(c, d), bias = normal<S>(c, 1);
  Eigen::VectorXi labels = lktest::labels(n, int(c));
  labels(2) = -100;  // ignored
  losskit::LinearCrossEntropy<S> loss;
  loss.label_smoothing = S(0.1);
  loss.block_size = 4;  // several class blocks
  const torch::Tensor y = label_tensor(labels);
  // torch's weight is C×d row-major: the bytes of losskit's C×d column-major transposed.
  const Mat<S> weight_t = weight.transpose();
  return {"linear_cross_entropy",
          {tensor<S>(hidden, {n, d}), tensor<S>(weight_t, {c, d}), tensor<S>(bias, {c})},
          [=](const Tensors& w) { return lt::linear_cross_entropy(w[0], w[1], w[2], y, loss); }, [=] {
            Mat<S> gh, gw, gb;
            const Eigen::Matrix<S, Eigen::Dynamic, 1> b = bias.col(0);
            Eigen::Matrix<S, Eigen::Dynamic, 1> gbv;
            const double v = loss.value_and_gradient(hidden, weight, b, labels, gh, gw, gbv);
            const Mat<S> gw_t = gw.transpose();
            gb = gbv;
            return std::make_pair(v, Tensors{tensor<S>(gh, {n, d}), tensor<S>(gw_t, {c, d}), tensor<S>(gb, {c})});
          }};
}

template <class S>
Case cs_ib_case() {
  const Eigen::Index n = 10;
  const Mat<S> yhat = normal<S>(1, n), y = normal<S>(1, n), t = normal<S>(3, n), x = normal<S>(2, n);
  losskit::CSIB<S> loss;
  loss.beta = S(0.1);
  loss.sigma_x = S(1.2);  // fixed widths: the median heuristic is held constant in losskit's gradient
  loss.sigma_y = S(0.8);
  loss.sigma_t = S(1.5);
  const torch::Tensor yt = tensor<S>(y, {n, 1}), xt = tensor<S>(x, {n, 2});
  return {"cs_ib", {tensor<S>(yhat, {n, 1}), tensor<S>(t, {n, 3})},
          [=](const Tensors& w) { return lt::cs_ib(w[0], yt, w[1], xt, loss); }, [=] {
            Mat<S> gy, gt;
            const double v = loss.value_and_gradient(yhat, y, t, x, gy, gt);
            return std::make_pair(v, Tensors{tensor<S>(gy, {n, 1}), tensor<S>(gt, {n, 3})});
          }};
}

template <class S>
std::vector<Case> cases() {
  Eigen::VectorXi labels = lktest::labels(9, 6);
  losskit::CrossEntropy<S> ce;
  ce.class_weights = {S(1), S(2), S(0.5), S(1), S(1), S(3)};
  ce.label_smoothing = S(0.1);
  ce.z_penalty = S(1e-3);
  Eigen::VectorXi ignored = labels;
  ignored(3) = -100;
  losskit::CompSum<S> cs(S(0.6));
  losskit::LDRKL<S> ldr;
  ldr.lambda = S(0.7);
  losskit::ALDRKL<S> aldr;
  losskit::ZLoss<S> z;
  z.a = S(2);
  z.b = S(0.5);
  losskit::SSIMLoss<S> ssim(12, 14, 2);
  ssim.window_size = 7;
  losskit::MSSSIMLoss<S> ms(18, 20, 1);
  ms.window_size = 5;
  ms.weights = {S(0.3), S(0.4), S(0.3)};
  return {mse_case<S>(),
          bce_case<S>(),
          labelled_case<S>("cross_entropy (labels)", ce, &lt::cross_entropy<S>, ignored),
          ce_probabilities_case<S>(),
          labelled_case<S>("comp_sum", cs, &lt::comp_sum<S>, labels),
          labelled_case<S>("ldr_kl", ldr, &lt::ldr_kl<S>, labels),
          labelled_case<S>("aldr_kl", aldr, &lt::aldr_kl<S>, labels),
          labelled_case<S>("z_loss", z, &lt::z_loss<S>, labels),
          image_case<S>("ssim_loss", ssim, &lt::ssim_loss<S>),
          image_case<S>("ms_ssim_loss", ms, &lt::ms_ssim_loss<S>),
          smooth_adversarial_case<S>(),
          linear_cross_entropy_case<S>(),
          cs_ib_case<S>()};
}

Tensors leaves(const Tensors& wrt) {
  Tensors out;
  for (const torch::Tensor& t : wrt) out.push_back(t.detach().clone().requires_grad_(true));
  return out;
}

double max_rel_err(const torch::Tensor& got, const torch::Tensor& ref) {
  const torch::Tensor a = got.detach().to(torch::kDouble), b = ref.to(torch::kDouble);
  const double floor = std::max(b.abs().max().item<double>(), 1e-300);
  return ((a - b).abs() / b.abs().clamp_min(1e-3 * floor)).max().item<double>();
}

template <class S>
void check_against_functors(double tol) {
  for (const Case& c : cases<S>()) {
    const Tensors w = leaves(c.wrt);
    const auto [value, grads] = c.direct();
    // grad_output 1 (the saved gradient as it is) and 2.5 (scaled by backward).
    for (const double go : {1.0, 2.5}) {
      const torch::Tensor loss = c.adapter(w);
      INFO(c.name << " (" << (sizeof(S) == 8 ? "double" : "float") << "): adapter " << loss.item<double>()
                  << ", functor " << value << ", grad_output " << go);
      CHECK(loss.dim() == 0);
      CHECK(loss.scalar_type() == c10::CppTypeToScalarType<S>::value);
      CHECK(lktest::rel_err(loss.item<double>(), value) <= tol);
      const Tensors got = torch::autograd::grad({loss}, w, {torch::full({}, go, loss.options())});
      REQUIRE(got.size() == grads.size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("gradient of input " << i);
        CHECK(got[i].sizes() == w[i].sizes());
        CHECK(max_rel_err(got[i], go * grads[i]) <= tol);
      }
    }
  }
}

}  // namespace

TEST_CASE("torch adapter: value and gradient equal the functor's, float and double", "[torch][adapter]") {
  // The same functor on the same bytes: equal up to summation order (Map vs Matrix alignment).
  check_against_functors<double>(1e-13);
  check_against_functors<float>(2e-6);
}

TEST_CASE("torch adapter: gradients pass a finite-difference gradcheck in double", "[torch][adapter]") {
  // torch.autograd.gradcheck's check: central differences with eps = 1e-6,
  // |analytic − numeric| <= atol + rtol·|numeric| with atol = 1e-5, rtol = 1e-3,
  // for a random grad_output (libtorch's C++ API has no gradcheck).
  for (const Case& c : cases<double>()) {
    const Tensors w = leaves(c.wrt);
    const double go = 0.7;
    const Tensors analytic = torch::autograd::grad({c.adapter(w)}, w, {torch::full({}, go, torch::kDouble)});
    double worst = 0;
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < w.size(); ++i) {
      torch::Tensor x = w[i].detach().clone();
      Tensors args = w;
      args[i] = x;
      double* data = x.data_ptr<double>();
      const double* a = analytic[i].contiguous().data_ptr<double>();
      for (int64_t k = 0; k < x.numel(); ++k) {
        const double saved = data[k], eps = 1e-6;
        data[k] = saved + eps;
        const double up = c.adapter(args).item<double>();
        data[k] = saved - eps;
        const double down = c.adapter(args).item<double>();
        data[k] = saved;
        const double numeric = go * (up - down) / (2 * eps);
        worst = std::max(worst, std::abs(a[k] - numeric) / (1e-5 + 1e-3 * std::abs(numeric)));
      }
    }
    INFO(c.name << ": worst |analytic − numeric| / (atol + rtol·|numeric|) = " << worst);
    CHECK(worst <= 1.0);
  }
}

TEST_CASE("torch adapter: contiguous inputs are read in place, non-contiguous ones copied", "[torch][adapter]") {
  const torch::Tensor x = torch::randn({6, 4}, torch::kDouble);
  CHECK(lt::detail::floating<double>("f", "x", x, 2).data_ptr() == x.data_ptr());
  const torch::Tensor xt = torch::randn({4, 6}, torch::kDouble).t();
  REQUIRE_FALSE(xt.is_contiguous());
  CHECK(lt::detail::floating<double>("f", "x", xt, 2).data_ptr() != xt.data_ptr());

  // N×C logits that are the transpose of a C×N buffer, and a strided image batch.
  const torch::Tensor labels = torch::tensor({0, 3, 1, 2, 3, 0}, torch::kLong);
  const torch::Tensor logits = xt.detach().clone().requires_grad_(true);
  const torch::Tensor dense = xt.detach().contiguous().requires_grad_(true);
  lt::cross_entropy(logits, labels).backward();
  lt::cross_entropy(dense, labels).backward();
  CHECK(lt::cross_entropy(logits, labels).item<double>() == lt::cross_entropy(dense, labels).item<double>());
  CHECK(torch::equal(logits.grad(), dense.grad()));

  const torch::Tensor wide = torch::rand({2, 3, 16, 32}, torch::kDouble);
  const torch::Tensor img = wide.index({"...", torch::indexing::Slice(0, torch::indexing::None, 2)});
  const torch::Tensor ref = (img + 0.05 * torch::randn_like(img)).clamp(0, 1);
  REQUIRE_FALSE(img.is_contiguous());
  const torch::Tensor a = img.detach().requires_grad_(true), b = img.contiguous().detach().requires_grad_(true);
  const torch::Tensor la = lt::ssim_loss(a, ref), lb = lt::ssim_loss(b, ref);
  la.backward();
  lb.backward();
  CHECK(la.item<double>() == lb.item<double>());
  CHECK(torch::equal(a.grad(), b.grad()));
  CHECK(la.item<double>() > 0);
}

TEST_CASE("torch adapter: gradients accumulate over a retained graph, and the saved one is protected",
          "[torch][adapter]") {
  const torch::Tensor x = torch::randn({6, 4}, torch::kDouble).requires_grad_(true);
  const torch::Tensor y = torch::tensor({0, 3, 1, 2, 3, 0}, torch::kLong);
  const torch::Tensor once = torch::autograd::grad({lt::cross_entropy(x, y)}, {x})[0];
  const torch::Tensor loss = lt::cross_entropy(x, y);
  loss.backward({}, /*retain_graph=*/true);
  loss.backward({}, /*retain_graph=*/true);
  CHECK(torch::allclose(x.grad(), 2 * once, 0, 0));
  x.grad().zero_();  // .grad must not alias the gradient the graph keeps
  loss.backward();
  CHECK(torch::equal(x.grad(), once));
  // A gradient returned by autograd::grad is the saved one: changing it in
  // place is caught before a second backward reads it.
  const torch::Tensor l2 = lt::cross_entropy(x, y);
  torch::Tensor g = torch::autograd::grad({l2}, {x}, {}, /*retain_graph=*/true)[0];
  g.mul_(0);
  CHECK_THROWS(torch::autograd::grad({l2}, {x}));
}

TEST_CASE("torch adapter: without grad mode only the value is computed", "[torch][adapter]") {
  const torch::Tensor x = torch::randn({5, 3}, torch::kFloat).requires_grad_(true);
  const torch::Tensor y = torch::tensor({0, 1, 2, 1, 0}, torch::kLong);
  const double with = lt::cross_entropy(x, y).item<double>();
  torch::NoGradGuard no_grad;
  const torch::Tensor l = lt::cross_entropy(x, y);
  CHECK_FALSE(l.requires_grad());
  CHECK(l.item<double>() == with);
}

TEST_CASE("torch adapter: invalid inputs raise losskit::Error naming the function and argument",
          "[torch][adapter]") {
  using lktest::Contains;
  const torch::Tensor x = torch::randn({5, 3}, torch::kDouble).requires_grad_(true);
  const torch::Tensor y = torch::tensor({0, 1, 2, 1, 0}, torch::kLong);
  const losskit::CrossEntropy<double> ce;
  CHECK_THROWS_WITH(lt::cross_entropy(x.to(torch::kFloat), y, ce),
                    Contains("torch::cross_entropy: logits: dtype Float") && Contains("Double"));
  CHECK_THROWS_WITH(lt::cross_entropy(x, torch::tensor({0, 1, 2}, torch::kLong)),
                    Contains("labels: expected a 1-D tensor of N = 5 labels"));
  CHECK_THROWS_WITH(lt::cross_entropy(x, torch::tensor({0, 1, 7, 1, 0}, torch::kLong)),
                    Contains("losskit::CrossEntropy: labels: label 7 at sample 2"));
  CHECK_THROWS_AS(lt::cross_entropy(x.view({15}), y), losskit::Error);
  CHECK_THROWS_WITH(lt::mse(x, torch::randn({5, 3}, torch::kDouble).requires_grad_(true)),
                    Contains("torch::mse: target: requires grad"));
  CHECK_THROWS_WITH(lt::mse(x, torch::randn({3, 5}, torch::kDouble)), Contains("target: shape [3, 5]"));
  const torch::Tensor img = torch::rand({1, 1, 16, 16}, torch::kDouble);
  CHECK_THROWS_WITH(lt::ssim_loss(img, img, losskit::SSIMLoss<double>(16, 15)),
                    Contains("torch::ssim_loss: x: images of shape [1, 1, 16, 16]"));
  CHECK_THROWS_WITH(lt::ssim_loss(img.view({16, 16}), img.view({16, 16})), Contains("expected a 4-D tensor"));
  CHECK_FALSE(x.grad().defined());  // nothing ran backward, nothing written

  // Double backward: the gradient is losskit's, not a function of the graph.
  const torch::Tensor l = lt::cross_entropy(x, y);
  CHECK_THROWS_WITH(torch::autograd::grad({l}, {x}, {}, true, true), Contains("double backward"));
}
