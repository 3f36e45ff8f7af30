#include "actors/http_session_actor.h"

#include <ctime>

#include <caf/all.hpp>

#include "actors/messages.h"
#include "actors/request_builder.h"
#include "actors/session_registry.h"
#include "actors/ws_session_actor.h"
#include "net/openai_render.h"

namespace ultraserve {
namespace {

struct HttpSessionState {
  std::shared_ptr<HttpResponder> responder;
  OpenAiContext openai;
  bool stream = false;
  bool first_chunk = true;
  std::string text;  // the whole answer, when not streaming
  static inline const char* name = "http_session";
};

using Self = caf::stateful_actor<HttpSessionState>;

void fail(Self* self, const std::string& code, const std::string& message) {
  auto& st = self->state;
  const int status = http_status_for(code);
  if (st.stream) {
    st.responder->send_event(render_openai_error(status, code, message));
    st.responder->send_event("[DONE]");
    st.responder->finish();
  } else {
    st.responder->respond(status, "application/json", render_openai_error(status, code, message));
  }
  self->quit();
}

caf::behavior http_session(Self* self, SessionContext ctx, SessionLimits limits, OpenAiEndpoint endpoint,
                           GenerateFields fields, std::shared_ptr<HttpResponder> responder) {
  auto& st = self->state;
  st.responder = std::move(responder);
  st.stream = fields.stream;
  auto handle = caf::actor_cast<caf::actor>(self);
  st.responder->on_disconnect([handle] { caf::anon_send(handle, closed_atom::value); });
  auto built = build_submission(ctx, limits, fields, handle);
  if (auto* err = std::get_if<RequestError>(&built)) {
    st.stream = false;  // nothing was sent yet: a plain error response
    fail(self, err->code, err->message);
    return {};
  }
  SubmitRequest& req = std::get<SubmitRequest>(built);
  const char* prefix = endpoint == OpenAiEndpoint::chat_completions ? "chatcmpl-" : "cmpl-";
  st.openai = {endpoint, prefix + std::to_string(req.id), ctx.model_name, static_cast<int64_t>(std::time(nullptr))};
  if (st.stream) st.responder->start_events();
  announce_session(self, ctx, "http");
  self->send(ctx.scheduler, submit_atom::value, std::move(req));
  return {
      [self](token_atom, const TokenEvent& t) {
        auto& st = self->state;
        if (!st.stream) {
          st.text += t.text;
        } else if (!t.text.empty() || st.first_chunk) {
          st.responder->send_event(render_openai_chunk(st.openai, t.text, "", st.first_chunk));
          st.first_chunk = false;
        }
      },
      [self](done_atom, const DoneEvent& d) {
        auto& st = self->state;
        const std::string reason = finish_reason_name(d.finish);
        if (st.stream) {
          st.responder->send_event(render_openai_chunk(st.openai, "", reason, st.first_chunk));
          st.responder->send_event("[DONE]");
          st.responder->finish();
        } else {
          st.responder->respond(200, "application/json",
                                render_openai_response(st.openai, st.text, reason,
                                                       {d.prompt_tokens, d.completion_tokens, d.acceptance}));
        }
        self->quit();
      },
      [self](failed_atom, const FailedEvent& f) { fail(self, f.code, f.message); },
      [self](closed_atom) { self->quit(); },
      [self](kick_atom) { fail(self, "unavailable", "an operator closed this request"); },
  };
}

}  // namespace

int http_status_for(const std::string& code) {
  if (code == "overloaded" || code == "too_many_requests") return 429;
  if (code == "deadline_exceeded") return 504;
  if (code == "unavailable") return 503;
  if (code == "internal") return 500;
  return 400;
}

void spawn_http_session(caf::actor_system& system, const SessionContext& context, const SessionLimits& limits,
                        OpenAiEndpoint endpoint, GenerateFields fields, std::shared_ptr<HttpResponder> responder) {
  system.spawn(http_session, context, limits, endpoint, std::move(fields), std::move(responder));
}

}  // namespace ultraserve
