// Mixture-of-experts kernels: routing, then the routed experts as grouped GEMVs. Each block
// of an expert kernel serves one active expert and a few of its output rows for every token
// routed to it, so each expert's weights are read once per step however many tokens chose it.
// Expert weights are MXFP4 (dequantised in registers) or bf16; accumulation is fp32.

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

// ---- routing -------------------------------------------------------------------------------------
constexpr int kRouteThreads = 256;

__global__ void __launch_bounds__(kRouteThreads)
    route_kernel(const float* logits, int rows, int num_experts, int top_k, bool norm_topk, Routing r) {
  extern __shared__ int shared[];
  int* count = shared;                    // [E]
  int* begin = shared + num_experts;      // [E + 1]
  int* cursor = begin + num_experts + 1;  // [E]
  wait_for_previous_kernel();
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) count[e] = 0, cursor[e] = 0;
  __syncthreads();

  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int row = threadIdx.x / 32; row < rows; row += warps) {
    const float* x = logits + static_cast<size_t>(row) * num_experts;
    float mx = -FLT_MAX;
    for (int e = lane; e < num_experts; e += 32) mx = fmaxf(mx, x[e]);
    mx = warp_max(mx);
    float sum = 0;
    for (int e = lane; e < num_experts; e += 32) sum += __expf(x[e] - mx);
    sum = warp_sum(sum);
    // k rounds of "largest below the previous pick" (ties: lower expert id first).
    float prev_v = FLT_MAX, picked_sum = 0, picked_p[16];
    int prev_e = -1, picked_e[16];
    for (int j = 0; j < top_k; ++j) {
      float best_v = -FLT_MAX;
      int best_e = 0x7fffffff;
      for (int e = lane; e < num_experts; e += 32) {
        const float v = x[e];
        const bool below_prev = v < prev_v || (v == prev_v && e > prev_e);
        if (below_prev && (v > best_v || (v == best_v && e < best_e))) best_v = v, best_e = e;
      }
      for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, best_v, o);
        const int e = __shfl_xor_sync(0xffffffffu, best_e, o);
        if (v > best_v || (v == best_v && e < best_e)) best_v = v, best_e = e;
      }
      prev_v = best_v, prev_e = best_e;
      picked_e[j] = best_e;
      picked_p[j] = __expf(best_v - mx) / sum;
      picked_sum += picked_p[j];
    }
    if (lane == 0)
      for (int j = 0; j < top_k; ++j) {
        const int pair = row * top_k + j;
        r.expert_of_pair[pair] = picked_e[j];
        r.weight_of_pair[pair] = norm_topk ? picked_p[j] / picked_sum : picked_p[j];
        atomicAdd(&count[picked_e[j]], 1);
      }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int offset = 0, active = 0;
    for (int e = 0; e < num_experts; ++e) {
      begin[e] = offset;
      offset += count[e];
      if (count[e]) r.active[1 + active++] = e;
    }
    begin[num_experts] = offset;
    r.active[0] = active;
  }
  __syncthreads();
  for (int e = threadIdx.x; e <= num_experts; e += blockDim.x) r.expert_begin[e] = begin[e];
  for (int pair = threadIdx.x; pair < rows * top_k; pair += blockDim.x) {
    const int e = r.expert_of_pair[pair];
    r.pairs_by_expert[begin[e] + atomicAdd(&cursor[e], 1)] = pair;
  }
  allow_next_kernel();
}

// ---- weight formats ------------------------------------------------------------------------------
// A "unit" is what one lane loads at a time: 16 bytes of weights (+ a scale for MXFP4).
template <ExpertFormat F>
struct Format;

template <>
struct Format<ExpertFormat::mxfp4> {
  static constexpr int kValues = 32;  // one MX block
  __host__ __device__ static size_t row_bytes(int cols) { return static_cast<size_t>(cols) / 2; }
  // E2M1 nibble -> fp32 bits: mantissa bit to bit 22, exponent bits to 23-24, sign to 31. That
  // float is the E2M1 value times 2^-126 (e = 0 gives the subnormal 0.5 * 2^-126), so the block
  // scale 2^(s - 127) is applied as 2^(s - 1).
  __device__ static void decode(const uint8_t* row, const uint8_t* scales, int unit, float out[kValues]) {
    const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(row) + unit);
    const float scale = exp2f(static_cast<float>(scales[unit]) - 1.0f);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int w = 0; w < 4; ++w)
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const uint32_t nibble = (words[w] >> (4 * n)) & 0xf;
        out[w * 8 + n] = __uint_as_float(((nibble & 7u) << 22) | ((nibble & 8u) << 28)) * scale;
      }
  }
};

