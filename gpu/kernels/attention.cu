// Attention over a paged KV cache. Per layer:
//   qk_norm_rope_store  q/k per-head RMS norm and rotary embedding; k and v into the cache
//   paged_attention     each (row, kv head, split) block: the row's query heads of that kv head
//                       against its share of the context, tile by tile through shared memory
//   combine             the partials of a row cut into a few splits, merged into its output
// A row whose context fits one split is written by its block. A long context's splits are many
// (more than GpuModelOptions::attention_combine_max_splits): the last of its blocks to finish
// merges their partials, leaving the combine nothing to do. Measured on the H200 (docs/perf.md):
// at 4096 tokens of context that made a decode step 11% cheaper, while for a few splits the
// fence, atomic and re-read cost more than the combine kernel.
// Decode, prefill chunks and speculative verification are the same computation: every row
// attends to positions [0, kv_end), all of which are in the cache by then (kv_end = position + 1:
// causal; a DFlash draft's block rows see their whole block). A sliding-window layer's row sees
// only the last `window` of them, read from its sequence's ring; a ring holds window + 64 slots,
// so the up to 64 rows a pass stores per sequence never overwrite a position a row still reads.

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

// Where position `position` of a table's sequence lives in the layer: the start of its block (or
// ring) plus the layer's offset, and its slot in there.
struct CacheSlot {
  size_t base;
  int slot;
};
__device__ __forceinline__ CacheSlot cache_slot(const KvLayout& kv, int table, int position) {
  const size_t entry =
      kv.window ? size_t(table) : size_t(table) * kv.max_blocks_per_table + position / kv.block_size;
  return {size_t(kv.tables[entry]) * kv.block_stride + kv.layer_offset, position % kv.block_size};
}
__device__ __forceinline__ size_t key_offset(const KvLayout& kv, CacheSlot c) {
  return c.base + size_t(c.slot) * kv.k_width;
}
__device__ __forceinline__ size_t value_offset(const KvLayout& kv, CacheSlot c) {
  return c.base + size_t(kv.block_size) * kv.k_width + size_t(c.slot) * kv.v_width;
}
// The first position a row ending at kv_end sees.
__device__ __forceinline__ int context_begin(const KvLayout& kv, int kv_end) {
  return kv.window ? max(0, kv_end - kv.window) : 0;
}

// ---- q/k norm, RoPE, cache store ----------------------------------------------------------------
// One warp per head; lane l owns dims l + 32 j. When RoPE turns the whole head and D is a power of
// two, the rotate-half partner of a dim (d +- D/2) is in the same lane, or for D <= 32 in lane
// l ^ D/2; otherwise (Partial: partial RoPE, or D = 24, 48, 192) it is read back from the warp's
// copy of the head in shared memory. A template argument, so that Qwen3's heads pay nothing for
// MiMo-V2's (the run-time choice cost the 30B-A3B decode step 0.6 us a layer on the H200).
constexpr int kHeadsPerBlock = 8;

