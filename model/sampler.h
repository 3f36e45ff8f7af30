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

  // Speculative verification of a token a draft proposed (deterministically, as DFlash's
  // greedy draft does): kept with the probability this sampler gives it, else replaced by a
  // draw from that distribution with the proposal taken out. The result is distributed exactly
  // as sample()'s (lossless). Greedy: kept iff it is the argmax, else the argmax.
  struct Verdict {
    bool accepted;
    int32_t token;  // the proposal, or its replacement
  };
  Verdict verify(std::span<const float> logits, int32_t proposal);
  // The probability distribution sample() draws from (after temperature, top-k, top-p),
  // written into `probs` (same size as logits). Greedy gives a one-hot distribution.
  void distribution(std::span<const float> logits, std::span<float> probs) const;

 private:
  double uniform();  // [0, 1), the same on every platform
  int32_t draw(std::span<const float> probs, double total);

  SamplingParams params_;
  std::mt19937_64 rng_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace ultraserve
