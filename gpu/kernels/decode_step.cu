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
//   F  routing + gate/up      top-k (every block), its expert units    gate/up units, then down rows;
//                                                                      next layer's q/k/v rows
//   G  down                   x[its dims] += sum_k w_k down_k . act
//
// Shared memory: the front region holds one stage's rows at a time (q/k/v, o, router, gate/up),
// the back region the down rows or the attention tile, the vector region the stage's input.
// Every sum runs in the order of the kernels per stage (lanes over 16-byte chunks, then the
// warp's tree): on the H200 the logits came out identical to theirs.
//
// Measured (docs/perf.md): 3.81 ms a token at context 128 against the kernels' 2.64. The barriers
// cost 1.5-2.4 us each and the weights land ahead; the stages' own compute, one block of 8 warps
// a multiprocessor with nothing overlapping it, costs the rest (the MXFP4 decode is ALU-bound).
// So GpuModelOptions::persistent_decode is off by default (the next steps are in docs/perf.md).
// Its experts are bf16 rows: MXFP4 experts are stored as tensor-core tiles (gpu/expert_tiles.h)
// for the expert kernels, and a model with them runs kernel by kernel.

#include <algorithm>

#include "gpu/kernels/attention_split.cuh"
#include "gpu/kernels/expert_dot.cuh"
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

// Bytes of an expert weight row of `cols` inputs, and of its scales.
__host__ __device__ inline size_t expert_row_bytes(ExpertFormat f, int cols) {
  return f == ExpertFormat::mxfp4 ? size_t(cols) / 2 : size_t(cols) * 2;
}
__host__ __device__ inline size_t expert_scale_bytes(ExpertFormat f, int cols) {
  return f == ExpertFormat::mxfp4 ? size_t(cols) / 32 : 0;
}

