// Test runner, plus a counting global operator new so tests can assert that
// a call performs no heap allocation (see lktest::AllocationCounter), and,
// with glibc and no sanitizer, counting malloc itself (calls and bytes):
// Eigen's aligned_malloc goes to std::malloc directly, so its temporaries
// never reach operator new.
// GCC's -Wmismatched-new-delete cannot see that these replacements pair
// malloc with free consistently.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
#include <atomic>
#include <cstdlib>
#include <new>

#if defined(LOSSKIT_CATCH3)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include "test_util.hpp"

namespace lktest {
std::atomic<long> g_allocations{0};
std::atomic<long> g_heap_allocations{0};
long allocations() { return g_allocations.load(); }
}  // namespace lktest

// Heap bytes (lktest::HeapPeak): Eigen allocates through std::malloc, not
// operator new, so bytes are counted one level down: malloc and its family
// are replaced here and forward to glibc's own entry points (__libc_*), live
// bytes being the sum of malloc_usable_size. glibc only; off under the
// sanitizers, which replace malloc themselves (heap_bytes_counted() is then
// false and byte tests are skipped).
#if defined(__GLIBC__) && !defined(LKTEST_ASAN) && !defined(LKTEST_TSAN)
#include <malloc.h>
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}
namespace {
std::atomic<long long> g_live_bytes{0}, g_peak_bytes{0};
void* counted(void* p) {
  if (p) {
    lktest::g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
    const long long size = static_cast<long long>(malloc_usable_size(p));
    const long long now = g_live_bytes.fetch_add(size) + size;
    long long peak = g_peak_bytes.load(std::memory_order_relaxed);
    while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now)) {
    }
  }
  return p;
}
void uncount(void* p) {
  if (p) g_live_bytes.fetch_sub(static_cast<long long>(malloc_usable_size(p)));
}
}  // namespace
extern "C" {
void* malloc(std::size_t n) { return counted(__libc_malloc(n)); }
void* calloc(std::size_t k, std::size_t n) { return counted(__libc_calloc(k, n)); }
void* realloc(void* p, std::size_t n) {
  uncount(p);
  return counted(__libc_realloc(p, n));
}
void free(void* p) {
  uncount(p);
  __libc_free(p);
}
void* memalign(std::size_t a, std::size_t n) { return counted(__libc_memalign(a, n)); }
void* aligned_alloc(std::size_t a, std::size_t n) { return counted(__libc_memalign(a, n)); }
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  void* p = counted(__libc_memalign(a, n));
  if (!p) return 12;  // ENOMEM
  *out = p;
  return 0;
}
}
namespace lktest {
long heap_allocations() { return g_heap_allocations.load(); }
bool heap_bytes_counted() { return true; }
long long heap_live_bytes() { return g_live_bytes.load(); }
long long heap_peak_bytes() { return g_peak_bytes.load(); }
void reset_heap_peak() { g_peak_bytes.store(g_live_bytes.load()); }
}  // namespace lktest
#else
namespace lktest {
long heap_allocations() { return -1; }
bool heap_bytes_counted() { return false; }
long long heap_live_bytes() { return 0; }
long long heap_peak_bytes() { return 0; }
void reset_heap_peak() {}
}  // namespace lktest
#endif

// Counting operator new. Not under clang's ThreadSanitizer: its runtime is
// linked whole-archive and defines every operator new and delete itself, so a
// replacement is a duplicate symbol (GCC's libtsan is a shared library and
// lets it be replaced). allocations_counted() says which.
#if defined(__clang__) && defined(LKTEST_TSAN)
bool lktest::allocations_counted() { return false; }
#else
bool lktest::allocations_counted() { return true; }
void* operator new(std::size_t size) {
  lktest::g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  lktest::g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  lktest::g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size ? size : 1);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  lktest::g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size ? size : 1);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif

// Every test case starts from the same generator state, so its data do not
// depend on which test cases ran before it (a filter, a new test elsewhere).
#if defined(LOSSKIT_CATCH3)
#include <catch2/reporters/catch_reporter_event_listener.hpp>
#include <catch2/reporters/catch_reporter_registrars.hpp>
struct ReseedEachTest : Catch::EventListenerBase {
  using Catch::EventListenerBase::EventListenerBase;
  void testCaseStarting(Catch::TestCaseInfo const&) override { lktest::rng().seed(lktest::kSeed); }
};
#else
struct ReseedEachTest : Catch::TestEventListenerBase {
  using Catch::TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(Catch::TestCaseInfo const&) override { lktest::rng().seed(lktest::kSeed); }
};
#endif
CATCH_REGISTER_LISTENER(ReseedEachTest)

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
