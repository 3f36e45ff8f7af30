#pragma once
// The scheduler actor: admits requests, runs continuous batching over one worker, turns
// sampled tokens into text with each request's stop rules, and streams the results to the
// sessions. It monitors sessions: a session that dies cancels its requests.
//
//   session --submit/cancel--> scheduler --step(plan)--> worker
//   session <--token/done/failed-- scheduler <--result----
//
// One step is in flight at a time; requests that arrive meanwhile join the next one.
//
// It also supervises the worker: it spawns it (linked, so the worker ends with the scheduler),
// and when the worker dies mid-step, every request it held gets an "internal" error and a new
// worker is spawned in its place; the server goes on serving.

#include <functional>
#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/batch_planner.h"
#include "model/tokenizer.h"

namespace ultraserve {

// Spawns a worker actor (called at start and after each worker death).
using WorkerSpawner = std::function<caf::actor(caf::actor_system&)>;

struct SchedulerOptions {
  PlannerLimits limits;
  caf::actor metrics;  // may be invalid: no metrics
};

caf::actor spawn_scheduler(caf::actor_system& system, WorkerSpawner spawn_worker,
                           std::shared_ptr<const Tokenizer> tokenizer, SchedulerOptions options);

}  // namespace ultraserve
