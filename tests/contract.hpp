#pragma once
// The functor configurations of the contract harness (tests/contract_checks.hpp;
// design.md, "The shape of every loss functor"; issue 14, item 5).
//
// A case is a struct whose members are templates on the Scalar S:
//   kName                     what failure messages call it
//   Loss<S>, make<S>()        the functor, with non-default options
//   data()                    small random inputs in double: a std::tuple of the
//                             call's arguments in order (floating matrices or
//                             vectors, Eigen::VectorXi labels); the harness
//                             casts the floating ones to S
//   Diff                      std::index_sequence of the differentiable
//                             arguments, in the order of the gradient outputs
//   value(loss, w, args), vg(loss, w, args, grads), per_sample(loss, args)
//                             the calls; w is NoWeights{} for the unweighted
//                             overloads. Calls spells the common shape
//                             loss(args..., [w]) and
//                             loss.value_and_gradient(args..., [w], grads...)
//   shares(loss, args)        n_i, each sample's share of the Mean's normaliser
//   errors(args)              argument tuples every call must reject
//   set_reduction(loss, r)
// and the traits that say which checks apply (defaults in Calls):
//   kPerSample, kSampleWeights, kReduction, kNoAllocation,
//   kPerSampleIsMean (per_sample reports ℓ_i / n_i), kFloatTol.
//
// Compile budget (CI: 2 cores, test and ASan builds): the five
// test_contract_*.cpp together take about 260 CPU-seconds at the test preset's
// flags (largest TU 2.1 GB; 5.5 GB in the ASan build when it used -g). Keep
// sizes tiny and checks generic; every view or output kind is one more
// instantiation of every loss. FactoredOutputLayer::train_step is not
// instantiated here (about 110 CPU-seconds on its own).
#include <losskit/losskit.hpp>

#include <Eigen/Core>
#include <cmath>
#include <initializer_list>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "svd_instances.hpp"
#include "test_util.hpp"

namespace lkcontract {

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
using Labels = Eigen::VectorXi;

/// "No sample weights": the unweighted overloads.
struct NoWeights {};

template <class W>
constexpr bool kWeighted = !std::is_same<std::decay_t<W>, NoWeights>::value;

/// f(integral_constant<I>) for I in the sequence.
template <class F, std::size_t... I>
void for_each_index(F&& f, std::index_sequence<I...>) {
  (f(std::integral_constant<std::size_t, I>{}), ...);
}

/// Copies of `args`, each with one argument one column wider (one entry longer
/// for a vector): a batch size or class count that disagrees with the rest.
template <class Args>
std::vector<Args> wider_each(const Args& args) {
  std::vector<Args> out;
  for_each_index(
      [&](auto index) {
        Args bad = args;
        auto& a = std::get<decltype(index)::value>(bad);
        using A = std::decay_t<decltype(a)>;
        if constexpr (A::ColsAtCompileTime == 1)
          a.conservativeResize(a.rows() + 1);
        else
          a.conservativeResize(a.rows(), a.cols() + 1);
        a.setConstant(typename A::Scalar(0));
        out.push_back(bad);
      },
      std::make_index_sequence<std::tuple_size<Args>::value>{});
  return out;
}

/// Copies of `args` whose first label (argument I) is each of `values`.
template <std::size_t I, class Args>
void add_bad_labels(std::vector<Args>& out, const Args& args, std::initializer_list<int> values) {
  for (int v : values) {
    Args bad = args;
    std::get<I>(bad)(0) = v;
    out.push_back(bad);
  }
}

/// A copy of `args` with entry (0, 0) of argument I set to v.
template <std::size_t I, class Args>
void add_bad_entry(std::vector<Args>& out, const Args& args, double v) {
  Args bad = args;
  std::get<I>(bad)(0, 0) = v;
  out.push_back(bad);
}

/// The common call shape, and the traits' defaults.
struct Calls {
  using Diff = std::index_sequence<0>;             // one differentiable input, the first
  static constexpr bool kPerSample = true;         // per_sample(args...)
  static constexpr bool kSampleWeights = true;     // (args..., w) overloads
  static constexpr bool kReduction = true;         // a Mean / Sum `reduction`
  static constexpr bool kNoAllocation = true;      // presized outputs: no heap allocation
  static constexpr bool kPerSampleIsMean = false;  // per_sample = ℓ_i / n_i (element means)
  static constexpr double kFloatTol = 1e-4;        // float vs double, relative to the double's size

