// Mixture-of-experts kernels: routing, then the routed experts as grouped GEMVs. Each block
// of an expert kernel serves one active expert and a few of its output rows for every token
// routed to it, so each expert's weights are read once per step however many tokens chose it.
// Expert weights are MXFP4 (dequantised in registers) or bf16; accumulation is fp32.

#include <cuda_fp16.h>

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/gemv_row.cuh"
#include "gpu/kernels/expert_dot.cuh"
#include "gpu/kernels/kernels.cuh"
#include "gpu/kernels/routing.cuh"

namespace ultraserve::gpu {
namespace {

// ---- routing -------------------------------------------------------------------------------------
// One block; a warp per row picks its experts (routing.cuh), lane j keeping pick j. Then warp 0
// turns the per-expert counts into offsets and the list of active experts with one warp-wide
// scan. (The first version scanned the experts on one thread: 13 us a layer.)
constexpr int kRouteThreads = 256;  // launched with a minimum of 1 block an SM: without it ptxas spills
constexpr int kSharedPairs = 1024;

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

// The routing of `rows` rows by one block of kRouteThreads (Sigmoid: pick_experts's).
template <bool Sigmoid>
__device__ void route_rows(const float* logits, int rows, int num_experts, int top_k, const RouterRule& rule,
                           const Routing& r) {
  __shared__ int count[kMaxRoutedExperts], begin[kMaxRoutedExperts], cursor[kMaxRoutedExperts];
  __shared__ int expert_of_pair[kSharedPairs];  // the first pairs' picks, read back without a memory round trip
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) count[e] = 0, cursor[e] = 0;
  __syncthreads();

  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int row = threadIdx.x / 32; row < rows; row += warps) {
    int my_e;
    float my_w;
    pick_experts<Sigmoid>(logits + static_cast<size_t>(row) * num_experts, num_experts, top_k, rule, lane, my_e, my_w);
    if (lane < top_k) {
      const int pair = row * top_k + lane;
      r.expert_of_pair[pair] = my_e;
      if (pair < kSharedPairs) expert_of_pair[pair] = my_e;
      r.weight_of_pair[pair] = my_w;
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
  using Fmt = ExpertUnit<F>;
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
  using Fmt = ExpertUnit<F>;
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
  using Fmt = ExpertUnit<F>;
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
