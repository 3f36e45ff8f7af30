// Mixture-of-experts kernels: routing, then the routed experts as grouped GEMVs. Each block
// of an expert kernel serves one active expert and a few of its output rows for every token
// routed to it, so each expert's weights are read once per step however many tokens chose it.
// Expert weights are MXFP4 (dequantised in registers) or bf16; accumulation is fp32.

#include <cuda_fp16.h>

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/gemv_row.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

// ---- routing -------------------------------------------------------------------------------------
// One block; a warp per row. A lane holds its experts' values (e = lane + 32 j) in registers, so
// the softmax (or sigmoid and group limit) and the k rounds of "best not yet picked" never go back
// to memory, and lane j keeps pick j. Then warp 0 turns the per-expert counts into offsets and
// the list of active experts with one warp-wide scan. (The first version scanned the experts on
// one thread: 13 us a layer.)
constexpr int kRouteThreads = 256;  // launched with a minimum of 1 block an SM: without it ptxas spills
constexpr int kMaxRoutedExperts = 512;
constexpr int kExpertsPerLane = kMaxRoutedExperts / 32;
constexpr int kMaxExpertGroups = 64;
constexpr int kSharedPairs = 1024;

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

__device__ __forceinline__ int warp_exclusive_scan(int v, int lane, int& total) {
  int inclusive = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, inclusive, o);
    if (lane >= o) inclusive += n;
  }
  total = __shfl_sync(0xffffffffu, inclusive, 31);
  return inclusive - v;
}

// MiMo-V2's group limit: experts outside the topk_group best groups (a group scores the sum of
// its best two choice values) leave the running.
__device__ void limit_to_best_groups(float (&choice)[kExpertsPerLane], int num_experts, const RouterRule& rule,
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

// The routing of `rows` rows by one block of kRouteThreads. Sigmoid: the rule of
// RouterRule::sigmoid_grouped, as a template argument so that the softmax routing of Qwen3-MoE
// pays nothing for the other (at run time it cost 1.5 us a layer on the H200). The logits are
// read through L2 only: in the fused kernel below other blocks have just written them.
template <bool Sigmoid>
__device__ void route_rows(const float* logits, int rows, int num_experts, int top_k, const RouterRule& rule,
                           const Routing& r) {
  __shared__ int count[kMaxRoutedExperts], begin[kMaxRoutedExperts], cursor[kMaxRoutedExperts];
  __shared__ int expert_of_pair[kSharedPairs];  // the first pairs' picks, read back without a memory round trip
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) count[e] = 0, cursor[e] = 0;
  __syncthreads();

  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int row = threadIdx.x / 32; row < rows; row += warps) {
    const float* x = logits + static_cast<size_t>(row) * num_experts;
    // choice: what the top-k ranks; weight (sigmoid routing): what a pick is worth before
    // normalisation. Softmax routing computes a pick's probability when it is picked.
    float choice[kExpertsPerLane], weight[kExpertsPerLane] = {};
    float mx = -FLT_MAX;
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      choice[j] = e < num_experts ? __ldcg(x + e) : -FLT_MAX;
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
    if (lane < top_k) {
      const int pair = row * top_k + lane;
      const float norm = !rule.norm_topk ? 1.0f : Sigmoid ? 1.0f / (picked_sum + 1e-20f) : 1.0f / picked_sum;
      r.expert_of_pair[pair] = my_e;
      if (pair < kSharedPairs) expert_of_pair[pair] = my_e;
      r.weight_of_pair[pair] = my_p * norm * rule.scaling;
      atomicAdd(&count[my_e], 1);
    }
  }
  __syncthreads();
  if (threadIdx.x < 32) {  // offsets and active experts: lane l scans experts [l * per, (l + 1) * per)
    const int per = (num_experts + 31) / 32, first = lane * per;
    int tokens = 0, used = 0;
    for (int e = first; e < min(first + per, num_experts); ++e) tokens += count[e], used += count[e] > 0;
    int total_tokens, total_used;
    int offset = warp_exclusive_scan(tokens, lane, total_tokens);
    int slot = warp_exclusive_scan(used, lane, total_used);
    for (int e = first; e < min(first + per, num_experts); ++e) {
      begin[e] = offset;
      r.expert_begin[e] = offset;
      offset += count[e];
      if (count[e]) r.active[1 + slot++] = e;
    }
    if (lane == 0) r.expert_begin[num_experts] = total_tokens, r.active[0] = total_used;
  }
  __syncthreads();
  for (int pair = threadIdx.x; pair < rows * top_k; pair += blockDim.x) {
    const int e = pair < kSharedPairs ? expert_of_pair[pair] : r.expert_of_pair[pair];
    r.pairs_by_expert[begin[e] + atomicAdd(&cursor[e], 1)] = pair;
  }
}

