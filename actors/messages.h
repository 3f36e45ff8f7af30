#pragma once
// The messages between ultraserve's actors. All of them stay inside one process (the admin
// console, which crosses processes, has its own serializable types), so they are allowed as
// local-only message types rather than given serialization code they would never use.

#include <chrono>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include "actors/step.h"
#include "model/generation.h"

namespace ultraserve {

// session -> scheduler
using submit_atom = caf::atom_constant<caf::atom("submit")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
// scheduler -> session
using token_atom = caf::atom_constant<caf::atom("token")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using failed_atom = caf::atom_constant<caf::atom("failed")>;
// scheduler <-> worker
using step_atom = caf::atom_constant<caf::atom("step")>;
// scheduler -> itself: run the next step once the current handler returns
using tick_atom = caf::atom_constant<caf::atom("tick")>;
// anyone -> scheduler: a snapshot of its state (for /metrics, /health and the admin console)
using stats_atom = caf::atom_constant<caf::atom("stats")>;

struct SubmitRequest {
  RequestId id;                 // unique per server (sessions draw from one counter)
  GenerationRequest generation;
  std::chrono::steady_clock::time_point deadline;
  caf::actor reply_to;          // the session that gets the events
};

struct TokenEvent {
  RequestId id;
  std::string text;             // newly completed text (may be empty while a character is incomplete)
  std::vector<int32_t> tokens;
};

struct DoneEvent {
  RequestId id;
  FinishReason finish = FinishReason::none;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double time_to_first_token_s = 0;
  double total_s = 0;
};

struct FailedEvent {
  RequestId id;
  std::string code;     // "overloaded", "invalid_request", "deadline_exceeded", "internal"
  std::string message;
};

struct SchedulerStats {
  size_t queued = 0, running = 0;
  int kv_blocks_used = 0, kv_blocks_total = 0;
  uint64_t steps = 0;
};

}  // namespace ultraserve

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::SubmitRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::TokenEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::DoneEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::FailedEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::SchedulerStats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::StepPlan)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::StepResult)
