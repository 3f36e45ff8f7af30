#pragma once
// How much longer than usual the tests may wait: ULTRASERVE_TEST_TIME_SCALE (a number, at least
// 1; default 1) multiplies every limit on *waiting* for something the test expects (an awaited
// server event, a client's TCP deadline, a child process's output), never a limit the test
// checks the server against. scripts/sanitize.sh sets it, since sanitized code runs several
// times slower; a slow machine may set it too. Header-only and dependency-free, so any test
// can include it.

#include <chrono>
#include <cstdlib>

namespace ultraserve::testing {

inline double time_scale() {
  static const double scale = [] {
    const char* env = std::getenv("ULTRASERVE_TEST_TIME_SCALE");
    const double v = env ? std::strtod(env, nullptr) : 1.0;
    return v >= 1.0 ? v : 1.0;  // unset, malformed or below 1: no scaling
  }();
  return scale;
}

// `limit` stretched by time_scale().
template <class Rep, class Period>
std::chrono::steady_clock::duration scaled(std::chrono::duration<Rep, Period> limit) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double, Period>(limit) * time_scale());
}

}  // namespace ultraserve::testing