  template <class L, class W, class Args>
  static auto value(const L& loss, const W& w, const Args& args) {
    return std::apply(
        [&](const auto&... a) {
          if constexpr (kWeighted<W>)
            return loss(a..., w);
          else
            return loss(a...);
        },
        args);
  }

  template <class L, class W, class Args, class Grads>
  static auto vg(const L& loss, const W& w, const Args& args, Grads&& grads) {
    return std::apply(
        [&](const auto&... a) {
          return std::apply(
              [&](auto&&... g) {
                if constexpr (kWeighted<W>)
                  return loss.value_and_gradient(a..., w, g...);
                else
                  return loss.value_and_gradient(a..., g...);
              },
              grads);
        },
        args);
  }

  template <class L, class Args>
  static auto per_sample(const L& loss, const Args& args) {
    return std::apply([&](const auto&... a) { return loss.per_sample(a...); }, args);
  }

  template <class Args>
  static Eigen::Index batch(const Args& args) {
    return std::get<0>(args).cols();
  }

  template <class L, class Args>
  static Eigen::VectorXd shares(const L& /*loss*/, const Args& args) {
    return Eigen::VectorXd::Ones(batch(args));
  }

  template <class L>
  static void set_reduction(L& loss, losskit::Reduction r) {
    loss.reduction = r;
  }

  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    return wider_each(args);
  }
};

/// n_i = D: element means (MSE, BCE).
struct ElementMean : Calls {
  static constexpr bool kPerSampleIsMean = true;
  template <class L, class Args>
  static Eigen::VectorXd shares(const L& /*loss*/, const Args& args) {
    return Eigen::VectorXd::Constant(batch(args), double(std::get<0>(args).rows()));
  }
};

inline std::tuple<Eigen::MatrixXd, Labels> logits_and_labels(Eigen::Index classes, Eigen::Index n, double scale = 1.5) {
  return {lktest::normal(classes, n, scale), lktest::labels(n, int(classes))};
}

/// Logits and labels in [0, C) (no ignore_index): labels C and -1 are errors.
/// Default data: 5 classes, 6 samples.
struct LabelCalls : Calls {
  static auto data() { return logits_and_labels(5, 6); }
  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    std::vector<Args> out = wider_each(args);
    add_bad_labels<std::tuple_size<Args>::value - 1>(out, args, {int(std::get<0>(args).rows()), -1});
    return out;
  }
};

// ---- losses ------------------------------------------------------------------------------

struct MSESum : ElementMean {
  static constexpr const char* kName = "MSE (Sum)";
  template <class S>
  using Loss = losskit::MSE<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.reduction = losskit::Reduction::Sum;
    return l;
  }
  static auto data() { return std::make_tuple(lktest::normal(5, 7), lktest::normal(5, 7)); }
};

/// n_i of cross-entropy with class weights: w_{y_i}, 0 where y_i is ignore_index.
template <class L>
Eigen::VectorXd label_shares(const L& loss, const Labels& y) {
  Eigen::VectorXd n(y.size());
  for (Eigen::Index i = 0; i < y.size(); ++i) n(i) = y(i) == loss.ignore_index ? 0.0 : double(loss.class_weights(y(i)));
  return n;
}

/// Class weights, label smoothing, ignore_index -1 (sample 2 ignored), z_penalty.
struct CrossEntropyLabels : Calls {
  static constexpr const char* kName = "CrossEntropy (labels)";
  template <class S>
  using Loss = losskit::CrossEntropy<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.class_weights = {S(0.5), S(1), S(2), S(1.5), S(0.8)};
    l.label_smoothing = S(0.1);
    l.ignore_index = -1;
    l.z_penalty = S(0.02);
    return l;
  }
  static auto data() {
    auto d = logits_and_labels(5, 7);
    std::get<1>(d)(2) = -1;
    return d;
  }
  template <class L, class Args>
  static Eigen::VectorXd shares(const L& loss, const Args& args) {
    return label_shares(loss, std::get<1>(args));
  }
  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    std::vector<Args> out = wider_each(args);
    add_bad_labels<1>(out, args, {5, -2});
    return out;
  }
};