template <bool Sigmoid>
__global__ void __launch_bounds__(kRouteThreads, 1)
    route_kernel(const float* logits, int rows, int num_experts, int top_k, RouterRule rule, Routing r) {
  wait_for_previous_kernel();
  allow_next_kernel();
  route_rows<Sigmoid>(logits, rows, num_experts, top_k, rule, r);
}

// ---- post-attention norm, router and routing in one kernel ---------------------------------------
// For decode-sized passes: block b's warps multiply router rows 8 b .. 8 b + 7 by the normalized
// rows, which every block computes for itself into shared memory (a few KB each, read from L2);
// the last block to finish stores the residual and the normalized rows for the kernels after, and
// routes. A layer's norm, router GEMV and routing kernels become one: two kernel boundaries fewer.
constexpr int kRouterRowsPerBlock = kRouteThreads / 32;
constexpr int kMaxNormVectors = 8;  // float4s of a row per thread: hidden up to 8192

template <int Rows, bool Sigmoid>
__global__ void __launch_bounds__(kRouteThreads, 1) norm_route_kernel(NormRoute a, Routing r) {
  extern __shared__ __align__(16) unsigned char shared_rows[];
  bf16* xn_s = reinterpret_cast<bf16*>(shared_rows);  // [Rows][hidden]
  __shared__ float warp_squares[kRouteThreads / 32];
  __shared__ bool routes;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int expert = blockIdx.x * kRouterRowsPerBlock + warp;
  const int chunks = a.hidden / 8, vectors = a.hidden / 4;
  const uint4* wrow = reinterpret_cast<const uint4*>(a.router + static_cast<size_t>(min(expert, a.num_experts - 1)) * a.hidden);
  uint4 early[kPreloadedChunks];
  preload_row(wrow, chunks, expert < a.num_experts, lane, early);
  wait_for_previous_kernel();
  allow_next_kernel();

  const float4* gamma = reinterpret_cast<const float4*>(a.norm_weight);
  for (int row = 0; row < Rows; ++row) {  // xn = rms_norm(x + delta), as add_rms_norm computes it
    const float4* x4 = reinterpret_cast<const float4*>(a.x + static_cast<size_t>(row) * a.hidden);
    const float4* d4 = reinterpret_cast<const float4*>(a.delta + static_cast<size_t>(row) * a.hidden);
    float4 v[kMaxNormVectors];
    float squares = 0;
#pragma unroll
    for (int j = 0; j < kMaxNormVectors; ++j) {
      const int c = tid + j * kRouteThreads;
      if (c >= vectors) continue;
      const float4 x = x4[c], d = d4[c];
      v[j] = make_float4(x.x + d.x, x.y + d.y, x.z + d.z, x.w + d.w);
      squares += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
    squares = warp_sum(squares);
    if (lane == 0) warp_squares[warp] = squares;
    __syncthreads();
    float total = 0;
#pragma unroll
    for (int w = 0; w < kRouteThreads / 32; ++w) total += warp_squares[w];
    const float scale = rsqrtf(total / a.hidden + a.eps);
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(xn_s + static_cast<size_t>(row) * a.hidden);
#pragma unroll
    for (int j = 0; j < kMaxNormVectors; ++j) {
      const int c = tid + j * kRouteThreads;
      if (c >= vectors) continue;
      const float4 g = gamma[c];
      o[2 * c] = __floats2bfloat162_rn(v[j].x * scale * g.x, v[j].y * scale * g.y);
      o[2 * c + 1] = __floats2bfloat162_rn(v[j].z * scale * g.z, v[j].w * scale * g.w);
    }
    __syncthreads();  // xn_s complete; warp_squares free for the next row
  }

  if (expert < a.num_experts) {
    float acc[Rows] = {};
    row_dot<Rows>(wrow, chunks, xn_s, lane, early, acc);
    store_warp_sums(acc, lane, a.logits, a.num_experts, expert);
  }
  __threadfence();  // this block's logits visible before its arrival is counted
  __syncthreads();
  if (tid == 0) {
    routes = atomicAdd(a.arrivals, 1u) == gridDim.x - 1;
    if (routes) *a.arrivals = 0;  // ready for the next layer
  }
  __syncthreads();
  if (!routes) return;
  __threadfence();
  // Every block has read x by now: the residual and the normalized rows go out once.
  for (int i = tid; i < Rows * vectors; i += kRouteThreads) {
    float4* x4 = reinterpret_cast<float4*>(a.x) + i;
    const float4 x = *x4, d = reinterpret_cast<const float4*>(a.delta)[i];
    *x4 = make_float4(x.x + d.x, x.y + d.y, x.z + d.z, x.w + d.w);
  }
  for (int i = tid; i < Rows * chunks; i += kRouteThreads)
    reinterpret_cast<uint4*>(a.xn)[i] = reinterpret_cast<const uint4*>(xn_s)[i];
  route_rows<Sigmoid>(a.logits, Rows, a.num_experts, a.top_k, a.rule, r);
}

// ---- weight formats ------------------------------------------------------------------------------
// A "unit" is what one lane loads at a time: 16 bytes of weights (+ a scale byte for MXFP4). The
// load is split from the decode so that a lane can put all its loads in flight first.
template <ExpertFormat F>
struct Format;

// x values i and i + 4 of an 8-value bf16 group, as floats (bf16 is the top half of an fp32).
__device__ __forceinline__ float bf16_at(const uint4& packed, int i) {
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
  const uint32_t w = words[i / 2];
  return __uint_as_float(i % 2 ? w & 0xffff0000u : w << 16);
}

template <>
struct Format<ExpertFormat::mxfp4> {
  static constexpr int kValues = 32;  // one MX block
  __host__ __device__ static size_t row_bytes(int cols) { return static_cast<size_t>(cols) / 2; }
  __device__ static float scale(const uint8_t* scales, int unit) {
    return exp2f(static_cast<float>(scales[unit]) - 113.0f);  // 2^(s - 127), times the 2^14 of dot()
  }
  // The unit's 32 weights dotted with 32 inputs (4 groups of 8 bf16), without the block scale.
  // Two E2M1 nibbles are widened at once, as an fp16 pair: the nibble's 3 magnitude bits go to
  // bits 9-11 (the exponent's low two bits and the mantissa's top bit) and its sign to bit 15,
  // which makes the half the E2M1 value times 2^-14 (e = 0 lands on the subnormal 0.5 * 2^-14, as
  // it should). In fp32 that is a normal number, so the products are exact, and the 2^14 is in
  // the scale: three integer ops and two conversions per pair of weights.
  __device__ static float dot(const uint4& raw, const uint4 (&x)[4]) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    float sum = 0;
#pragma unroll
    for (int w = 0; w < 4; ++w)
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // nibbles q and q + 4 of the word: bits 4q.. and 16 + 4q..
        const uint32_t t = words[w] >> (4 * q);
        const uint32_t bits = ((t << 9) & 0x0E000E00u) | ((t << 12) & 0x80008000u);
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&bits));
        sum = fmaf(f.x, bf16_at(x[w], q), sum);
        sum = fmaf(f.y, bf16_at(x[w], q + 4), sum);
      }
    return sum;
  }
};