template <int D, bool Partial>
__global__ void __launch_bounds__(kHeadsPerBlock * 32)
    qk_norm_rope_store_kernel(const float* qkv, const float* q_norm, const float* k_norm, float eps, RopeTable rope,
                              float value_scale, HeadShape h, AttentionRows rows, KvLayout kv, float* q_out) {
  constexpr int P = (D + 31) / 32;
  __shared__ float head_s[Partial ? kHeadsPerBlock : 1][Partial ? D : 1];
  wait_for_previous_kernel();
  allow_next_kernel();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int head = blockIdx.y * kHeadsPerBlock + warp;
  const int row = blockIdx.x;
  if (head < h.q_heads + 2 * h.kv_heads) {
    const bool is_q = head < h.q_heads, is_k = !is_q && head < h.q_heads + h.kv_heads, is_v = !is_q && !is_k;
    const int width = is_v ? h.v_head_dim : D;
    const int value_head = head - h.q_heads - h.kv_heads;
    const size_t row_width = size_t(h.q_heads + h.kv_heads) * D + size_t(h.kv_heads) * h.v_head_dim;
    const float* src = qkv + row * row_width +
                       (is_v ? size_t(h.q_heads + h.kv_heads) * D + size_t(value_head) * h.v_head_dim : size_t(head) * D);
    float v[P];
#pragma unroll
    for (int j = 0; j < P; ++j) v[j] = lane + 32 * j < width ? src[lane + 32 * j] : 0.0f;
    const int position = rows.positions[row];
    if (is_v) {
#pragma unroll
      for (int j = 0; j < P; ++j) v[j] *= value_scale;
    } else {
      if (const float* w = is_q ? q_norm : k_norm) {
        float squares = 0;
#pragma unroll
        for (int j = 0; j < P; ++j) squares += v[j] * v[j];
        const float scale = rsqrtf(warp_sum(squares) / D + eps);
#pragma unroll
        for (int j = 0; j < P; ++j) v[j] = lane + 32 * j < D ? v[j] * scale * w[lane + 32 * j] : 0.0f;
      }
      float partner[P];
      if constexpr (!Partial) {
#pragma unroll
        for (int j = 0; j < P; ++j) partner[j] = P >= 2 ? v[(j + P / 2) % P] : __shfl_xor_sync(0xffffffffu, v[j], D / 2);
      } else {
#pragma unroll
        for (int j = 0; j < P; ++j)
          if (lane + 32 * j < D) head_s[warp][lane + 32 * j] = v[j];
        __syncwarp();
        const int half = rope.rotary_dim / 2;
#pragma unroll
        for (int j = 0; j < P; ++j) {
          const int d = lane + 32 * j;
          partner[j] = d < rope.rotary_dim ? head_s[warp][d < half ? d + half : d - half] : 0.0f;
        }
      }
      const int half = rope.rotary_dim / 2;
#pragma unroll
      for (int j = 0; j < P; ++j) {
        const int d = lane + 32 * j;
        if (d >= rope.rotary_dim) continue;
        const bool low = d < half;
        float sin_a, cos_a;
        sincosf(static_cast<float>(position) * rope.inv_freq[low ? d : d - half], &sin_a, &cos_a);
        v[j] = low ? v[j] * cos_a - partner[j] * sin_a : v[j] * cos_a + partner[j] * sin_a;
      }
    }
    if (is_q) {
      float* dst = q_out + static_cast<size_t>(row) * h.q_heads * D + static_cast<size_t>(head) * D;
#pragma unroll
      for (int j = 0; j < P; ++j)
        if (lane + 32 * j < D) dst[lane + 32 * j] = v[j];
    } else {
      const CacheSlot slot = cache_slot(kv, rows.table_of[row], position);
      bf16* dst = kv.cache + (is_k ? key_offset(kv, slot) + size_t(head - h.q_heads) * D
                                   : value_offset(kv, slot) + size_t(value_head) * h.v_head_dim);
#pragma unroll
      for (int j = 0; j < P; ++j)
        if (lane + 32 * j < width) dst[lane + 32 * j] = __float2bfloat16(v[j]);
    }
  }
}

// P consecutive bf16 values (2 P bytes, aligned to that) as floats.
template <int P>
__device__ __forceinline__ void load_bf16(const bf16* src, float out[P]) {
  if constexpr (P % 8 == 0) {
#pragma unroll
    for (int i = 0; i < P / 8; ++i) bf16x8_to_float(reinterpret_cast<const uint4*>(src)[i], out + 8 * i);
  } else if constexpr (P == 4) {
    const uint2 raw = *reinterpret_cast<const uint2*>(src);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
  } else if constexpr (P == 2) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(src));
    out[0] = a.x, out[1] = a.y;
  } else {
    static_assert(P == 1);
    out[0] = __bfloat162float(*src);
  }
}

