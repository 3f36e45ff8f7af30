#pragma once
// Which experts a token goes to, and with what weights, from its router logits. Two rules:
//   softmax_topk (Qwen3-MoE): softmax over all experts, the top-k, optionally renormalised;
//   sigmoid_grouped (MiMo-V2, DeepSeek-V3 without shared experts): sigmoid scores; the choice
//     uses scores + e_score_correction_bias, limited to the topk_group best of n_group groups
//     (a group scores the sum of its best two); the weights are the plain scores of the chosen,
//     optionally renormalised, times routed_scaling_factor.
// Ties go to the lower expert (or group) index.

#include <span>

#include "model/model_config.h"

namespace ultraserve {

struct ExpertChoice {
  int expert;
  float weight;
};

// `out` has num_experts_per_tok entries; `bias` is empty for softmax_topk.
void choose_experts(const ModelConfig& c, std::span<const float> logits, std::span<const float> bias,
                    std::span<ExpertChoice> out);

}  // namespace ultraserve
