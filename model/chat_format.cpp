#include "model/chat_format.h"

#include <string_view>

namespace ultraserve {

namespace {
constexpr std::string_view kStart = "<|im_start|>";
constexpr std::string_view kEnd = "<|im_end|>";
}  // namespace

std::string format_chatml(std::span<const ChatMessage> messages, bool add_generation_prompt) {
  size_t size = 0;
  for (const ChatMessage& m : messages) size += kStart.size() + kEnd.size() + m.role.size() + m.content.size() + 2;
  std::string out;
  out.reserve(size + 32);
  for (const ChatMessage& m : messages) {
    out.append(kStart).append(m.role).append("\n").append(m.content).append(kEnd).append("\n");
  }
  if (add_generation_prompt) out.append(kStart).append("assistant\n");
  return out;
}

}  // namespace ultraserve
