#pragma once
// How the tokenizer reports a file it cannot load: ModelError("<file>: <problem>"), with
// tokens and patterns quoted by shown().

#include <cstddef>
#include <string>
#include <string_view>

#include "model/error.h"

namespace ultraserve::tokenizer_detail {

[[noreturn]] inline void fail(const std::string& file, const std::string& problem) {
  throw ModelError(file + ": " + problem);
}

inline std::string shown(std::string_view s) {
  constexpr size_t kMax = 60;  // keep messages readable for absurdly long tokens
  std::string out = "\"";
  out.append(s.substr(0, kMax));
  if (s.size() > kMax) out.append("...");
  out.append("\"");
  return out;
}

}  // namespace ultraserve::tokenizer_detail