/// Labels without smoothing: the block path for a few classes (a plain
/// Matrix runs it, the views of the expression check run column by column).
struct CrossEntropyLabelsUnsmoothed : CrossEntropyLabels {
  static constexpr const char* kName = "CrossEntropy (labels, no smoothing)";
  template <class S>
  static Loss<S> make() {
    Loss<S> l = CrossEntropyLabels::make<S>();
    l.label_smoothing = S(0);
    return l;
  }
};

/// Probability targets (columns of a softmax), label smoothing, z_penalty.
struct CrossEntropyProbabilities : Calls {
  static constexpr const char* kName = "CrossEntropy (probabilities)";
  template <class S>
  using Loss = losskit::CrossEntropy<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.label_smoothing = S(0.05);
    l.z_penalty = S(0.01);
    l.class_weights = {S(1), S(2), S(0.5), S(1), S(1.5), S(1)};
    return l;
  }
  static auto data() {
    const Eigen::MatrixXd x = lktest::normal(6, 5, 1.5);
    Eigen::MatrixXd q = lktest::normal(6, 5).array().exp().matrix();
    for (Eigen::Index j = 0; j < q.cols(); ++j) q.col(j) /= q.col(j).sum();
    return std::make_tuple(x, q);
  }
  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    std::vector<Args> out = wider_each(args);
    add_bad_entry<1>(out, args, -0.25);
    return out;
  }
};

inline std::tuple<Eigen::MatrixXd, Eigen::MatrixXd> logits_and_probabilities(Eigen::Index rows, Eigen::Index n) {
  return {lktest::normal(rows, n, 2.0), lktest::uniform(rows, n)};
}

struct BCEPosWeight : ElementMean {
  static constexpr const char* kName = "BinaryCrossEntropyWithLogits (pos_weight)";
  template <class S>
  using Loss = losskit::BinaryCrossEntropyWithLogits<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.pos_weight = {S(0.5), S(2), S(1), S(3)};
    return l;
  }
  static auto data() { return logits_and_probabilities(4, 6); }
  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    std::vector<Args> out = wider_each(args);
    add_bad_entry<1>(out, args, 1.5);
    return out;
  }
};

/// Element weight D×1 and one pos_weight {3} for every output.
struct BCEElementWeight : BCEPosWeight {
  static constexpr const char* kName = "BinaryCrossEntropyWithLogits (weight D×1, pos_weight {3})";
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.weight = {S(0.2), S(1), S(2), S(0.7)};
    l.pos_weight = {S(3)};
    return l;
  }
};

struct CompSum : LabelCalls {
  static constexpr const char* kName = "CompSum (tau 0.5)";
  template <class S>
  using Loss = losskit::CompSum<S>;
  template <class S>
  static Loss<S> make() {
    return Loss<S>(S(0.5));
  }
};

struct SmoothAdversarialCompSum : LabelCalls {
  static constexpr const char* kName = "SmoothAdversarialCompSum (tau 1.5, nu 0.3)";
  template <class S>
  using Loss = losskit::SmoothAdversarialCompSum<S>;
  using Diff = std::index_sequence<0, 1>;
  template <class S>
  static Loss<S> make() {
    return Loss<S>(S(1.5), S(0.3));
  }
  static auto data() {
    const Eigen::MatrixXd clean = lktest::normal(5, 6, 1.5);
    const Eigen::MatrixXd adv = clean + lktest::normal(5, 6, 0.3);
    return std::make_tuple(clean, adv, lktest::labels(6, 5));
  }
};

struct LDRKL : LabelCalls {
  static constexpr const char* kName = "LDRKL (lambda 0.7, margin 0.2)";
  template <class S>
  using Loss = losskit::LDRKL<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.lambda = S(0.7);
    l.margin = S(0.2);
    return l;
  }
};

struct LDRKLSoftplus : LDRKL {
  static constexpr const char* kName = "LDRKL (Softplus logit scaling)";
  template <class S>
  static Loss<S> make() {
    Loss<S> l = LDRKL::make<S>();
    l.logit_scaling = losskit::LogitScaling::Softplus;
    return l;
  }
};

struct ALDRKL : LabelCalls {
  static constexpr const char* kName = "ALDRKL (lambda0 3, alpha 1.5)";
  template <class S>
  using Loss = losskit::ALDRKL<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.lambda0 = S(3);
    l.alpha = S(1.5);
    l.margin = S(0.2);
    return l;
  }
};

