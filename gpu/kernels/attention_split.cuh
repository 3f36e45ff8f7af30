#pragma once
// The attention kernels' building blocks, shared by the kernel per stage (attention.cu) and the
// persistent decode step (decode_step.cu): where a position lives in the paged cache, a block's
// split of a row's context, the tile-by-tile attention over it, the merge of a row's splits, and
// the per-head RMS norm and rotary embedding of queries and keys.

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {

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

// ---- q/k per-head norm and RoPE, a warp per head: lane l holds dims l + 32 j of a D-wide head ----
template <int D, int P>
__device__ __forceinline__ void head_rms_norm(float (&v)[P], const float* weight, float eps, int lane) {
  float squares = 0;
#pragma unroll
  for (int j = 0; j < P; ++j) squares += v[j] * v[j];
  const float scale = rsqrtf(warp_sum(squares) / D + eps);
#pragma unroll
  for (int j = 0; j < P; ++j) v[j] = lane + 32 * j < D ? v[j] * scale * weight[lane + 32 * j] : 0.0f;
}
// Each dim's rotate-half partner (d +- D/2) when D is a power of two: in the same lane, or for
// D <= 32 in lane l ^ D/2.
template <int D, int P>
__device__ __forceinline__ void partners_in_lanes(const float (&v)[P], float (&partner)[P]) {
  static_assert((D & (D - 1)) == 0);
#pragma unroll
  for (int j = 0; j < P; ++j) partner[j] = P >= 2 ? v[(j + P / 2) % P] : __shfl_xor_sync(0xffffffffu, v[j], D / 2);
}
// RoPE (rotate-half) on the dims below rope.rotary_dim, given their partners.
template <int P>
__device__ __forceinline__ void rotate_half(float (&v)[P], const float (&partner)[P], const RopeTable& rope,
                                            int position, int lane) {
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

// ---- attention, tile by tile ---------------------------------------------------------------
// A block (row, kv head, split) walks its share of the context a tile of positions at a time:
// the tile's keys and values are copied into shared memory all at once (one memory round trip
// for the whole tile, where a warp walking 32 positions at a time waited out a chain of them per
// step: 13.8 us a layer at 129 positions on the H200); the scores are computed while the values
// still land. For the weighted sum a thread takes a few value dims of every query head over
// some of the tile's positions, so each value is read from shared memory once for all G heads;
// those sums are added up at the end. The softmax is online across tiles, and the next tile's
// cache addresses are looked up while this tile's copies fly.
// The default tile keeps a tile's shared memory near 80 KB; the persistent decode step, which
// shares its shared memory with weights in flight, takes 64 positions.
template <int DK_, int DV_, int G_, int Positions = DK_ + DV_ <= 256 ? 128 : 64>
struct AttentionTile {
  static constexpr int DK = DK_, DV = DV_, G = G_;
  static constexpr int kThreads = 256;  // at least 1 block an SM, said to ptxas: without it, it spilled
  static constexpr int kPositions = Positions;
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
  // kPositions][G] floats, the cache offsets of this tile's keys and values and of the next
  // tile's [2][2][kPositions], then the keys [kPositions][kKeyStride] and values [kPositions][DV],
  // bf16, whose room the position groups' sums [kPositionGroups][G][DV] take at the end.
  static constexpr size_t kQueryBytes = size_t(G) * DK * 4, kScoreBytes = size_t(G) * kPositions * 4;
  static constexpr size_t kAddressBytes = 4 * size_t(kPositions) * sizeof(size_t);
  static constexpr size_t kKeyBytes = size_t(kPositions) * kKeyStride * 2, kValueBytes = size_t(kPositions) * DV * 2;
  static constexpr size_t kSumBytes = size_t(kPositionGroups) * G * DV * 4;
  static constexpr size_t kSharedBytes = kQueryBytes + 2 * kScoreBytes + kAddressBytes +
                                         (kKeyBytes + kValueBytes > kSumBytes ? kKeyBytes + kValueBytes : kSumBytes);
  static_assert(DK % 8 == 0 && DV % 8 == 0, "rows are copied 16 bytes at a time");
  static_assert(kThreads % kPositions == 0 && DV % kDimsPerThread == 0);
  static_assert(DV % kSumDims == 0 && kThreads % kDimChunks == 0);
};

// A block's view of its tile memory (AttentionTile's layout).
template <class Tile>
struct TileMemory {
  static constexpr int DK = Tile::DK, G = Tile::G, T = Tile::kPositions;
  float (*q)[DK];        // the query heads, times the softmax scale: the caller fills them
  float (*score)[T];
  float (*weight)[G];
  size_t (*key_at)[T];   // [parity][position]
  size_t (*value_at)[T];
  bf16* keys;
  bf16* values;
  __device__ explicit TileMemory(unsigned char* base)
      : q(reinterpret_cast<float (*)[DK]>(base)),
        score(reinterpret_cast<float (*)[T]>(base + Tile::kQueryBytes)),
        weight(reinterpret_cast<float (*)[G]>(base + Tile::kQueryBytes + Tile::kScoreBytes)),
        key_at(reinterpret_cast<size_t (*)[T]>(base + Tile::kQueryBytes + 2 * Tile::kScoreBytes)),
        value_at(key_at + 2),
        keys(reinterpret_cast<bf16*>(base + Tile::kQueryBytes + 2 * Tile::kScoreBytes + Tile::kAddressBytes)),
        values(keys + T * Tile::kKeyStride) {}
};

// A block's share of a row's context: positions [begin, end) of the `used_splits` the row's
// context is cut into (none when begin >= end: a split past the context).
struct ContextSplit {
  int table, begin, end, used_splits;
};
__device__ __forceinline__ ContextSplit context_split(const KvLayout& kv, const AttentionRows& rows,
                                                      const AttentionScratch& scratch, int row, int split) {
  const int last = rows.kv_end[row];
  const int first = context_begin(kv, last);
  const int length = last - first;
  const int chunk = max((length + scratch.splits - 1) / scratch.splits, scratch.min_split_positions);
  const int begin = first + split * chunk;
  return {rows.table_of[row], begin, min(last, begin + chunk), (length + chunk - 1) / chunk};
}

// Where a tile's positions live in the cache: each thread below kPositions looks up one.
template <class Tile>
__device__ __forceinline__ void locate_tile(const KvLayout& kv, int table, int kv_head, int tile_begin, int end,
                                            size_t* key_at, size_t* value_at) {  // [kPositions] each
  const int t = threadIdx.x;
  if (t < Tile::kPositions && tile_begin + t < end) {
    const CacheSlot slot = cache_slot(kv, table, tile_begin + t);
    key_at[t] = key_offset(kv, slot) + size_t(kv_head) * Tile::DK;
    value_at[t] = value_offset(kv, slot) + size_t(kv_head) * Tile::DV;
  }
}

// Block (row, kv head, split)'s attention over its split `s` of the row's context, tile by tile
// (AttentionTile). Before the call the block has put its query heads, times the softmax scale,
// into `tile.q` and looked up the first tile's cache offsets (locate_tile into tile.key_at[0] and
// tile.value_at[0]); every thread of the block calls it. A row of one split is written to `out`,
// else the split's partial to the scratch, merged by the last split to finish when the row has
// more than scratch.combine_max_splits (else combine_head merges them).
template <class Tile>
__device__ void attend_split(const ContextSplit& s, int row, int kv_head, int split, HeadShape h, const KvLayout& kv,
                             const float* sinks, const AttentionScratch& scratch, TileMemory<Tile> tile, bf16* out) {
  constexpr int DK = Tile::DK, DV = Tile::DV, G = Tile::G, T = Tile::kPositions, R = Tile::kDimsPerThread;
  __shared__ float run_m[G], run_l[G], correction_s[G];
  __shared__ bool merges_all;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int table = s.table, begin = s.begin, end = s.end, used_splits = s.used_splits;
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
      copy_16_bytes_async(tile.keys + t * Tile::kKeyStride + c * 8, kv.cache + tile.key_at[parity][t] + c * 8);
    }
    commit_async_copies();
    for (int i = tid; i < n * (DV / 8); i += Tile::kThreads) {
      const int t = i / (DV / 8), c = i % (DV / 8);
      copy_16_bytes_async(tile.values + t * DV + c * 8, kv.cache + tile.value_at[parity][t] + c * 8);
    }
    commit_async_copies();
    locate_tile<Tile>(kv, table, kv_head, tile_begin + T, end, tile.key_at[parity ^ 1], tile.value_at[parity ^ 1]);
    wait_for_async_copies<1>();  // the keys; the values may still be on their way
    __syncthreads();

    {  // scores: position t against query heads g0, g0 + kThreadsPerPosition, ...
      const int t = tid % T, g0 = tid / T;
      float s[Tile::kScoresPerThread] = {};
      const uint4* key = reinterpret_cast<const uint4*>(tile.keys + t * Tile::kKeyStride);
#pragma unroll
      for (int c = 0; c < DK / 8; ++c) {
        float k8[8];
        bf16x8_to_float(key[c], k8);
#pragma unroll
        for (int j = 0; j < Tile::kScoresPerThread; ++j) {
          const int g = min(g0 + j * Tile::kThreadsPerPosition, G - 1);  // a head past G: scored, not kept
          const float4 qa = *reinterpret_cast<const float4*>(&tile.q[g][c * 8]);
          const float4 qb = *reinterpret_cast<const float4*>(&tile.q[g][c * 8 + 4]);
          s[j] = fmaf(qa.x, k8[0], fmaf(qa.y, k8[1], fmaf(qa.z, k8[2], fmaf(qa.w, k8[3], s[j]))));
          s[j] = fmaf(qb.x, k8[4], fmaf(qb.y, k8[5], fmaf(qb.z, k8[6], fmaf(qb.w, k8[7], s[j]))));
        }
      }
#pragma unroll
      for (int j = 0; j < Tile::kScoresPerThread; ++j) {
        const int g = g0 + j * Tile::kThreadsPerPosition;
        if (g < G) tile.score[g][t] = t < n ? s[j] : -FLT_MAX;
      }
    }
    __syncthreads();

    // The online softmax, a warp per query head: the tile's scores become weights against the
    // running maximum, and the running sum and the accumulators are rescaled to it.
    for (int g = warp; g < G; g += Tile::kThreads / 32) {
      float s[T / 32], top = -FLT_MAX;
#pragma unroll
      for (int j = 0; j < T / 32; ++j) top = fmaxf(top, s[j] = tile.score[g][lane + 32 * j]);
      const float m_new = fmaxf(run_m[g], warp_max(top));
      float sum = 0;
#pragma unroll
      for (int j = 0; j < T / 32; ++j) {
        const float p = __expf(s[j] - m_new);
        tile.weight[lane + 32 * j][g] = p;
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
      load_bf16<RS>(tile.values + t * DV + sum_dims, v);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float p = tile.weight[t][g];
#pragma unroll
        for (int i = 0; i < RS; ++i) sums[g][i] = fmaf(p, v[i], sums[g][i]);
      }
    }
    __syncthreads();  // the next tile's copies overwrite keys, values and weights
  }

  // The position groups' sums added up: each thread's output dims.
  float* group_sums = reinterpret_cast<float*>(tile.keys);  // [PG][G][DV], where the keys and values were
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

// The merge of row `row`'s splits for query head `q_head`: thread d of the caller's writes value
// dim d (d < DV). Rows of one split, or of more than scratch.combine_max_splits, were written by
// attend_split. A sink joins the softmax's denominator only.
template <int DV, int G>
__device__ __forceinline__ void combine_head(HeadShape h, const AttentionRows& rows, const KvLayout& kv,
                                             const float* sinks, const AttentionScratch& scratch, int row, int q_head,
                                             int d, bf16* out) {
  // Only the splits that had positions wrote anything (attend_split's arithmetic).
  const int used_splits = context_split(kv, rows, scratch, row, 0).used_splits;
  if (used_splits == 1 || used_splits > scratch.combine_max_splits) return;
  const int kv_head = q_head / G, g = q_head % G;
  const size_t stride = static_cast<size_t>(G) * (DV + 2);
  const float* base = scratch.partial + (static_cast<size_t>(row) * h.kv_heads + kv_head) * scratch.splits * stride +
                      g * (DV + 2);
  const float sink = sinks ? sinks[q_head] : -FLT_MAX;
  float m = sink;
#pragma unroll 8
  for (int p = 0; p < used_splits; ++p) m = fmaxf(m, __ldcg(base + p * stride));
  float l = sinks ? __expf(sink - m) : 0.0f, acc = 0;
#pragma unroll 8
  for (int p = 0; p < used_splits; ++p) {
    const float* part = base + p * stride;
    const float w = __expf(__ldcg(part) - m);
    l += __ldcg(part + 1) * w;
    if (d < DV) acc += __ldcg(part + 2 + d) * w;
  }
  if (d < DV)
    out[static_cast<size_t>(row) * h.q_heads * DV + static_cast<size_t>(q_head) * DV + d] = __float2bfloat16(acc / l);
}

// ---- one-row passes: q/k norm, RoPE and the KV store inside the attention ---------------------
// A row that is alone in its pass attends to the cache and to its own new key only, so the block
// of each (kv head, split) can take its query heads straight from the q/k/v projection, and the
// block whose split holds the new position stores that position's key and value first: no
// stage of its own for them (the persistent decode step). Whole-head RoPE with D a power of two
// (the lanes hold each dim's partner). In the kernel per stage the same measured slower at short
// contexts (docs/perf.md), so there q/k norm keeps its kernel.
template <int D, int P>
__device__ __forceinline__ void load_head(const float* src, float (&v)[P], int lane) {
#pragma unroll
  for (int j = 0; j < P; ++j) v[j] = lane + 32 * j < D ? __ldcg(src + lane + 32 * j) : 0.0f;
}
template <int D, int P>
__device__ __forceinline__ void norm_and_rotate(float (&v)[P], const float* norm, const QkvRow& p, int position,
                                                int lane) {
  if (norm) head_rms_norm<D>(v, norm, p.eps, lane);
  float partner[P];
  partners_in_lanes<D>(v, partner);
  rotate_half(v, partner, p.rope, position, lane);
}

// Whether split `s` of row `row` stores the row's new key and value: the split that sees the
// position, or split 0 when no split does.
__device__ __forceinline__ bool stores_new_position(const KvLayout& kv, const AttentionRows& rows, int row, int split,
                                                    const ContextSplit& s) {
  const int position = rows.positions[row], end = rows.kv_end[row];
  const bool seen = position >= context_begin(kv, end) && position < end;
  return seen ? position >= s.begin && position < s.end : split == 0;
}

// Warps 0 and 1 store row `row`'s key (normed, rotated) and value (times value_scale) of kv head
// `kv_head` at its position; the other warps pass.
template <int D>
__device__ void store_new_position(const QkvRow& p, HeadShape h, const KvLayout& kv, const AttentionRows& rows, int row,
                                   int kv_head) {
  constexpr int P = (D + 31) / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (warp >= 2) return;
  const int position = rows.positions[row];
  const float* qkv = p.qkv + size_t(row) * (h.q_heads + 2 * h.kv_heads) * D;
  float v[P];
  load_head<D>(qkv + (h.q_heads + (warp == 0 ? 0 : h.kv_heads) + kv_head) * D, v, lane);
  if (warp == 0) {
    norm_and_rotate<D>(v, p.k_norm, p, position, lane);
  } else {
#pragma unroll
    for (int j = 0; j < P; ++j) v[j] *= p.value_scale;
  }
  const CacheSlot slot = cache_slot(kv, rows.table_of[row], position);
  bf16* dst = kv.cache + (warp == 0 ? key_offset(kv, slot) : value_offset(kv, slot)) + size_t(kv_head) * D;
#pragma unroll
  for (int j = 0; j < P; ++j)
    if (lane + 32 * j < D) dst[lane + 32 * j] = __float2bfloat16(v[j]);
  // No fence: the tile's copies that read it back are issued after attend_split's first
  // __syncthreads, which makes the block's global writes visible to the block.
}

// Row `row`'s query heads of kv head `kv_head`, normed and rotated, times the softmax scale, into
// tile.q (a warp a head).
template <class Tile>
__device__ void queries_to_tile(const QkvRow& p, HeadShape h, const AttentionRows& rows, int row, int kv_head,
                                TileMemory<Tile> tile) {
  constexpr int D = Tile::DK, G = Tile::G, P = (D + 31) / 32;
  const int lane = threadIdx.x % 32, position = rows.positions[row];
  const float* qkv = p.qkv + size_t(row) * (h.q_heads + 2 * h.kv_heads) * D;
  const float softmax_scale = rsqrtf(static_cast<float>(D));
  for (int g = threadIdx.x / 32; g < G; g += Tile::kThreads / 32) {
    float v[P];
    load_head<D>(qkv + (kv_head * G + g) * D, v, lane);
    norm_and_rotate<D>(v, p.q_norm, p, position, lane);
#pragma unroll
    for (int j = 0; j < P; ++j)
      if (lane + 32 * j < D) tile.q[g][lane + 32 * j] = v[j] * softmax_scale;
  }
}

}  // namespace ultraserve::gpu
