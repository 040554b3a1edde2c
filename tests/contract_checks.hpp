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

/// lktest::sentinel of a's type and shape.
template <class A>
A sentinel_like(const A& a) {
  return A(lktest::sentinel<typename A::Scalar>(a.rows(), a.cols()));
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
    worst =
        std::max(worst, double((x.template cast<double>() - y.template cast<double>()).cwiseAbs().maxCoeff()) / scale);
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

inline bool close(double a, double b, double tol) {
  return std::abs(a - b) <= tol * std::max({std::abs(a), std::abs(b), 1.0});
}

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
    for (Eigen::Index i = 0; i < n; ++i)
      l(i) = double(Case::value(loss, weights_of<S>(Eigen::VectorXd::Unit(n, i)), args));
    return l;
  }
}

// ---- reports: the Catch2 assertions live in these few non-template functions ----------------

/// Which case, which Scalar, which variant: the first words of every report.
template <class Case, class S>
std::string where(const std::string& what = "") {
  return std::string(Case::kName) + (std::is_same<S, float>::value ? " (float)" : " (double)") +
         (what.empty() ? "" : ", " + what);
}

inline void expect(bool ok, const std::string& report) {
  INFO(report);
  CHECK(ok);
}

inline void expect_close(double got, double want, double tol, const std::string& report) {
  INFO(report << ": got " << got << ", want " << want << " (tolerance " << tol << " relative)");
  CHECK(close(got, want, tol));
}

inline void expect_grads(double err, double tol, const std::string& report) {
  INFO(report << ": gradient differs by " << err << " of its largest entry (tolerance " << tol << ")");
  CHECK(err <= tol);
}

