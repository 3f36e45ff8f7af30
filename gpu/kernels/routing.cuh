#pragma once
// How a token's router logits become its experts (RouterRule), computed by one warp: a lane holds
// its experts' values (e = lane + 32 j) in registers, so the softmax (or sigmoid and group limit)
// and the k rounds of "best not yet picked" never go back to memory. Shared by the routing
// kernels (moe.cu) and the persistent decode step (decode_step.cu).

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {

constexpr int kMaxRoutedExperts = 512;
constexpr int kExpertsPerLane = kMaxRoutedExperts / 32;
constexpr int kMaxExpertGroups = 64;

// A float's order as an unsigned's (for the warp's max reduction), and back.
__device__ __forceinline__ unsigned ordered_bits(float v) {
  const unsigned u = __float_as_uint(v);
  return u & 0x80000000u ? ~u : u | 0x80000000u;
}
__device__ __forceinline__ float from_ordered_bits(unsigned bits) {
  return __uint_as_float(bits & 0x80000000u ? bits & 0x7fffffffu : ~bits);
}

__device__ __forceinline__ bool better(float v, int e, float best_v, int best_e) {
  return v > best_v || (v == best_v && e < best_e);  // ties: the lower expert id, as torch.topk
}

// The warp's best (value, index) among the lanes' candidates.
__device__ __forceinline__ void warp_best(float& best_v, int& best_e) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
    const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
    if (better(ov, oe, best_v, best_e)) best_v = ov, best_e = oe;
  }
}

// MiMo-V2's group limit: experts outside the topk_group best groups (a group scores the sum of
// its best two choice values) leave the running.
__device__ inline void limit_to_best_groups(float (&choice)[kExpertsPerLane], int num_experts, const RouterRule& rule,
                                     int lane) {
  const int per_group = num_experts / rule.n_group;
  float group_score[kMaxExpertGroups / 32] = {};  // lane l keeps groups l + 32 i
  for (int g = 0; g < rule.n_group; ++g) {
    float first = -FLT_MAX, second = -FLT_MAX;  // this lane's best two of the group
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e >= num_experts || e / per_group != g) continue;
      if (choice[j] > first) second = first, first = choice[j];
      else if (choice[j] > second) second = choice[j];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {  // merge the lanes' pairs
      const float f = __shfl_xor_sync(0xffffffffu, first, o), s2 = __shfl_xor_sync(0xffffffffu, second, o);
      second = fmaxf(fminf(first, f), fmaxf(second, s2));
      first = fmaxf(first, f);
    }
    if (lane == g % 32) group_score[g / 32] = first + second;
  }
  unsigned long long allowed = 0;  // bit g: group g is among the best
  for (int k = 0; k < rule.topk_group; ++k) {
    float best_v = -FLT_MAX;
    int best_g = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < kMaxExpertGroups / 32; ++i) {
      const int g = lane + 32 * i;
      if (g < rule.n_group && !(allowed >> g & 1) && better(group_score[i], g, best_v, best_g))
        best_v = group_score[i], best_g = g;
    }
    warp_best(best_v, best_g);
    allowed |= 1ull << best_g;
  }
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) {
    const int e = lane + 32 * j;
    if (e < num_experts && !(allowed >> (e / per_group) & 1)) choice[j] = -INFINITY;
  }
}

// Lane j < top_k of the calling warp gets pick j of the row `logits` (read through L2 only: other
// blocks may just have written them): its expert and its routing weight (normalised when the rule
// says so, times rule.scaling). Sigmoid: the rule of RouterRule::sigmoid_grouped, as a template
// argument so that the softmax routing of Qwen3-MoE pays nothing for the other (at run time it
// cost 1.5 us a layer on the H200).
template <bool Sigmoid>
__device__ __forceinline__ void pick_experts(const float* logits, int num_experts, int top_k, const RouterRule& rule,
                                             int lane, int& expert, float& routing_weight) {
  // choice: what the top-k ranks; weight (sigmoid routing): what a pick is worth before
  // normalisation. Softmax routing computes a pick's probability when it is picked.
  float choice[kExpertsPerLane], weight[kExpertsPerLane] = {};
  float mx = -FLT_MAX;
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) {
    const int e = lane + 32 * j;
    choice[j] = e < num_experts ? __ldcg(logits + e) : -FLT_MAX;
    mx = fmaxf(mx, choice[j]);
  }
  float sum = 0;  // of the softmax
  if constexpr (Sigmoid) {
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      weight[j] = 1.0f / (1.0f + __expf(-choice[j]));
      choice[j] = e < num_experts ? weight[j] + rule.bias[e] : -FLT_MAX;
    }
    if (rule.n_group > 1) limit_to_best_groups(choice, num_experts, rule, lane);
  } else {
    mx = warp_max(mx);
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j)
      if (lane + 32 * j < num_experts) sum += __expf(choice[j] - mx);
    sum = warp_sum(sum);
  }
  // Pick k: each lane's best (the lower expert on a tie), then the warp's best value by one
  // reduction over its bits and the lowest expert holding it by another (a shuffle tree of
  // value, expert and weight took 15 dependent shuffles a pick).
  float my_p = 0, picked_sum = 0;
  int my_e = 0;
  for (int k = 0; k < top_k; ++k) {
    unsigned lane_best = 0, lane_e = 0xffffffffu;
    float lane_w = 0;
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const unsigned bits = ordered_bits(choice[j]);
      if (lane + 32 * j < num_experts && bits > lane_best) lane_best = bits, lane_e = lane + 32 * j, lane_w = weight[j];
    }
    const unsigned top = __reduce_max_sync(0xffffffffu, lane_best);
    const int best_e = static_cast<int>(__reduce_min_sync(0xffffffffu, lane_best == top ? lane_e : 0xffffffffu));
    const float best_v = from_ordered_bits(top);
    float best_w = Sigmoid ? __shfl_sync(0xffffffffu, lane_w, best_e % 32) : 0.0f;
    if constexpr (!Sigmoid) best_w = __expf(best_v - mx) / sum;
    picked_sum += best_w;
    if (lane == k) my_p = best_w, my_e = best_e;
    if (lane == best_e % 32)  // its owner takes it out of the running
#pragma unroll
      for (int j = 0; j < kExpertsPerLane; ++j)
        if (j == best_e / 32) choice[j] = -INFINITY;
  }
  const float norm = !rule.norm_topk ? 1.0f : Sigmoid ? 1.0f / (picked_sum + 1e-20f) : 1.0f / picked_sum;
  expert = my_e;
  routing_weight = my_p * norm * rule.scaling;
}

}  // namespace ultraserve::gpu
