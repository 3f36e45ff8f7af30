#include "actors/worker_actor.h"

#include <caf/all.hpp>

#include "actors/messages.h"

namespace ultraserve {
namespace {

caf::behavior worker_actor(caf::event_based_actor* self, std::shared_ptr<ModelWorker> worker) {
  return {
      [self, worker](step_atom, const StepPlan& plan) -> caf::result<StepResult> {
        try {
          return worker->execute(plan);
        } catch (const std::exception& e) {
          // Answer with an error instead of dying, so the scheduler can fail the step's
          // requests clearly and go on serving.
          return caf::make_error(caf::sec::runtime_error, std::string("worker step failed: ") + e.what());
        }
      },
  };
}

}  // namespace

caf::actor spawn_worker(caf::actor_system& system, std::shared_ptr<ModelWorker> worker) {
  return system.spawn<caf::detached>(worker_actor, std::move(worker));
}

}  // namespace ultraserve
