#pragma once
// The admin actor: what `ultraserve admin` talks to. It checks the token of every command,
// then turns the command into messages to the server's own actors (scheduler, session
// registry, metrics) and their answers into an AdminReply. It keeps the server's settings as
// `set` last left them, and pushes a change to whoever reads it (the scheduler's planner, the
// sessions' shared limits).
//
//   admin client --(admin_atom, AdminCommand)--> admin --stats/requests/revoke/limits/drain--> scheduler
//                                                      --list/kick--> session registry
//                                                      --render--> metrics

#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/client_limits.h"
#include "actors/server.h"

namespace ultraserve {

struct AdminContext {
  std::string token;
  caf::actor scheduler, metrics, sessions;
  std::shared_ptr<SharedClientLimits> limits;
  ServerSettings settings;  // as resolved at start (KV blocks and context length filled in)
  ServerFacts facts;
  // Called once, from an actor thread, when a `drain` has finished: the owner exits the process.
  std::function<void()> on_drained;
};

// Handles (admin_atom, AdminCommand) -> AdminReply.
caf::actor spawn_admin(caf::actor_system& system, AdminContext context);

// The admin context of a running server (the token and on_drained left to the caller).
AdminContext admin_context_of(const Server& server);

}  // namespace ultraserve
