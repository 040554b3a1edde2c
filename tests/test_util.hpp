#pragma once
// Shared helpers for losskit's tests: random inputs, error measures,
// an allocation counter, and "nothing written on error" checks.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "catch.hpp"

// The sanitizer builds, detected once: GCC defines __SANITIZE_ADDRESS__ and
// __SANITIZE_THREAD__; clang 14 (the asan and tsan presets) answers only
// __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define LKTEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LKTEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define LKTEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LKTEST_TSAN 1
#endif
#endif

namespace lktest {

/// Heap allocations (operator new calls) so far in this process; counted by
/// the replacement operator new in tests/main.cpp.
long allocations();
/// False where operator new is not counted (clang's ThreadSanitizer); a
/// test of allocation counts skips itself there.
bool allocations_counted();

/// malloc/calloc/realloc calls so far from this binary's code: operator new
/// (which calls malloc) and Eigen's own allocations, which bypass operator
/// new. -1 where the linker cannot wrap malloc (see tests/CMakeLists.txt).
long heap_allocations();

/// Counts allocations made between construction and count() (operator new)
/// or heap_count() (every malloc; -1 where that count is unavailable).
class AllocationCounter {
 public:
  AllocationCounter() : start_(allocations()), heap_start_(heap_allocations()) {}
  long count() const { return allocations() - start_; }
  long heap_count() const { return heap_start_ < 0 ? -1 : heap_allocations() - heap_start_; }

 private:
  long start_, heap_start_;
};

/// Heap bytes at the malloc level (tests/main.cpp replaces malloc and its
/// family on glibc): live now, and the peak since reset_heap_peak().
/// heap_bytes_counted() is false where they are not counted (sanitizers).
bool heap_bytes_counted();
long long heap_live_bytes();
long long heap_peak_bytes();
void reset_heap_peak();

/// The peak of live heap bytes above the level at construction; meant for
/// one call on one thread at a time (other threads' allocations count too).
class HeapPeak {
 public:
  HeapPeak() : start_(heap_live_bytes()) { reset_heap_peak(); }
  long long peak() const { return heap_peak_bytes() - start_; }

 private:
  long long start_;
};

/// |a - b| / max(|a|, |b|, floor).
inline double rel_err(double a, double b, double floor = 1e-300) {
  if (a == b) return 0.0;
  return std::abs(a - b) / std::max({std::abs(a), std::abs(b), floor});
}

/// Max over entries of |a - b| / max(|a|, |b|, floor).
template <class A, class B>
double max_rel_err(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b, double floor = 1e-300) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  double worst = 0;
  for (Eigen::Index j = 0; j < a.cols(); ++j)
    for (Eigen::Index i = 0; i < a.rows(); ++i)
      worst = std::max(worst, rel_err(double(a.derived().coeff(i, j)), double(b.derived().coeff(i, j)), floor));
  return worst;
}

/// A reproducible generator, reseeded with kSeed before every test case
/// (tests/main.cpp), so a test's data do not depend on the others.
constexpr unsigned long long kSeed = 20261128;
inline std::mt19937_64& rng() {
  static std::mt19937_64 g(kSeed);
  return g;
}

template <class Scalar = double>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> normal(Eigen::Index rows, Eigen::Index cols,
                                                             double stddev = 1.0, double mean = 0.0) {
  std::normal_distribution<double> d(mean, stddev);
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(d(rng()));
  return m;
}

template <class Scalar = double>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> uniform(Eigen::Index rows, Eigen::Index cols, double lo = 0.0,
                                                              double hi = 1.0) {
  std::uniform_real_distribution<double> d(lo, hi);
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(d(rng()));
  return m;
}

inline Eigen::VectorXi labels(Eigen::Index n, int classes) {
  std::uniform_int_distribution<int> d(0, classes - 1);
  Eigen::VectorXi y(n);
  for (Eigen::Index i = 0; i < n; ++i) y(i) = d(rng());
  return y;
}

/// A sentinel-filled output: after a call that must throw, the test checks
/// that every entry still holds the sentinel.
template <class Scalar = double>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> sentinel(Eigen::Index rows, Eigen::Index cols) {
  return Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>::Constant(rows, cols, Scalar(-12345.5));
}

template <class M>
bool untouched(const M& m, Eigen::Index rows, Eigen::Index cols) {
  using Scalar = typename M::Scalar;
  return m.rows() == rows && m.cols() == cols && (m.array() == Scalar(-12345.5)).all();
}

}  // namespace lktest
