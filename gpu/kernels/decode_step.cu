// The gapless decode step (kernels.cuh): one persistent kernel for every layer of a one-row pass.
//
// Why: at batch 1 a layer is eleven small dependent kernels, and each paid its start, a wait for
// the one before and a memory round trip before its weights flowed (docs/perf.md: 55 us a layer
// where its bytes need 13). Here a block per multiprocessor runs the layer's stages between
// grid-wide barriers, and each block copies its share of a stage's weights into shared memory
// (bulk copies: "weights in flight" below) as soon as the region is free, which for the weights
// that do not depend on the routing is a stage or more ahead:
//
//   stage                     computes (block b: its share)            copies in meanwhile
//   A  norm + q/k/v           xn = rms_norm(x); its q/k/v rows         o rows (after its GEMV)
//   B  attention              (kv head, split) items, q/k norm + RoPE
//   C  merge (2+ splits)      a query head per block
//   D  o projection           x[its rows] += o . attention             router rows
//   E  norm + router          xn = rms_norm(x); its router rows
//   F  routing + gate/up      top-k (every block), its expert tiles    gate/up tiles, then down tiles;
//                                                                      next layer's q/k/v rows
//   G  down                   x[its tile's rows] += sum_k w_k down_k . act
//
// Shared memory: the front region holds one stage's weights at a time (q/k/v, o, router rows,
// gate/up tiles), the back region the down tiles or the attention tile, the vector region the
// stage's input. Every sum runs in the order of the kernels per stage (projections: lanes over
// 16-byte chunks, then the warp's tree; experts: MXFP4 tiles, gpu/expert_tiles.h, on tensor cores
// by groups of four warps split and summed as a kernel block is, expert_mma.cuh): on the H200 the
// logits came out identical to theirs. A model with bf16 experts runs kernel by kernel.
//
// Measured (docs/perf.md): 3.17 ms a token at context 128 against the kernels' 2.62. The barriers
// cost about 2 us each and the weights land ahead; the stages' own compute, one block of 8 warps
// a multiprocessor with nothing overlapping it, costs the rest. So
// GpuModelOptions::persistent_decode is off by default (the next steps are in docs/perf.md).

#include <algorithm>

#include "gpu/kernels/attention_split.cuh"
#include "gpu/kernels/expert_mma.cuh"
#include "gpu/kernels/routing.cuh"