/// Runs f; true if it threw losskit::Error (anything else thrown: false).
template <class F>
bool throws_error(F&& f) {
  try {
    f();
  } catch (const losskit::Error&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

// ---- 1. expression inputs ------------------------------------------------------------------

// Under AddressSanitizer (measured with -g, and UBSan) an instantiation costs about
// twice the memory of the test preset, and the biggest harness TUs went past
// 6 GB. There the harness keeps one view per memory access pattern (Map:
// contiguous, Block: strided, transpose of a row-major Map: rows, array
// expression: coefficient access) and leaves the row-major Map (the same
// access as the transpose), the product (the loss reads a temporary) and
// operator() on the array expression to the test preset.
#if defined(LKTEST_ASAN) && !defined(LOSSKIT_CONTRACT_FEWER_VIEWS)
#define LOSSKIT_CONTRACT_FEWER_VIEWS 1
#endif

/// A view kind V keeps what its view needs (V::Store, built from the
/// argument: a padded copy, a transpose, a row-major copy) and makes the view
/// (V::view); labels are passed as V::kLabels says (an int Map, an int
/// array expression, or an Eigen::Ref).
template <class A>
constexpr bool kFloating = std::is_floating_point<typename A::Scalar>::value;

struct NoStore {
  template <class A>
  explicit NoStore(const A&) {}
};

/// How a view kind passes labels.
enum class LabelView { Ref, Map, Array };

template <class V, class A>
struct Hold {
  const A& a;
  std::conditional_t<kFloating<A>, typename V::template Store<typename A::Scalar>, NoStore> store;
  explicit Hold(const A& a_) : a(a_), store(a_) {}
  auto get() const {
    if constexpr (kFloating<A>)
      return V::view(store, a);
    else if constexpr (V::kLabels == LabelView::Map)
      return Eigen::Map<const A>(a.data(), a.rows(), a.cols());
    else if constexpr (V::kLabels == LabelView::Array)
      return a.array() + 0;
    else
      return Eigen::Ref<const A>(a);
  }
};

struct MapView {
  static constexpr const char* kName = "Map";
  static constexpr LabelView kLabels = LabelView::Map;
  template <class S>
  using Store = NoStore;
  template <class A>
  static auto view(const NoStore&, const A& a) {
    return Eigen::Map<const A>(a.data(), a.rows(), a.cols());
  }
};

struct BlockView {
  static constexpr const char* kName = "Block of a larger matrix";
  static constexpr LabelView kLabels = LabelView::Ref;
  template <class S>
  struct Store {
    Mat<S> big;
    template <class A>
    explicit Store(const A& a) : big(Mat<S>::Constant(a.rows() + 3, a.cols() + 2, S(7))) {
      big.block(2, 1, a.rows(), a.cols()) = a;
    }
  };
  template <class St, class A>
  static auto view(const St& s, const A& a) {
    return s.big.block(2, 1, a.rows(), a.cols());
  }
};

/// design.md's idiom for row-major N×D data: Map<RowMajor>(ptr, N, D).transpose().
struct TransposeView {
  static constexpr const char* kName = "transpose of a row-major Map of the stored transpose";
  static constexpr LabelView kLabels = LabelView::Ref;
  template <class S>
  struct Store {
    Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> t;
    template <class A>
    explicit Store(const A& a) : t(a.transpose()) {}
  };
  template <class St, class A>
  static auto view(const St& s, const A& /*a*/) {
    return Eigen::Map<const decltype(s.t)>(s.t.data(), s.t.rows(), s.t.cols()).transpose();
  }
};

struct RowMajorView {
  static constexpr const char* kName = "row-major Map";
  static constexpr LabelView kLabels = LabelView::Ref;
  template <class S>
  struct Store {
    Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r;
    template <class A>
    explicit Store(const A& a) : r(a) {}
  };
  template <class St, class A>
  static auto view(const St& s, const A& /*a*/) {
    return Eigen::Map<const decltype(s.r)>(s.r.data(), s.r.rows(), s.r.cols());
  }
};

/// Array expressions, labels too (y.array() + 0).
struct ArrayView {
  static constexpr const char* kName = "array expression x.array() * 1 (labels y.array() + 0)";
  static constexpr LabelView kLabels = LabelView::Array;
  template <class S>
  using Store = NoStore;
  template <class A>
  static auto view(const NoStore&, const A& a) {
    return a.array() * typename A::Scalar(1);
  }
};

/// A product, evaluated by the loss (each input at most once).
struct ProductView {
  static constexpr const char* kName = "product 2·I · x · 0.5";
  static constexpr LabelView kLabels = LabelView::Ref;
  template <class S>
  struct Store {
    Mat<S> two_i;
    template <class A>
    explicit Store(const A& a) : two_i(Mat<S>::Identity(a.rows(), a.rows()) * S(2)) {}
  };
  template <class St, class A>
  static auto view(const St& s, const A& a) {
    return s.two_i * a * typename A::Scalar(0.5);
  }
};

template <class V, class... A>
auto hold_all(const std::tuple<A...>& args) {
  return std::apply([](const auto&... a) { return std::tuple<Hold<V, A>...>(a...); }, args);
}

template <class Holders>
auto views_of(const Holders& holders) {
  return std::apply([](const auto&... h) { return std::make_tuple(h.get()...); }, holders);
}

/// value_and_gradient on the views (its value is checked as well); operator()
/// too where `with_value` (the harness does that for Map and the array
/// expression, which between them cover direct and coefficient access, to
/// keep the compile time down).
template <class Case, class S, class V, bool WithValue, class G0>
void check_view(const typename Case::template Loss<S>& loss, const Args<Case, S>& args, double v0, const G0& g0) {
  const std::string report = where<Case, S>(std::string("inputs as ") + V::kName);
  const auto holders = hold_all<V>(args);
  const auto views = views_of(holders);
  if constexpr (WithValue) expect_close(Case::value(loss, NoWeights{}, views), v0, kSame<S>, report + ", operator()");
  auto g = sentinel_grads(args, typename Case::Diff{});
  expect_close(Case::vg(loss, NoWeights{}, views, g), v0, kSame<S>, report + ", value_and_gradient");
  expect_grads(grads_err(g, g0), kSame<S>, report);
}

/// The functor, plain-matrix arguments, and its value and gradients on them:
/// what the views and output kinds are compared with.
template <class Case, class S>
struct Reference {
  typename Case::template Loss<S> loss = Case::template make<S>();
  Args<Case, S> args = cast_args<S>(Case::data());
  decltype(sentinel_grads(args, typename Case::Diff{})) grads = sentinel_grads(args, typename Case::Diff{});
  double value = double(Case::vg(loss, NoWeights{}, args, grads));
};

template <class Case, class S>
void check_expressions() {
  const Reference<Case, S> r;
  check_view<Case, S, MapView, true>(r.loss, r.args, r.value, r.grads);
  check_view<Case, S, BlockView, false>(r.loss, r.args, r.value, r.grads);
  check_view<Case, S, TransposeView, false>(r.loss, r.args, r.value, r.grads);
#if defined(LOSSKIT_CONTRACT_FEWER_VIEWS)
  check_view<Case, S, ArrayView, false>(r.loss, r.args, r.value, r.grads);
#else
  check_view<Case, S, ArrayView, true>(r.loss, r.args, r.value, r.grads);
  check_view<Case, S, RowMajorView, false>(r.loss, r.args, r.value, r.grads);
  check_view<Case, S, ProductView, false>(r.loss, r.args, r.value, r.grads);
#endif
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
    explicit Out(const G& g)
        : big(lktest::sentinel<typename G::Scalar>(g.rows() + 2, g.cols() + 3)), r(g.rows()), c(g.cols()) {}
    auto view() { return big.block(1, 2, r, c); }
    G result() const { return big.block(1, 2, r, c); }
    /// Nothing written around the block.
    bool outside_untouched() const {
      Big rest = big;
      rest.block(1, 2, r, c) = lktest::sentinel<typename G::Scalar>(r, c);
      return lktest::untouched(rest, big.rows(), big.cols());
    }
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

/// An empty Array: the loss resizes it (a plain object), as it does a Matrix.
struct EmptyArrayOut {
  static constexpr const char* kName = "Array, empty (resized by the loss)";
  template <class G>
  struct Out : ArrayOut::Out<G> {
    explicit Out(const G& g) : ArrayOut::Out<G>(g) { this->store = decltype(this->store)(); }
  };
};

/// An empty plain Matrix (or Vector), resized by the loss.
struct EmptyOut {
  static constexpr const char* kName = "empty plain Matrix (resized by the loss)";
  template <class G>
  struct Out {
    G store;
    explicit Out(const G& /*g*/) {}
    G& view() { return store; }
    const G& result() const { return store; }
  };
};

template <class Case, class S, class O, class G0>
void check_output_kind(const typename Case::template Loss<S>& loss, const Args<Case, S>& args, double v0,
                       const G0& g0) {
  const std::string report = where<Case, S>(std::string("gradient outputs as ") + O::kName);
  auto outs = std::apply(
      [](const auto&... g) { return std::tuple<typename O::template Out<std::decay_t<decltype(g)>>...>(g...); }, g0);
  auto views = std::apply([](auto&... o) { return std::tuple<decltype(o.view())...>(o.view()...); }, outs);
  expect_close(Case::vg(loss, NoWeights{}, args, views), v0, kSame<S>, report);
  const auto got = std::apply([](const auto&... o) { return std::make_tuple(o.result()...); }, outs);
  expect_grads(grads_err(got, g0), kSame<S>, report);
  if constexpr (std::is_same<O, BlockOut>::value)
    expect(std::apply([](const auto&... o) { return (o.outside_untouched() && ...); }, outs),
           report + ": nothing written outside the blocks");
}

template <class Case, class S>
void check_outputs() {
  const Reference<Case, S> r;
  check_output_kind<Case, S, MapOut>(r.loss, r.args, r.value, r.grads);
  check_output_kind<Case, S, BlockOut>(r.loss, r.args, r.value, r.grads);
  check_output_kind<Case, S, ArrayOut>(r.loss, r.args, r.value, r.grads);
  check_output_kind<Case, S, EmptyArrayOut>(r.loss, r.args, r.value, r.grads);
  check_output_kind<Case, S, EmptyOut>(r.loss, r.args, r.value, r.grads);
}

// ---- 3. no allocation with presized outputs --------------------------------------------------

/// news, mallocs: counted while the call ran (the report is built afterwards).
inline void expect_no_allocation(long news, long mallocs, const std::string& report) {
  INFO(report << ": " << news << " operator new calls, " << mallocs << " mallocs (-1: not counted)");
  CHECK(news == 0);
  CHECK(mallocs <= 0);
}

template <class F>
std::pair<long, long> allocations_of(F&& call) {
  const lktest::AllocationCounter c;
  call();
  return {c.count(), c.heap_count()};
}

template <class Case, class S>
void check_no_allocation() {
  if constexpr (Case::kNoAllocation) {
    const auto loss = Case::template make<S>();
    const Args<Case, S> args = cast_args<S>(Case::data());
    auto g = sentinel_grads(args, typename Case::Diff{});
    Case::vg(loss, NoWeights{}, args, g);  // warm-up: workspaces, OpenMP's threads
    const auto plain = allocations_of([&] { Case::vg(loss, NoWeights{}, args, g); });
    expect_no_allocation(plain.first, plain.second, where<Case, S>("second value_and_gradient"));
    if constexpr (Case::kSampleWeights) {
      const Vec<S> s = weights_of<S>(lktest::random_weights(Case::batch(args), true));
      Case::vg(loss, s, args, g);
      const auto weighted = allocations_of([&] { Case::vg(loss, s, args, g); });
      expect_no_allocation(weighted.first, weighted.second,
                           where<Case, S>("second value_and_gradient with sample weights"));
    }
  }
}

// ---- 4. errors leave every output untouched --------------------------------------------------

template <class Case, class S, class W>
void check_rejected(const typename Case::template Loss<S>& loss, const Args<Case, S>& good, const Args<Case, S>& bad,
                    const W& w, const std::string& report) {
  auto g = sentinel_grads(good, typename Case::Diff{});
  expect(throws_error([&] { Case::vg(loss, w, bad, g); }), report + ": value_and_gradient throws losskit::Error");
  expect(throws_error([&] { Case::value(loss, w, bad); }), report + ": operator() throws losskit::Error");
  expect(all_untouched(g), report + ": every gradient output still holds the sentinel");
}

/// Output J as a Map one column too wide (a view cannot be resized), the others presized.
template <class Case, class S, std::size_t J, std::size_t... I>
void check_wrong_output(const typename Case::template Loss<S>& loss, const Args<Case, S>& args,
                        std::index_sequence<I...>) {
  auto g = sentinel_grads(args, typename Case::Diff{});
  auto& gj = std::get<J>(g);
  Mat<S> wide = lktest::sentinel<S>(gj.rows(), gj.cols() + 1);
  Eigen::Map<Mat<S>> wide_view(wide.data(), wide.rows(), wide.cols());
  auto pick = [&](auto& gi, auto index) -> auto& {
    if constexpr (decltype(index)::value == J)
      return wide_view;
    else
      return gi;
  };
  auto views = std::tie(pick(std::get<I>(g), std::integral_constant<std::size_t, I>{})...);
  const std::string report = where<Case, S>("gradient output " + std::to_string(J) + " one column too wide");
  expect(throws_error([&] { Case::vg(loss, NoWeights{}, args, views); }), report + ": throws losskit::Error");
  expect(all_untouched(g) && lktest::untouched(wide, wide.rows(), wide.cols()),
         report + ": every gradient output still holds the sentinel");
}

template <class Case, class S>
void check_errors() {
  const auto loss = Case::template make<S>();
  const Args<Case, S> args = cast_args<S>(Case::data());
  const Eigen::Index n = Case::batch(args);
  const auto bad_args = Case::errors(args);
  for (std::size_t k = 0; k < bad_args.size(); ++k) {
    const std::string report = where<Case, S>("bad arguments #" + std::to_string(k));
    check_rejected<Case, S>(loss, args, bad_args[k], NoWeights{}, report);
    if constexpr (Case::kPerSample)
      expect(throws_error([&] { Case::per_sample(loss, bad_args[k]); }), report + ": per_sample throws losskit::Error");
    if constexpr (Case::kSampleWeights)
      check_rejected<Case, S>(loss, args, bad_args[k], Vec<S>(Vec<S>::Ones(n)), report + ", with sample weights");
  }
  if constexpr (Case::kSampleWeights) {
    for (const auto& bad : lktest::bad_weights(n))
      check_rejected<Case, S>(loss, args, args, weights_of<S>(bad.second),
                              where<Case, S>("sample weights: " + bad.first));
  }
  constexpr std::size_t outputs = std::tuple_size<decltype(sentinel_grads(args, typename Case::Diff{}))>::value;
  for_each_index(
      [&](auto j) { check_wrong_output<Case, S, decltype(j)::value>(loss, args, std::make_index_sequence<outputs>{}); },
      std::make_index_sequence<outputs>{});
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
  const std::string report = std::string(Case::kName) + ": float against double";
  expect_close(vf, vd, Case::kFloatTol, report);
  expect_grads(grads_err(gf, gd), 10 * Case::kFloatTol, report);
}

// ---- 6. gradient check in double -------------------------------------------------------------

inline void expect_gradient(const losskit::GradientCheckResult& res, const std::string& report) {
  INFO(report << ": " << res.report());
  CHECK(res.passed);
}

template <class Case, class W>
void check_gradients_with(const typename Case::template Loss<double>& loss, const Args<Case, double>& args,
                          const W& w) {
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
        expect_gradient(losskit::check_gradient(f, std::get<I>(args), std::get<O>(g), opt),
                        where<Case, double>("argument " + std::to_string(I) +
                                            (kWeighted<W> ? ", with sample weights (some 0)" : "")));
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

/// Sample weights: all 1 = none; Σ s_i·ℓ_i (Sum) and that / Σ s_i·n_i (Mean),
/// with positive weights and with some 0 (lktest::weighted_reference); the
/// weighted value_and_gradient returns the weighted operator(); all 0 give 0
/// and zero gradients.
template <class Case, class S>
void check_weight_identities(typename Case::template Loss<S> loss, const Args<Case, S>& args, const Eigen::VectorXd& l,
                             const Eigen::VectorXd& shares) {
  using losskit::Reduction;
  const Eigen::Index n = Case::batch(args);
  for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
    Case::set_reduction(loss, r);
    const std::string report = where<Case, S>(r == Reduction::Mean ? "Mean" : "Sum");
    expect_close(Case::value(loss, Vec<S>(Vec<S>::Ones(n)), args), Case::value(loss, NoWeights{}, args), kSame<S>,
                 report + ": unit weights give the unweighted value");
    for (bool zeros : {false, true}) {
      const Vec<S> s = weights_of<S>(lktest::random_weights(n, zeros));
      const Eigen::VectorXd seen = s.template cast<double>();  // the weights as the loss sees them
      const lktest::WeightedReference ref = lktest::weighted_reference(l, seen, false);
      const double want = r == Reduction::Mean ? ref.value / seen.dot(shares) : ref.value;
      const std::string variant = report + (zeros ? ", some weights 0" : ", positive weights");
      const double got = Case::value(loss, s, args);
      expect_close(got, want, kSame<S>, variant + ": Σ s_i·ℓ_i (/ Σ s_i·n_i)");
      auto g = sentinel_grads(args, typename Case::Diff{});
      expect_close(Case::vg(loss, s, args, g), got, kSame<S>, variant + ": value_and_gradient returns operator()");
    }
    auto g = sentinel_grads(args, typename Case::Diff{});
    const double zero_vg = Case::vg(loss, Vec<S>(Vec<S>::Zero(n)), args, g);
    const double zero_value = Case::value(loss, Vec<S>(Vec<S>::Zero(n)), args);
    expect(zero_vg == 0 && zero_value == 0 && all_zero(g), report + ": all weights 0 give 0 and a zero gradient");
  }
}

template <class Case, class S>
void check_identities() {
  using losskit::Reduction;
  const Args<Case, S> args = cast_args<S>(Case::data());
  auto loss = Case::template make<S>();
  {
    auto g = sentinel_grads(args, typename Case::Diff{});
    expect_close(Case::vg(loss, NoWeights{}, args, g), Case::value(loss, NoWeights{}, args), kSame<S>,
                 where<Case, S>("value_and_gradient returns operator()"));
  }
  if constexpr (Case::kReduction) {
    const Eigen::VectorXd shares = Case::shares(loss, args);
    const Eigen::VectorXd l = per_sample_losses<Case, S>(loss, args);
    const double normaliser = shares.sum();
    Case::set_reduction(loss, Reduction::Sum);
    const double sum = Case::value(loss, NoWeights{}, args);
    Case::set_reduction(loss, Reduction::Mean);
    const double mean = Case::value(loss, NoWeights{}, args);
    expect_close(sum, mean * normaliser, kSame<S>, where<Case, S>("Sum = Mean · Σ n_i"));
    if constexpr (Case::kPerSample) {
      expect_close(l.sum(), sum, kSame<S>, where<Case, S>("Σ per-sample losses = Sum"));
      expect_close(l.sum() / normaliser, mean, kSame<S>, where<Case, S>("Σ per-sample losses / Σ n_i = Mean"));
    }
    if constexpr (Case::kSampleWeights) check_weight_identities<Case, S>(loss, args, l, shares);
  }
}

}  // namespace lkcontract

#define LOSSKIT_CONTRACT_TEST(what, ...)                                                                           \
  TEMPLATE_TEST_CASE("Contract (" LOSSKIT_CONTRACT_GROUP "): " what, "[contract]", LOSSKIT_CONTRACT_GROUP_CASES) { \
    __VA_ARGS__;                                                                                                   \
  }

// Expression inputs and output views in double only: the library's handling of
// them is generic in the Scalar, and each kind costs one more instantiation of
// the whole loss per Scalar (the harness's compile budget; see contract.hpp).
LOSSKIT_CONTRACT_TEST("expression inputs give the plain matrices' value and gradient",
                      lkcontract::check_expressions<TestType, double>())
LOSSKIT_CONTRACT_TEST("gradient outputs as Map, Block, Array and empty plain objects receive the same gradient",
                      lkcontract::check_outputs<TestType, double>())
LOSSKIT_CONTRACT_TEST("a repeated call with presized outputs allocates nothing",
                      (lkcontract::check_no_allocation<TestType, float>(),
                       lkcontract::check_no_allocation<TestType, double>()))
LOSSKIT_CONTRACT_TEST("every error throws losskit::Error and leaves the outputs untouched",
                      (lkcontract::check_errors<TestType, float>(), lkcontract::check_errors<TestType, double>()))
LOSSKIT_CONTRACT_TEST("float agrees with double on the same inputs", lkcontract::check_float_double<TestType>())
LOSSKIT_CONTRACT_TEST("the gradient passes check_gradient in double", lkcontract::check_gradients<TestType>())
LOSSKIT_CONTRACT_TEST("reduction, per_sample and sample-weight identities",
                      (lkcontract::check_identities<TestType, float>(),
                       lkcontract::check_identities<TestType, double>()))
