// Attention over a paged KV cache. Per layer:
//   qk_norm_rope_store  q/k per-head RMS norm and rotary embedding; k and v into the cache
//   paged_attention     each (row, kv head, split) block: the row's query heads of that kv head
//                       against its share of the context, an online-softmax partial per warp
//   combine             a short context's partials (a few splits) merged into its output
// A long context's splits are many (more than GpuModelOptions::attention_combine_max_splits):
// their blocks merge their own warps, and the last block of the row to finish merges the
// blocks' partials, leaving the combine nothing to do. Measured on the H200 (docs/perf.md): at
// 4096 tokens of context that makes a decode step 11% cheaper, while for a few splits the fence,
// atomic and re-read cost more than the combine kernel.
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

constexpr int kAttentionWarps = 4;
constexpr int kMinPositionsPerBlock = 128;  // below this a split costs more than it saves

// Dims a lane owns in a head of D: D / 32 of them, or one (lanes >= D idle) when D < 32.
template <int D>
constexpr int dims_per_lane() {
  return D >= 32 ? D / 32 : 1;
}

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

// P consecutive bf16 values as floats, with one load of 2 P bytes (zeros when !owns).
template <int P>
__device__ __forceinline__ void load_values(const bf16* src, bool owns, float out[P]) {
  if constexpr (P == 8) {
    bf16x8_to_float(owns ? *reinterpret_cast<const uint4*>(src) : uint4{}, out);
  } else if constexpr (P == 4) {
    const uint2 raw = owns ? *reinterpret_cast<const uint2*>(src) : uint2{};
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
  } else if constexpr (P == 2) {
    const uint32_t raw = owns ? *reinterpret_cast<const uint32_t*>(src) : 0u;
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw));
    out[0] = a.x, out[1] = a.y;
  } else {
    out[0] = owns ? __bfloat162float(*src) : 0.0f;
  }
}

// ---- attention partials -------------------------------------------------------------------------
// Lane l scores position base + l against all G query heads (its key row of DK read with 16-byte
// loads); for the weighted sum of values lane l owns dims [l P, l P + P) of every value head of DV.
template <int DK, int DV, int G>
__global__ void __launch_bounds__(kAttentionWarps * 32)
    attention_kernel(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                     AttentionScratch scratch, bf16* out) {
  constexpr int P = dims_per_lane<DV>();
  // The query heads while the context is read; then, reused, two warps' accumulators at a time
  // while the block's four warps are merged.
  constexpr int kSharedFloats = G * DK > 2 * G * DV ? G * DK : 2 * G * DV;
  __shared__ __align__(16) float shared[kSharedFloats];
  __shared__ float warp_m[kAttentionWarps][G], warp_l[kAttentionWarps][G];
  __shared__ bool merges_all;
  float(*q_s)[DK] = reinterpret_cast<float(*)[DK]>(shared);
  wait_for_previous_kernel();
  allow_next_kernel();
  const int row = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const float softmax_scale = rsqrtf(static_cast<float>(DK));
  // The row's metadata first, then the query heads, all loads in flight together (a column loop
  // here waited out one round trip per step: most of the kernel's 16 us on the H200 at batch 1).
  const int last = rows.kv_end[row];
  const int first = context_begin(kv, last);
  const int table = rows.table_of[row];
  constexpr int kQVectors = G * DK / 4, kQPerThread = (kQVectors + kAttentionWarps * 32 - 1) / (kAttentionWarps * 32);
  const float4* q4 = reinterpret_cast<const float4*>(q + static_cast<size_t>(row) * h.q_heads * DK +
                                                     static_cast<size_t>(kv_head) * G * DK);
  float4 qv[kQPerThread];
#pragma unroll
  for (int j = 0; j < kQPerThread; ++j) {
    const int i = threadIdx.x + j * kAttentionWarps * 32;
    if (i < kQVectors) qv[j] = q4[i];
  }
#pragma unroll
  for (int j = 0; j < kQPerThread; ++j) {
    const int i = threadIdx.x + j * kAttentionWarps * 32;
    if (i < kQVectors)
      reinterpret_cast<float4*>(&q_s[0][0])[i] =
          make_float4(qv[j].x * softmax_scale, qv[j].y * softmax_scale, qv[j].z * softmax_scale, qv[j].w * softmax_scale);
  }
  __syncthreads();

  const int length = last - first;
  const int chunk = max((length + scratch.splits - 1) / scratch.splits, kMinPositionsPerBlock);
  const int used_splits = (length + chunk - 1) / chunk;
  const int begin = first + split * chunk, end = min(last, begin + chunk);
  if (begin >= end) return;  // a split past the context: nothing waits for it
  const bool owns_dims = DV >= 32 || lane < DV;

  float m[G], l[G], acc[G][P];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0;
#pragma unroll
    for (int i = 0; i < P; ++i) acc[g][i] = 0;
  }
  for (int base = begin + warp * 32; base < end; base += kAttentionWarps * 32) {
    const int position = base + lane;
    const bool valid = position < end;
    // Each lane finds its own position's key and value rows (one block-table lookup); lanes
    // past the end point at a valid row and weigh it zero.
    const CacheSlot slot = cache_slot(kv, table, valid ? position : begin);
    const bf16* my_value = kv.cache + value_offset(kv, slot) + static_cast<size_t>(kv_head) * DV;
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) s[g] = 0;
    const uint4* key = reinterpret_cast<const uint4*>(kv.cache + key_offset(kv, slot) + static_cast<size_t>(kv_head) * DK);