namespace ultraserve::gpu {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kTilePositions = kDecodeStepTilePositions;  // the attention tile: 44 KB at 128-wide heads
constexpr int kMaxNormVectors = 8;  // float4s of a row per thread: hidden up to 8192

__host__ __device__ constexpr size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// Block b's rows [begin, begin + count) of n split over `blocks`; no block gets more than
// max_share(n, blocks).
struct Share {
  int begin, count;
};
__host__ __device__ inline Share share_of(int n, int blocks, int b) {
  const int begin = static_cast<int>(static_cast<long long>(n) * b / blocks);
  const int end = static_cast<int>(static_cast<long long>(n) * (b + 1) / blocks);
  return {begin, end - begin};
}
__host__ __device__ inline int max_share(int n, int blocks) { return (n + blocks - 1) / blocks; }

// Where a block keeps the MXFP4 expert tiles (gpu/expert_tiles.h) it copies. Gate/up (front):
// its tiles' codes, then their scales; down (back): per pick k, the codes of its down tile (block b
// takes down tile b: hidden rows 16 b .. 16 b + 15), then per k their scales.
struct ExpertSlices {
  size_t gate_up_codes, gate_up_scales, down_codes, down_scales;  // one tile's
  int gate_up_tiles, tiles;  // of a pick's matrix; the most a block gets (of top_k x gate_up_tiles)
  int down_tiles;            // of a pick's down matrix: the blocks that run the down stage
  __host__ __device__ ExpertSlices(const DecodeStep& a, int blocks)
      : gate_up_codes(size_t(tile_chunks(a.hidden)) * kTileChunkCodeBytes),
        gate_up_scales(size_t(tile_chunks(a.hidden)) * kTileChunkScaleBytes),
        down_codes(size_t(tile_chunks(a.width)) * kTileChunkCodeBytes),
        down_scales(size_t(tile_chunks(a.width)) * kTileChunkScaleBytes),
        gate_up_tiles(tile_count(2 * a.width, TileRows::gate_up_pairs)),
        tiles(max_share(a.top_k * gate_up_tiles, blocks)),
        down_tiles(tile_count(a.hidden, TileRows::consecutive)) {}
  __host__ __device__ size_t gate_up_scale_at(int j) const { return size_t(tiles) * gate_up_codes + j * gate_up_scales; }
  __host__ __device__ size_t gate_up_bytes() const { return gate_up_scale_at(tiles); }
  __host__ __device__ size_t down_code_at(int k) const { return size_t(k) * down_codes; }
  __host__ __device__ size_t down_scale_at(int k, int top_k) const {
    return size_t(top_k) * down_codes + size_t(k) * down_scales;
  }
  __host__ __device__ size_t down_bytes(int top_k) const { return down_scale_at(top_k, top_k); }
};

// ---- weights in flight -------------------------------------------------------------------------
// The copies into one shared-memory region. The copy engine takes what is 16-byte aligned: one
// thread issues bulk copies (cp.async.bulk) that count the region's mbarrier down, so a share of
// 160 KB is a dozen instructions and no thread waits on its own copies. What it cannot take (a
// scale row of 24 bytes) goes by per-thread cp.async in the region's commit group.
constexpr size_t kBulkBytes = 16 * 1024;  // a bulk copy's size

struct Landing {
  unsigned barrier;  // shared address of the region's mbarrier
  unsigned phase;    // the parity its next completion will have
};

__device__ __forceinline__ void init_landing(Landing& l, unsigned long long* barrier) {
  l.barrier = static_cast<unsigned>(__cvta_generic_to_shared(barrier));
  l.phase = 0;
  if (threadIdx.x == 0) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(l.barrier) : "memory");
}

// Starts copying `bytes` from global memory to `dst` (shared) into landing `l`.
__device__ void copy_to_shared(const Landing& l, unsigned char* dst, const void* src, size_t bytes) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const uintptr_t s = reinterpret_cast<uintptr_t>(src);
  const unsigned alignment = static_cast<unsigned>(d | s | bytes);
  if (alignment % 16 == 0) {
    if (threadIdx.x == 0)
      for (size_t i = 0; i < bytes; i += kBulkBytes) {
        const unsigned n = static_cast<unsigned>(min(kBulkBytes, bytes - i));
        asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;" ::"r"(l.barrier), "r"(n) : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                         d + unsigned(i)),
                     "l"(s + i), "r"(n), "r"(l.barrier)
                     : "memory");
      }
  } else if (alignment % 8 == 0) {
    for (size_t i = threadIdx.x * 8; i < bytes; i += kThreads * 8)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(d + unsigned(i)), "l"(s + i) : "memory");
  } else if (alignment % 4 == 0) {
    for (size_t i = threadIdx.x * 4; i < bytes; i += kThreads * 4)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d + unsigned(i)), "l"(s + i) : "memory");
  } else {  // a tiny model's odd-sized scale rows: byte by byte through registers
    for (size_t i = threadIdx.x; i < bytes; i += kThreads) dst[i] = static_cast<const unsigned char*>(src)[i];
  }
}

// The end of a landing's copies: its mbarrier completes when they have all arrived.
__device__ __forceinline__ void finish_copies(const Landing& l) {
  if (threadIdx.x == 0) asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];" ::"r"(l.barrier) : "memory");
  commit_async_copies();
}

