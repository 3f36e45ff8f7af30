#pragma once
// Stop strings in streamed text. Text is released only once it cannot be the start of a
// stop string, so a client never sees part of a stop string that later completes; the stop
// string itself is never emitted.

#include <string>
#include <string_view>
#include <vector>

namespace ultraserve {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;  // safe to emit now
    bool stopped = false;
  };
  Result push(std::string_view text);
  // At the end of generation: the text still held back (it never became a stop string).
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

}  // namespace ultraserve
