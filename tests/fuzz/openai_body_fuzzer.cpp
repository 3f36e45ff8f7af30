// Fuzz target: the OpenAI-compatible HTTP request bodies (net/request_parsing.h,
// parse_openai_body) that POST /v1/completions and /v1/chat/completions hand to the
// backend, and the error body the server renders from a refusal (net/openai_render.h).
// The transport (Boost.Beast's HTTP parser) is not ours and is left out.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include <simdjson.h>

#include "model/chat_format.h"
#include "net/openai_render.h"
#include "net/request_parsing.h"
#include "tests/fuzz/fuzz_support.h"

using namespace ultraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const RequestLimits limits;
  for (OpenAiEndpoint endpoint : {OpenAiEndpoint::completions, OpenAiEndpoint::chat_completions}) {
    auto result = parse_openai_body(body, endpoint, limits);
    if (auto* g = std::get_if<GenerateFields>(&result)) {
      FUZZ_CHECK(g->chat == (endpoint == OpenAiEndpoint::chat_completions));
      FUZZ_CHECK(g->max_tokens >= 1 && g->max_tokens <= limits.max_tokens);
      FUZZ_CHECK(g->sampling.top_p > 0.f && g->sampling.top_p <= 1.f);
      FUZZ_CHECK(g->stop.size() <= limits.max_stop_strings);
      if (g->chat) {
        FUZZ_CHECK(!g->messages.empty());
        (void)format_chatml(g->messages);
      }
    } else {
      // The 400 answer must be valid JSON whatever the client sent (the message may quote it).
      const auto& e = std::get<RequestError>(result);
      const std::string rendered = render_openai_error(400, e.code, e.message);
      simdjson::dom::parser parser;
      simdjson::dom::element root;
      FUZZ_CHECK(parser.parse(rendered).get(root) == simdjson::SUCCESS);
    }
  }
  return 0;
}