// 16 bytes from global to shared memory without passing through registers (cp.async, through L2
// only): a thread issues all of a tile's copies before it waits for any.
__device__ __forceinline__ void copy_16_bytes_async(void* shared_dst, const void* global_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(global_src) : "memory");
}
__device__ __forceinline__ void commit_async_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most `Pending` of this thread's committed groups of copies are still in flight.
template <int Pending>
__device__ __forceinline__ void wait_for_async_copies() {
  asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
}

// ---- attention ----------------------------------------------------------------------------------
// A block (row, kv head, split) walks its share of the context a tile of positions at a time:
// the tile's keys and values are copied into shared memory all at once (one memory round trip
// for the whole tile, where a warp walking 32 positions at a time waited out a chain of them per
// step: 13.8 us a layer at 129 positions on the H200); the scores are computed while the values
// still land. For the weighted sum a thread takes a few value dims of every query head over
// some of the tile's positions, so each value is read from shared memory once for all G heads;
// those sums are added up at the end. The softmax is online across tiles, and the next tile's
// cache addresses are looked up while this tile's copies fly.
template <int DK, int DV, int G>
struct AttentionTile {
  static constexpr int kThreads = 256;  // at least 1 block an SM, said to ptxas: without it, it spilled
  static constexpr int kPositions = DK + DV <= 256 ? 128 : 64;  // keeps a tile's shared memory near 80 KB
  // A key row padded by 16 bytes: the lanes of a warp, reading the same 16-byte chunk of
  // consecutive rows, then fall in different banks.
  static constexpr int kKeyStride = DK + 8;
  static constexpr int kThreadsPerPosition = kThreads / kPositions;
  static constexpr int kScoresPerThread = (G + kThreadsPerPosition - 1) / kThreadsPerPosition;
  // The weighted sum: thread (position group, dim chunk) sums positions group, group +
  // kPositionGroups, ... over dims [chunk * kSumDims, + kSumDims) of every head.
  static constexpr int kSumDims = DV < (G >= 32 ? 1 : 32 / G) ? DV : (G >= 32 ? 1 : 32 / G);
  static constexpr int kDimChunks = DV / kSumDims, kPositionGroups = kThreads / kDimChunks;
  // The output: thread tid owns dims [tid * kDimsPerThread, + kDimsPerThread) of [G][DV].
  static constexpr int kDimsPerThread = G * DV >= kThreads ? G * DV / kThreads : 1;
  static constexpr int kOutputThreads = G * DV / kDimsPerThread;
  // Dynamic shared memory: [q: G][DK] floats, [scores: G][kPositions] and [weights:
  // kPositions][G] floats, then the keys [kPositions][kKeyStride] and values [kPositions][DV],
  // bf16, whose room the position groups' sums [kPositionGroups][G][DV] take at the end.
  static constexpr size_t kQueryBytes = size_t(G) * DK * 4, kScoreBytes = size_t(G) * kPositions * 4;
  static constexpr size_t kKeyBytes = size_t(kPositions) * kKeyStride * 2, kValueBytes = size_t(kPositions) * DV * 2;
  static constexpr size_t kSumBytes = size_t(kPositionGroups) * G * DV * 4;
  static constexpr size_t kSharedBytes =
      kQueryBytes + 2 * kScoreBytes + (kKeyBytes + kValueBytes > kSumBytes ? kKeyBytes + kValueBytes : kSumBytes);
  static_assert(DK % 8 == 0 && DV % 8 == 0, "rows are copied 16 bytes at a time");
  static_assert(kThreads % kPositions == 0 && DV % kDimsPerThread == 0);
  static_assert(DV % kSumDims == 0 && kThreads % kDimChunks == 0);
};

