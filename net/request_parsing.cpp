#include "net/request_parsing.h"

#include <random>

#include <simdjson.h>

namespace ultraserve {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

// Thrown inside this file only; each entry point turns it into a RequestError.
struct Invalid {
  std::string code, message;
};

[[noreturn]] void invalid(const std::string& field, const std::string& problem) {
  throw Invalid{"invalid_request", "'" + field + "' " + problem};
}

std::optional<element> field(object o, std::string_view key) {
  element e;
  if (o[key].get(e) || e.is_null()) return std::nullopt;
  return e;
}

std::string string_field(object o, std::string_view key, size_t max_bytes, bool required) {
  auto e = field(o, key);
  if (!e) {
    if (required) invalid(std::string(key), "is required");
    return {};
  }
  std::string_view s;
  if (e->get(s)) invalid(std::string(key), "must be a string");
  if (s.size() > max_bytes) invalid(std::string(key), "is longer than " + std::to_string(max_bytes) + " bytes");
  return std::string(s);
}

double number_field(object o, std::string_view key, double fallback, double lo, double hi) {
  auto e = field(o, key);
  if (!e) return fallback;
  double v;
  int64_t i;
  uint64_t u;
  if (!e->get(v)) {
  } else if (!e->get(i)) {
    v = static_cast<double>(i);
  } else if (!e->get(u)) {
    v = static_cast<double>(u);
  } else {
    invalid(std::string(key), "must be a number");
  }
  if (!(v >= lo && v <= hi)) invalid(std::string(key), "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

int64_t int_field(object o, std::string_view key, int64_t fallback, int64_t lo, int64_t hi) {
  auto e = field(o, key);
  if (!e) return fallback;
  int64_t v;
  if (e->get(v)) invalid(std::string(key), "must be an integer");
  if (v < lo || v > hi) invalid(std::string(key), "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

std::vector<ChatMessage> parse_messages(object o, const RequestLimits& limits) {
  auto e = field(o, "messages");
  simdjson::dom::array items;
  if (!e || e->get(items)) invalid("messages", "must be an array of {role, content}");
  if (items.size() == 0) invalid("messages", "must not be empty");
  if (items.size() > limits.max_messages) invalid("messages", "has more than " + std::to_string(limits.max_messages) + " entries");
  std::vector<ChatMessage> out;
  size_t bytes = 0;
  for (element item : items) {
    object m;
    if (item.get(m)) invalid("messages", "entries must be objects");
    ChatMessage msg{string_field(m, "role", 64, true), string_field(m, "content", limits.max_prompt_bytes, true)};
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "tool")
      invalid("messages.role", "must be system, user, assistant or tool");
    bytes += msg.content.size();
    out.push_back(std::move(msg));
  }
  if (bytes > limits.max_prompt_bytes) invalid("messages", "are longer than " + std::to_string(limits.max_prompt_bytes) + " bytes in all");
  return out;
}

std::vector<std::string> parse_stop(object o, const RequestLimits& limits) {
  auto e = field(o, "stop");
  if (!e) return {};
  std::vector<std::string> out;
  std::string_view s;
  simdjson::dom::array items;
  if (!e->get(s)) {
    out.emplace_back(s);
  } else if (!e->get(items)) {
    for (element item : items) {
      if (item.get(s)) invalid("stop", "must be a string or an array of strings");
      out.emplace_back(s);
    }
  } else {
    invalid("stop", "must be a string or an array of strings");
  }
  if (out.size() > limits.max_stop_strings) invalid("stop", "has more than " + std::to_string(limits.max_stop_strings) + " strings");
  for (const auto& stop : out)
    if (stop.empty() || stop.size() > limits.max_stop_bytes)
      invalid("stop", "strings must hold 1 to " + std::to_string(limits.max_stop_bytes) + " bytes");
  return out;
}

// The fields every generation request shares (WebSocket and OpenAI alike).
GenerateFields parse_generate_fields(object o, const RequestLimits& limits, bool chat, std::string_view max_tokens_key) {
  GenerateFields g;
  g.chat = chat;
  if (chat) g.messages = parse_messages(o, limits);
  else g.prompt = string_field(o, "prompt", limits.max_prompt_bytes, true);
  g.max_tokens = static_cast<int>(int_field(o, max_tokens_key, limits.default_max_tokens, 1, limits.max_tokens));
  g.sampling.temperature = static_cast<float>(number_field(o, "temperature", 1.0, 0.0, 100.0));
  g.sampling.top_p = static_cast<float>(number_field(o, "top_p", 1.0, 0.0, 1.0));
  if (g.sampling.top_p == 0.f) invalid("top_p", "must be greater than 0");
  g.sampling.top_k = static_cast<int>(int_field(o, "top_k", 0, 0, 1 << 20));
  if (auto seed = field(o, "seed")) {
    uint64_t u;
    int64_t i;
    if (!seed->get(u)) g.sampling.seed = u;
    else if (!seed->get(i)) g.sampling.seed = static_cast<uint64_t>(i);  // OpenAI allows negative seeds
    else invalid("seed", "must be an integer");
  } else {
    static thread_local std::mt19937_64 seeds{std::random_device{}()};
    g.sampling.seed = seeds();
  }
  g.stop = parse_stop(o, limits);
  // At most the server's block (the planner clamps to it); 0 asks for plain decoding.
  g.block_size = static_cast<int>(int_field(o, "block_size", -1, 0, 64));
  if (g.block_size == 1) invalid("block_size", "must be 0 (no speculation) or in [2, 64]");
  return g;
}

object parse_object(simdjson::dom::parser& parser, std::string_view text, simdjson::padded_string& storage) {
  storage = simdjson::padded_string(text);
  element root;
  if (auto err = parser.parse(storage).get(root))
    throw Invalid{"invalid_json", std::string("malformed JSON: ") + simdjson::error_message(err)};
  object o;
  if (root.get(o)) throw Invalid{"invalid_request", "the message must be a JSON object"};
  return o;
}

}  // namespace

std::variant<ClientMessage, RequestError> parse_ws_message(std::string_view frame, const RequestLimits& limits) {
  std::string id;
  try {
    simdjson::dom::parser parser;
    simdjson::padded_string storage;
    object o = parse_object(parser, frame, storage);
    const std::string type = string_field(o, "type", 32, true);
    if (type == "ping") return ClientMessage{ClientMessage::Type::ping, string_field(o, "id", limits.max_id_bytes, false), {}};
    id = string_field(o, "id", limits.max_id_bytes, true);
    if (id.empty()) invalid("id", "must not be empty");
    if (type == "cancel") return ClientMessage{ClientMessage::Type::cancel, id, {}};
    if (type != "generate")
      throw Invalid{"unknown_type", "unknown message type '" + type + "' (expected generate, cancel or ping)"};
    const bool has_prompt = field(o, "prompt").has_value(), has_messages = field(o, "messages").has_value();
    if (has_prompt == has_messages) invalid("prompt", "or 'messages' is required (exactly one of them)");
    return ClientMessage{ClientMessage::Type::generate, id, parse_generate_fields(o, limits, has_messages, "max_tokens")};
  } catch (const Invalid& e) {
    return RequestError{e.code, e.message, id};
  }
}

std::variant<GenerateFields, RequestError> parse_openai_body(std::string_view body, OpenAiEndpoint endpoint,
                                                             const RequestLimits& limits) {
  try {
    simdjson::dom::parser parser;
    simdjson::padded_string storage;
    object o = parse_object(parser, body, storage);
    if (int_field(o, "n", 1, 1, 1) != 1) invalid("n", "must be 1");
    const bool chat = endpoint == OpenAiEndpoint::chat_completions;
    // Chat clients may name max_completion_tokens (the newer spelling) instead of max_tokens.
    std::string_view max_key = chat && field(o, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    GenerateFields g = parse_generate_fields(o, limits, chat, max_key);
    if (auto s = field(o, "stream")) {
      if (s->get(g.stream)) invalid("stream", "must be true or false");
    }
    return g;
  } catch (const Invalid& e) {
    return RequestError{e.code, e.message, {}};
  }
}

}  // namespace ultraserve
