// Rendering of server -> client WebSocket messages (docs/protocol.md).
#include "net/json_writer.h"
#include "net/outbound_event.h"

namespace ultraserve {

std::string render_ws_event(const OutboundEvent& e) {
  JsonWriter w;
  w.begin_object();
  switch (e.kind) {
    case OutboundEvent::Kind::delta:
      w.field("type", "delta").field("id", e.id).field("text", e.text).field("tokens", e.tokens);
      break;
    case OutboundEvent::Kind::done: {
      const double decode_s = e.total_s - e.time_to_first_token_s;
      w.field("type", "done").field("id", e.id).field("finish_reason", e.finish_reason);
      w.key("usage").begin_object().field("prompt_tokens", e.prompt_tokens).field("completion_tokens", e.completion_tokens);
      if (e.acceptance > 0) w.field("acceptance_length", e.acceptance);  // tau, with a draft
      w.end_object();
      w.field("time_to_first_token_ms", e.time_to_first_token_s * 1e3);
      w.field("tokens_per_second", decode_s > 0 ? (e.completion_tokens - 1) / decode_s : 0.0);
      break;
    }
    case OutboundEvent::Kind::error:
      w.field("type", "error");
      w.key("id");
      if (e.id.empty()) w.null(); else w.value(e.id);
      w.field("code", e.code).field("message", e.message);
      break;
    case OutboundEvent::Kind::pong:
      w.field("type", "pong");
      if (!e.id.empty()) w.field("id", e.id);
      break;
  }
  w.end_object();
  return w.take();
}

}  // namespace ultraserve
