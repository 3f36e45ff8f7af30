// Mixture-of-experts kernels: routing, then the routed experts as grouped products on tensor
// cores. Each block of an expert kernel serves one active expert and one tile of its rows for
// every token routed to it, so each expert's weights are read once per step (per 8 tokens)
// however many tokens chose it. Expert weights are MXFP4 (widened in registers) or bf16;
// accumulation is fp32.

#include <cuda_fp16.h>

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/gemv_row.cuh"
#include "gpu/kernels/expert_mma.cuh"
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

// ---- experts: tiles of weight rows times up to 8 tokens on tensor cores (expert_mma.cuh) ----------
// A block multiplies one tile of one active expert (blockIdx.x-th) by every token routed to it,
// 8 at a time: the tokens' inputs are staged in shared memory (fp16 for MXFP4), the block's
// warps split the tile's chunks and add their sums in shared memory. A tile's weights are
// read once per 8 tokens, and a one-token pass costs what an 8-token one does. Four warps a
// tile (kTileWarps) with eight MXFP4 chunks each in flight keep a one-token step's tiles (768 of gate/up,
// 1,024 of down for the 30B-A3B shape) in one wave on 132 multiprocessors; with eight warps of
// four chunks they took 1.5 waves.
constexpr int kGateUpChunksInFlight = 8, kGateUpBlocksPerSm = 6;  // a 2048-wide row's 32 chunks at once
constexpr int kDownChunksInFlight = 4, kDownBlocksPerSm = 8;      // a 768-wide row's 12
constexpr size_t kStagedInputBytes = 40 * 1024;  // the tokens' inputs, under the 48 KB a block gets unasked

// Inputs staged per row: the chunks' columns, plus 32 so that tokens g and g + 1, which one
// quarter-warp reads together, fall in different banks.
__host__ __device__ constexpr int staged_stride(int cols) { return tile_chunks(cols) * kTileColumns + 32; }
__host__ __device__ constexpr int staged_tokens(int cols) {
  const int fit = int(kStagedInputBytes / (size_t(staged_stride(cols)) * 2));
  return fit < kTileTokens ? fit : kTileTokens;
}