template <>
struct Format<ExpertFormat::bf16> {
  static constexpr int kValues = 8;
  __host__ __device__ static size_t row_bytes(int cols) { return static_cast<size_t>(cols) * 2; }
  __device__ static void decode(const uint8_t* row, const uint8_t*, int unit, float out[kValues]) {
    bf16x8_to_float(__ldcs(reinterpret_cast<const uint4*>(row) + unit), out);
  }
};

constexpr int kExpertWarps = 8;  // output rows per block
constexpr int kTokensPerPass = 4;  // tokens sharing one read of a weight unit from registers

__device__ __forceinline__ float dot_bf16(const float* w, const bf16* x) {  // 8 values
  float xf[8];
  bf16x8_to_float(*reinterpret_cast<const uint4*>(x), xf);
  float s = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) s = fmaf(w[i], xf[i], s);
  return s;
}

__device__ __forceinline__ float dot_f32(const float* w, const float* x) {  // 8 values
  const float4 a = *reinterpret_cast<const float4*>(x), b = *reinterpret_cast<const float4*>(x + 4);
  return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

// ---- gate/up -------------------------------------------------------------------------------------
template <ExpertFormat F>
__global__ void __launch_bounds__(kExpertWarps * 32)
    gate_up_kernel(ExpertWeights w, const bf16* x, int top_k, Routing r, float* act) {
  using Fmt = Format<F>;
  constexpr int V = Fmt::kValues;
  wait_for_previous_kernel();
  const int lane = threadIdx.x % 32;
  const int i = blockIdx.y * kExpertWarps + threadIdx.x / 32;
  if (static_cast<int>(blockIdx.x) < r.active[0] && i < w.width) {
    const int e = r.active[1 + blockIdx.x];
    const size_t row_bytes = Fmt::row_bytes(w.hidden), scale_row = w.hidden / 32;
    const size_t gate_row = static_cast<size_t>(e) * 2 * w.width + i, up_row = gate_row + w.width;
    const uint8_t* gate = w.gate_up + gate_row * row_bytes;
    const uint8_t* up = w.gate_up + up_row * row_bytes;
    const uint8_t* gate_scales = w.gate_up_scales ? w.gate_up_scales + gate_row * scale_row : nullptr;
    const uint8_t* up_scales = w.gate_up_scales ? w.gate_up_scales + up_row * scale_row : nullptr;
    const int units = w.hidden / V;
    for (int t0 = r.expert_begin[e]; t0 < r.expert_begin[e + 1]; t0 += kTokensPerPass) {
      const int n = min(kTokensPerPass, r.expert_begin[e + 1] - t0);
      int pair[kTokensPerPass];
      float g_acc[kTokensPerPass] = {}, u_acc[kTokensPerPass] = {};
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) pair[t] = t < n ? r.pairs_by_expert[t0 + t] : 0;
#pragma unroll 2
      for (int u = lane; u < units; u += 32) {
        float gw[V], uw[V];
        Fmt::decode(gate, gate_scales, u, gw);
        Fmt::decode(up, up_scales, u, uw);
#pragma unroll
        for (int t = 0; t < kTokensPerPass; ++t) {
          if (t >= n) break;
          const bf16* xr = x + static_cast<size_t>(pair[t] / top_k) * w.hidden + u * V;
#pragma unroll
          for (int c = 0; c < V; c += 8) {
            g_acc[t] += dot_bf16(gw + c, xr + c);
            u_acc[t] += dot_bf16(uw + c, xr + c);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) {
        const float g = warp_sum(g_acc[t]), u = warp_sum(u_acc[t]);
        if (lane == 0 && t < n) act[static_cast<size_t>(pair[t]) * w.width + i] = g / (1.0f + __expf(-g)) * u;
      }
    }
  }
  allow_next_kernel();
}

// ---- down ----------------------------------------------------------------------------------------
template <ExpertFormat F>
__global__ void __launch_bounds__(kExpertWarps * 32)
    down_kernel(ExpertWeights w, const float* act, Routing r, float* out) {
  using Fmt = Format<F>;
  constexpr int V = Fmt::kValues;
  wait_for_previous_kernel();
  const int lane = threadIdx.x % 32;
  const int o = blockIdx.y * kExpertWarps + threadIdx.x / 32;
  if (static_cast<int>(blockIdx.x) < r.active[0] && o < w.hidden) {
    const int e = r.active[1 + blockIdx.x];
    const size_t row = static_cast<size_t>(e) * w.hidden + o;
    const uint8_t* weights = w.down + row * Fmt::row_bytes(w.width);
    const uint8_t* scales = w.down_scales ? w.down_scales + row * (w.width / 32) : nullptr;
    const int units = w.width / V;
    for (int t0 = r.expert_begin[e]; t0 < r.expert_begin[e + 1]; t0 += kTokensPerPass) {
      const int n = min(kTokensPerPass, r.expert_begin[e + 1] - t0);
      int pair[kTokensPerPass];
      float acc[kTokensPerPass] = {};
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) pair[t] = t < n ? r.pairs_by_expert[t0 + t] : 0;
      for (int u = lane; u < units; u += 32) {
        float wv[V];
        Fmt::decode(weights, scales, u, wv);
#pragma unroll
        for (int t = 0; t < kTokensPerPass; ++t) {
          if (t >= n) break;
          const float* a = act + static_cast<size_t>(pair[t]) * w.width + u * V;
#pragma unroll
          for (int c = 0; c < V; c += 8) acc[t] += dot_f32(wv + c, a + c);
        }
      }
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) {
        const float v = warp_sum(acc[t]);
        if (lane == 0 && t < n) out[static_cast<size_t>(pair[t]) * w.hidden + o] = v;
      }
    }
  }
  allow_next_kernel();
}

