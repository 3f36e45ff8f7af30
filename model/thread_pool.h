#pragma once
// A fixed pool of worker threads for data-parallel loops in the CPU forward pass.
// parallel_for splits [0, n) into one contiguous chunk per thread; the calling thread
// takes a chunk too, so a pool of N threads keeps N cores busy with N-1 helpers.

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ultraserve {

class ThreadPool {
 public:
  // threads == 0: one per hardware thread.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return helpers_.size() + 1; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n); returns when all are done.
  // Not re-entrant: fn must not call parallel_for on the same pool.
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn);

  // parallel_for for an fn that may throw. parallel_for itself must not be left by an exception
  // (its helpers would outlive the job), so each range's is caught, and the first one is
  // rethrown here once all ranges are done.
  void parallel_for_rethrowing(size_t n, const std::function<void(size_t, size_t)>& fn);

 private:
  void helper_loop(size_t index);

  std::vector<std::thread> helpers_;
  std::mutex mutex_;
  std::condition_variable work_ready_, work_done_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0;
  size_t generation_ = 0;
  size_t pending_ = 0;
  bool stopping_ = false;
};

}  // namespace ultraserve