// Where a tile's positions live in the cache: each thread below kPositions looks up one.
template <int DK, int DV, int G>
__device__ __forceinline__ void locate_tile(const KvLayout& kv, int table, int kv_head, int tile_begin, int end,
                                            size_t* key_at, size_t* value_at) {
  const int t = threadIdx.x;
  if (t < AttentionTile<DK, DV, G>::kPositions && tile_begin + t < end) {
    const CacheSlot slot = cache_slot(kv, table, tile_begin + t);
    key_at[t] = key_offset(kv, slot) + size_t(kv_head) * DK;
    value_at[t] = value_offset(kv, slot) + size_t(kv_head) * DV;
  }
}

template <int DK, int DV, int G>
__global__ void __launch_bounds__(AttentionTile<DK, DV, G>::kThreads, 1)
    attention_kernel(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                     AttentionScratch scratch, bf16* out) {
  using Tile = AttentionTile<DK, DV, G>;
  constexpr int T = Tile::kPositions, R = Tile::kDimsPerThread;
  extern __shared__ __align__(16) unsigned char tile_memory[];
  float(*q_s)[DK] = reinterpret_cast<float(*)[DK]>(tile_memory);
  float(*score_s)[T] = reinterpret_cast<float(*)[T]>(tile_memory + Tile::kQueryBytes);
  float(*weight_s)[G] = reinterpret_cast<float(*)[G]>(tile_memory + Tile::kQueryBytes + Tile::kScoreBytes);
  bf16* key_s = reinterpret_cast<bf16*>(tile_memory + Tile::kQueryBytes + 2 * Tile::kScoreBytes);
  bf16* value_s = key_s + T * Tile::kKeyStride;
  __shared__ size_t key_at[2][T], value_at[2][T];  // this tile's cache offsets and the next one's
  __shared__ float run_m[G], run_l[G], correction_s[G];
  __shared__ bool merges_all;

  const int row = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // Before the wait: rows and block tables are copied in ahead of a pass's first kernel, and a
  // kernel starts only once the one before it has passed its own wait, so no kernel it could
  // overlap writes them. The first tile's addresses are looked up while the previous kernel drains.
  const int last = rows.kv_end[row];
  const int first = context_begin(kv, last);
  const int table = rows.table_of[row];
  const int length = last - first;
  const int chunk = max((length + scratch.splits - 1) / scratch.splits, scratch.min_split_positions);
  const int used_splits = (length + chunk - 1) / chunk;
  const int begin = first + split * chunk, end = min(last, begin + chunk);
  if (begin >= end) return;  // a split past the context: nothing waits for it
  locate_tile<DK, DV, G>(kv, table, kv_head, begin, end, key_at[0], value_at[0]);

  wait_for_previous_kernel();
  allow_next_kernel();
  const float softmax_scale = rsqrtf(static_cast<float>(DK));
  const float4* q4 = reinterpret_cast<const float4*>(q + static_cast<size_t>(row) * h.q_heads * DK +
                                                     static_cast<size_t>(kv_head) * G * DK);
  for (int i = tid; i < G * DK / 4; i += Tile::kThreads) {
    const float4 v = q4[i];
    reinterpret_cast<float4*>(&q_s[0][0])[i] =
        make_float4(v.x * softmax_scale, v.y * softmax_scale, v.z * softmax_scale, v.w * softmax_scale);
  }
  if (tid < G) run_m[tid] = -FLT_MAX, run_l[tid] = 0;
  __syncthreads();

  // The output dims this thread owns: [d0, d0 + R) of query head g_out (threads past
  // kOutputThreads own none).
  const bool owns_output = tid < Tile::kOutputThreads;
  const int g_out = owns_output ? tid * R / DV : 0, d0 = owns_output ? tid * R % DV : 0;
  constexpr int RS = Tile::kSumDims, PG = Tile::kPositionGroups;
  const int sum_dims = tid % Tile::kDimChunks * RS, position_group = tid / Tile::kDimChunks;
  float sums[G][RS];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int i = 0; i < RS; ++i) sums[g][i] = 0;

  for (int tile_begin = begin, parity = 0; tile_begin < end; tile_begin += T, parity ^= 1) {
    const int n = min(T, end - tile_begin);
    for (int i = tid; i < n * (DK / 8); i += Tile::kThreads) {
      const int t = i / (DK / 8), c = i % (DK / 8);
      copy_16_bytes_async(key_s + t * Tile::kKeyStride + c * 8, kv.cache + key_at[parity][t] + c * 8);
    }
    commit_async_copies();
    for (int i = tid; i < n * (DV / 8); i += Tile::kThreads) {
      const int t = i / (DV / 8), c = i % (DV / 8);
      copy_16_bytes_async(value_s + t * DV + c * 8, kv.cache + value_at[parity][t] + c * 8);
    }
    commit_async_copies();
    locate_tile<DK, DV, G>(kv, table, kv_head, tile_begin + T, end, key_at[parity ^ 1], value_at[parity ^ 1]);
    wait_for_async_copies<1>();  // the keys; the values may still be on their way
    __syncthreads();

    {  // scores: position t against query heads g0, g0 + kThreadsPerPosition, ...
      const int t = tid % T, g0 = tid / T;
      float s[Tile::kScoresPerThread] = {};
      const uint4* key = reinterpret_cast<const uint4*>(key_s + t * Tile::kKeyStride);
#pragma unroll
      for (int c = 0; c < DK / 8; ++c) {
        float k8[8];
        bf16x8_to_float(key[c], k8);
#pragma unroll
        for (int j = 0; j < Tile::kScoresPerThread; ++j) {
          const int g = min(g0 + j * Tile::kThreadsPerPosition, G - 1);  // a head past G: scored, not kept
          const float4 qa = *reinterpret_cast<const float4*>(&q_s[g][c * 8]);
          const float4 qb = *reinterpret_cast<const float4*>(&q_s[g][c * 8 + 4]);
          s[j] = fmaf(qa.x, k8[0], fmaf(qa.y, k8[1], fmaf(qa.z, k8[2], fmaf(qa.w, k8[3], s[j]))));
          s[j] = fmaf(qb.x, k8[4], fmaf(qb.y, k8[5], fmaf(qb.z, k8[6], fmaf(qb.w, k8[7], s[j]))));
        }
      }
#pragma unroll
      for (int j = 0; j < Tile::kScoresPerThread; ++j) {
        const int g = g0 + j * Tile::kThreadsPerPosition;
        if (g < G) score_s[g][t] = t < n ? s[j] : -FLT_MAX;
      }
    }
    __syncthreads();

    // The online softmax, a warp per query head: the tile's scores become weights against the
    // running maximum, and the running sum and the accumulators are rescaled to it.
    for (int g = warp; g < G; g += Tile::kThreads / 32) {
      float s[T / 32], top = -FLT_MAX;
#pragma unroll
      for (int j = 0; j < T / 32; ++j) top = fmaxf(top, s[j] = score_s[g][lane + 32 * j]);
      const float m_new = fmaxf(run_m[g], warp_max(top));
      float sum = 0;
#pragma unroll
      for (int j = 0; j < T / 32; ++j) {
        const float p = __expf(s[j] - m_new);
        weight_s[lane + 32 * j][g] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float correction = __expf(run_m[g] - m_new);
        correction_s[g] = correction;
        run_l[g] = run_l[g] * correction + sum;
        run_m[g] = m_new;
      }
    }
    wait_for_async_copies<0>();
    __syncthreads();

    // The weighted sum of this group's positions of the tile, rescaled to the running maxima.
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float correction = correction_s[g];
#pragma unroll
      for (int i = 0; i < RS; ++i) sums[g][i] *= correction;
    }
