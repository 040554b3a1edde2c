#pragma once
/// losskit::Error and the error-reporting policy shared by every loss.
///
/// Every invalid input (wrong shape, label out of range, invalid option) is
/// reported as losskit::Error, derived from std::invalid_argument, with a
/// message of the form "losskit::<Loss>: <argument>: <what is wrong>".
///
/// Builds without exceptions (-fno-exceptions) cannot throw: there the same
/// message is written to stderr and std::abort() is called. Define
/// LOSSKIT_ERROR_HANDLER(message) before including any losskit header to
/// install your own [[noreturn]] policy instead (it receives a const char*).
#include <sstream>
#include <stdexcept>
#include <string>

#if !defined(LOSSKIT_ERROR_HANDLER) && !(defined(__cpp_exceptions) || defined(__EXCEPTIONS))
#include <cstdio>
#include <cstdlib>
#endif

namespace losskit {

class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

/// Builds "losskit::<loss>: <argument>: <parts...>" and reports it.
template <class... Parts>
[[noreturn]] void fail(const char* loss, const char* argument, Parts const&... parts) {
  std::ostringstream os;
  os << "losskit::" << loss << ": " << argument << ": ";
  (os << ... << parts);
#if defined(LOSSKIT_ERROR_HANDLER)
  LOSSKIT_ERROR_HANDLER(os.str().c_str());
#elif defined(__cpp_exceptions) || defined(__EXCEPTIONS)
  throw Error(os.str());
#else
  std::fputs(os.str().c_str(), stderr);
  std::fputc('\n', stderr);
  std::abort();
#endif
}

}  // namespace detail
}  // namespace losskit
