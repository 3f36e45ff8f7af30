#include "actors/actor_service.h"

#include <ctime>

#include <caf/all.hpp>

#include "actors/http_session_actor.h"
#include "actors/messages.h"
#include "actors/metrics_events.h"
#include "actors/ws_session_actor.h"
#include "net/json_writer.h"
#include "net/openai_render.h"

namespace ultraserve {
namespace {

// Forwards a connection's frames to its session actor (CAF's mailbox is the hand-off between
// the network threads and the actor).
class WsForwarder : public WsHandler {
 public:
  explicit WsForwarder(caf::actor session) : session_(std::move(session)) {}
  ~WsForwarder() override { on_closed(); }
  void on_text(std::string frame) override { caf::anon_send(session_, frame_atom::value, std::move(frame)); }
  void on_closed() override {
    if (session_) caf::anon_send(session_, closed_atom::value);
    session_ = nullptr;
  }

 private:
  caf::actor session_;
};

std::string path_of(const std::string& target) { return target.substr(0, target.find('?')); }

void respond_error(HttpResponder& r, int status, const std::string& code, const std::string& message) {
  r.respond(status, "application/json", render_openai_error(status, code, message));
}

}  // namespace

ActorService::ActorService(caf::actor_system& system, SessionContext context)
    : system_(system), context_(std::move(context)) {}

std::shared_ptr<WsHandler> ActorService::open_websocket(std::shared_ptr<WsSink> sink) {
  return std::make_shared<WsForwarder>(spawn_ws_session(system_, context_, std::move(sink)));
}

void ActorService::handle_http(HttpRequestInfo request, std::shared_ptr<HttpResponder> responder) {
  const std::string path = path_of(request.target);
  const bool completions = path == "/v1/completions", chat = path == "/v1/chat/completions";
  if (completions || chat) {
    if (request.method != "POST") return respond_error(*responder, 405, "method_not_allowed", path + " takes POST");
    const OpenAiEndpoint endpoint = chat ? OpenAiEndpoint::chat_completions : OpenAiEndpoint::completions;
    const ClientLimits limits = context_.limits->get();
    auto parsed = parse_openai_body(request.body, endpoint, limits.request);
    if (auto* err = std::get_if<RequestError>(&parsed)) return respond_error(*responder, 400, err->code, err->message);
    return spawn_http_session(system_, context_, limits.session, endpoint, std::move(std::get<GenerateFields>(parsed)),
                              responder);
  }
  if (request.method != "GET") return respond_error(*responder, 405, "method_not_allowed", path + " takes GET");
  if (path == "/v1/models") {
    JsonWriter w;
    w.begin_object().field("object", "list").key("data").begin_array().begin_object()
        .field("id", context_.model_name).field("object", "model").field("created", static_cast<int64_t>(0))
        .field("owned_by", "ultraserve").end_object().end_array().end_object();
    return responder->respond(200, "application/json", w.take());
  }
  if (path == "/health" || path == "/metrics") {
    // Both need an actor's answer; a short-lived actor asks so no network thread ever blocks.
    const bool health = path == "/health";
    caf::actor target = health ? context_.scheduler : context_.metrics;
    const std::string model = context_.model_name;
    system_.spawn([=](caf::event_based_actor* self) {
      auto reply_error = [=](const caf::error& err) {
        respond_error(*responder, 503, "unavailable", self->system().render(err));
      };
      if (health) {
        self->request(target, std::chrono::seconds(5), stats_atom::value)
            .then([=](const SchedulerStats& s) {
              JsonWriter w;
              w.begin_object().field("status", "ok").field("model", model).field("queued", static_cast<int64_t>(s.queued))
                  .field("running", static_cast<int64_t>(s.running)).field("kv_blocks_used", s.kv_blocks_used)
                  .field("kv_blocks_total", s.kv_blocks_total)
                  .field("worker_restarts", static_cast<int64_t>(s.worker_restarts)).end_object();
              responder->respond(200, "application/json", w.take());
            }, reply_error);
      } else {
        self->request(target, std::chrono::seconds(5), render_atom::value)
            .then([=](const std::string& text) { responder->respond(200, "text/plain; version=0.0.4", text); },
                  reply_error);
      }
    });
    return;
  }
  respond_error(*responder, 404, "not_found", "no route for " + path);
}

void ActorService::on_connection_count(int open_connections) {
  if (context_.metrics) caf::anon_send(context_.metrics, observe_atom::value, ConnectionObservation{open_connections});
}

}  // namespace ultraserve
