#pragma once
// Why `ultraserve serve` stops, from whichever comes first: SIGINT/SIGTERM, a finished
// `drain`, or the end of the `--shell` session. Each source calls request(); the main thread
// waits for the first.

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace ultraserve {

class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  // Thread-safe; the first reason wins, later ones are ignored.
  void request(const std::string& reason);
  // Blocks until a stop is requested; returns its reason.
  std::string wait();
  // Readable once a stop was requested: wakes a thread blocked reading the terminal.
  int wake_fd() const { return pipe_[0]; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<std::string> reason_;
  int pipe_[2] = {-1, -1};
};

// Turns SIGINT and SIGTERM into a stop request, on a thread of its own (sigwait). Construct it
// before any other thread starts: the signals are blocked in the constructing thread, and
// threads inherit that, so no other thread is interrupted by them.
class SignalWatcher {
 public:
  explicit SignalWatcher(StopSignal& stop);
  ~SignalWatcher();  // ends the watching thread
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  std::thread thread_;
};

}  // namespace ultraserve
