#pragma once
// The actor layer's side of net/service.h: every WebSocket connection gets a session actor,
// every OpenAI request an HTTP session actor; /v1/models, /health and /metrics are answered
// here. Lives as long as the HTTP server that calls it.

#include <caf/actor_system.hpp>

#include "actors/session_context.h"
#include "net/service.h"

namespace ultraserve {

class ActorService : public ServiceBackend {
 public:
  ActorService(caf::actor_system& system, SessionContext context);

  std::shared_ptr<WsHandler> open_websocket(std::shared_ptr<WsSink> sink) override;
  void handle_http(HttpRequestInfo request, std::shared_ptr<HttpResponder> responder) override;
  void on_connection_count(int open_connections) override;

 private:
  caf::actor_system& system_;
  SessionContext context_;
};

}  // namespace ultraserve
