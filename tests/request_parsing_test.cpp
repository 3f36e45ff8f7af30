// Validation of client messages: every malformed input gets a clear error naming the field.

#include <gtest/gtest.h>

#include "net/openai_render.h"
#include "net/outbound_event.h"
#include "net/request_parsing.h"

namespace ultraserve {
namespace {

RequestError ws_error(const std::string& frame) {
  auto r = parse_ws_message(frame, RequestLimits{});
  EXPECT_TRUE(std::holds_alternative<RequestError>(r)) << frame;
  return std::holds_alternative<RequestError>(r) ? std::get<RequestError>(r) : RequestError{};
}

TEST(WsMessages, ParsesGenerateCancelAndPing) {
  auto r = parse_ws_message(
      R"({"type":"generate","id":"a","prompt":"hi","max_tokens":5,"temperature":0,"top_p":0.5,"top_k":3,"seed":9,"stop":["x","y"]})",
      RequestLimits{});
  ASSERT_TRUE(std::holds_alternative<ClientMessage>(r));
  const auto& m = std::get<ClientMessage>(r);
  EXPECT_EQ(m.type, ClientMessage::Type::generate);
  EXPECT_EQ(m.id, "a");
  EXPECT_EQ(m.generate.prompt, "hi");
  EXPECT_EQ(m.generate.max_tokens, 5);
  EXPECT_EQ(m.generate.sampling.temperature, 0.f);
  EXPECT_EQ(m.generate.sampling.top_p, 0.5f);
  EXPECT_EQ(m.generate.sampling.top_k, 3);
  EXPECT_EQ(m.generate.sampling.seed, 9u);
  EXPECT_EQ(m.generate.stop, (std::vector<std::string>{"x", "y"}));

  auto chat = parse_ws_message(R"({"type":"generate","id":"b","messages":[{"role":"user","content":"hey"}]})", {});
  ASSERT_TRUE(std::holds_alternative<ClientMessage>(chat));
  EXPECT_TRUE(std::get<ClientMessage>(chat).generate.chat);
  EXPECT_EQ(std::get<ClientMessage>(chat).generate.max_tokens, RequestLimits{}.default_max_tokens);

  auto cancel = parse_ws_message(R"({"type":"cancel","id":"a"})", {});
  EXPECT_EQ(std::get<ClientMessage>(cancel).type, ClientMessage::Type::cancel);
  auto ping = parse_ws_message(R"({"type":"ping"})", {});
  EXPECT_EQ(std::get<ClientMessage>(ping).type, ClientMessage::Type::ping);
}

TEST(WsMessages, RefusesBadMessagesClearly) {
  struct Case { const char* frame; const char* code; const char* needle; };
  const Case cases[] = {
      {"{not json", "invalid_json", "malformed JSON"},
      {"[1,2]", "invalid_request", "JSON object"},
      {R"({"id":"a"})", "invalid_request", "'type' is required"},
      {R"({"type":7,"id":"a"})", "invalid_request", "'type' must be a string"},
      {R"({"type":"dance","id":"a"})", "unknown_type", "unknown message type 'dance'"},
      {R"({"type":"generate","prompt":"x"})", "invalid_request", "'id' is required"},
      {R"({"type":"generate","id":"","prompt":"x"})", "invalid_request", "'id' must not be empty"},
      {R"({"type":"generate","id":"a"})", "invalid_request", "'prompt' or 'messages' is required"},
      {R"({"type":"generate","id":"a","prompt":"x","messages":[]})", "invalid_request", "exactly one"},
      {R"({"type":"generate","id":"a","prompt":5})", "invalid_request", "'prompt' must be a string"},
      {R"({"type":"generate","id":"a","prompt":"x","max_tokens":"ten"})", "invalid_request", "'max_tokens' must be an integer"},
      {R"({"type":"generate","id":"a","prompt":"x","max_tokens":0})", "invalid_request", "'max_tokens' must be in [1, 4096]"},
      {R"({"type":"generate","id":"a","prompt":"x","max_tokens":100000})", "invalid_request", "'max_tokens' must be in"},
      {R"({"type":"generate","id":"a","prompt":"x","temperature":-1})", "invalid_request", "'temperature' must be in"},
      {R"({"type":"generate","id":"a","prompt":"x","temperature":"hot"})", "invalid_request", "'temperature' must be a number"},
      {R"({"type":"generate","id":"a","prompt":"x","top_p":0})", "invalid_request", "'top_p' must be greater than 0"},
      {R"({"type":"generate","id":"a","prompt":"x","top_k":-2})", "invalid_request", "'top_k' must be in"},
      {R"({"type":"generate","id":"a","prompt":"x","seed":1.5})", "invalid_request", "'seed' must be an integer"},
      {R"({"type":"generate","id":"a","prompt":"x","stop":[1]})", "invalid_request", "'stop' must be a string or an array"},
      {R"({"type":"generate","id":"a","prompt":"x","stop":[""]})", "invalid_request", "'stop' strings must hold"},
      {R"({"type":"generate","id":"a","messages":[{"role":"wizard","content":"x"}]})", "invalid_request", "messages.role"},
      {R"({"type":"generate","id":"a","messages":[{"role":"user"}]})", "invalid_request", "'content' is required"},
      {R"({"type":"generate","id":"a","messages":[]})", "invalid_request", "must not be empty"},
  };
  for (const auto& c : cases) {
    RequestError e = ws_error(c.frame);
    EXPECT_EQ(e.code, c.code) << c.frame;
    EXPECT_NE(e.message.find(c.needle), std::string::npos) << c.frame << " -> " << e.message;
  }
  EXPECT_EQ(ws_error(R"({"type":"generate","id":"r7","prompt":1})").id, "r7");  // the client can match the error
}

TEST(WsMessages, EnforcesSizeLimits) {
  RequestLimits limits;
  limits.max_prompt_bytes = 4;
  limits.max_id_bytes = 3;
  limits.max_stop_strings = 1;
  auto long_prompt = parse_ws_message(R"({"type":"generate","id":"a","prompt":"12345"})", limits);
  EXPECT_NE(std::get<RequestError>(long_prompt).message.find("longer than 4 bytes"), std::string::npos);
  auto long_id = parse_ws_message(R"({"type":"cancel","id":"abcd"})", limits);
  EXPECT_NE(std::get<RequestError>(long_id).message.find("'id' is longer"), std::string::npos);
  auto stops = parse_ws_message(R"({"type":"generate","id":"a","prompt":"1","stop":["a","b"]})", limits);
  EXPECT_NE(std::get<RequestError>(stops).message.find("more than 1"), std::string::npos);
}

TEST(OpenAiBodies, ParsesCompletionsAndChat) {
  auto c = parse_openai_body(R"({"model":"m","prompt":"hi","max_tokens":3,"stream":true})", OpenAiEndpoint::completions, {});
  ASSERT_TRUE(std::holds_alternative<GenerateFields>(c));
  EXPECT_TRUE(std::get<GenerateFields>(c).stream);
  EXPECT_EQ(std::get<GenerateFields>(c).max_tokens, 3);
  auto chat = parse_openai_body(R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"max_completion_tokens":4})",
                                OpenAiEndpoint::chat_completions, {});
  ASSERT_TRUE(std::holds_alternative<GenerateFields>(chat));
  EXPECT_EQ(std::get<GenerateFields>(chat).messages.size(), 2u);
  EXPECT_EQ(std::get<GenerateFields>(chat).max_tokens, 4);
  auto n2 = parse_openai_body(R"({"prompt":"x","n":2})", OpenAiEndpoint::completions, {});
  EXPECT_NE(std::get<RequestError>(n2).message.find("'n' must be in [1, 1]"), std::string::npos);
  auto stream = parse_openai_body(R"({"prompt":"x","stream":"yes"})", OpenAiEndpoint::completions, {});
  EXPECT_NE(std::get<RequestError>(stream).message.find("'stream'"), std::string::npos);
}

TEST(Rendering, EscapesTextAndMatchesTheProtocol) {
  OutboundEvent d;
  d.id = "r\"1";
  d.text = "a\nb\x01";
  d.tokens = {1, 2};
  EXPECT_EQ(render_ws_event(d), R"({"type":"delta","id":"r\"1","text":"a\nb\u0001","tokens":[1,2]})");
  OutboundEvent e;
  e.kind = OutboundEvent::Kind::error;
  e.code = "invalid_json";
  e.message = "bad";
  EXPECT_EQ(render_ws_event(e), R"({"type":"error","id":null,"code":"invalid_json","message":"bad"})");
  OpenAiContext ctx{OpenAiEndpoint::chat_completions, "chatcmpl-1", "m", 5};
  EXPECT_EQ(render_openai_chunk(ctx, "hi", "", true),
            R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]})");
  EXPECT_EQ(render_openai_error(429, "overloaded", "busy"),
            R"({"error":{"message":"busy","type":"rate_limit_error","code":"overloaded"}})");
}

}  // namespace
}  // namespace ultraserve
