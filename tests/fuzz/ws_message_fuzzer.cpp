// Fuzz target: the WebSocket client-message parser (net/request_parsing.h, parse_ws_message),
// which sees every text frame a client sends to /v1/stream. Any input must give either a
// ClientMessage within the limits or a RequestError; never a crash, a hang or UB.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include <simdjson.h>

#include "model/chat_format.h"
#include "net/outbound_event.h"
#include "net/request_parsing.h"
#include "tests/fuzz/fuzz_support.h"

using namespace ultraserve;

namespace {

void check_fields(const GenerateFields& g, const RequestLimits& limits) {
  FUZZ_CHECK(g.max_tokens >= 1 && g.max_tokens <= limits.max_tokens);
  FUZZ_CHECK(g.sampling.temperature >= 0.f && g.sampling.temperature <= 100.f);
  FUZZ_CHECK(g.sampling.top_p > 0.f && g.sampling.top_p <= 1.f);
  FUZZ_CHECK(g.sampling.top_k >= 0);
  FUZZ_CHECK(g.stop.size() <= limits.max_stop_strings);
  for (const auto& s : g.stop) FUZZ_CHECK(!s.empty() && s.size() <= limits.max_stop_bytes);
  if (g.chat) {
    FUZZ_CHECK(!g.messages.empty() && g.messages.size() <= limits.max_messages);
    size_t bytes = 0;
    for (const auto& m : g.messages) bytes += m.content.size();
    FUZZ_CHECK(bytes <= limits.max_prompt_bytes);
    (void)format_chatml(g.messages);  // what the session does next
  } else {
    FUZZ_CHECK(g.prompt.size() <= limits.max_prompt_bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  // The defaults, and tight limits so that every bound is reachable with small inputs.
  RequestLimits tight;
  tight.max_tokens = 8;
  tight.default_max_tokens = 4;
  tight.max_prompt_bytes = 16;
  tight.max_stop_strings = 2;
  tight.max_stop_bytes = 4;
  tight.max_id_bytes = 8;
  tight.max_messages = 2;
  for (const RequestLimits& limits : {RequestLimits{}, tight}) {
    auto result = parse_ws_message(frame, limits);
    if (auto* m = std::get_if<ClientMessage>(&result)) {
      FUZZ_CHECK(m->id.size() <= limits.max_id_bytes);
      if (m->type != ClientMessage::Type::ping) FUZZ_CHECK(!m->id.empty());
      if (m->type == ClientMessage::Type::generate) check_fields(m->generate, limits);
    } else {
      const auto& e = std::get<RequestError>(result);
      FUZZ_CHECK(!e.code.empty() && !e.message.empty());
      FUZZ_CHECK(e.id.size() <= limits.max_id_bytes);
      // The error frame the session sends back must be valid JSON whatever the client sent.
      OutboundEvent ev;
      ev.kind = OutboundEvent::Kind::error;
      ev.id = e.id;
      ev.code = e.code;
      ev.message = e.message;
      const std::string rendered = render_ws_event(ev);
      simdjson::dom::parser parser;
      simdjson::dom::element root;
      FUZZ_CHECK(parser.parse(rendered).get(root) == simdjson::SUCCESS);
    }
  }
  return 0;
}