#pragma unroll 2
    for (int t = position_group; t < n; t += PG) {
      float v[RS];
      load_bf16<RS>(value_s + t * DV + sum_dims, v);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float p = weight_s[t][g];
#pragma unroll
        for (int i = 0; i < RS; ++i) sums[g][i] = fmaf(p, v[i], sums[g][i]);
      }
    }
    __syncthreads();  // the next tile's copies overwrite keys, values and weights
  }

  // The position groups' sums added up: each thread's output dims.
  float* group_sums = reinterpret_cast<float*>(key_s);  // [PG][G][DV], where the keys and values were
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int i = 0; i < RS; ++i) group_sums[(position_group * G + g) * DV + sum_dims + i] = sums[g][i];
  __syncthreads();
  float acc[R] = {};
  if (owns_output)
    for (int pg = 0; pg < PG; ++pg)
#pragma unroll
      for (int i = 0; i < R; ++i) acc[i] += group_sums[(pg * G + g_out) * DV + d0 + i];

  bf16* row_out = out + static_cast<size_t>(row) * h.q_heads * DV + static_cast<size_t>(kv_head) * G * DV;
  if (used_splits == 1) {  // the whole context in this block: normalize and write
    if (owns_output) {
      const float m = run_m[g_out], sink = sinks ? sinks[kv_head * G + g_out] : -FLT_MAX, top = fmaxf(m, sink);
      const float scale = __expf(m - top);
      const float total = run_l[g_out] * scale + (sinks ? __expf(sink - top) : 0.0f);
#pragma unroll
      for (int i = 0; i < R; ++i) row_out[g_out * DV + d0 + i] = __float2bfloat16(acc[i] * scale / total);
    }
    return;
  }

  // The block's partial: [m, l, acc[DV]] per query head, at its split.
  const size_t row_head = static_cast<size_t>(row) * h.kv_heads + kv_head;
  constexpr size_t kPartial = size_t(G) * (DV + 2);
  float* row_partials = scratch.partial + row_head * scratch.splits * kPartial;
  float* mine = row_partials + split * kPartial + g_out * (DV + 2);
  if (owns_output) {
    if (d0 == 0) mine[0] = run_m[g_out], mine[1] = run_l[g_out];
#pragma unroll
    for (int i = 0; i < R; ++i) mine[2 + d0 + i] = acc[i];
  }
  if (used_splits <= scratch.combine_max_splits) return;  // the combine kernel merges this row

  // The last block of the row to arrive merges every split's partial, each made visible by a
  // fence before its arrival is counted.
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    merges_all = atomicAdd(&scratch.arrivals[row_head], 1u) == unsigned(used_splits - 1);
    if (merges_all) scratch.arrivals[row_head] = 0;  // ready for the next layer's kernel
  }
  __syncthreads();
  if (!merges_all) return;
  __threadfence();
  if (tid < G) {  // each head's maximum and softmax sum over all the splits (reusing run_m, run_l)
    const int g = tid;
    const float sink = sinks ? sinks[kv_head * G + g] : -FLT_MAX;
    float top = sink;
    for (int sp = 0; sp < used_splits; ++sp) top = fmaxf(top, __ldcg(row_partials + sp * kPartial + g * (DV + 2)));
    float total = sinks ? __expf(sink - top) : 0.0f;
    for (int sp = 0; sp < used_splits; ++sp) {
      const float* part = row_partials + sp * kPartial + g * (DV + 2);
      total += __ldcg(part + 1) * __expf(__ldcg(part) - top);
    }
    run_m[g] = top, run_l[g] = total;
  }
  __syncthreads();
  for (int o = tid; o < G * DV; o += Tile::kThreads) {
    const int g = o / DV, d = o % DV;
    float sum = 0;
#pragma unroll 8
    for (int sp = 0; sp < used_splits; ++sp) {
      const float* part = row_partials + sp * kPartial + g * (DV + 2);
      sum += __ldcg(part + 2 + d) * __expf(__ldcg(part) - run_m[g]);
    }
    row_out[o] = __float2bfloat16(sum / run_l[g]);
  }
}

