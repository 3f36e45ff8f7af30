#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace ultraserve {

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

void Sampler::distribution(std::span<const float> logits, std::span<float> probs) const {
  std::fill(probs.begin(), probs.end(), 0.f);
  if (params_.temperature <= 0.f) {
    probs[argmax(logits)] = 1.f;
    return;
  }
  // Candidates sorted by logit, cut by top-k, then by top-p over the tempered softmax
  // (the order of the filters is the one HF's generate applies: temperature, top-k, top-p).
  const int vocab = static_cast<int>(logits.size());
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  const int k = params_.top_k > 0 ? std::min(params_.top_k, vocab) : vocab;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
  ids.resize(k);

  const double inv_t = 1.0 / params_.temperature;
  const double top = logits[ids[0]];
  std::vector<double> weights(k);
  double total = 0.0;
  for (int i = 0; i < k; ++i) total += weights[i] = std::exp((logits[ids[i]] - top) * inv_t);
  int keep = k;
  if (params_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double mass = 0.0;
    for (int i = 0; i < k; ++i) {
      mass += weights[i] / total;
      if (mass >= params_.top_p) { keep = i + 1; break; }
    }
  }
  double kept = 0.0;
  for (int i = 0; i < keep; ++i) kept += weights[i];
  for (int i = 0; i < keep; ++i) probs[ids[i]] = static_cast<float>(weights[i] / kept);
}

double Sampler::uniform() {
  // 53 random bits -> uniform double in [0, 1): identical on every platform, unlike
  // std::uniform_real_distribution whose algorithm is implementation-defined.
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

// A token drawn from `probs` (summing to `total`, which need not be 1).
int32_t Sampler::draw(std::span<const float> probs, double total) {
  const double u = uniform() * total;
  double acc = 0.0;
  int32_t last = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.f) continue;
    acc += probs[i];
    last = static_cast<int32_t>(i);
    if (u < acc) return last;
  }
  return last;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temperature <= 0.f) return argmax(logits);
  std::vector<float> probs(logits.size());
  distribution(logits, probs);
  return draw(probs, 1.0);
}

Sampler::Verdict Sampler::verify(std::span<const float> logits, int32_t proposal) {
  if (params_.temperature <= 0.f) {
    const int32_t best = argmax(logits);
    return {best == proposal, best};
  }
  std::vector<float> probs(logits.size());
  distribution(logits, probs);
  const bool in_range = proposal >= 0 && static_cast<size_t>(proposal) < probs.size();
  const double p = in_range ? probs[proposal] : 0.0;
  if (p > 0 && uniform() < p) return {true, proposal};
  // Rejected: the residual max(p - q, 0) of a point-mass draft q is p without the proposal.
  if (in_range) probs[proposal] = 0.f;
  return {false, draw(probs, 1.0 - p)};
}

}  // namespace ultraserve
