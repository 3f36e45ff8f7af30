#pragma once
// OpenAI-compatible response bodies and stream chunks for /v1/completions and
// /v1/chat/completions (docs/protocol.md lists what is supported).

#include <string>

#include "net/request_parsing.h"

namespace ultraserve {

struct OpenAiContext {
  OpenAiEndpoint endpoint;
  std::string response_id;  // "cmpl-..." / "chatcmpl-..."
  std::string model;
  int64_t created = 0;      // unix seconds
};

struct Usage {
  int prompt_tokens = 0, completion_tokens = 0;
  double acceptance = 0;  // tau of speculative decoding; 0 (left out) without a draft
};

// One streamed chunk: a text delta (finish_reason empty), or the last chunk (finish_reason set).
// For chat, the first chunk carries {"role":"assistant"}: pass first = true.
std::string render_openai_chunk(const OpenAiContext& ctx, const std::string& text, const std::string& finish_reason,
                                bool first);
// The whole (non-streamed) response.
std::string render_openai_response(const OpenAiContext& ctx, const std::string& text,
                                   const std::string& finish_reason, const Usage& usage);
// {"error": {...}} with an OpenAI-style type for the HTTP status.
std::string render_openai_error(int http_status, const std::string& code, const std::string& message);

}  // namespace ultraserve
