#pragma once
// The session registry: every session actor (one per WebSocket connection, one per OpenAI HTTP
// request) announces itself here when it starts; the registry monitors it and forgets it when
// it ends. It answers the admin console's `sessions` and carries out `kick`.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include "actors/session_context.h"

namespace ultraserve {

using opened_atom = caf::atom_constant<caf::atom("opened")>;  // session -> registry: + std::string kind
using list_atom = caf::atom_constant<caf::atom("list")>;      // -> SessionList
// admin -> registry: + uint64_t session id -> std::string kind ("" when no such session);
// registry -> session (no arguments): close the connection and quit.
using kick_atom = caf::atom_constant<caf::atom("kick")>;
// admin -> registry -> every WebSocket session, once a drain has finished: close the connection
// normally after the events already queued (the last requests' final events), then quit.
// Answered with the number of sessions told.
using goodbye_atom = caf::atom_constant<caf::atom("goodbye")>;

struct SessionSummary {
  uint64_t id = 0;            // the session actor's id: what `kick` takes
  std::string kind;           // "websocket" or "http"
  double age_s = 0;
};

struct SessionList {
  std::vector<SessionSummary> sessions;  // oldest first
};

caf::actor spawn_session_registry(caf::actor_system& system);

// Called by a session actor as it starts (a no-op where the context has no registry).
template <class Self>
void announce_session(Self* self, const SessionContext& ctx, const char* kind) {
  if (ctx.sessions) self->send(ctx.sessions, opened_atom::value, std::string(kind));
}

}  // namespace ultraserve

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::SessionList)
