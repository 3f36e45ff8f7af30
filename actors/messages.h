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

#include "actors/batch_planner.h"
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
// admin -> scheduler (each answered, so the console can say what happened):
using requests_atom = caf::atom_constant<caf::atom("requests")>;  // -> RequestList
using revoke_atom = caf::atom_constant<caf::atom("revoke")>;      // + RequestId -> bool: it was queued or running
using limits_atom = caf::atom_constant<caf::atom("limits")>;      // + PlannerLimits -> bool: applied
// Stop admitting (new submissions fail with "unavailable"); answered with true once the
// requests in flight have all ended and their KV blocks are released.
using drain_atom = caf::atom_constant<caf::atom("drain")>;

struct SubmitRequest {
  RequestId id;                 // unique per server (sessions draw from one counter)
  GenerationRequest generation;
  std::chrono::steady_clock::time_point deadline;
  caf::actor reply_to;          // the session that gets the events
  int block_size = -1;          // speculative block asked for: 0 none, -1 the server's
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
  double acceptance = 0;  // speculative decoding: mean tokens per verify round (tau); 0 without
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
  uint64_t generated_tokens = 0;   // since start
  double tokens_per_s = 0;         // over the last 10 s
  bool step_in_flight = false;     // the worker is busy with a step
  double last_step_s = 0;          // the worker's time for the last step
  bool draining = false;
  uint64_t worker_restarts = 0;    // times the worker died and was spawned again
  uint64_t speculative_rounds = 0, speculative_tokens = 0;  // since start: tau = tokens / rounds
};

struct RequestSummary {
  RequestId id = 0;
  uint64_t session = 0;            // the session actor's id
  bool running = false;            // admitted (holds KV blocks); false: waiting in the queue
  int prompt_tokens = 0, generated_tokens = 0;
  double age_s = 0;                // since submission
};

struct RequestList {
  std::vector<RequestSummary> requests;
};

}  // namespace ultraserve

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::SubmitRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::TokenEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::DoneEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::FailedEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::SchedulerStats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::RequestList)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::PlannerLimits)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::StepPlan)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::StepResult)
