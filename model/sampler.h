#pragma once
// Picks the next token from logits: greedy, or temperature / top-k / top-p sampling with a
// per-request seeded generator (the same seed and logits give the same token everywhere).

#include <cstdint>
#include <random>
#include <span>

namespace ultraserve {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int top_k = 0;             // 0: no limit
  float top_p = 1.0f;        // 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits);
  // The probability distribution sample() draws from (after temperature, top-k, top-p),
  // written into `probs` (same size as logits). Greedy gives a one-hot distribution.
  void distribution(std::span<const float> logits, std::span<float> probs) const;

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace ultraserve
