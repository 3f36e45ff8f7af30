#include "net/openai_render.h"

#include "net/json_writer.h"

namespace ultraserve {
namespace {

void header(JsonWriter& w, const OpenAiContext& ctx, const char* object) {
  w.field("id", ctx.response_id).field("object", object).field("created", ctx.created).field("model", ctx.model);
}

void finish(JsonWriter& w, const std::string& reason) {
  w.key("finish_reason");
  if (reason.empty()) w.null(); else w.value(reason);
}

}  // namespace

std::string render_openai_chunk(const OpenAiContext& ctx, const std::string& text, const std::string& finish_reason,
                                bool first) {
  const bool chat = ctx.endpoint == OpenAiEndpoint::chat_completions;
  JsonWriter w;
  w.begin_object();
  header(w, ctx, chat ? "chat.completion.chunk" : "text_completion");
  w.key("choices").begin_array().begin_object().field("index", 0);
  if (chat) {
    w.key("delta").begin_object();
    if (first) w.field("role", "assistant");
    if (!text.empty()) w.field("content", text);
    w.end_object();
  } else {
    w.field("text", text).key("logprobs").null();
  }
  finish(w, finish_reason);
  w.end_object().end_array().end_object();
  return w.take();
}

std::string render_openai_response(const OpenAiContext& ctx, const std::string& text,
                                   const std::string& finish_reason, const Usage& usage) {
  const bool chat = ctx.endpoint == OpenAiEndpoint::chat_completions;
  JsonWriter w;
  w.begin_object();
  header(w, ctx, chat ? "chat.completion" : "text_completion");
  w.key("choices").begin_array().begin_object().field("index", 0);
  if (chat)
    w.key("message").begin_object().field("role", "assistant").field("content", text).end_object();
  else
    w.field("text", text).key("logprobs").null();
  finish(w, finish_reason);
  w.end_object().end_array();
  w.key("usage").begin_object().field("prompt_tokens", usage.prompt_tokens).field("completion_tokens", usage.completion_tokens)
      .field("total_tokens", usage.prompt_tokens + usage.completion_tokens);
  if (usage.acceptance > 0) w.field("acceptance_length", usage.acceptance);
  w.end_object();
  w.end_object();
  return w.take();
}

std::string render_openai_error(int http_status, const std::string& code, const std::string& message) {
  const char* type = http_status == 429 ? "rate_limit_error" : http_status >= 500 ? "server_error" : "invalid_request_error";
  JsonWriter w;
  w.begin_object().key("error").begin_object().field("message", message).field("type", type).field("code", code)
      .end_object().end_object();
  return w.take();
}

}  // namespace ultraserve