// Waits for the landing's oldest unfinished copies (the bulk part; the caller waits for its
// cp.async groups, then syncs the block).
__device__ __forceinline__ void wait_for_landing(Landing& l) {
  asm volatile(
      "{\n\t.reg .pred done;\n\t"
      "WAIT:\n\t"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 done, [%0], %1;\n\t"
      "@!done bra WAIT;\n\t}" ::"r"(l.barrier),
      "r"(l.phase)
      : "memory");
  l.phase ^= 1;
}

// Every block waits here until all have arrived; what each wrote before is then visible to all
// (read it through L2: __ldcg or cp.async.cg, as the L1 of another multiprocessor may hold stale
// lines). The count only grows during a step (zeroed before it): barrier n is passed when it
// reaches n * blocks, so an arrival is one release-add and the wait polls one word.
__device__ __forceinline__ void grid_barrier(unsigned* count, unsigned& passed) {
  __syncthreads();
  passed += gridDim.x;
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(count) : "memory");
    unsigned now;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(count) : "memory");
    } while (now < passed);
  }
  __syncthreads();
}

__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// out = rms_norm(x) * weight as bf16 (x: hidden floats another block may have written).
__device__ void rms_norm_to_shared(const float* x, const float* weight, int hidden, float eps, bf16* out) {
  __shared__ float warp_squares[kWarps];
  const int vectors = hidden / 4;
  float4 v[kMaxNormVectors];
  float squares = 0;
#pragma unroll
  for (int j = 0; j < kMaxNormVectors; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c >= vectors) continue;
    v[j] = __ldcg(reinterpret_cast<const float4*>(x) + c);
    squares += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
  }
  squares = warp_sum(squares);
  if (threadIdx.x % 32 == 0) warp_squares[threadIdx.x / 32] = squares;
  __syncthreads();
  float total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += warp_squares[w];
  const float scale = rsqrtf(total / hidden + eps);
  const float4* gamma = reinterpret_cast<const float4*>(weight);
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out);
#pragma unroll
  for (int j = 0; j < kMaxNormVectors; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c >= vectors) continue;
    const float4 g = gamma[c];
    o[2 * c] = __floats2bfloat162_rn(v[j].x * scale * g.x, v[j].y * scale * g.y);
    o[2 * c + 1] = __floats2bfloat162_rn(v[j].z * scale * g.z, v[j].w * scale * g.w);
  }
  __syncthreads();
}

// out[0, bytes) = in, 16 bytes a thread at a time, through L2 (another block wrote it).
__device__ void load_vector_to_shared(const void* in, size_t bytes, void* out) {
  for (size_t i = threadIdx.x; i < bytes / 16; i += kThreads)
    reinterpret_cast<uint4*>(out)[i] = __ldcg(reinterpret_cast<const uint4*>(in) + i);
  __syncthreads();
}

// The compute after a barrier is on the critical path with only 8 warps a multiprocessor, so
// each warp runs kRowsAtOnce rows at once: independent chains of FMAs and shared-memory loads
// where one row at a time left the schedulers idle (docs/perf.md). Each row's sum keeps the
// kernels' order (lane l takes chunks l, l + 32, ..., then the warp's tree).
constexpr int kRowsAtOnce = 4;

