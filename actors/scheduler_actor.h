#pragma once
// The scheduler actor: admits requests, runs continuous batching over one worker, turns
// sampled tokens into text with each request's stop rules, and streams the results to the
// sessions. It monitors sessions: a session that dies cancels its requests.
//
//   session --submit/cancel--> scheduler --step(plan)--> worker
//   session <--token/done/failed-- scheduler <--result----
//
// One step is in flight at a time; requests that arrive meanwhile join the next one.

#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/batch_planner.h"
#include "model/tokenizer.h"

namespace ultraserve {

struct SchedulerOptions {
  PlannerLimits limits;
  caf::actor metrics;  // may be invalid: no metrics
};

caf::actor spawn_scheduler(caf::actor_system& system, caf::actor worker, std::shared_ptr<const Tokenizer> tokenizer,
                           SchedulerOptions options);

}  // namespace ultraserve
