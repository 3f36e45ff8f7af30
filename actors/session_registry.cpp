#include "actors/session_registry.h"

#include <map>

#include <caf/all.hpp>

namespace ultraserve {
namespace {

using clock = std::chrono::steady_clock;

struct Entry {
  caf::actor session;
  std::string kind;
  clock::time_point opened;
};

struct RegistryState {
  std::map<uint64_t, Entry> sessions;  // by actor id, which grows: map order is age order
  static inline const char* name = "session_registry";
};

using Self = caf::stateful_actor<RegistryState>;

caf::behavior session_registry(Self* self) {
  self->set_down_handler([self](const caf::down_msg& down) { self->state.sessions.erase(down.source.id()); });
  return {
      [self](opened_atom, std::string& kind) {
        auto session = caf::actor_cast<caf::actor>(self->current_sender());
        if (!session) return;
        self->monitor(session);
        self->state.sessions[session.id()] = Entry{session, std::move(kind), clock::now()};
      },
      [self](list_atom) {
        SessionList list;
        const auto now = clock::now();
        for (const auto& [id, e] : self->state.sessions)
          list.sessions.push_back({id, e.kind, std::chrono::duration<double>(now - e.opened).count()});
        return list;
      },
      [self](kick_atom, uint64_t id) -> std::string {
        auto it = self->state.sessions.find(id);
        if (it == self->state.sessions.end()) return {};
        std::string kind = it->second.kind;
        self->send(it->second.session, kick_atom::value);
        self->state.sessions.erase(it);  // its down message finds nothing left to erase
        return kind;
      },
      [self](goodbye_atom) {
        // HTTP sessions are not told: one that is still alive has a response in progress.
        size_t told = 0;
        for (const auto& [id, e] : self->state.sessions)
          if (e.kind == "websocket") self->send(e.session, goodbye_atom::value), ++told;
        return told;
      },
  };
}

}  // namespace

caf::actor spawn_session_registry(caf::actor_system& system) { return system.spawn(session_registry); }

}  // namespace ultraserve
