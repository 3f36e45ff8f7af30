#pragma once
// A worker actor owns one ModelWorker (its weights, KV memory and device) on a thread of its
// own (spawned detached: a step blocks for the whole forward pass) and executes one StepPlan
// per message. A step that throws a std::exception is answered with an error; anything worse
// ends the actor, and its supervisor (the scheduler) spawns a new one around the same
// ModelWorker, which is why the ModelWorker is shared.

#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/model_worker.h"

namespace ultraserve {

caf::actor spawn_worker(caf::actor_system& system, std::shared_ptr<ModelWorker> worker);

}  // namespace ultraserve