// One block per (row, query head), one thread per value dim, for rows of 2 to combine_max_splits
// splits (the attention kernel wrote the others itself). A sink joins the softmax's denominator only.
template <int DV, int G>
__global__ void combine_kernel(HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                               AttentionScratch scratch, bf16* out) {
  // Every block waits, even one with nothing to do: the next kernel's wait covers the attention
  // kernel only through this one's.
  wait_for_previous_kernel();
  allow_next_kernel();
  // Only the splits that had positions wrote anything (the attention kernel's arithmetic).
  const int row = blockIdx.x, q_head = blockIdx.y;
  const int length = rows.kv_end[row] - context_begin(kv, rows.kv_end[row]);
  const int chunk = max((length + scratch.splits - 1) / scratch.splits, scratch.min_split_positions);
  const int used_splits = (length + chunk - 1) / chunk;
  if (used_splits == 1 || used_splits > scratch.combine_max_splits) return;
  const int kv_head = q_head / G, g = q_head % G;
  const size_t stride = static_cast<size_t>(G) * (DV + 2);
  const float* base = scratch.partial + (static_cast<size_t>(row) * h.kv_heads + kv_head) * scratch.splits * stride +
                      g * (DV + 2);
  const float sink = sinks ? sinks[q_head] : -FLT_MAX;
  float m = sink;
#pragma unroll 8
  for (int p = 0; p < used_splits; ++p) m = fmaxf(m, base[p * stride]);
  float l = sinks ? __expf(sink - m) : 0.0f, acc = 0;
  const int d = threadIdx.x;
#pragma unroll 8
  for (int p = 0; p < used_splits; ++p) {
    const float* part = base + p * stride;
    const float w = __expf(part[0] - m);
    l += part[1] * w;
    if (d < DV) acc += part[2 + d] * w;
  }
  if (d < DV)
    out[static_cast<size_t>(row) * h.q_heads * DV + static_cast<size_t>(q_head) * DV + d] = __float2bfloat16(acc / l);
}


