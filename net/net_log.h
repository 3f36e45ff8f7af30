#pragma once
// The network layer's only logging: one line to stderr per event, written in one call so that
// lines from different io threads do not interleave.

#include <cstdio>
#include <string>
#include <string_view>

namespace ultraserve {

inline void log_net(std::string_view message) {
  std::string line = "ultraserve net: ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace ultraserve