#pragma unroll
    for (int c = 0; c < DK / 8; ++c) {
      float k8[8];
      bf16x8_to_float(key[c], k8);
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) s[g] = fmaf(q_s[g][c * 8 + i], k8[i], s[g]);
    }
    float p[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float m_new = fmaxf(m[g], warp_max(valid ? s[g] : -FLT_MAX));
      const float correction = __expf(m[g] - m_new);
      p[g] = valid ? __expf(s[g] - m_new) : 0.0f;
      l[g] = l[g] * correction + warp_sum(p[g]);
#pragma unroll
      for (int i = 0; i < P; ++i) acc[g][i] *= correction;
      m[g] = m_new;
    }
    // Values: a fixed trip count, fully unrolled, so the 32 positions' loads are in flight at once.
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const bf16* value = reinterpret_cast<const bf16*>(
                              __shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(my_value), j)) +
                          (DV >= 32 ? lane * P : lane);
      float v[P];
      load_values<P>(value, owns_dims, v);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float pj = __shfl_sync(0xffffffffu, p[g], j);
#pragma unroll
        for (int i = 0; i < P; ++i) acc[g][i] = fmaf(pj, v[i], acc[g][i]);
      }
    }
  }
  const size_t row_head = static_cast<size_t>(row) * h.kv_heads + kv_head;
  const size_t slot = size_t(G) * (DV + 2);  // a partial: [m, l, acc[DV]] per query head
  float* row_partials = scratch.partial + row_head * scratch.splits * kAttentionWarps * slot;
  const auto dim = [&](int i) { return DV >= 32 ? lane * P + i : lane; };
  const auto store_partial = [&](float* o) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (lane == 0) o[g * (DV + 2)] = m[g], o[g * (DV + 2) + 1] = l[g];
      if (owns_dims)
#pragma unroll
        for (int i = 0; i < P; ++i) o[g * (DV + 2) + 2 + dim(i)] = acc[g][i];
    }
  };
  if (used_splits <= scratch.combine_max_splits) {  // each warp's partial, for the combine kernel
    store_partial(row_partials + (split * kAttentionWarps + warp) * slot);
    return;
  }

  // The block's four partials into one: rescaled to the block's maximum and summed in a fixed
  // order ((w0 + w2) + (w1 + w3)), so a row's output does not depend on timing.
  if (lane == 0)
#pragma unroll
    for (int g = 0; g < G; ++g) warp_m[warp][g] = m[g], warp_l[warp][g] = l[g];
  __syncthreads();  // q_s is read no more: `shared` holds accumulators from here on
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float block_m = warp_m[0][g], block_l = 0;
#pragma unroll
    for (int w = 1; w < kAttentionWarps; ++w) block_m = fmaxf(block_m, warp_m[w][g]);
#pragma unroll
    for (int w = 0; w < kAttentionWarps; ++w) block_l += warp_l[w][g] * __expf(warp_m[w][g] - block_m);
    const float scale = __expf(m[g] - block_m);