template <int D>
void dispatch_qk(const float* qkv, const float* q_norm, const float* k_norm, float eps, RopeTable rope,
                 float value_scale, HeadShape h, AttentionRows rows, KvLayout kv, float* q_out, cudaStream_t s) {
  const dim3 grid(rows.rows, (h.q_heads + 2 * h.kv_heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  if constexpr ((D & (D - 1)) == 0) {  // a power of two: the register path when RoPE turns the whole head
    if (rope.rotary_dim == D)
      return launch(qk_norm_rope_store_kernel<D, false>, grid, kHeadsPerBlock * 32, 0, s, qkv, q_norm, k_norm, eps,
                    rope, value_scale, h, rows, kv, q_out);
  }
  launch(qk_norm_rope_store_kernel<D, true>, grid, kHeadsPerBlock * 32, 0, s, qkv, q_norm, k_norm, eps, rope,
         value_scale, h, rows, kv, q_out);
}

template <int DK, int DV, int G>
void dispatch_attention(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                        AttentionScratch scratch, bf16* out, cudaStream_t s) {
  using Tile = AttentionTile<DK, DV, G>;
  static const bool shared_memory_granted = [] {  // above the 48 KB a kernel gets unasked
    ULTRASERVE_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<DK, DV, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(Tile::kSharedBytes)));
    return true;
  }();
  (void)shared_memory_granted;
  launch(attention_kernel<DK, DV, G>, dim3(rows.rows, h.kv_heads, scratch.splits), Tile::kThreads, Tile::kSharedBytes,
         s, q, h, rows, kv, sinks, scratch, out);
  launch(combine_kernel<DV, G>, dim3(rows.rows, h.q_heads), DV < 32 ? 32 : DV, 0, s, h, rows, kv, sinks, scratch, out);
}

