#pragma once
// Progress of a long command on stderr. On a terminal, one bar redrawn in place (at most ten
// times a second); elsewhere (logs, pipes, CI) a plain line at every 10%, since carriage
// returns would pile up there as one unreadable line.

#include <chrono>
#include <cstdint>
#include <string>

namespace ultraserve {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  // `detail` names the current item (shown on terminals only).
  void update(uint64_t done_bytes, uint64_t total_bytes, const std::string& detail);
  void finish();  // ends the bar's line on a terminal

 private:
  std::string label_;
  bool terminal_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace ultraserve
