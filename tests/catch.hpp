#pragma once
// The one Catch2 compatibility header: tests include this, never Catch2
// directly, so they build with Catch2 2.13 (Debian 12) and Catch2 v3.
#if defined(LOSSKIT_CATCH3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include <string>

namespace lktest {
// Substring matcher under its v2 and v3 names.
#if defined(LOSSKIT_CATCH3)
using Catch::Approx;
inline auto Contains(const std::string& s) { return Catch::Matchers::ContainsSubstring(s); }
#else
inline auto Contains(const std::string& s) { return Catch::Matchers::Contains(s); }
#endif
}  // namespace lktest

#if defined(LOSSKIT_CATCH3)
using Catch::Approx;
#endif
