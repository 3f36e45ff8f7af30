#include "actors/ws_session_actor.h"

#include <map>

#include <caf/all.hpp>

#include "actors/messages.h"
#include "actors/request_builder.h"
#include "actors/session_registry.h"

namespace ultraserve {
namespace {

struct WsSessionState {
  std::shared_ptr<WsSink> sink;
  std::map<std::string, RequestId> by_client_id;
  std::map<RequestId, std::string> client_id;
  static inline const char* name = "ws_session";
};

using Self = caf::stateful_actor<WsSessionState>;

void send_error(Self* self, std::string id, std::string code, std::string message) {
  OutboundEvent e;
  e.kind = OutboundEvent::Kind::error;
  e.id = std::move(id);
  e.code = std::move(code);
  e.message = std::move(message);
  self->state.sink->send(std::move(e));
}

// Ends a request's bookkeeping and returns the client's id for it ("" if unknown).
std::string forget(Self* self, RequestId rid) {
  auto it = self->state.client_id.find(rid);
  if (it == self->state.client_id.end()) return {};
  std::string id = std::move(it->second);
  self->state.client_id.erase(it);
  self->state.by_client_id.erase(id);
  return id;
}

void on_generate(Self* self, const SessionContext& ctx, const SessionLimits& limits, const ClientMessage& m) {
  auto& st = self->state;
  if (st.by_client_id.count(m.id)) return send_error(self, m.id, "duplicate_id", "a request with this id is still running");
  if (st.by_client_id.size() >= limits.max_requests_per_connection)
    return send_error(self, m.id, "too_many_requests",
                      "this connection already has " + std::to_string(st.by_client_id.size()) +
                          " requests running (the limit)");
  auto built = build_submission(ctx, limits, m.generate, caf::actor_cast<caf::actor>(self));
  if (auto* err = std::get_if<RequestError>(&built)) return send_error(self, m.id, err->code, err->message);
  SubmitRequest& req = std::get<SubmitRequest>(built);
  st.by_client_id[m.id] = req.id;
  st.client_id[req.id] = m.id;
  self->send(ctx.scheduler, submit_atom::value, std::move(req));
}

caf::behavior ws_session(Self* self, SessionContext ctx, std::shared_ptr<WsSink> sink) {
  self->state.sink = std::move(sink);
  announce_session(self, ctx, "websocket");
  return {
      [self, ctx](frame_atom, const std::string& frame) {
        const ClientLimits limits = ctx.limits->get();
        auto parsed = parse_ws_message(frame, limits.request);
        if (auto* err = std::get_if<RequestError>(&parsed)) return send_error(self, err->id, err->code, err->message);
        const ClientMessage& m = std::get<ClientMessage>(parsed);
        switch (m.type) {
          case ClientMessage::Type::ping: {
            OutboundEvent pong;
            pong.kind = OutboundEvent::Kind::pong;
            pong.id = m.id;
            self->state.sink->send(std::move(pong));
            return;
          }
          case ClientMessage::Type::cancel: {
            auto it = self->state.by_client_id.find(m.id);
            if (it == self->state.by_client_id.end())
              return send_error(self, m.id, "unknown_id", "no running request has this id");
            self->send(ctx.scheduler, cancel_atom::value, it->second);  // answered by a done(cancelled)
            return;
          }
          case ClientMessage::Type::generate:
            return on_generate(self, ctx, limits.session, m);
        }
      },
      [self](token_atom, TokenEvent& t) {
        auto it = self->state.client_id.find(t.id);
        if (it == self->state.client_id.end()) return;
        OutboundEvent e;
        e.id = it->second;
        e.text = std::move(t.text);
        e.tokens = std::move(t.tokens);
        self->state.sink->send(std::move(e));
      },
      [self](done_atom, const DoneEvent& d) {
        OutboundEvent e;
        e.kind = OutboundEvent::Kind::done;
        e.id = forget(self, d.id);
        if (e.id.empty()) return;
        e.finish_reason = finish_reason_name(d.finish);
        e.prompt_tokens = d.prompt_tokens;
        e.completion_tokens = d.completion_tokens;
        e.time_to_first_token_s = d.time_to_first_token_s;
        e.total_s = d.total_s;
        e.acceptance = d.acceptance;
        self->state.sink->send(std::move(e));
      },
      [self](failed_atom, const FailedEvent& f) {
        std::string id = forget(self, f.id);
        if (!id.empty()) send_error(self, std::move(id), f.code, f.message);
      },
      [self](closed_atom) { self->quit(); },
      [self](kick_atom) {
        // An operator closed this connection: the client sees a policy-violation close, and the
        // scheduler (which monitors this actor) cancels whatever it still had running.
        self->state.sink->close(true);
        self->quit();
      },
      [self](goodbye_atom) {
        // The server drained: every event of this connection's requests is already queued
        // (the scheduler sent them before the drain ended), and a normal close follows them.
        self->state.sink->close();
        self->quit();
      },
  };
}

}  // namespace

caf::actor spawn_ws_session(caf::actor_system& system, const SessionContext& context, std::shared_ptr<WsSink> sink) {
  return system.spawn(ws_session, context, std::move(sink));
}

}  // namespace ultraserve
