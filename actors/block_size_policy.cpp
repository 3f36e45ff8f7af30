#include "actors/block_size_policy.h"

#include <algorithm>

namespace ultraserve {

void AcceptanceRate::observe(int proposals, int tokens) {
  constexpr double kDecay = 0.9;  // recent rounds count most: acceptance drifts with the text
  const int accepted = std::clamp(tokens - 1, 0, proposals);
  accepted_ = kDecay * accepted_ + accepted;
  trials_ = kDecay * trials_ + accepted + (accepted < proposals ? 1 : 0);  // the rejected one, if any
}

void BlockSizePolicy::observe_step(double seconds, int tokens) {
  n_ = kDecay * n_ + 1;
  sx_ = kDecay * sx_ + tokens;
  sy_ = kDecay * sy_ + seconds;
  sxx_ = kDecay * sxx_ + double(tokens) * tokens;
  sxy_ = kDecay * sxy_ + double(tokens) * seconds;
  ++steps_;
}

double BlockSizePolicy::variance() const { return n_ > 0 ? sxx_ / n_ - (sx_ / n_) * (sx_ / n_) : 0; }

int BlockSizePolicy::choose(double acceptance, int max_block, int sequences) const {
  if (max_block < 2) return 0;
  if (!fitted()) return max_block;
  const double mean_x = sx_ / n_, mean_y = sy_ / n_;
  const double b = std::max((sxy_ / n_ - mean_x * mean_y) / variance(), 1e-9);  // seconds per token
  const double a = std::max(mean_y - b * mean_x, 0.0);                            // seconds per step
  const double shared = a / std::max(sequences, 1);
  auto rate = [&](int block, double expected) { return expected / (shared + b * block); };
  const double plain = rate(1, 1.0);
  int best = 0;
  double best_rate = plain, expected = 1.0, power = 1.0;
  for (int block = 2; block <= max_block; ++block) {
    power *= acceptance;
    expected += power;  // E(B) = 1 + alpha + ... + alpha^(B-1)
    if (rate(block, expected) > best_rate) best_rate = rate(block, expected), best = block;
  }
  return best;
}

}  // namespace ultraserve
