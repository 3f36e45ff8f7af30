#pragma once
// Events per second over a sliding window: the scheduler counts generated tokens with it, and
// `status` reports the rate. Plain data with one writer (the scheduler actor).

#include <chrono>
#include <cstdint>
#include <deque>
#include <utility>

namespace ultraserve {

class RateMeter {
 public:
  using clock = std::chrono::steady_clock;

  explicit RateMeter(clock::time_point start, clock::duration window = std::chrono::seconds(10))
      : start_(start), window_(window) {}

  void add(clock::time_point now, uint64_t count) {
    events_.emplace_back(now, count);
    sum_ += count;
    expire(now);
  }

  // Events in the last window, per second. Until a whole window has passed since `start`,
  // the rate is over the time so far, so a fresh server does not report a tenth of its speed.
  double per_second(clock::time_point now) {
    expire(now);
    const double span = std::chrono::duration<double>(std::min(window_, now - start_)).count();
    return span > 0 ? static_cast<double>(sum_) / span : 0.0;
  }

 private:
  void expire(clock::time_point now) {
    while (!events_.empty() && now - events_.front().first > window_) {
      sum_ -= events_.front().second;
      events_.pop_front();
    }
  }

  clock::time_point start_;
  clock::duration window_;
  std::deque<std::pair<clock::time_point, uint64_t>> events_;
  uint64_t sum_ = 0;
};

}  // namespace ultraserve