template <>
struct Format<ExpertFormat::bf16> {
  static constexpr int kValues = 8;
  __host__ __device__ static size_t row_bytes(int cols) { return static_cast<size_t>(cols) * 2; }
  __device__ static float scale(const uint8_t*, int) { return 1.0f; }
  __device__ static float dot(const uint4& raw, const uint4 (&x)[1]) {
    float sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) sum = fmaf(bf16_at(raw, i), bf16_at(x[0], i), sum);
    return sum;
  }
};

constexpr int kExpertWarps = 8;
constexpr int kTokensPerPass = 1;  // tokens sharing one load of a weight unit: more take registers that occupancy needs more
constexpr int kUnitsInFlight = 1;  // per row and lane; 80 registers: 3 blocks an SM

// One warp: `Rows` weight rows of an expert (`units` units each) against the bf16 inputs of
// `n` <= kTokensPerPass tokens; acc[r][t] += row r . input t. The inputs of a unit are loaded
// once and kept in registers for all the rows, and a lane issues its weight loads for every row
// before it uses any. (The first version re-read the inputs for each row: the L1 was the
// bottleneck, 80% busy, and gate/up took 22-45 us a layer on the H200 with DRAM 6% busy.)
template <ExpertFormat F, int Rows>
__device__ __forceinline__ void dot_rows(const uint8_t* const (&rows)[Rows], const uint8_t* const (&scales)[Rows],
                                         int units, const bf16* const (&inputs)[kTokensPerPass], int n,
                                         float (&acc)[Rows][kTokensPerPass]) {
  using Fmt = Format<F>;
  constexpr int V = Fmt::kValues, Groups = V / 8;
  const int lane = threadIdx.x % 32;
  for (int base = lane; base < units; base += 32 * kUnitsInFlight) {
    uint4 raw[Rows][kUnitsInFlight];
    float scale[Rows][kUnitsInFlight];
#pragma unroll
    for (int r = 0; r < Rows; ++r)
#pragma unroll
      for (int j = 0; j < kUnitsInFlight; ++j) {
        const int u = base + 32 * j;
        if (u < units) {
          raw[r][j] = __ldcs(reinterpret_cast<const uint4*>(rows[r]) + u);  // streamed once
          scale[r][j] = Fmt::scale(scales[r], u);
        }
      }
#pragma unroll
    for (int j = 0; j < kUnitsInFlight; ++j) {
      const int u = base + 32 * j;
      if (u >= units) continue;
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) {
        if (t >= n) break;
        uint4 x[Groups];
#pragma unroll
        for (int g = 0; g < Groups; ++g) x[g] = reinterpret_cast<const uint4*>(inputs[t] + static_cast<size_t>(u) * V)[g];
#pragma unroll
        for (int r = 0; r < Rows; ++r) acc[r][t] = fmaf(scale[r][j], Fmt::dot(raw[r][j], x), acc[r][t]);
      }
    }
  }
}

