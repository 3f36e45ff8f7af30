#pragma once
// One actor per WebSocket connection: parses and validates the client's messages, submits
// generations to the scheduler, and streams their events back through the connection's
// bounded send queue. Many requests share a connection, told apart by client-chosen ids.
// When the connection closes the actor quits, and the scheduler (which monitors it) cancels
// whatever it still had running.

#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>

#include "actors/session_context.h"
#include "net/service.h"

namespace ultraserve {

using frame_atom = caf::atom_constant<caf::atom("frame")>;    // + std::string: a text frame
using closed_atom = caf::atom_constant<caf::atom("closed")>;  // the connection is gone

caf::actor spawn_ws_session(caf::actor_system& system, const SessionContext& context, std::shared_ptr<WsSink> sink);

}  // namespace ultraserve
