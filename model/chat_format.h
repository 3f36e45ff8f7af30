#pragma once
// ChatML prompt formatting, the wire format Qwen models are trained on.
//
// This is the plain core of Qwen3's Jinja chat template, written out in C++ so that the
// server needs no template engine:
//   <|im_start|>{role}\n{content}<|im_end|>\n     for every message, in order
//   <|im_start|>assistant\n                        at the end when add_generation_prompt
// Not reproduced (callers needing them must build the text themselves): tool definitions,
// tool calls and "tool" messages; the rewriting of assistant turns that contain
// "</think>" (the template keeps only the answer of past turns); the empty
// "<think>\n\n</think>\n\n" block the template puts into assistant turns that come after
// the last user message; and the enable_thinking=false prefill after the generation prompt.
// So the output is byte-identical to the official template for the common case: no tools,
// no reasoning in past assistant turns, and the conversation ending with a user (or
// system) message.

#include <span>
#include <string>

namespace ultraserve {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

// Content is inserted verbatim: text that contains "<|im_end|>" will be encoded as that
// special token, exactly as with the Jinja template. Sanitising is the caller's call.
std::string format_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt = true);

}  // namespace ultraserve