struct ZLoss : LabelCalls {
  static constexpr const char* kName = "ZLoss (a 2, b 0.5)";
  template <class S>
  using Loss = losskit::ZLoss<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.a = S(2);
    l.b = S(0.5);
    return l;
  }
  static auto data() { return logits_and_labels(6, 5, 1.0); }
};

// ---- images ------------------------------------------------------------------------------

/// pred = target + noise, both in [0, 1]: SSIM well inside (0, 1), every
/// MS-SSIM scale term positive (no clamped, non-differentiable terms). Every
/// |pred − target| >= gap keeps an L1 term's kinks out of a finite difference's reach.
inline std::tuple<Eigen::MatrixXd, Eigen::MatrixXd> image_pair(Eigen::Index rows, Eigen::Index n, double gap = 0) {
  const Eigen::MatrixXd target = lktest::uniform(rows, n, 0.2, 0.8);
  const Eigen::MatrixXd noise = lktest::normal(rows, n, 0.05);
  const Eigen::MatrixXd pred = target + noise.unaryExpr([gap](double e) { return e < 0 ? e - gap : e + gap; });
  return {pred, target};
}

struct ImageCalls : Calls {
  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    std::vector<Args> out = wider_each(args);
    Args bad = args;  // a row count that is not channels·height·width
    std::get<0>(bad).conservativeResize(std::get<0>(args).rows() + 1, Eigen::NoChange);
    std::get<1>(bad).conservativeResize(std::get<1>(args).rows() + 1, Eigen::NoChange);
    std::get<0>(bad).setConstant(0.5);
    std::get<1>(bad).setConstant(0.5);
    out.push_back(bad);
    return out;
  }
};

/// An SSIM-family functor with a Gaussian window of `size` taps and `sigma`.
template <class L>
L with_window(L loss, Eigen::Index size, double sigma) {
  loss.window_size = size;
  loss.sigma = typename L::Scalar(sigma);
  return loss;
}

struct SSIM : ImageCalls {
  static constexpr const char* kName = "SSIMLoss (2×16×14, window 7)";
  template <class S>
  using Loss = losskit::SSIMLoss<S>;
  template <class S>
  static Loss<S> make() {
    return with_window(Loss<S>(16, 14, 2), 7, 1.2);
  }
  static auto data() { return image_pair(2 * 16 * 14, 3); }
};

struct SSIM3D : ImageCalls {
  static constexpr const char* kName = "SSIM3DLoss (6×7×5, window 3)";
  template <class S>
  using Loss = losskit::SSIM3DLoss<S>;
  template <class S>
  static Loss<S> make() {
    return with_window(Loss<S>(6, 7, 5), 3, 1.0);
  }
  static auto data() { return image_pair(6 * 7 * 5, 2); }
};

/// Window 3 and three scales: sides >= (3 − 1)·2² + 1 = 9.
struct MSSSIM : ImageCalls {
  static constexpr const char* kName = "MSSSIMLoss (2×16×14, window 3, 3 scales)";
  template <class S>
  using Loss = losskit::MSSSIMLoss<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l = with_window(Loss<S>(16, 14, 2), 3, 1.0);
    l.weights = {S(0.3), S(0.5), S(0.2)};
    return l;
  }
  static auto data() { return image_pair(2 * 16 * 14, 2); }
};

/// Window 3 and two scales: every side (depth too) >= (3 − 1)·2 + 1 = 5; the
/// odd sides (7, 5) go through the default ReplicateLast pooling.
struct MSSSIM3D : ImageCalls {
  static constexpr const char* kName = "MSSSIM3DLoss (6×7×5, window 3, 2 scales)";
  template <class S>
  using Loss = losskit::MSSSIM3DLoss<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l = with_window(Loss<S>(6, 7, 5), 3, 1.0);
    l.weights = {S(0.4), S(0.6)};
    return l;
  }
  static auto data() { return image_pair(6 * 7 * 5, 2); }
};

struct MSSSIML1 : ImageCalls {
  static constexpr const char* kName = "MSSSIML1Loss (16×14, window 3, 3 scales, l1_window_size 7)";
  template <class S>
  using Loss = losskit::MSSSIML1Loss<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l = with_window(Loss<S>(16, 14, 1), 3, 1.0);
    l.weights = {S(0.3), S(0.5), S(0.2)};
    l.l1_window_size = 7;
    l.l1_sigma = S(2);
    l.alpha = S(0.6);
    return l;
  }
  static auto data() { return image_pair(16 * 14, 2, 0.02); }
};