void check_shape(const ExpertWeights& w) {
  const int unit = w.format == ExpertFormat::mxfp4 ? 32 : 8;
  if (w.hidden % unit || w.width % unit)
    throw GpuError("experts: hidden and expert width must be multiples of " + std::to_string(unit) + " for this format");
}

}  // namespace

void route_tokens(const float* router_logits, int rows, int num_experts, int top_k, bool norm_topk, Routing r,
                  cudaStream_t s) {
  if (top_k > 16) throw GpuError("route_tokens: top_k above 16");
  const size_t shared = (3 * static_cast<size_t>(num_experts) + 1) * sizeof(int);
  launch(route_kernel, 1, kRouteThreads, shared, s, router_logits, rows, num_experts, top_k, norm_topk, r);
}

void experts_gate_up(const ExpertWeights& w, const bf16* x, int top_k, Routing r, int max_active, float* act,
                     cudaStream_t s) {
  check_shape(w);
  const dim3 grid(max_active, (w.width + kExpertWarps - 1) / kExpertWarps);
  if (w.format == ExpertFormat::mxfp4)
    launch(gate_up_kernel<ExpertFormat::mxfp4>, grid, kExpertWarps * 32, 0, s, w, x, top_k, r, act);
  else
    launch(gate_up_kernel<ExpertFormat::bf16>, grid, kExpertWarps * 32, 0, s, w, x, top_k, r, act);
}

void experts_down(const ExpertWeights& w, const float* act, Routing r, int max_active, float* out, cudaStream_t s) {
  check_shape(w);
  const dim3 grid(max_active, (w.hidden + kExpertWarps - 1) / kExpertWarps);
  if (w.format == ExpertFormat::mxfp4)
    launch(down_kernel<ExpertFormat::mxfp4>, grid, kExpertWarps * 32, 0, s, w, act, r, out);
  else
    launch(down_kernel<ExpertFormat::bf16>, grid, kExpertWarps * 32, 0, s, w, act, r, out);
}

}  // namespace ultraserve::gpu
