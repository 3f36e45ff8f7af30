#pragma once
// What every session actor needs to turn client requests into scheduler submissions.

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include <caf/actor.hpp>

#include "actors/step.h"
#include "model/tokenizer.h"
#include "net/request_parsing.h"

namespace ultraserve {

struct SessionLimits {
  size_t max_requests_per_connection = 256;   // concurrent, on one WebSocket connection
  std::chrono::steady_clock::duration request_timeout = std::chrono::minutes(10);  // submission to done
  int context_length = 0;                     // prompt + max_tokens must fit (model's context)
};

struct SessionContext {
  caf::actor scheduler;
  caf::actor metrics;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::vector<int32_t> stop_token_ids;
  std::string model_name;
  RequestLimits request_limits;
  SessionLimits session_limits;
  std::shared_ptr<std::atomic<RequestId>> next_request_id = std::make_shared<std::atomic<RequestId>>(1);
};

}  // namespace ultraserve