// The tile's products with every token routed to its expert: warp 0 calls out(pair, first,
// second) for each of its lanes' tokens (2 q and 2 q + 1), first from row g, second from row
// g + 8. input(pair) is the pair's row of inputs (bf16, t.cols of them). A warp holds up to
// `Wanted` chunks in flight (fewer where the format's registers run out).
template <ExpertFormat F, int Wanted, typename Input, typename Out>
__device__ __forceinline__ void tile_products(const ExpertTile& t, const Routing& r, Input input, Out out) {
  using Ops = TileOperands<F>;
  constexpr int kChunksInFlight = Wanted < Ops::kMaxChunksInFlight ? Wanted : Ops::kMaxChunksInFlight;
  using X = typename Ops::Input;
  extern __shared__ __align__(16) unsigned char staged_bytes[];
  X* staged = reinterpret_cast<X*>(staged_bytes);
  __shared__ float4 warp_sums[kTileWarps][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int chunks = tile_chunks(t.cols), stride = staged_stride(t.cols), per_stage = staged_tokens(t.cols);
  const int groups = stride / 8;  // 8 inputs per 16 bytes
  const Ops ops(t, lane);
  typename Ops::Chunk held[kChunksInFlight];
  const auto load = [&](int first) {
#pragma unroll
    for (int i = 0; i < kChunksInFlight; ++i)
      if (first + kTileWarps * i < chunks) held[i] = ops.load(first + kTileWarps * i);
  };
  const int begin = r.expert_begin[t.expert], end = r.expert_begin[t.expert + 1];
  load(warp);  // the weights need only the expert: in flight while its tokens are looked up and staged
  for (int t0 = begin; t0 < end; t0 += per_stage) {
    const int count = min(per_stage, end - t0);
    for (int i = threadIdx.x; i < count * groups; i += blockDim.x) {
      const int token = i / groups, col = i % groups * 8;
      const uint4 raw = col < t.cols ? *reinterpret_cast<const uint4*>(input(r.pairs_by_expert[t0 + token]) + col) : uint4{};
      reinterpret_cast<uint4*>(staged + token * stride)[col / 8] = Ops::widen(raw);
    }
    __syncthreads();
    const X* x = staged + min(lane / 4, count - 1) * stride;  // columns past count repeat the last token
    float acc[4] = {};
    for (int first = warp;;) {
#pragma unroll
      for (int i = 0; i < kChunksInFlight; ++i) {
        const int chunk = first + kTileWarps * i;
        if (chunk < chunks) Ops::multiply(held[i], x + kTileColumns * chunk, lane, acc);
      }
      first += kTileWarps * kChunksInFlight;
      if (first >= chunks) break;
      load(first);
    }
    warp_sums[warp][lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    __syncthreads();
    if (warp == 0) {
      float4 sum = warp_sums[0][lane];
#pragma unroll
      for (int w = 1; w < kTileWarps; ++w) {
        const float4 v = warp_sums[w][lane];
        sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
      }
      const float sums[4] = {sum.x, sum.y, sum.z, sum.w};
      for (int k = 0; k < 2; ++k) {
        const int slot = 2 * (lane % 4) + k;
        if (slot < count) out(r.pairs_by_expert[t0 + slot], sums[k], sums[2 + k]);
      }
    }
    __syncthreads();  // the staged inputs and the sums are rewritten for the next tokens
    if (t0 + per_stage < end) load(warp);  // the same weights again (from L2) for the next tokens
  }
}

// The expert of this block (blockIdx.x-th active one), or -1 when fewer are active.
__device__ __forceinline__ int block_expert(const Routing& r) {
  return static_cast<int>(blockIdx.x) < r.active[0] ? r.active[1 + blockIdx.x] : -1;
}

// act[p][o] = silu(gate_o . x) * (up_o . x), o = 8 tile + g: a tile's rows g and g + 8.
template <ExpertFormat F>
__global__ void __launch_bounds__(kTileWarps * 32, F == ExpertFormat::mxfp4 ? kGateUpBlocksPerSm : 1)
    gate_up_kernel(ExpertWeights w, const bf16* x, int top_k, Routing r, bf16* act) {
  wait_for_previous_kernel();
  allow_next_kernel();
  const int e = block_expert(r);
  if (e < 0) return;
  const ExpertTile t{w.gate_up, w.gate_up_scales, 2 * w.width, w.hidden, TileRows::gate_up_pairs, e, int(blockIdx.y)};
  const int o = kTileRows / 2 * t.tile + threadIdx.x % 32 / 4;
  tile_products<F, kGateUpChunksInFlight>(
      t, r, [&](int pair) { return x + size_t(pair / top_k) * w.hidden; },
      [&](int pair, float gate, float up) {
        if (o < w.width) act[size_t(pair) * w.width + o] = __float2bfloat16(gate / (1.0f + __expf(-gate)) * up);
      });
}

// out[p][row] = down_row . act[p] for the tile's rows 16 tile + g and + 8.
template <ExpertFormat F>
__global__ void __launch_bounds__(kTileWarps * 32, F == ExpertFormat::mxfp4 ? kDownBlocksPerSm : 1)
    down_kernel(ExpertWeights w, const bf16* act, Routing r, float* out) {
  wait_for_previous_kernel();
  allow_next_kernel();
  const int e = block_expert(r);
  if (e < 0) return;
  const ExpertTile t{w.down, w.down_scales, w.hidden, w.width, TileRows::consecutive, e, int(blockIdx.y)};
  const int row = kTileRows * t.tile + threadIdx.x % 32 / 4;
  tile_products<F, kDownChunksInFlight>(
      t, r, [&](int pair) { return act + size_t(pair) * w.width; },
      [&](int pair, float first, float second) {
        if (row < w.hidden) out[size_t(pair) * w.hidden + row] = first;
        if (row + 8 < w.hidden) out[size_t(pair) * w.hidden + row + 8] = second;
      });
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

template <typename Kernel, typename... Args>
void launch_tiles(Kernel kernel, int max_active, int tiles, int cols, cudaStream_t s, Args... args) {
  const size_t staged = size_t(staged_tokens(cols)) * staged_stride(cols) * 2;
  launch(kernel, dim3(max_active, tiles), kTileWarps * 32, staged, s, args...);
}

void experts_gate_up(const ExpertWeights& w, const bf16* x, int top_k, Routing r, int max_active, bf16* act,
                     cudaStream_t s) {
  check_shape(w);
  const int tiles = tile_count(2 * w.width, TileRows::gate_up_pairs);
  if (w.format == ExpertFormat::mxfp4)
    launch_tiles(gate_up_kernel<ExpertFormat::mxfp4>, max_active, tiles, w.hidden, s, w, x, top_k, r, act);
  else
    launch_tiles(gate_up_kernel<ExpertFormat::bf16>, max_active, tiles, w.hidden, s, w, x, top_k, r, act);
}

void experts_down(const ExpertWeights& w, const bf16* act, Routing r, int max_active, float* out, cudaStream_t s) {
  check_shape(w);
  const int tiles = tile_count(w.hidden, TileRows::consecutive);
  if (w.format == ExpertFormat::mxfp4)
    launch_tiles(down_kernel<ExpertFormat::mxfp4>, max_active, tiles, w.width, s, w, act, r, out);
  else
    launch_tiles(down_kernel<ExpertFormat::bf16>, max_active, tiles, w.width, s, w, act, r, out);
}

}  // namespace ultraserve::gpu
