#pragma once
// A worker actor owns one ModelWorker (its weights, KV memory and device) on a thread of its
// own (spawned detached: a step blocks for the whole forward pass) and executes one StepPlan
// per message.

#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/model_worker.h"

namespace ultraserve {

caf::actor spawn_worker(caf::actor_system& system, std::unique_ptr<ModelWorker> worker);

}  // namespace ultraserve