#pragma unroll
    for (int i = 0; i < P; ++i) acc[g][i] *= scale;
    m[g] = block_m, l[g] = block_l;
  }
  float(*held)[G][DV] = reinterpret_cast<float(*)[G][DV]>(shared);
  for (int half = kAttentionWarps / 2; half >= 1; half /= 2) {
    if (warp >= half && warp < 2 * half && owns_dims)
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < P; ++i) held[warp - half][g][dim(i)] = acc[g][i];
    __syncthreads();
    if (warp < half && owns_dims)
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < P; ++i) acc[g][i] += held[warp][g][dim(i)];
    __syncthreads();
  }

  // The block's partial (in its warp 0's place); the last block of the row to arrive merges them
  // all, each made visible by a fence before its arrival is counted.
  if (warp == 0) {
    store_partial(row_partials + split * kAttentionWarps * slot);
    __threadfence();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    merges_all = atomicAdd(&scratch.arrivals[row_head], 1u) == unsigned(used_splits - 1);
    if (merges_all) scratch.arrivals[row_head] = 0;  // ready for the next layer's kernel
  }
  __syncthreads();
  if (!merges_all) return;
  __threadfence();
  float* head_m = warp_m[0];  // reused: each head's maximum and softmax sum over all the splits
  float* head_l = warp_l[0];
  if (threadIdx.x < G) {
    const int g = threadIdx.x;
    const float sink = sinks ? sinks[kv_head * G + g] : -FLT_MAX;
    float top = sink;
    for (int sp = 0; sp < used_splits; ++sp) top = fmaxf(top, __ldcg(row_partials + sp * kAttentionWarps * slot + g * (DV + 2)));
    float total = sinks ? __expf(sink - top) : 0.0f;
    for (int sp = 0; sp < used_splits; ++sp) {
      const float* part = row_partials + sp * kAttentionWarps * slot + g * (DV + 2);
      total += __ldcg(part + 1) * __expf(__ldcg(part) - top);
    }
    head_m[g] = top, head_l[g] = total;
  }
  __syncthreads();
  bf16* row_out = out + static_cast<size_t>(row) * h.q_heads * DV + static_cast<size_t>(kv_head) * G * DV;
  for (int o = threadIdx.x; o < G * DV; o += blockDim.x) {
    const int g = o / DV, d = o % DV;
    float sum = 0;
#pragma unroll 8
    for (int sp = 0; sp < used_splits; ++sp) {
      const float* part = row_partials + sp * kAttentionWarps * slot + g * (DV + 2);
      sum += __ldcg(part + 2 + d) * __expf(__ldcg(part) - head_m[g]);
    }
    row_out[o] = __float2bfloat16(sum / head_l[g]);
  }
}

// One block per (row, query head), one thread per value dim, for rows of at most
// combine_max_splits splits (the attention kernel merged the others). A sink joins the softmax's denominator only.
template <int DV, int G>
__global__ void combine_kernel(HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                               AttentionScratch scratch, bf16* out) {
  wait_for_previous_kernel();
  allow_next_kernel();
  const int row = blockIdx.x, q_head = blockIdx.y;
  const int kv_head = q_head / G, g = q_head % G;
  const float* base = scratch.partial +
                      (static_cast<size_t>(row) * h.kv_heads + kv_head) * scratch.splits * kAttentionWarps * G * (DV + 2) +
                      g * (DV + 2);
  const size_t stride = static_cast<size_t>(G) * (DV + 2);
  // Only the splits that had positions wrote anything worth reading (same arithmetic as above).
  const int length = rows.kv_end[row] - context_begin(kv, rows.kv_end[row]);
  const int chunk = max((length + scratch.splits - 1) / scratch.splits, kMinPositionsPerBlock);
  const int used_splits = min(scratch.splits, (length + chunk - 1) / chunk);
  if (used_splits > scratch.combine_max_splits) return;
  const int partials = used_splits * kAttentionWarps;
  const float sink = sinks ? sinks[q_head] : -FLT_MAX;
  float m = sink;
#pragma unroll 8
  for (int p = 0; p < partials; ++p) m = fmaxf(m, base[p * stride]);
  float l = sinks ? __expf(sink - m) : 0.0f, acc = 0;
  const int d = threadIdx.x;
#pragma unroll 8
  for (int p = 0; p < partials; ++p) {
    const float* part = base + p * stride;
    if (part[1] == 0.0f) continue;  // an empty split or warp
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
  launch(attention_kernel<DK, DV, G>, dim3(rows.rows, h.kv_heads, scratch.splits), kAttentionWarps * 32, 0, s, q, h,
         rows, kv, sinks, scratch, out);
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
  return static_cast<size_t>(rows) * h.kv_heads * splits * kAttentionWarps * h.q_heads / h.kv_heads *
         (h.v_head_dim + 2);
}

}  // namespace ultraserve::gpu