// Where a block keeps the expert rows it copies. Gate/up (front): its units' gate rows, their up
// rows, then the scales of each; down (back): per pick k, its dims' rows, then per k their scales.
struct ExpertSlices {
  size_t gate_up_row, gate_up_scale, down_row, down_scale;
  int units, dims;  // the most units and dims a block gets
  __host__ __device__ ExpertSlices(const DecodeStep& a, int blocks)
      : gate_up_row(expert_row_bytes(a.experts, a.hidden)),
        gate_up_scale(expert_scale_bytes(a.experts, a.hidden)),
        down_row(expert_row_bytes(a.experts, a.width)),
        down_scale(expert_scale_bytes(a.experts, a.width)),
        units(max_share(a.top_k * a.width, blocks)),
        dims(max_share(a.hidden, blocks)) {}
  __host__ __device__ size_t up_rows() const { return size_t(units) * gate_up_row; }
  __host__ __device__ size_t gate_scales() const { return 2 * size_t(units) * gate_up_row; }
  __host__ __device__ size_t up_scales() const { return gate_scales() + align16(size_t(units) * gate_up_scale); }
  __host__ __device__ size_t gate_up_bytes() const { return up_scales() + align16(size_t(units) * gate_up_scale); }
  __host__ __device__ size_t down_rows(int k) const { return size_t(k) * dims * down_row; }
  __host__ __device__ size_t down_scales(int k, int top_k) const {
    return down_rows(top_k) + size_t(k) * align16(size_t(dims) * down_scale);
  }
  __host__ __device__ size_t down_bytes(int top_k) const { return down_scales(top_k, top_k); }
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

// kRowsAtOnce expert rows (with their scales) against their inputs x[j], all in shared memory:
// y[j] = the warp's dot product of row j and x[j] (moe.cu's order: lane l takes units l, l + 32, ...).
template <ExpertFormat F>
__device__ __forceinline__ void expert_dots_shared(const unsigned char* const (&rows)[kRowsAtOnce],
                                                   const uint8_t* const (&scales)[kRowsAtOnce], int cols,
                                                   const bf16* const (&x)[kRowsAtOnce], float (&y)[kRowsAtOnce]) {
  using Unit = ExpertUnit<F>;
  constexpr int V = Unit::kValues, Groups = V / 8;
  const int lane = threadIdx.x % 32;
  float acc[kRowsAtOnce] = {};
  for (int u = lane; u < cols / V; u += 32) {
#pragma unroll
    for (int j = 0; j < kRowsAtOnce; ++j) {
      uint4 xg[Groups];
#pragma unroll
      for (int g = 0; g < Groups; ++g) xg[g] = reinterpret_cast<const uint4*>(x[j] + size_t(u) * V)[g];
      acc[j] = fmaf(Unit::scale(scales[j], u), Unit::dot(reinterpret_cast<const uint4*>(rows[j])[u], xg), acc[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < kRowsAtOnce; ++j) y[j] = warp_sum(acc[j]);
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

template <int D, int G, ExpertFormat F>
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
  const Share router = share_of(a.num_experts, B, blockIdx.x), units = share_of(K * W, B, blockIdx.x);
  const ExpertSlices ex(a, B);
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

    // F: every block routes for itself, copies its gate/up units and its down rows, multiplies the
    // units; then the next layer's q/k/v rows on their way.
    if (warp == 0) {
      int e;
      float weight;
      pick_experts<false>(a.logits, a.num_experts, K, a.rule, lane, e, weight);
      if (lane < K) pick_expert[lane] = e, pick_weight[lane] = weight;
    }
    __syncthreads();
    mark(layer, 20);
    for (int u = units.begin; u < units.begin + units.count;) {  // a run of units of one pick
      const int k = u / W, i = u % W, n = min(units.begin + units.count, (k + 1) * W) - u, j = u - units.begin;
      const size_t gate = size_t(pick_expert[k]) * 2 * W + i, up = gate + W;
      const Landing& l = front_landing;
      copy_to_shared(l, front + j * ex.gate_up_row, w.gate_up + gate * ex.gate_up_row, n * ex.gate_up_row);
      copy_to_shared(l, front + ex.up_rows() + j * ex.gate_up_row, w.gate_up + up * ex.gate_up_row, n * ex.gate_up_row);
      if (ex.gate_up_scale) {
        copy_to_shared(l, front + ex.gate_scales() + j * ex.gate_up_scale, w.gate_up_scales + gate * ex.gate_up_scale,
                       n * ex.gate_up_scale);
        copy_to_shared(l, front + ex.up_scales() + j * ex.gate_up_scale, w.gate_up_scales + up * ex.gate_up_scale,
                       n * ex.gate_up_scale);
      }
      u += n;
    }
    finish_copies(front_landing);
    for (int k = 0; k < K; ++k) {
      const size_t first = size_t(pick_expert[k]) * H + rows.begin;
      copy_to_shared(back_landing, back + ex.down_rows(k), w.down + first * ex.down_row, rows.count * ex.down_row);
      if (ex.down_scale)
        copy_to_shared(back_landing, back + ex.down_scales(k, K), w.down_scales + first * ex.down_scale,
                       rows.count * ex.down_scale);
    }
    finish_copies(back_landing);
    mark(layer, 17);
    wait_for_landing(front_landing);
    wait_for_async_copies<1>();  // the gate/up units; the down rows may still be on their way
    __syncthreads();
    mark(layer, 18);
    for (int base = warp; base < units.count; base += 2 * kWarps) {  // two units (four rows) at once
      const int j0 = base, j1 = min(base + kWarps, units.count - 1);
      const unsigned char* const rows_of[kRowsAtOnce] = {
          front + j0 * ex.gate_up_row, front + ex.up_rows() + j0 * ex.gate_up_row, front + j1 * ex.gate_up_row,
          front + ex.up_rows() + j1 * ex.gate_up_row};
      const uint8_t* const scales_of[kRowsAtOnce] = {
          front + ex.gate_scales() + j0 * ex.gate_up_scale, front + ex.up_scales() + j0 * ex.gate_up_scale,
          front + ex.gate_scales() + j1 * ex.gate_up_scale, front + ex.up_scales() + j1 * ex.gate_up_scale};
      const bf16* const inputs[kRowsAtOnce] = {vector_s, vector_s, vector_s, vector_s};
      float y[kRowsAtOnce];
      expert_dots_shared<F>(rows_of, scales_of, H, inputs, y);
      if (lane == 0) {
        a.act[units.begin + j0] = __float2bfloat16(y[0] / (1.0f + __expf(-y[0])) * y[1]);
        if (base + kWarps < units.count) a.act[units.begin + j1] = __float2bfloat16(y[2] / (1.0f + __expf(-y[2])) * y[3]);
      }
    }
    __syncthreads();
    if (layer + 1 < a.num_layers) {
      copy_qkv(layer + 1);
    } else {
      commit_async_copies();  // an empty group: the waits count groups
    }
    stage_end(layer, 11);

    // G: x[its dims] += the routing-weighted sum of the picks' down rows . act.
    wait_for_landing(back_landing);
    wait_for_async_copies<1>();  // the down rows; the next q/k/v rows may still be on their way
    mark(layer, 19);
    load_vector_to_shared(a.act, size_t(K) * W * 2, vector_s);
    for (int j = warp; j < rows.count; j += kWarps) {
      float v = __ldcg(a.x + rows.begin + j);
      for (int k0 = 0; k0 < K; k0 += kRowsAtOnce) {  // kRowsAtOnce picks at once; past K: the last again
        const unsigned char* rows_of[kRowsAtOnce];
        const uint8_t* scales_of[kRowsAtOnce];
        const bf16* inputs[kRowsAtOnce];
#pragma unroll
        for (int i = 0; i < kRowsAtOnce; ++i) {
          const int k = min(k0 + i, K - 1);
          rows_of[i] = back + ex.down_rows(k) + j * ex.down_row;
          scales_of[i] = back + ex.down_scales(k, K) + j * ex.down_scale;
          inputs[i] = vector_s + k * W;
        }
        float y[kRowsAtOnce];
        expert_dots_shared<F>(rows_of, scales_of, W, inputs, y);
#pragma unroll
        for (int i = 0; i < kRowsAtOnce; ++i)
          if (k0 + i < K) v = fmaf(pick_weight[k0 + i], y[i], v);
      }
      if (lane == 0) a.x[rows.begin + j] = v;
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
  return with_heads(a.heads.head_dim, a.heads.q_heads / a.heads.kv_heads, [&](auto d, auto g) {
    f(decode_step_kernel<decltype(d)::value, decltype(g)::value, ExpertFormat::bf16>);
  });
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
  if (a.experts != ExpertFormat::bf16)
    return no("experts: bf16 only (MXFP4 experts are stored as tensor-core tiles, gpu/expert_tiles.h, which the step "
              "does not read)");
  if (a.hidden % 8 || a.width % 8 || a.hidden > 4 * kMaxNormVectors * kThreads)
    return no("experts: hidden and width must be multiples of 8, hidden at most 8192");
  if (a.scratch.splits < 1 || a.scratch.splits * h.kv_heads > multiprocessors)
    return no("attention: more (kv head, split) items than blocks");

  const int B = multiprocessors, H = a.hidden, q_dim = h.q_heads * h.head_dim, kv_dim = h.kv_heads * h.head_dim;
  const ExpertSlices ex(a, B);
  const size_t front = std::max({size_t(max_share(q_dim + 2 * kv_dim, B)) * H * 2,
                                 size_t(max_share(H, B)) * q_dim * 2, size_t(max_share(a.num_experts, B)) * H * 2,
                                 ex.gate_up_bytes()});
  const size_t back = std::max(ex.down_bytes(a.top_k), tile_bytes);
  const size_t vector = std::max({size_t(H), size_t(q_dim), size_t(a.top_k) * a.width}) * 2;
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
