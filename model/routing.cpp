#include "model/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "model/cpu_kernels.h"

namespace ultraserve {
namespace {

// The indices of the k largest values, largest first, ties to the lower index.
std::vector<int> top_indices(std::span<const float> values, int k) {
  std::vector<int> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int a, int b) { return values[a] > values[b] || (values[a] == values[b] && a < b); });
  order.resize(k);
  return order;
}

void softmax_topk(const ModelConfig& c, std::span<const float> logits, std::span<ExpertChoice> out) {
  std::vector<float> probs(logits.begin(), logits.end());
  softmax(probs);
  const std::vector<int> top = top_indices(probs, c.num_experts_per_tok);
  float sum = 0.f;
  for (int e : top) sum += probs[e];
  for (size_t i = 0; i < top.size(); ++i)
    out[i] = {top[i], c.norm_topk_prob ? probs[top[i]] / sum : probs[top[i]]};
}

void sigmoid_grouped(const ModelConfig& c, std::span<const float> logits, std::span<const float> bias,
                     std::span<ExpertChoice> out) {
  const int experts = c.num_experts, per_group = experts / c.n_group;
  std::vector<float> scores(experts), choice(experts);
  for (int e = 0; e < experts; ++e) {
    scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
    choice[e] = scores[e] + bias[e];
  }
  std::vector<float> group_score(c.n_group);
  for (int g = 0; g < c.n_group; ++g) {
    const std::span<const float> members(&choice[size_t(g) * per_group], per_group);
    const std::vector<int> best = top_indices(members, 2);
    group_score[g] = members[best[0]] + members[best[1]];
  }
  std::vector<bool> allowed(c.n_group, false);
  for (int g : top_indices(group_score, c.topk_group)) allowed[g] = true;
  for (int e = 0; e < experts; ++e)
    if (!allowed[e / per_group]) choice[e] = -std::numeric_limits<float>::infinity();
  const std::vector<int> top = top_indices(choice, c.num_experts_per_tok);
  float sum = 0.f;
  for (int e : top) sum += scores[e];
  const float norm = c.norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
  for (size_t i = 0; i < top.size(); ++i)
    out[i] = {top[i], scores[top[i]] * norm * static_cast<float>(c.routed_scaling_factor)};
}

}  // namespace

void choose_experts(const ModelConfig& c, std::span<const float> logits, std::span<const float> bias,
                    std::span<ExpertChoice> out) {
  if (c.router == ModelConfig::Router::sigmoid_grouped) sigmoid_grouped(c, logits, bias, out);
  else softmax_topk(c, logits, out);
}

}  // namespace ultraserve
