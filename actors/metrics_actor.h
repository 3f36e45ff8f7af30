#pragma once
// The metrics actor: fed observations by messages, renders /metrics on request.

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

namespace ultraserve {

// Handles observe_atom + {Step,Request,Connection}Observation and render_atom -> std::string.
caf::actor spawn_metrics(caf::actor_system& system);

}  // namespace ultraserve