// The expert of this block (blockIdx.x-th active one), or -1 when fewer are active.
__device__ __forceinline__ int block_expert(const Routing& r) {
  return static_cast<int>(blockIdx.x) < r.active[0] ? r.active[1 + blockIdx.x] : -1;
}

// ---- gate/up -------------------------------------------------------------------------------------
constexpr int kGateUpOutputsPerWarp = 2;  // each a gate row and an up row

template <ExpertFormat F>
__global__ void __launch_bounds__(kExpertWarps * 32)
    gate_up_kernel(ExpertWeights w, const bf16* x, int top_k, Routing r, bf16* act) {
  using Fmt = Format<F>;
  constexpr int Outs = kGateUpOutputsPerWarp, Rows = 2 * Outs;
  wait_for_previous_kernel();
  allow_next_kernel();
  const int lane = threadIdx.x % 32;
  const int first = (blockIdx.y * kExpertWarps + threadIdx.x / 32) * Outs;
  const int e = block_expert(r);
  if (e >= 0 && first < w.width) {
    const size_t row_bytes = Fmt::row_bytes(w.hidden), scale_row = w.hidden / 32;
    const uint8_t* rows[Rows];
    const uint8_t* scales[Rows];
#pragma unroll
    for (int k = 0; k < Rows; ++k) {  // gate rows first, then up rows; past the width: repeat the last
      const int i = min(first + k % Outs, w.width - 1);
      const size_t row = static_cast<size_t>(e) * 2 * w.width + i + (k < Outs ? 0 : w.width);
      rows[k] = w.gate_up + row * row_bytes;
      scales[k] = w.gate_up_scales ? w.gate_up_scales + row * scale_row : nullptr;
    }
    for (int t0 = r.expert_begin[e]; t0 < r.expert_begin[e + 1]; t0 += kTokensPerPass) {
      const int n = min(kTokensPerPass, r.expert_begin[e + 1] - t0);
      int pair[kTokensPerPass];
      const bf16* inputs[kTokensPerPass];
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) {
        pair[t] = t < n ? r.pairs_by_expert[t0 + t] : 0;
        inputs[t] = x + static_cast<size_t>(pair[t] / top_k) * w.hidden;
      }
      float acc[Rows][kTokensPerPass] = {};
      dot_rows<F, Rows>(rows, scales, w.hidden / Fmt::kValues, inputs, n, acc);
#pragma unroll
      for (int o = 0; o < Outs; ++o)
#pragma unroll
        for (int t = 0; t < kTokensPerPass; ++t) {
          const float g = warp_sum(acc[o][t]), u = warp_sum(acc[Outs + o][t]);
          if (lane == 0 && t < n && first + o < w.width)
            act[static_cast<size_t>(pair[t]) * w.width + first + o] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
        }
    }
  }
}