// ---- batch-level estimators and large heads ----------------------------------------------

/// Batch-level: no per_sample, no sample weights, no reduction. Every kernel
/// width is set, so the gradient is that of the returned value (a width left
/// at 0 on t is a stop-gradient constant).
struct BatchCalls : Calls {
  static constexpr bool kPerSample = false;
  static constexpr bool kSampleWeights = false;
  static constexpr bool kReduction = false;
};

struct CSDivergence : BatchCalls {
  static constexpr const char* kName = "CSDivergence";
  template <class S>
  using Loss = losskit::CSDivergence<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.sigma_x = S(1.5);
    l.sigma_y = S(0.8);
    return l;
  }
  static auto data() {
    const Eigen::MatrixXd y = lktest::normal(3, 8);
    return std::make_tuple(Eigen::MatrixXd(y + lktest::normal(3, 8, 0.4)), y, lktest::normal(4, 8));
  }
};

struct CSQuadraticMI : BatchCalls {
  static constexpr const char* kName = "CSQuadraticMI (normalized)";
  template <class S>
  using Loss = losskit::CSQuadraticMI<S>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.sigma_x = S(1.5);
    l.sigma_t = S(1.2);
    l.normalized = true;
    return l;
  }
  static auto data() {
    const Eigen::MatrixXd x = lktest::normal(4, 8);
    return std::make_tuple(Eigen::MatrixXd(x.topRows(3) + lktest::normal(3, 8, 0.5)), x);
  }
};

struct CSIB : BatchCalls {
  static constexpr const char* kName = "CSIB (beta 0.1)";
  template <class S>
  using Loss = losskit::CSIB<S>;
  using Diff = std::index_sequence<0, 2>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.beta = S(0.1);
    l.sigma_x = S(1.5);
    l.sigma_y = S(0.8);
    l.sigma_t = S(1.2);
    return l;
  }
  static auto data() {
    const Eigen::MatrixXd y = lktest::normal(3, 8), x = lktest::normal(4, 8);
    return std::make_tuple(Eigen::MatrixXd(y + lktest::normal(3, 8, 0.4)), y,
                           Eigen::MatrixXd(x.topRows(3) + lktest::normal(3, 8, 0.5)), x);
  }
};

/// block_size 3 over 7 classes: three blocks, the last one short. The block
/// buffer comes from the functor's workspace pool, so a repeated call
/// allocates nothing.
struct LinearCrossEntropy : Calls {
  static constexpr const char* kName = "LinearCrossEntropy (block_size 3)";
  static constexpr bool kPerSample = false;
  template <class S>
  using Loss = losskit::LinearCrossEntropy<S>;
  using Diff = std::index_sequence<0, 1, 2>;
  template <class S>
  static Loss<S> make() {
    Loss<S> l;
    l.block_size = 3;
    l.class_weights = {S(0.5), S(1), S(2), S(1.5), S(0.8), S(1), S(1.2)};
    l.label_smoothing = S(0.1);
    l.ignore_index = -1;
    l.z_penalty = S(0.02);
    return l;
  }
  static auto data() {
    Labels y = lktest::labels(6, 7);
    y(3) = -1;
    return std::make_tuple(lktest::normal(4, 6), lktest::normal(7, 4, 0.7), Eigen::VectorXd(lktest::normal(7, 1, 0.3)),
                           y);
  }
  template <class L, class Args>
  static Eigen::VectorXd shares(const L& loss, const Args& args) {
    return label_shares(loss, std::get<3>(args));
  }
  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    std::vector<Args> out = wider_each(args);
    add_bad_labels<3>(out, args, {7, -2});
    return out;
  }
};

/// FactoredOutputLayer::value_and_gradient under a ZLoss (a 1.5, b 0.3, Sum).
/// train_step is deliberately not instantiated here: it alone cost about 110
/// CPU-seconds of compile time; it has its own tests in test_spherical.cpp.
/// value() is the dense ZLoss on layer.outputs(H) (an independent path), so
/// the "value_and_gradient returns operator()" identity compares the O(d²)
/// evaluation with the O(D·d) one. No sample weights, no per_sample;
/// value_and_gradient's buffers come from the layer's workspace pool, so a
/// repeated call allocates nothing.
template <class S>
struct FactoredZLoss {
  losskit::FactoredOutputLayer<S> layer;
  losskit::ZLoss<S> loss;
};

