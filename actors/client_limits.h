#pragma once
// The limits applied to each client request, shared by every session and network thread and
// replaced while serving by the admin console's `set`. Readers take a copy per request, so a
// change applies to the next request and never to one half-validated.

#include <chrono>
#include <mutex>

#include "net/request_parsing.h"

namespace ultraserve {

struct SessionLimits {
  size_t max_requests_per_connection = 256;   // concurrent, on one WebSocket connection
  std::chrono::steady_clock::duration request_timeout = std::chrono::minutes(10);  // submission to done
  int context_length = 0;                     // prompt + max_tokens must fit (model's context)
};

struct ClientLimits {
  RequestLimits request;
  SessionLimits session;
};

class SharedClientLimits {
 public:
  explicit SharedClientLimits(ClientLimits limits) : limits_(std::move(limits)) {}

  ClientLimits get() const {
    std::lock_guard lock(mutex_);
    return limits_;
  }
  void set(ClientLimits limits) {
    std::lock_guard lock(mutex_);
    limits_ = std::move(limits);
  }

 private:
  mutable std::mutex mutex_;
  ClientLimits limits_;
};

}  // namespace ultraserve