// ---- down ----------------------------------------------------------------------------------------
constexpr int kDownRowsPerWarp = 4;

template <ExpertFormat F>
__global__ void __launch_bounds__(kExpertWarps * 32)
    down_kernel(ExpertWeights w, const bf16* act, Routing r, float* out) {
  using Fmt = Format<F>;
  constexpr int Rows = kDownRowsPerWarp;
  wait_for_previous_kernel();
  allow_next_kernel();
  const int lane = threadIdx.x % 32;
  const int first = (blockIdx.y * kExpertWarps + threadIdx.x / 32) * Rows;
  const int e = block_expert(r);
  if (e >= 0 && first < w.hidden) {
    const size_t row_bytes = Fmt::row_bytes(w.width), scale_row = w.width / 32;
    const uint8_t* rows[Rows];
    const uint8_t* scales[Rows];
#pragma unroll
    for (int k = 0; k < Rows; ++k) {
      const size_t row = static_cast<size_t>(e) * w.hidden + min(first + k, w.hidden - 1);
      rows[k] = w.down + row * row_bytes;
      scales[k] = w.down_scales ? w.down_scales + row * scale_row : nullptr;
    }
    for (int t0 = r.expert_begin[e]; t0 < r.expert_begin[e + 1]; t0 += kTokensPerPass) {
      const int n = min(kTokensPerPass, r.expert_begin[e + 1] - t0);
      int pair[kTokensPerPass];
      const bf16* inputs[kTokensPerPass];
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) {
        pair[t] = t < n ? r.pairs_by_expert[t0 + t] : 0;
        inputs[t] = act + static_cast<size_t>(pair[t]) * w.width;
      }
      float acc[Rows][kTokensPerPass] = {};
      dot_rows<F, Rows>(rows, scales, w.width / Fmt::kValues, inputs, n, acc);
#pragma unroll
      for (int k = 0; k < Rows; ++k)
#pragma unroll
        for (int t = 0; t < kTokensPerPass; ++t) {
          const float v = warp_sum(acc[k][t]);
          if (lane == 0 && t < n && first + k < w.hidden) out[static_cast<size_t>(pair[t]) * w.hidden + first + k] = v;
        }
    }
  }
}

void check_shape(const ExpertWeights& w) {
  const int unit = w.format == ExpertFormat::mxfp4 ? 32 : 8;
  if (w.hidden % unit || w.width % unit)
    throw GpuError("experts: hidden and expert width must be multiples of " + std::to_string(unit) + " for this format");
}

void check_routing(int num_experts, int top_k, const RouterRule& rule) {
  if (top_k > 32 || top_k > num_experts) throw GpuError("route_tokens: top_k above 32 or above the expert count");
  if (num_experts > kMaxRoutedExperts) throw GpuError("route_tokens: more than " + std::to_string(kMaxRoutedExperts) + " experts");
  if (rule.sigmoid_grouped && (!rule.bias || rule.n_group < 1 || rule.n_group > kMaxExpertGroups ||
                               num_experts % rule.n_group || rule.topk_group < 1 || rule.topk_group > rule.n_group))
    throw GpuError("route_tokens: sigmoid routing needs a bias and 1..64 groups dividing the experts");
}

