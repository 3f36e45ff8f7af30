#pragma once
// What every session actor needs to turn client requests into scheduler submissions.

#include <atomic>
#include <memory>
#include <vector>

#include <caf/actor.hpp>

#include "actors/client_limits.h"
#include "actors/step.h"
#include "model/tokenizer.h"

namespace ultraserve {

struct SessionContext {
  caf::actor scheduler;
  caf::actor metrics;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::vector<int32_t> stop_token_ids;
  std::string model_name;
  caf::actor sessions;  // the session registry (see session_registry.h): sessions announce themselves
  std::shared_ptr<SharedClientLimits> limits;  // read per request: the admin console can change them
  std::shared_ptr<std::atomic<RequestId>> next_request_id = std::make_shared<std::atomic<RequestId>>(1);
};

}  // namespace ultraserve