// The block's `count` bf16 rows of k in shared memory times the vector x (shared): warp w takes
// rows w, w + kWarps, ... kRowsAtOnce at a time; emit(r, y) runs on lane 0.
template <typename Emit>
__device__ __forceinline__ void shared_rows_times(const unsigned char* rows, int count, int k, const bf16* x,
                                                  Emit&& emit) {
  const int lane = threadIdx.x % 32;
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
  for (int base = threadIdx.x / 32; base < count; base += kRowsAtOnce * kWarps) {
    const uint4* w4[kRowsAtOnce];
#pragma unroll
    for (int j = 0; j < kRowsAtOnce; ++j)  // a row past the share: the last one again, not emitted
      w4[j] = reinterpret_cast<const uint4*>(rows + size_t(min(base + j * kWarps, count - 1)) * k * 2);
    float acc[kRowsAtOnce] = {};
    for (int c = lane; c < k / 8; c += 32) {
      float xf[8];
      bf16x8_to_float(x4[c], xf);
#pragma unroll
      for (int j = 0; j < kRowsAtOnce; ++j) {
        float wf[8];
        bf16x8_to_float(w4[j][c], wf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[j] = fmaf(wf[i], xf[i], acc[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kRowsAtOnce; ++j) {
      const float y = warp_sum(acc[j]);
      if (lane == 0 && base + j * kWarps < count) emit(base + j * kWarps, y);
    }
  }
}

// The block's warps work in groups of kTileWarps, a tile a group, each split and summed as the
// expert kernels split and sum one (expert_mma.cuh): the same sums in the same order.
constexpr int kTileGroups = kWarps / kTileWarps;

// A tile in shared memory times x (fp16, shared), by the calling group: its warp w takes chunks
// w, w + kTileWarps, ...; warp 0 of the group (lanes 4 g) gets the group's sums of rows g and
// g + 8 (the single token is every column). Every warp of the block calls it (it syncs).
__device__ __forceinline__ bool group_tile_times(bool active, const unsigned char* codes, const unsigned char* scales,
                                                 int chunks, const __half* x, float2& total) {
  using Ops = TileOperands<ExpertFormat::mxfp4>;
  __shared__ float2 warp_sums[kWarps][8];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, group = warp / kTileWarps, w = warp % kTileWarps;
  float acc[4] = {};
  if (active)
    for (int c = w; c < chunks; c += kTileWarps) {
      const Ops::Chunk chunk{reinterpret_cast<const uint4*>(codes + size_t(c) * kTileChunkCodeBytes)[lane],
                             reinterpret_cast<const uint32_t*>(scales + size_t(c) * kTileChunkScaleBytes)[lane / 4]};
      Ops::multiply(chunk, x + kTileColumns * c, lane, acc);
    }
  if (lane % 4 == 0) warp_sums[warp][lane / 4] = make_float2(acc[0], acc[2]);
  __syncthreads();
  const bool mine = active && w == 0 && lane % 4 == 0;
  if (mine) {
    total = warp_sums[group * kTileWarps][lane / 4];
    for (int v = 1; v < kTileWarps; ++v)
      total.x += warp_sums[group * kTileWarps + v][lane / 4].x, total.y += warp_sums[group * kTileWarps + v][lane / 4].y;
  }
  __syncthreads();  // warp_sums free for the next call
  return mine;
}

// out[0, padded) = in[0, n) widened to fp16, zeros past n (bf16 in: shared or global through L2).
template <bool Global>
__device__ void widen_to_shared(const bf16* in, int n, int padded, __half* out) {
  for (int i = threadIdx.x; i < padded / 8; i += kThreads) {
    const uint4 raw = 8 * i >= n ? uint4{} : Global ? __ldcg(reinterpret_cast<const uint4*>(in) + i)
                                                    : reinterpret_cast<const uint4*>(in)[i];
    reinterpret_cast<uint4*>(out)[i] = TileOperands<ExpertFormat::mxfp4>::widen(raw);
  }
  __syncthreads();
}

// ---- the stages --------------------------------------------------------------------------------
// B: item (kv head, split) = this block's: the new position's key and value stored by the split
// that sees it, the query heads normed and rotated into the tile, then the split's attention.
template <class Tile>
__device__ void attention_stage(const DecodeStep& a, const DecodeStepLayer& w, const KvLayout& kv,
                                unsigned char* back) {
  const HeadShape& h = a.heads;
  const int kv_head = blockIdx.x % h.kv_heads, split = blockIdx.x / h.kv_heads;
  if (split >= a.scratch.splits) return;
  const QkvRow row{a.qkv, w.q_norm, w.k_norm, a.eps, a.rope, a.value_scale};
  const ContextSplit s = context_split(kv, a.rows, a.scratch, 0, split);
  if (stores_new_position(kv, a.rows, 0, split, s)) store_new_position<Tile::DK>(row, h, kv, a.rows, 0, kv_head);
  if (s.begin >= s.end) return;
  const TileMemory<Tile> tile(back);
  queries_to_tile<Tile>(row, h, a.rows, 0, kv_head, tile);
  locate_tile<Tile>(kv, s.table, kv_head, s.begin, s.end, tile.key_at[0], tile.value_at[0]);
  attend_split<Tile>(s, 0, kv_head, split, h, kv, nullptr, a.scratch, tile, a.attention_out);
}

template <int D, int G>
__global__ void __launch_bounds__(kThreads, 1)
    decode_step_kernel(const DecodeStep a, size_t back_offset, size_t vector_offset) {
  using Tile = AttentionTile<D, D, G, kTilePositions>;
  extern __shared__ __align__(16) unsigned char memory[];
  unsigned char* front = memory;
  unsigned char* back = memory + back_offset;
  bf16* vector_s = reinterpret_cast<bf16*>(memory + vector_offset);
  __shared__ int pick_expert[32];
  __shared__ float pick_weight[32];
  __shared__ unsigned long long landing_barriers[2];
  Landing front_landing, back_landing;  // what is copied into each region
  init_landing(front_landing, &landing_barriers[0]);
  init_landing(back_landing, &landing_barriers[1]);
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, B = gridDim.x;
  const int H = a.hidden, W = a.width, K = a.top_k;
  const int q_dim = a.heads.q_heads * D, kv_dim = a.heads.kv_heads * D;
  const Share qkv = share_of(q_dim + 2 * kv_dim, B, blockIdx.x), rows = share_of(H, B, blockIdx.x);
  const ExpertSlices ex(a, B);
  const Share router = share_of(a.num_experts, B, blockIdx.x), tiles = share_of(K * ex.gate_up_tiles, B, blockIdx.x);
  const int down_tile = blockIdx.x;  // < ex.down_tiles: this block's rows of the down stage
  unsigned passed = 0;
  // Tuning (DecodeStep::trace): block 0's clock at the stage boundaries (kDecodeStepTraceSlots).
  const auto mark = [&](int layer, int slot) {
    if (a.trace && blockIdx.x == 0 && threadIdx.x == 0) a.trace[layer * kDecodeStepTraceSlots + slot] = globaltimer();
  };
  // The end of a stage's own work, then of its barrier.
  const auto stage_end = [&](int layer, int slot) {
    mark(layer, slot);
    grid_barrier(a.barrier, passed);
    mark(layer, slot + 1);
  };
  const auto copy_qkv = [&](int layer) {
    copy_to_shared(front_landing, front, a.layers[layer].qkv + size_t(qkv.begin) * H, size_t(qkv.count) * H * 2);
    finish_copies(front_landing);
  };

  copy_qkv(0);  // weights: safe to read before the kernel before this one is done
  wait_for_previous_kernel();
  allow_next_kernel();
  for (int layer = 0; layer < a.num_layers; ++layer) {
    const DecodeStepLayer w = a.layers[layer];
    KvLayout kv = a.kv;
    kv.layer_offset = w.kv_layer_offset;
    mark(layer, 0);

    // A: input norm, q/k/v rows; then the o rows on their way.
    wait_for_landing(front_landing);
    wait_for_async_copies<0>();
    mark(layer, 15);
    rms_norm_to_shared(a.x, w.input_norm, H, a.eps, vector_s);
    mark(layer, 16);
    shared_rows_times(front, qkv.count, H, vector_s, [&](int r, float y) { a.qkv[qkv.begin + r] = y; });
    __syncthreads();
    copy_to_shared(front_landing, front, w.o + size_t(rows.begin) * q_dim, size_t(rows.count) * q_dim * 2);
    finish_copies(front_landing);
    stage_end(layer, 1);

    // B, C: attention; the merge when the row has a few splits (attend_split merges many).
    attention_stage<Tile>(a, w, kv, back);
    stage_end(layer, 3);
    const int used_splits = context_split(kv, a.rows, a.scratch, 0, 0).used_splits;
    if (used_splits > 1 && used_splits <= a.scratch.combine_max_splits) {
      if (static_cast<int>(blockIdx.x) < a.heads.q_heads)
        combine_head<D, G>(a.heads, a.rows, kv, nullptr, a.scratch, 0, blockIdx.x, threadIdx.x, a.attention_out);
      stage_end(layer, 5);
    } else {
      mark(layer, 5), mark(layer, 6);  // no merge stage: no time
    }

    // D: x[its rows] += o . attention; then the router rows on their way.
    wait_for_landing(front_landing);
    wait_for_async_copies<0>();
    load_vector_to_shared(a.attention_out, size_t(q_dim) * 2, vector_s);
    shared_rows_times(front, rows.count, q_dim, vector_s,
                      [&](int r, float y) { a.x[rows.begin + r] = __ldcg(a.x + rows.begin + r) + y; });
    __syncthreads();
    copy_to_shared(front_landing, front, w.router + size_t(router.begin) * H, size_t(router.count) * H * 2);
    finish_copies(front_landing);
    stage_end(layer, 7);

    // E: post-attention norm (kept for gate/up), router rows.
    wait_for_landing(front_landing);
    wait_for_async_copies<0>();
    rms_norm_to_shared(a.x, w.post_attention_norm, H, a.eps, vector_s);
    shared_rows_times(front, router.count, H, vector_s, [&](int r, float y) { a.logits[router.begin + r] = y; });
    stage_end(layer, 9);

    // F: every block routes for itself, copies its gate/up tiles and its down tile of each pick,
    // multiplies the tiles; then the next layer's q/k/v rows on their way.
    if (warp == 0) {
      int e;
      float weight;
      pick_experts<false>(a.logits, a.num_experts, K, a.rule, lane, e, weight);
      if (lane < K) pick_expert[lane] = e, pick_weight[lane] = weight;
    }
    __syncthreads();
    mark(layer, 20);
    const int T = ex.gate_up_tiles;
    for (int u = tiles.begin; u < tiles.begin + tiles.count;) {  // a run of tiles of one pick
      const int k = u / T, n = min(tiles.begin + tiles.count, (k + 1) * T) - u, j = u - tiles.begin;
      const size_t first = size_t(pick_expert[k]) * T + u % T;
      copy_to_shared(front_landing, front + j * ex.gate_up_codes, w.gate_up + first * ex.gate_up_codes, n * ex.gate_up_codes);
      copy_to_shared(front_landing, front + ex.gate_up_scale_at(j), w.gate_up_scales + first * ex.gate_up_scales,
                     n * ex.gate_up_scales);
      u += n;
    }
    finish_copies(front_landing);
    if (down_tile < ex.down_tiles)
      for (int k = 0; k < K; ++k) {
        const size_t tile = size_t(pick_expert[k]) * ex.down_tiles + down_tile;
        copy_to_shared(back_landing, back + ex.down_code_at(k), w.down + tile * ex.down_codes, ex.down_codes);
        copy_to_shared(back_landing, back + ex.down_scale_at(k, K), w.down_scales + tile * ex.down_scales,
                       ex.down_scales);
      }
    finish_copies(back_landing);
    mark(layer, 17);
    __half* x_s = reinterpret_cast<__half*>(vector_s);
    widen_to_shared<false>(vector_s, H, tile_chunks(H) * kTileColumns, x_s);  // in place
    wait_for_landing(front_landing);
    wait_for_async_copies<1>();  // the gate/up tiles; the down tiles may still be on their way
    __syncthreads();
    mark(layer, 18);
    for (int j0 = 0; j0 < tiles.count; j0 += kTileGroups) {  // a tile a group of warps
      const int j = j0 + warp / kTileWarps, u = tiles.begin + j, out = kTileRows / 2 * (u % T) + lane / 4;
      float2 y;  // the gate row's sum, then the up row's
      if (group_tile_times(j < tiles.count, front + j * ex.gate_up_codes, front + ex.gate_up_scale_at(j), tile_chunks(H),
                           x_s, y) &&
          out < W)
        a.act[size_t(u / T) * W + out] = __float2bfloat16(y.x / (1.0f + __expf(-y.x)) * y.y);
    }
    __syncthreads();
    if (layer + 1 < a.num_layers) {
      copy_qkv(layer + 1);
    } else {
      commit_async_copies();  // an empty group: the waits count groups
    }
    stage_end(layer, 11);

    // G: x[the down tile's rows] += the routing-weighted sum of the picks' down tiles . act.
    wait_for_landing(back_landing);
    wait_for_async_copies<1>();  // the down tiles; the next q/k/v rows may still be on their way
    mark(layer, 19);
    const int act_stride = tile_chunks(W) * kTileColumns;
    for (int k = 0; k < K; ++k) widen_to_shared<true>(a.act + size_t(k) * W, W, act_stride, x_s + k * act_stride);
    if (down_tile < ex.down_tiles) {
      __shared__ float2 pick_rows[32][8];  // per pick, its down tile's rows g and g + 8 . act
      for (int k0 = 0; k0 < K; k0 += kTileGroups) {  // a pick a group of warps
        const int k = k0 + warp / kTileWarps;
        float2 y;
        if (group_tile_times(k < K, back + ex.down_code_at(k), back + ex.down_scale_at(k, K), tile_chunks(W),
                             x_s + k * act_stride, y))
          pick_rows[k][lane / 4] = y;
      }
      __syncthreads();
      const int row = kTileRows * down_tile + lane / 4;
      if (warp == 0 && lane % 4 == 0) {  // as add_rms_norm adds the picks: x, then each in order
        float first = row < H ? __ldcg(a.x + row) : 0.0f, second = row + 8 < H ? __ldcg(a.x + row + 8) : 0.0f;
        for (int k = 0; k < K; ++k)
          first = fmaf(pick_weight[k], pick_rows[k][lane / 4].x, first),
          second = fmaf(pick_weight[k], pick_rows[k][lane / 4].y, second);
        if (row < H) a.x[row] = first;
        if (row + 8 < H) a.x[row + 8] = second;
      }
    }
    stage_end(layer, 13);
  }
}

// The shapes built: the Qwen3-MoE family's 128-wide heads in groups of 4, 8 and 16, the shipped
// default's 64/2 and the test configs' 16/2.
template <typename F>
bool with_heads(int head_dim, int group, F&& f) {
  const auto is = [&](int d, int g) { return head_dim == d && group == g; };
  if (is(128, 8)) return f(std::integral_constant<int, 128>{}, std::integral_constant<int, 8>{}), true;
  if (is(128, 4)) return f(std::integral_constant<int, 128>{}, std::integral_constant<int, 4>{}), true;
  if (is(128, 16)) return f(std::integral_constant<int, 128>{}, std::integral_constant<int, 16>{}), true;
  if (is(64, 2)) return f(std::integral_constant<int, 64>{}, std::integral_constant<int, 2>{}), true;
  if (is(16, 2)) return f(std::integral_constant<int, 16>{}, std::integral_constant<int, 2>{}), true;
  return false;
}

// Calls f(kernel) with the step's kernel for these heads (false: not built).
template <typename F>
bool with_kernel(const DecodeStep& a, F&& f) {
  return with_heads(a.heads.head_dim, a.heads.q_heads / a.heads.kv_heads,
                    [&](auto d, auto g) { f(decode_step_kernel<decltype(d)::value, decltype(g)::value>); });
}

}  // namespace

DecodeStepPlan plan_decode_step(const DecodeStep& a, int multiprocessors) {
  DecodeStepPlan plan;
  const HeadShape& h = a.heads;
  const auto no = [&](std::string why) {
    plan.reason = std::move(why);
    return plan;
  };
  if (h.head_dim != h.v_head_dim || a.rope.rotary_dim != h.head_dim || h.kv_heads < 1 || h.q_heads % h.kv_heads)
    return no("attention: needs equal query and value widths and RoPE over the whole head");
  size_t tile_bytes = 0;
  if (!with_heads(h.head_dim, h.q_heads / h.kv_heads, [&](auto d, auto g) {
        tile_bytes = AttentionTile<decltype(d)::value, decltype(d)::value, decltype(g)::value, kTilePositions>::kSharedBytes;
      }))
    return no("attention: head dim " + std::to_string(h.head_dim) + " in groups of " +
              std::to_string(h.q_heads / h.kv_heads) + " not built");
  if (a.rule.sigmoid_grouped || a.num_experts > kMaxRoutedExperts || a.top_k > 32 || a.top_k < 1)
    return no("routing: softmax top-k of at most 32 of at most " + std::to_string(kMaxRoutedExperts) + " experts only");
  if (a.experts != ExpertFormat::mxfp4) return no("experts: MXFP4 only (the step reads their tensor-core tiles)");
  if (a.hidden > 4 * kMaxNormVectors * kThreads) return no("experts: hidden at most 8192");
  if (a.scratch.splits < 1 || a.scratch.splits * h.kv_heads > multiprocessors)
    return no("attention: more (kv head, split) items than blocks");

  const int B = multiprocessors, H = a.hidden, q_dim = h.q_heads * h.head_dim, kv_dim = h.kv_heads * h.head_dim;
  const ExpertSlices ex(a, B);
  if (ex.down_tiles > B) return no("experts: more down tiles (16 rows of hidden) than blocks");
  const size_t front = std::max({size_t(max_share(q_dim + 2 * kv_dim, B)) * H * 2,
                                 size_t(max_share(H, B)) * q_dim * 2, size_t(max_share(a.num_experts, B)) * H * 2,
                                 ex.gate_up_bytes()});
  const size_t back = std::max(ex.down_bytes(a.top_k), tile_bytes);
  const size_t vector = std::max({size_t(q_dim), size_t(tile_chunks(H)) * kTileColumns,
                                  size_t(a.top_k) * tile_chunks(a.width) * kTileColumns}) * 2;
  plan.back_offset = align16(front);
  plan.vector_offset = plan.back_offset + align16(back);
  plan.shared_bytes = plan.vector_offset + align16(vector);
  int device = 0, limit = 0;
  ULTRASERVE_CUDA_CHECK(cudaGetDevice(&device));
  ULTRASERVE_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  // The kernel may opt into all the device allows besides its own (__shared__) arrays, on the
  // device the model loads on; then any model's plan that fits runs.
  int dynamic_limit = 0;
  with_kernel(a, [&](auto kernel) {
    cudaFuncAttributes attributes{};
    ULTRASERVE_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    dynamic_limit = limit - static_cast<int>(attributes.sharedSizeBytes);
    ULTRASERVE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic_limit));
  });
  if (plan.shared_bytes > size_t(dynamic_limit))
    return no("shared memory: a block's shares need " + std::to_string(plan.shared_bytes) + " bytes, the kernel may have " +
              std::to_string(dynamic_limit));
  plan.blocks = B;
  plan.runs = true;
  return plan;
}

void decode_step(const DecodeStep& a, const DecodeStepPlan& plan, cudaStream_t s) {
  if (!plan.runs) throw GpuError("decode_step: " + plan.reason);
  ULTRASERVE_CUDA_CHECK(cudaMemsetAsync(a.barrier, 0, sizeof(unsigned), s));
  with_kernel(a, [&](auto kernel) {
    launch(kernel, plan.blocks, kThreads, plan.shared_bytes, s, a, plan.back_offset, plan.vector_offset);
  });
}

}  // namespace ultraserve::gpu