struct FactoredOutputLayer : LabelCalls {
  static constexpr const char* kName = "FactoredOutputLayer (ZLoss)";
  static constexpr bool kPerSample = false;
  static constexpr bool kSampleWeights = false;
  template <class S>
  using Loss = FactoredZLoss<S>;
  static constexpr Eigen::Index kClasses = 9, kHidden = 4;
  template <class S>
  static Loss<S> make() {
    // Weights from a formula, not the test generator: make() is called once per Scalar.
    Mat<S> w(kClasses, kHidden);
    for (Eigen::Index i = 0; i < kClasses; ++i)
      for (Eigen::Index k = 0; k < kHidden; ++k) w(i, k) = S(std::sin(1.3 * double(i) + 0.7 * double(k) + 0.1));
    Loss<S> l{losskit::FactoredOutputLayer<S>(w), losskit::ZLoss<S>()};
    l.loss.a = S(1.5);
    l.loss.b = S(0.3);
    l.loss.reduction = losskit::Reduction::Sum;
    return l;
  }
  static auto data() { return std::make_tuple(lktest::normal(kHidden, 5), lktest::labels(5, int(kClasses))); }
  template <class L, class W, class Args>
  static auto value(const L& l, const W& /*no weights*/, const Args& args) {
    return l.loss(l.layer.outputs(std::get<0>(args)), std::get<1>(args));
  }
  template <class L, class W, class Args, class Grads>
  static auto vg(const L& l, const W& /*no weights*/, const Args& args, Grads&& grads) {
    return l.layer.value_and_gradient(l.loss, std::get<0>(args), std::get<1>(args), std::get<0>(grads));
  }
  template <class L>
  static void set_reduction(L& l, losskit::Reduction r) {
    l.loss.reduction = r;
  }
  template <class Args>
  static std::vector<Args> errors(const Args& args) {
    std::vector<Args> out = wider_each(args);
    add_bad_labels<1>(out, args, {int(kClasses), -1});
    return out;
  }
};

}  // namespace lkcontract

// The groups, one translation unit each (test_contract_<group>.cpp): about 2 to
// 6 cases a TU keeps every TU under 6 GB also in the ASan build (with -g, UBSan),
// where the 11 losses in one TU needed more.
#define LOSSKIT_CONTRACT_LOSSES_CE                                                                \
  lkcontract::MSESum, lkcontract::CrossEntropyLabels, lkcontract::CrossEntropyLabelsUnsmoothed,   \
      lkcontract::CrossEntropyProbabilities, lkcontract::BCEPosWeight, lkcontract::BCEElementWeight
#define LOSSKIT_CONTRACT_LOSSES_MARGIN                                                                  \
  lkcontract::CompSum, lkcontract::SmoothAdversarialCompSum, lkcontract::LDRKL, lkcontract::LDRKLSoftplus, \
      lkcontract::ALDRKL, lkcontract::ZLoss
#define LOSSKIT_CONTRACT_LOSSES LOSSKIT_CONTRACT_LOSSES_CE, LOSSKIT_CONTRACT_LOSSES_MARGIN
#define LOSSKIT_CONTRACT_IMAGES \
  lkcontract::SSIM, lkcontract::SSIM3D, lkcontract::MSSSIM, lkcontract::MSSSIM3D, lkcontract::MSSSIML1
#define LOSSKIT_CONTRACT_BATCH_CS lkcontract::CSDivergence, lkcontract::CSQuadraticMI, lkcontract::CSIB
#define LOSSKIT_CONTRACT_BATCH_HEADS lkcontract::LinearCrossEntropy, lkcontract::FactoredOutputLayer
#define LOSSKIT_CONTRACT_BATCH LOSSKIT_CONTRACT_BATCH_CS, LOSSKIT_CONTRACT_BATCH_HEADS
#define LOSSKIT_CONTRACT_CASES LOSSKIT_CONTRACT_LOSSES, LOSSKIT_CONTRACT_IMAGES, LOSSKIT_CONTRACT_BATCH
