#pragma once
// Parsing and validating what clients send: WebSocket protocol messages and OpenAI-compatible
// request bodies (docs/protocol.md). Both share one definition of the generation fields
// (prompt or messages, max_tokens, temperature, top_p, top_k, seed, stop), so a limit or a
// check exists once. Every failure becomes a RequestError naming the field and the problem.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "model/chat_format.h"
#include "model/sampler.h"

namespace ultraserve {

// Per-request limits (server configuration, docs/configuration.md).
struct RequestLimits {
  int max_tokens = 4096;          // largest max_tokens a client may ask for
  int default_max_tokens = 256;   // when the client names none
  size_t max_prompt_bytes = 256 << 10;
  size_t max_stop_strings = 8;
  size_t max_stop_bytes = 256;    // each
  size_t max_id_bytes = 128;
  size_t max_messages = 256;
};

struct GenerateFields {
  std::string prompt;                 // plain prompt, or
  std::vector<ChatMessage> messages;  // chat messages (formatted as ChatML)
  bool chat = false;
  int max_tokens = 0;
  SamplingParams sampling;
  std::vector<std::string> stop;
  int block_size = -1;                // speculative block for this request: 0 none, -1 the server's
  bool stream = false;                // OpenAI bodies only
};

struct RequestError {
  std::string code;     // "invalid_request", "invalid_json", "unknown_type", ...
  std::string message;
  std::string id;       // the request id, when it could be read
};

struct ClientMessage {
  enum class Type { generate, cancel, ping };
  Type type;
  std::string id;
  GenerateFields generate;  // for Type::generate
};

std::variant<ClientMessage, RequestError> parse_ws_message(std::string_view frame, const RequestLimits& limits);

enum class OpenAiEndpoint { completions, chat_completions };
std::variant<GenerateFields, RequestError> parse_openai_body(std::string_view body, OpenAiEndpoint endpoint,
                                                             const RequestLimits& limits);

}  // namespace ultraserve
