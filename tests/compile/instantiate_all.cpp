// Instantiates every public functor for float and double (value,
// value_and_gradient, per_sample and the other public members), so the
// headers can be compiled with extra warnings (-Wconversion, -Wshadow, ...)
// on g++ and clang++. Compiled with -fsyntax-only; the sizes are valid anyway.
// LOSSKIT_STRICT_FLOAT_ONLY=1 instantiates float only: the -fopenmp variant
// uses it, since the _OPENMP branches do not depend on the scalar and float
// is where -Wconversion finds narrowing. Eigen's BDCSVD, which
// FactoredOutputLayer::train_step calls, is declared extern by the check's
// -include of tests/svd_instances.hpp (see tests/compile/CMakeLists.txt).
#include <Eigen/Core>
#include <losskit/comp_sum.hpp>
#include <losskit/cross_entropy.hpp>
#include <losskit/cs_ib.hpp>
#include <losskit/factored_output_layer.hpp>
#include <losskit/ldr.hpp>
#include <losskit/losskit.hpp>
#include <losskit/spherical.hpp>  // the compatibility header still compiles
#include <losskit/ssim.hpp>
#include <losskit/z_loss.hpp>

namespace {

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

/// value + value_and_gradient + per_sample of a (pred, target) functor.
template <class S, class Loss, class P, class T>
S all_three(const Loss& loss, const P& pred, const T& target) {
  Mat<S> g;
  return loss(pred, target) + loss.value_and_gradient(pred, target, g) + loss.per_sample(pred, target).sum();
}

template <class S>
S classification() {
  const Mat<S> x = Mat<S>::Ones(3, 4), q = Mat<S>::Constant(3, 4, S(1) / S(3));
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(4);
  S total = all_three<S>(losskit::MSE<S>{}, x, q);

  losskit::CrossEntropy<S> ce;
  ce.label_smoothing = S(0.1);
  total += all_three<S>(ce, x, y) + all_three<S>(ce, x, q);
  Mat<S> g;
  const auto r = ce.evaluate(x, y, g);
  total += r.loss + r.cross_entropy + r.z_penalty + S(r.normaliser) + ce.evaluate(x, q).loss + S(ce.normaliser(y));
  total += all_three<S>(losskit::BinaryCrossEntropyWithLogits<S>{}, x, Mat<S>::Zero(3, 4));

  total += all_three<S>(losskit::CompSum<S>::generalized_cross_entropy(), x, y);
  losskit::SmoothAdversarialCompSum<S> sa(S(0.5), S(1));
  Mat<S> gc, ga;
  total += sa(x, q, y) + sa.value_and_gradient(x, q, y, gc, ga) + sa.per_sample(x, q, y).sum();

  losskit::LDRKL<S> ldr;
  ldr.logit_scaling = losskit::LogitScaling::MeanAbs;
  losskit::ALDRKL<S> aldr;
  aldr.logit_scaling = losskit::LogitScaling::Softplus;
  total += all_three<S>(ldr, x, y) + all_three<S>(aldr, x, y) + aldr.lambda_star(x, y).sum();
  losskit::ALDRKLState<S> state(4, aldr.lambda0);
  total += aldr(x, y, y, state) + aldr.value_and_gradient(x, y, y, state, g) + state.lambdas().sum();
  state.set_lambdas(state.lambdas());

  const losskit::ZLoss<S> z;
  const losskit::SphericalTerms<S> t = z.spherical_terms(S(1), S(2), S(0.5), 3);
  return total + all_three<S>(z, x, y) + t.value + t.d_sum + t.d_sum_squares + t.d_target;
}

template <class S>
S factored_layer() {
  losskit::FactoredOutputLayer<S> layer(Mat<S>::Ones(5, 2));
  const Mat<S> h = Mat<S>::Ones(2, 3), values = Mat<S>::Ones(1, 3);
  const Eigen::VectorXi y = Eigen::VectorXi::Zero(3);
  const Eigen::Matrix<Eigen::Index, Eigen::Dynamic, Eigen::Dynamic> rows = Eigen::Matrix<Eigen::Index, 1, 3>::Zero();
  const losskit::ZLoss<S> z;
  const losskit::MSE<S> mse;
  Mat<S> g;
  S total = layer.value_and_gradient(z, h, y, g) + layer.value_and_gradient(mse, h, y, g) +
            layer.value_and_gradient(mse, h, rows, values, g);
  total += layer.train_step(z, h, y, g, S(0.1)) + layer.train_step(mse, h, y, g, S(0.1)) +
           layer.train_step(mse, h, rows, values, g, S(0.1));
  layer.unfactorize();
  return total + layer.outputs(h).sum() + layer.weights().sum() + S(layer.stats().updates) +
         S(layer.classes() + layer.hidden_size());
}

template <class S>
S images() {
  const Mat<S> a = Mat<S>::Ones(2 * 16 * 16, 2), b = Mat<S>::Zero(2 * 16 * 16, 2);
  losskit::SSIMLoss<S> s(16, 16, 2);
  losskit::MSSSIMLoss<S> ms(16, 16, 2);
  ms.weights = {S(0.5), S(0.5)};
  ms.pooling = losskit::OddSizePooling::ZeroFirst;
  const Mat<S> plane = Mat<S>::Ones(161, 161);  // the smallest side for 5 scales of an 11-tap window
  return all_three<S>(s, a, b) + all_three<S>(ms, a, b) + s.index(a, b).sum() + ms.index(a, b).sum() +
         losskit::ssim(plane, plane) + losskit::ms_ssim(plane, plane, S(255)) + S(s.height() + s.width() + s.channels());
}

template <class S>
S volumes() {
  const Mat<S> a = Mat<S>::Ones(2 * 5 * 6 * 7, 2), b = Mat<S>::Zero(2 * 5 * 6 * 7, 2);
  losskit::SSIM3DLoss<S> s(5, 6, 7, 2);
  s.window_size = 5;
  losskit::MSSSIM3DLoss<S> ms(5, 6, 7, 2);
  ms.window_size = 3;
  ms.weights = {S(0.5), S(0.5)};
  ms.pooling = losskit::OddSizePooling::ZeroFirst;
  Mat<S> g;
  return all_three<S>(s, a, b) + all_three<S>(ms, a, b) + s.channel_index(a, b).sum() +
         ms.evaluate(a, b, g).loss + S(s.depth() + s.height() + s.width() + s.channels());
}

template <class S>
S kernels() {
  const Mat<S> yhat = Mat<S>::Random(1, 8), y = Mat<S>::Random(1, 8), t = Mat<S>::Random(3, 8),
               x = Mat<S>::Random(2, 8);
  Mat<S> gy, gt;
  losskit::CSDivergence<S> div;
  div.weighting = losskit::CSWeighting::OfficialCode;
  losskit::CSQuadraticMI<S> mi;
  mi.normalized = true;
  losskit::CSIB<S> ib;
  return div(yhat, y, x) + div.value_and_gradient(yhat, y, x, gy) + mi(t, x) + mi.value_and_gradient(t, x, gt) +
         ib(yhat, y, t, x) + ib.value_and_gradient(yhat, y, t, x, gy, gt) + losskit::median_heuristic_width(x);
}

template <class S>
S use_all() {
  using M = Mat<S>;
  const M a = M::Ones(3, 4), b = M::Zero(3, 4);
  M g;
  S total = losskit::MSE<S>{}.value_and_gradient(a, b, g);
  const auto r = losskit::check_gradient([&](const M& z) { return losskit::MSE<S>{}(z, b); }, a, g);
  return total + S(r.max_rel_error) + classification<S>() + factored_layer<S>() + images<S>() + volumes<S>() + kernels<S>();
}
}  // namespace

#if defined(LOSSKIT_STRICT_FLOAT_ONLY) && LOSSKIT_STRICT_FLOAT_ONLY
int main() { return use_all<float>() > 0 ? 0 : 1; }
#else
int main() { return use_all<float>() + use_all<double>() > 0 ? 0 : 1; }
#endif
