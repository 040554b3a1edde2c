#pragma once
// The contract harness: every check of design.md's functor contract, written
// once and run for each case of tests/contract.hpp (in float and double where
// it means something). A translation unit defines LOSSKIT_CONTRACT_GROUP (its
// name) and LOSSKIT_CONTRACT_GROUP_CASES (one of contract.hpp's group macros)
// and includes this file.
#include <losskit/core/error.hpp>
#include <losskit/gradcheck.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "contract.hpp"
#include "sample_weight_checks.hpp"
#include "test_util.hpp"

namespace lkcontract {

// ---- arguments and outputs ---------------------------------------------------------------

template <class S, class A>
auto cast_arg(const A& a) {
  if constexpr (std::is_floating_point<typename A::Scalar>::value)
    return Eigen::Matrix<S, A::RowsAtCompileTime, A::ColsAtCompileTime>(a.template cast<S>());
  else
    return a;
}

template <class S, class... A>
auto cast_args(const std::tuple<A...>& args) {
  return std::apply([](const auto&... a) { return std::make_tuple(cast_arg<S>(a)...); }, args);
}

template <class Case, class S>
using Args = decltype(cast_args<S>(Case::data()));

template <class A>
A sentinel_like(const A& a) {
  A g(a.rows(), a.cols());
  g.setConstant(typename A::Scalar(-12345.5));
  return g;
}

/// One plain, sentinel-filled output per differentiable argument.
template <class Args, std::size_t... I>
auto sentinel_grads(const Args& args, std::index_sequence<I...>) {
  return std::make_tuple(sentinel_like(std::get<I>(args))...);
}

/// The K-th entry of an index sequence.
template <std::size_t K, std::size_t... I>
constexpr std::size_t nth(std::index_sequence<I...>) {
  constexpr std::size_t all[] = {I...};
  return all[K];
}

template <class Grads>
bool all_untouched(const Grads& grads) {
  return std::apply([](const auto&... g) { return (lktest::untouched(g, g.rows(), g.cols()) && ...); }, grads);
}

template <class Grads>
bool all_zero(const Grads& grads) {
  return std::apply([](const auto&... g) { return (g.isZero(0) && ...); }, grads);
}

/// max over outputs and entries of |a − b| / max|b| (max|b| floored at 1e-30).
template <class GA, class GB, std::size_t... I>
double grads_err(const GA& a, const GB& b, std::index_sequence<I...>) {
  double worst = 0;
  auto one = [&](const auto& x, const auto& y) {
    const double scale = std::max(double(y.cwiseAbs().maxCoeff()), 1e-30);
    worst = std::max(worst, double((x.template cast<double>() - y.template cast<double>()).cwiseAbs().maxCoeff()) / scale);
  };
  (one(std::get<I>(a), std::get<I>(b)), ...);
  return worst;
}
template <class GA, class GB>
double grads_err(const GA& a, const GB& b) {
  return grads_err(a, b, std::make_index_sequence<std::tuple_size<GA>::value>{});
}

/// "The same computation on the same numbers": a few hundred roundings.
template <class S>
constexpr double kSame = 500 * double(std::numeric_limits<S>::epsilon());

inline bool close(double a, double b, double tol) { return std::abs(a - b) <= tol * std::max({std::abs(a), std::abs(b), 1.0}); }

template <class S>
Vec<S> weights_of(const Eigen::VectorXd& s) {
  return s.cast<S>();
}

/// ℓ_i for every sample: from per_sample (times n_i where it reports element
/// means) or, for losses without it, as the Sum with weight 1 on sample i alone
/// (the loss is linear in the weights).
template <class Case, class S>
Eigen::VectorXd per_sample_losses(typename Case::template Loss<S> loss, const Args<Case, S>& args) {
  Case::set_reduction(loss, losskit::Reduction::Sum);
  const Eigen::Index n = Case::batch(args);
  if constexpr (Case::kPerSample) {
    Eigen::VectorXd l = Case::per_sample(loss, args).template cast<double>();
    if (Case::kPerSampleIsMean) l.array() *= Case::shares(loss, args).array();
    return l;
  } else {
    Eigen::VectorXd l(n);
    for (Eigen::Index i = 0; i < n; ++i) l(i) = double(Case::value(loss, weights_of<S>(Eigen::VectorXd::Unit(n, i)), args));
    return l;
  }
}

// ---- 1. expression inputs ------------------------------------------------------------------

/// Each view kind holds what it needs (a copy, padding, a transpose) and
/// gives the view; labels are viewed only by MapView (an int Map).
template <class A>
constexpr bool kFloating = std::is_floating_point<typename A::Scalar>::value;

struct MapView {
  static constexpr const char* kName = "Map";
  template <class A>
  struct Hold {
    const A& a;
    explicit Hold(const A& a_) : a(a_) {}
    auto get() const { return Eigen::Map<const A>(a.data(), a.rows(), a.cols()); }
  };
};

struct BlockView {
  static constexpr const char* kName = "Block of a larger matrix";
  template <class A>
  struct Hold {
    using Big = Eigen::Matrix<typename A::Scalar, Eigen::Dynamic, Eigen::Dynamic>;
    const A& a;
    Big big;
    explicit Hold(const A& a_) : a(a_), big(Big::Constant(a_.rows() + 3, a_.cols() + 2, typename A::Scalar(7))) {
      big.block(2, 1, a.rows(), a.cols()) = a;
    }
    auto get() const {
      if constexpr (kFloating<A>)
        return big.block(2, 1, a.rows(), a.cols());
      else
        return Eigen::Ref<const A>(a);
    }
  };
};

struct TransposeView {
  static constexpr const char* kName = "transpose of a stored transpose";
  template <class A>
  struct Hold {
    const A& a;
    Eigen::Matrix<typename A::Scalar, Eigen::Dynamic, Eigen::Dynamic> t;
    explicit Hold(const A& a_) : a(a_), t(a_.transpose()) {}
    auto get() const {
      if constexpr (kFloating<A>)
        return t.transpose();
      else
        return Eigen::Ref<const A>(a);
    }
  };
};

struct RowMajorView {
  static constexpr const char* kName = "row-major Map";
  template <class A>
  struct Hold {
    using Row = Eigen::Matrix<typename A::Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const A& a;
    Row r;
    explicit Hold(const A& a_) : a(a_), r(a_) {}
    auto get() const {
      if constexpr (kFloating<A>)
        return Eigen::Map<const Row>(r.data(), r.rows(), r.cols());
      else
        return Eigen::Ref<const A>(a);
    }
  };
};

struct ArrayView {
  static constexpr const char* kName = "array expression x.array() * 1";
  template <class A>
  struct Hold {
    const A& a;
    explicit Hold(const A& a_) : a(a_) {}
    auto get() const {
      if constexpr (kFloating<A>)
        return a.array() * typename A::Scalar(1);
      else
        return Eigen::Ref<const A>(a);
    }
  };
};

template <class V, class... A>
auto hold_all(const std::tuple<A...>& args) {
  return std::apply([](const auto&... a) { return std::tuple<typename V::template Hold<A>...>(a...); }, args);
}

template <class Holders>
auto views_of(const Holders& holders) {
  return std::apply([](const auto&... h) { return std::make_tuple(h.get()...); }, holders);
}

template <class Case, class S, class V, class G0>
void check_view(const typename Case::template Loss<S>& loss, const Args<Case, S>& args, double v0, const G0& g0) {
  INFO(Case::kName << " (" << (sizeof(S) == 4 ? "float" : "double") << "), inputs as " << V::kName);
  const auto holders = hold_all<V>(args);
  const auto views = views_of(holders);
  CHECK(close(double(Case::value(loss, NoWeights{}, views)), v0, kSame<S>));
  auto g = sentinel_grads(args, typename Case::Diff{});
  CHECK(close(double(Case::vg(loss, NoWeights{}, views, g)), v0, kSame<S>));
  CHECK(grads_err(g, g0) <= kSame<S>);
}

template <class Case, class S>
void check_expressions() {
  const auto loss = Case::template make<S>();
  const Args<Case, S> args = cast_args<S>(Case::data());
  auto g0 = sentinel_grads(args, typename Case::Diff{});
  const double v0 = double(Case::vg(loss, NoWeights{}, args, g0));
  check_view<Case, S, MapView>(loss, args, v0, g0);
  check_view<Case, S, BlockView>(loss, args, v0, g0);
  check_view<Case, S, TransposeView>(loss, args, v0, g0);
  check_view<Case, S, RowMajorView>(loss, args, v0, g0);
  check_view<Case, S, ArrayView>(loss, args, v0, g0);
}

// ---- 2. gradient outputs as views ----------------------------------------------------------

struct MapOut {
  static constexpr const char* kName = "Map";
  template <class G>
  struct Out {
    G store;
    explicit Out(const G& g) : store(sentinel_like(g)) {}
    Eigen::Map<G> view() { return Eigen::Map<G>(store.data(), store.rows(), store.cols()); }
    const G& result() const { return store; }
  };
};

struct BlockOut {
  static constexpr const char* kName = "Block of a larger matrix";
  template <class G>
  struct Out {
    using Big = Eigen::Matrix<typename G::Scalar, Eigen::Dynamic, Eigen::Dynamic>;
    Big big;
    Eigen::Index r, c;
    explicit Out(const G& g) : big(Big::Constant(g.rows() + 2, g.cols() + 3, typename G::Scalar(-12345.5))), r(g.rows()), c(g.cols()) {}
    auto view() { return big.block(1, 2, r, c); }
    G result() const { return big.block(1, 2, r, c); }
  };
};

struct ArrayOut {
  static constexpr const char* kName = "Array";
  template <class G>
  struct Out {
    Eigen::Array<typename G::Scalar, G::RowsAtCompileTime, G::ColsAtCompileTime> store;
    explicit Out(const G& g) : store(sentinel_like(g).array()) {}
    auto& view() { return store; }
    G result() const { return store.matrix(); }
  };
};

template <class Case, class S, class O, class G0>
void check_output_kind(const typename Case::template Loss<S>& loss, const Args<Case, S>& args, double v0, const G0& g0) {
  INFO(Case::kName << " (" << (sizeof(S) == 4 ? "float" : "double") << "), gradient outputs as " << O::kName);
  auto outs = std::apply([](const auto&... g) { return std::tuple<typename O::template Out<std::decay_t<decltype(g)>>...>(g...); }, g0);
  auto views = std::apply([](auto&... o) { return std::tuple<decltype(o.view())...>(o.view()...); }, outs);
  CHECK(close(double(Case::vg(loss, NoWeights{}, args, views)), v0, kSame<S>));
  const auto got = std::apply([](const auto&... o) { return std::make_tuple(o.result()...); }, outs);
  CHECK(grads_err(got, g0) <= kSame<S>);
}

template <class Case, class S>
void check_outputs() {
  const auto loss = Case::template make<S>();
  const Args<Case, S> args = cast_args<S>(Case::data());
  auto g0 = sentinel_grads(args, typename Case::Diff{});
  const double v0 = double(Case::vg(loss, NoWeights{}, args, g0));
  check_output_kind<Case, S, MapOut>(loss, args, v0, g0);
  check_output_kind<Case, S, BlockOut>(loss, args, v0, g0);
  check_output_kind<Case, S, ArrayOut>(loss, args, v0, g0);
}

// ---- 3. no allocation with presized outputs --------------------------------------------------

template <class Case, class S>
void check_no_allocation() {
  if constexpr (Case::kNoAllocation) {
    const auto loss = Case::template make<S>();
    const Args<Case, S> args = cast_args<S>(Case::data());
    auto g = sentinel_grads(args, typename Case::Diff{});
    INFO(Case::kName << " (" << (sizeof(S) == 4 ? "float" : "double") << ")");
    Case::vg(loss, NoWeights{}, args, g);  // warm-up: workspaces, OpenMP's pool
    {
      lktest::AllocationCounter c;
      Case::vg(loss, NoWeights{}, args, g);
      CHECK(c.count() == 0);
      CHECK(c.heap_count() <= 0);
    }
    if constexpr (Case::kSampleWeights) {
      const Vec<S> s = weights_of<S>(lktest::random_weights(Case::batch(args), true));
      Case::vg(loss, s, args, g);
      lktest::AllocationCounter c;
      Case::vg(loss, s, args, g);
      INFO("with sample weights");
      CHECK(c.count() == 0);
      CHECK(c.heap_count() <= 0);
    }
  }
}

// ---- 4. errors leave every output untouched --------------------------------------------------

template <class Case, class S, class W>
void check_rejected(const typename Case::template Loss<S>& loss, const Args<Case, S>& good, const Args<Case, S>& bad,
                    const W& w) {
  auto g = sentinel_grads(good, typename Case::Diff{});
  CHECK_THROWS_AS(Case::vg(loss, w, bad, g), losskit::Error);
  CHECK_THROWS_AS(Case::value(loss, w, bad), losskit::Error);
  CHECK(all_untouched(g));
}

/// Output J as a Map one column too wide (a view cannot be resized).
template <class Case, class S, std::size_t J, std::size_t... I>
void check_wrong_output(const typename Case::template Loss<S>& loss, const Args<Case, S>& args,
                        std::index_sequence<I...> diff) {
  auto g = sentinel_grads(args, diff);
  auto& gj = std::get<J>(g);
  Mat<S> wide = lktest::sentinel<S>(gj.rows(), gj.cols() + 1);
  auto views = std::tuple<std::conditional_t<I == J, Eigen::Map<Mat<S>>, std::decay_t<decltype(std::get<I>(g))>&>...>(
      [&](auto& gi) -> decltype(auto) {
        if constexpr (I == J)
          return Eigen::Map<Mat<S>>(wide.data(), wide.rows(), wide.cols());
        else
          return gi;
      }(std::get<I>(g))...);
  INFO("gradient output " << J << " one column too wide");
  CHECK_THROWS_AS(Case::vg(loss, NoWeights{}, args, views), losskit::Error);
  CHECK(all_untouched(g));
  CHECK(lktest::untouched(wide, wide.rows(), wide.cols()));
}

template <class Case, class S>
void check_errors() {
  const auto loss = Case::template make<S>();
  const Args<Case, S> args = cast_args<S>(Case::data());
  const Eigen::Index n = Case::batch(args);
  const auto bad_args = Case::errors(args);
  for (std::size_t k = 0; k < bad_args.size(); ++k) {
    INFO(Case::kName << " (" << (sizeof(S) == 4 ? "float" : "double") << "), bad arguments #" << k);
    check_rejected<Case, S>(loss, args, bad_args[k], NoWeights{});
    if constexpr (Case::kPerSample) CHECK_THROWS_AS(Case::per_sample(loss, bad_args[k]), losskit::Error);
    if constexpr (Case::kSampleWeights) check_rejected<Case, S>(loss, args, bad_args[k], Vec<S>(Vec<S>::Ones(n)));
  }
  if constexpr (Case::kSampleWeights) {
    for (const auto& bad : lktest::bad_weights(n)) {
      INFO(Case::kName << " (" << (sizeof(S) == 4 ? "float" : "double") << "), sample weights: " << bad.first);
      check_rejected<Case, S>(loss, args, args, weights_of<S>(bad.second));
    }
  }
  for_each_index([&](auto j) { check_wrong_output<Case, S, decltype(j)::value>(loss, args, typename Case::Diff{}); },
                 std::make_index_sequence<std::tuple_size<decltype(sentinel_grads(args, typename Case::Diff{}))>::value>{});
}

// ---- 5. float against double -----------------------------------------------------------------

template <class Case>
void check_float_double() {
  const auto data = Case::data();
  const auto lf = Case::template make<float>();
  const auto ld = Case::template make<double>();
  const Args<Case, float> af = cast_args<float>(data);
  const Args<Case, double> ad = cast_args<double>(data);
  auto gf = sentinel_grads(af, typename Case::Diff{});
  auto gd = sentinel_grads(ad, typename Case::Diff{});
  const double vf = Case::vg(lf, NoWeights{}, af, gf), vd = Case::vg(ld, NoWeights{}, ad, gd);
  INFO(Case::kName << ": float " << vf << ", double " << vd << ", gradient error " << grads_err(gf, gd));
  CHECK(close(vf, vd, Case::kFloatTol));
  CHECK(grads_err(gf, gd) <= 10 * Case::kFloatTol);
}

// ---- 6. gradient check in double -------------------------------------------------------------

template <class Case, class W>
void check_gradients_with(const typename Case::template Loss<double>& loss, const Args<Case, double>& args, const W& w) {
  auto g = sentinel_grads(args, typename Case::Diff{});
  Case::vg(loss, w, args, g);
  losskit::GradientCheckOptions opt;
  opt.max_coordinates = 40;
  opt.directions = 3;
  for_each_index(
      [&](auto o) {
        constexpr std::size_t O = decltype(o)::value, I = nth<O>(typename Case::Diff{});
        auto f = [&](const Mat<double>& z) {
          Args<Case, double> moved = args;
          std::get<I>(moved) = z;
          return Case::value(loss, w, moved);
        };
        const auto res = losskit::check_gradient(f, std::get<I>(args), std::get<O>(g), opt);
        INFO(Case::kName << ", argument " << I << (kWeighted<W> ? ", with sample weights: " : ": ") << res.report());
        CHECK(res.passed);
      },
      std::make_index_sequence<std::tuple_size<decltype(g)>::value>{});
}

template <class Case>
void check_gradients() {
  const auto loss = Case::template make<double>();
  const Args<Case, double> args = cast_args<double>(Case::data());
  check_gradients_with<Case>(loss, args, NoWeights{});
  if constexpr (Case::kSampleWeights)
    check_gradients_with<Case>(loss, args, Vec<double>(lktest::random_weights(Case::batch(args), true)));
}

// ---- 7. identities -------------------------------------------------------------------------

template <class Case, class S>
void check_identities() {
  using losskit::Reduction;
  const Args<Case, S> args = cast_args<S>(Case::data());
  const Eigen::Index n = Case::batch(args);
  auto loss = Case::template make<S>();
  INFO(Case::kName << " (" << (sizeof(S) == 4 ? "float" : "double") << ")");
  // value_and_gradient returns operator()'s value.
  {
    auto g = sentinel_grads(args, typename Case::Diff{});
    CHECK(close(double(Case::vg(loss, NoWeights{}, args, g)), double(Case::value(loss, NoWeights{}, args)), kSame<S>));
  }
  if constexpr (Case::kReduction) {
    const Eigen::VectorXd shares = Case::shares(loss, args);
    const Eigen::VectorXd l = per_sample_losses<Case, S>(loss, args);
    const double normaliser = shares.sum();
    Case::set_reduction(loss, Reduction::Sum);
    const double sum = Case::value(loss, NoWeights{}, args);
    Case::set_reduction(loss, Reduction::Mean);
    const double mean = Case::value(loss, NoWeights{}, args);
    INFO("Sum " << sum << ", Mean " << mean << ", normaliser " << normaliser);
    CHECK(close(sum, mean * normaliser, kSame<S>));
    if constexpr (Case::kPerSample) {
      CHECK(close(l.sum(), sum, kSame<S>));
      CHECK(close(l.sum() / normaliser, mean, kSame<S>));
    }
    if constexpr (Case::kSampleWeights) {
      for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
        Case::set_reduction(loss, r);
        INFO(r);
        const double plain = Case::value(loss, NoWeights{}, args);
        CHECK(close(double(Case::value(loss, Vec<S>(Vec<S>::Ones(n)), args)), plain, kSame<S>));
        for (bool zeros : {false, true}) {
          INFO((zeros ? "some weights 0" : "positive weights"));
          const Eigen::VectorXd sd = lktest::random_weights(n, zeros);
          const Vec<S> s = weights_of<S>(sd);
          // Σ s_i·ℓ_i, divided by Σ s_i·n_i for Mean (weights as the loss sees them).
          const Eigen::VectorXd seen = s.template cast<double>();
          const lktest::WeightedReference ref = lktest::weighted_reference(l, seen, false);
          const double expect = r == Reduction::Mean ? ref.value / seen.dot(shares) : ref.value;
          const double got = Case::value(loss, s, args);
          CHECK(close(got, expect, kSame<S>));
          auto g = sentinel_grads(args, typename Case::Diff{});
          CHECK(close(double(Case::vg(loss, s, args, g)), got, kSame<S>));
        }
        auto g = sentinel_grads(args, typename Case::Diff{});
        CHECK(Case::vg(loss, Vec<S>(Vec<S>::Zero(n)), args, g) == S(0));
        CHECK(all_zero(g));
        CHECK(Case::value(loss, Vec<S>(Vec<S>::Zero(n)), args) == S(0));
      }
    }
  }
}

}  // namespace lkcontract