template <int DK, int DV>
void dispatch_group(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                    AttentionScratch scratch, bf16* out, cudaStream_t s) {
  switch (h.q_heads / h.kv_heads) {
    case 1: return dispatch_attention<DK, DV, 1>(q, h, rows, kv, sinks, scratch, out, s);
    case 2: return dispatch_attention<DK, DV, 2>(q, h, rows, kv, sinks, scratch, out, s);
    case 4: return dispatch_attention<DK, DV, 4>(q, h, rows, kv, sinks, scratch, out, s);
    case 8: return dispatch_attention<DK, DV, 8>(q, h, rows, kv, sinks, scratch, out, s);
    case 16: return dispatch_attention<DK, DV, 16>(q, h, rows, kv, sinks, scratch, out, s);
    default: throw GpuError("attention: query heads per kv head must be 1, 2, 4, 8 or 16");
  }
}

// The head shapes built: Qwen3's equal query/key and value widths, MiMo-V2's 192/128, and those
// of the MiMo-V2 test configs.
constexpr const char* kBuiltHeads = "8, 16, 32, 64, 128, 256 (equal widths) and 24/16, 32/16, 48/32, 192/128";

[[noreturn]] void unsupported_heads(const HeadShape& h) {
  throw GpuError("attention: head dims " + std::to_string(h.head_dim) + "/" + std::to_string(h.v_head_dim) +
                 " not built (" + kBuiltHeads + " are)");
}

}  // namespace

void qk_norm_rope_store(const float* qkv, const float* q_norm, const float* k_norm, float eps, RopeTable rope,
                        float value_scale, HeadShape h, AttentionRows rows, KvLayout kv, float* q_out, cudaStream_t s) {
  if (h.v_head_dim > h.head_dim || rope.rotary_dim > h.head_dim || rope.rotary_dim % 2) unsupported_heads(h);
  switch (h.head_dim) {
#define ULTRASERVE_QK_CASE(D) \
  case D: return dispatch_qk<D>(qkv, q_norm, k_norm, eps, rope, value_scale, h, rows, kv, q_out, s);
    ULTRASERVE_QK_CASE(8) ULTRASERVE_QK_CASE(16) ULTRASERVE_QK_CASE(24) ULTRASERVE_QK_CASE(32) ULTRASERVE_QK_CASE(48)
    ULTRASERVE_QK_CASE(64) ULTRASERVE_QK_CASE(128) ULTRASERVE_QK_CASE(192) ULTRASERVE_QK_CASE(256)
#undef ULTRASERVE_QK_CASE
    default: unsupported_heads(h);
  }
}

void paged_attention(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                     AttentionScratch scratch, bf16* out, cudaStream_t s) {
  const auto is = [&](int dk, int dv) { return h.head_dim == dk && h.v_head_dim == dv; };
  if (is(8, 8)) return dispatch_group<8, 8>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(16, 16)) return dispatch_group<16, 16>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(32, 32)) return dispatch_group<32, 32>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(64, 64)) return dispatch_group<64, 64>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(128, 128)) return dispatch_group<128, 128>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(256, 256)) return dispatch_group<256, 256>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(24, 16)) return dispatch_group<24, 16>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(32, 16)) return dispatch_group<32, 16>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(48, 32)) return dispatch_group<48, 32>(q, h, rows, kv, sinks, scratch, out, s);
  if (is(192, 128)) return dispatch_group<192, 128>(q, h, rows, kv, sinks, scratch, out, s);
  unsupported_heads(h);
}

int attention_splits(int rows, int kv_heads, int multiprocessors, int max_splits) {
  const int blocks = rows * kv_heads;
  return std::max(1, std::min(max_splits, (2 * multiprocessors + blocks - 1) / blocks));
}

size_t attention_scratch_floats(int rows, HeadShape h, int splits) {
  return static_cast<size_t>(rows) * h.kv_heads * splits * h.q_heads / h.kv_heads * (h.v_head_dim + 2);
}

}  // namespace ultraserve::gpu
