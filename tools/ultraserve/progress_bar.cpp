#include "tools/ultraserve/progress_bar.h"

#include <unistd.h>

#include <cstdio>

namespace ultraserve {
namespace {

constexpr int kWidth = 30;

double mib(uint64_t bytes) { return double(bytes) / (1 << 20); }

}  // namespace

ProgressBar::ProgressBar(std::string label) : label_(std::move(label)), terminal_(isatty(STDERR_FILENO) == 1) {}

void ProgressBar::update(uint64_t done, uint64_t total, const std::string& detail) {
  const double fraction = total ? double(done) / double(total) : 1.0;
  if (!terminal_) {
    const int decile = static_cast<int>(fraction * 10);
    if (decile == last_decile_) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%s: %3d%% (%.1f of %.1f MiB)\n", label_.c_str(), decile * 10, mib(done), mib(total));
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const int filled = static_cast<int>(fraction * kWidth);
  const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
  // \r returns to the line's start; \x1b[K erases what a longer previous detail left behind.
  std::fprintf(stderr, "\r%s [%s] %3.0f%% %.1f/%.1f MiB  %s\x1b[K", label_.c_str(), bar.c_str(), fraction * 100,
               mib(done), mib(total), detail.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (terminal_ && last_draw_ != std::chrono::steady_clock::time_point{}) std::fputc('\n', stderr);
}

}  // namespace ultraserve