#define LOSSKIT_CONTRACT_TEST(what, body)                                                                      \
  TEMPLATE_TEST_CASE("Contract (" LOSSKIT_CONTRACT_GROUP "): " what, "[contract]", LOSSKIT_CONTRACT_GROUP_CASES) { \
    body;                                                                                                      \
  }

LOSSKIT_CONTRACT_TEST("expression inputs give the plain matrices' value and gradient",
                      (lkcontract::check_expressions<TestType, float>(), lkcontract::check_expressions<TestType, double>()))
LOSSKIT_CONTRACT_TEST("gradient outputs as Map, Block and Array receive the same gradient",
                      (lkcontract::check_outputs<TestType, float>(), lkcontract::check_outputs<TestType, double>()))
LOSSKIT_CONTRACT_TEST("a repeated call with presized outputs allocates nothing",
                      (lkcontract::check_no_allocation<TestType, float>(),
                       lkcontract::check_no_allocation<TestType, double>()))
LOSSKIT_CONTRACT_TEST("every error throws losskit::Error and leaves the outputs untouched",
                      (lkcontract::check_errors<TestType, float>(), lkcontract::check_errors<TestType, double>()))
LOSSKIT_CONTRACT_TEST("float agrees with double on the same inputs", lkcontract::check_float_double<TestType>())
LOSSKIT_CONTRACT_TEST("the gradient passes check_gradient in double", lkcontract::check_gradients<TestType>())
LOSSKIT_CONTRACT_TEST("reduction, per_sample and sample-weight identities",
                      (lkcontract::check_identities<TestType, float>(), lkcontract::check_identities<TestType, double>()))
