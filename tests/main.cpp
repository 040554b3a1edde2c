// Test runner, plus a counting global operator new so tests can assert that
// a call performs no heap allocation (see lktest::AllocationCounter), and,
// where the linker can wrap malloc, a count of every malloc call: Eigen's
// aligned_malloc goes to std::malloc directly, so its temporaries never reach
// operator new.
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
#if defined(LOSSKIT_TEST_WRAP_MALLOC)
long heap_allocations() { return g_heap_allocations.load(); }
#else
long heap_allocations() { return -1; }
#endif
}  // namespace lktest

#if defined(LOSSKIT_TEST_WRAP_MALLOC)
// Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (tests/CMakeLists.txt):
// calls from this binary's own code, Eigen's included, land here.
extern "C" {
void* __real_malloc(std::size_t size);
void* __real_calloc(std::size_t count, std::size_t size);
void* __real_realloc(void* p, std::size_t size);
void* __wrap_malloc(std::size_t size) {
  lktest::g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return __real_malloc(size);
}
void* __wrap_calloc(std::size_t count, std::size_t size) {
  lktest::g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return __real_calloc(count, size);
}
void* __wrap_realloc(void* p, std::size_t size) {
  lktest::g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return __real_realloc(p, size);
}
}
#endif

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