template <int Rows>
void launch_norm_route(const NormRoute& a, Routing r, cudaStream_t s) {
  const int blocks = (a.num_experts + kRouterRowsPerBlock - 1) / kRouterRowsPerBlock;
  const size_t shared = size_t(Rows) * a.hidden * sizeof(bf16);
  if (a.rule.sigmoid_grouped)
    launch(norm_route_kernel<Rows, true>, blocks, kRouteThreads, shared, s, a, r);
  else
    launch(norm_route_kernel<Rows, false>, blocks, kRouteThreads, shared, s, a, r);
}

}  // namespace

bool norm_route_fits(int rows, int hidden) {
  return rows >= 1 && rows <= kMaxGemvRows && hidden % 8 == 0 && hidden <= 4 * kMaxNormVectors * kRouteThreads &&
         size_t(rows) * hidden * sizeof(bf16) <= kNormRouteSharedBytes;
}

void norm_route_tokens(const NormRoute& a, int rows, Routing r, cudaStream_t s) {
  check_routing(a.num_experts, a.top_k, a.rule);
  if (!norm_route_fits(rows, a.hidden)) throw GpuError("norm_route_tokens: too many rows or too wide a hidden size");
  switch (rows) {
#define ULTRASERVE_NORM_ROUTE_CASE(R) \
  case R: return launch_norm_route<R>(a, r, s);
    ULTRASERVE_NORM_ROUTE_CASE(1) ULTRASERVE_NORM_ROUTE_CASE(2) ULTRASERVE_NORM_ROUTE_CASE(3) ULTRASERVE_NORM_ROUTE_CASE(4)
    ULTRASERVE_NORM_ROUTE_CASE(5) ULTRASERVE_NORM_ROUTE_CASE(6) ULTRASERVE_NORM_ROUTE_CASE(7) ULTRASERVE_NORM_ROUTE_CASE(8)
#undef ULTRASERVE_NORM_ROUTE_CASE
  }
}

void route_tokens(const float* router_logits, int rows, int num_experts, int top_k, const RouterRule& rule, Routing r,
                  cudaStream_t s) {
  check_routing(num_experts, top_k, rule);
  if (rule.sigmoid_grouped)
    launch(route_kernel<true>, 1, kRouteThreads, 0, s, router_logits, rows, num_experts, top_k, rule, r);
  else
    launch(route_kernel<false>, 1, kRouteThreads, 0, s, router_logits, rows, num_experts, top_k, rule, r);
}

void experts_gate_up(const ExpertWeights& w, const bf16* x, int top_k, Routing r, int max_active, bf16* act,
                     cudaStream_t s) {
  check_shape(w);
  const int per_block = kExpertWarps * kGateUpOutputsPerWarp;
  const dim3 grid(max_active, (w.width + per_block - 1) / per_block);
  if (w.format == ExpertFormat::mxfp4)
    launch(gate_up_kernel<ExpertFormat::mxfp4>, grid, kExpertWarps * 32, 0, s, w, x, top_k, r, act);
  else
    launch(gate_up_kernel<ExpertFormat::bf16>, grid, kExpertWarps * 32, 0, s, w, x, top_k, r, act);
}

void experts_down(const ExpertWeights& w, const bf16* act, Routing r, int max_active, float* out, cudaStream_t s) {
  check_shape(w);
  const int per_block = kExpertWarps * kDownRowsPerWarp;
  const dim3 grid(max_active, (w.hidden + per_block - 1) / per_block);
  if (w.format == ExpertFormat::mxfp4)
    launch(down_kernel<ExpertFormat::mxfp4>, grid, kExpertWarps * 32, 0, s, w, act, r, out);
  else
    launch(down_kernel<ExpertFormat::bf16>, grid, kExpertWarps * 32, 0, s, w, act, r, out);
}

}  // namespace ultraserve::gpu
