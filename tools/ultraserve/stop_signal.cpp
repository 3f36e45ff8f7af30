#include "tools/ultraserve/stop_signal.h"

#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace ultraserve {

StopSignal::StopSignal() {
  if (pipe(pipe_) != 0) throw std::runtime_error("cannot create a pipe");
}

StopSignal::~StopSignal() {
  close(pipe_[0]);
  close(pipe_[1]);
}

void StopSignal::request(const std::string& reason) {
  std::lock_guard lock(mutex_);
  if (reason_) return;
  reason_ = reason;
  const char byte = 1;
  [[maybe_unused]] ssize_t n = write(pipe_[1], &byte, 1);  // a one-byte write to a fresh pipe cannot block
  cv_.notify_all();
}

std::string StopSignal::wait() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return reason_.has_value(); });
  return *reason_;
}

namespace {

// SIGUSR1 is ours: the destructor sends it to end the watching thread.
sigset_t watched_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}

}  // namespace

SignalWatcher::SignalWatcher(StopSignal& stop) {
  const sigset_t set = watched_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  thread_ = std::thread([&stop, set] {
    for (bool first = true;; first = false) {
      int received = 0;
      sigwait(&set, &received);
      if (received == SIGUSR1) return;  // the destructor
      const char* name = received == SIGINT ? "SIGINT" : "SIGTERM";
      if (first) {
        stop.request(name);  // a graceful stop: serve drains first
        continue;
      }
      std::fprintf(stderr, "ultraserve: a second %s: stopping at once\n", name);
      std::_Exit(128 + received);
    }
  });
}

SignalWatcher::~SignalWatcher() {
  pthread_kill(thread_.native_handle(), SIGUSR1);  // a thread that already returned is not signalled
  thread_.join();
}

}  // namespace ultraserve
