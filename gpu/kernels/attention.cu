// Attention over a paged KV cache. Three steps per layer:
//   qk_norm_rope_store  q/k per-head RMS norm and rotary embedding; k and v into the cache
//   paged_attention     each (row, kv head, split) block: the row's query heads of that kv head
//                       against its share of the context, one online-softmax partial per warp
//   combine             the partials of a row and query head merged into its output
// Decode, prefill chunks and speculative verification are the same computation: every row
// attends to positions [0, kv_end), all of which are in the cache by then (kv_end = position + 1:
// causal; a DFlash draft's block rows see their whole block).

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

__device__ __forceinline__ size_t cache_offset(const KvLayout& kv, int layer, int kind, int table, int position,
                                               int kv_dim) {
  const int block = kv.tables[static_cast<size_t>(table) * kv.max_blocks_per_table + position / kv.block_size];
  return ((static_cast<size_t>(block) * kv.layers + layer) * 2 + kind) * kv.block_size * kv_dim +
         static_cast<size_t>(position % kv.block_size) * kv_dim;
}

// ---- q/k norm, RoPE, cache store ----------------------------------------------------------------
// One warp per head. Lane l owns dims l + 32 j: the rotate-half partner of a dim (d +- D/2) is
// then in the same lane, or, for D <= 32, in lane l ^ D/2.
constexpr int kHeadsPerBlock = 8;

template <int D>
__global__ void __launch_bounds__(kHeadsPerBlock * 32)
    qk_norm_rope_store_kernel(const float* qkv, const float* q_norm, const float* k_norm, float eps,
                              const float* inv_freq, HeadShape h, AttentionRows rows, KvLayout kv, int layer,
                              float* q_out) {
  constexpr int P = dims_per_lane<D>();
  wait_for_previous_kernel();
  const int lane = threadIdx.x % 32;
  const int head = blockIdx.y * kHeadsPerBlock + threadIdx.x / 32;
  const int row = blockIdx.x;
  const int kv_dim = h.kv_heads * D;
  if (head < h.q_heads + 2 * h.kv_heads) {
    const bool active = D >= 32 || lane < D;
    const float* src = qkv + static_cast<size_t>(row) * (h.q_heads * D + 2 * kv_dim) + static_cast<size_t>(head) * D;
    float v[P];
#pragma unroll
    for (int j = 0; j < P; ++j) v[j] = active ? src[lane + 32 * j] : 0.0f;
    const bool is_q = head < h.q_heads, is_k = !is_q && head < h.q_heads + h.kv_heads;
    const int position = rows.positions[row];
    if (is_q || is_k) {
      float squares = 0;
#pragma unroll
      for (int j = 0; j < P; ++j) squares += v[j] * v[j];
      const float scale = rsqrtf(warp_sum(squares) / D + eps);
      const float* w = is_q ? q_norm : k_norm;
#pragma unroll
      for (int j = 0; j < P; ++j) v[j] = active ? v[j] * scale * w[lane + 32 * j] : 0.0f;
      float rotated[P];
#pragma unroll
      for (int j = 0; j < P; ++j) {
        const int d = lane + 32 * j;
        const bool low = d < D / 2;
        const float partner = P >= 2 ? v[(j + P / 2) % P] : __shfl_xor_sync(0xffffffffu, v[j], D / 2);
        float sin_a = 0, cos_a = 1;
        if (active) sincosf(static_cast<float>(position) * inv_freq[low ? d : d - D / 2], &sin_a, &cos_a);
        rotated[j] = low ? v[j] * cos_a - partner * sin_a : v[j] * cos_a + partner * sin_a;
      }
#pragma unroll
      for (int j = 0; j < P; ++j) v[j] = rotated[j];
    }
    if (active) {
      if (is_q) {
        float* dst = q_out + static_cast<size_t>(row) * h.q_heads * D + static_cast<size_t>(head) * D;
#pragma unroll
        for (int j = 0; j < P; ++j) dst[lane + 32 * j] = v[j];
      } else {
        const int kv_head = is_k ? head - h.q_heads : head - h.q_heads - h.kv_heads;
        bf16* dst = kv.cache + cache_offset(kv, layer, is_k ? 0 : 1, rows.table_of[row], position, kv_dim) +
                    static_cast<size_t>(kv_head) * D;
#pragma unroll
        for (int j = 0; j < P; ++j) dst[lane + 32 * j] = __float2bfloat16(v[j]);
      }
    }
  }
  allow_next_kernel();
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
// Lane l scores position base + l against all G query heads (its key row read with 16-byte
// loads); for the weighted sum of values lane l owns dims [l P, l P + P) of every head.
template <int D, int G>
__global__ void __launch_bounds__(kAttentionWarps * 32)
    attention_kernel(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, int layer,
                     AttentionScratch scratch) {
  constexpr int P = dims_per_lane<D>();
  __shared__ __align__(16) float q_s[G][D];
  wait_for_previous_kernel();
  const int row = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int kv_dim = h.kv_heads * D;
  const float softmax_scale = rsqrtf(static_cast<float>(D));
  // The row's metadata first, then the query heads, all loads in flight together (a column loop
  // here waited out one round trip per step: most of the kernel's 16 us on the H200 at batch 1).
  const int length = rows.kv_end[row];
  const int table = rows.table_of[row];
  constexpr int kQVectors = G * D / 4, kQPerThread = (kQVectors + kAttentionWarps * 32 - 1) / (kAttentionWarps * 32);
  const float4* q4 = reinterpret_cast<const float4*>(q + static_cast<size_t>(row) * h.q_heads * D +
                                                     static_cast<size_t>(kv_head) * G * D);
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

  const int chunk = max((length + scratch.splits - 1) / scratch.splits, kMinPositionsPerBlock);
  const int begin = split * chunk, end = min(length, begin + chunk);
  if (begin >= end) {  // a split past the context: the combine does not read it
    allow_next_kernel();
    return;
  }
  const bool owns_dims = D >= 32 || lane < D;

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
    const size_t key_offset = cache_offset(kv, layer, 0, table, valid ? position : begin, kv_dim) +
                              static_cast<size_t>(kv_head) * D;
    const bf16* my_value = kv.cache + key_offset + static_cast<size_t>(kv.block_size) * kv_dim;  // K then V
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) s[g] = 0;
    const uint4* key = reinterpret_cast<const uint4*>(kv.cache + key_offset);
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
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
                          (D >= 32 ? lane * P : lane);
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
  // This warp's partial: [m, l, acc[D]] per query head.
  const int partials = scratch.splits * kAttentionWarps;
  float* out = scratch.partial +
               ((static_cast<size_t>(row) * h.kv_heads + kv_head) * partials + split * kAttentionWarps + warp) * G *
                   (D + 2);
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float* o = out + g * (D + 2);
    if (lane == 0) o[0] = m[g], o[1] = l[g];
    if (owns_dims)
#pragma unroll
      for (int i = 0; i < P; ++i) o[2 + lane * P + i] = acc[g][i];
  }
  allow_next_kernel();
}

// One block per (row, query head), one thread per dim.
template <int D, int G>
__global__ void combine_kernel(HeadShape h, AttentionRows rows, AttentionScratch scratch, bf16* out) {
  wait_for_previous_kernel();
  const int row = blockIdx.x, q_head = blockIdx.y;
  const int kv_head = q_head / G, g = q_head % G;
  const float* base = scratch.partial +
                      (static_cast<size_t>(row) * h.kv_heads + kv_head) * scratch.splits * kAttentionWarps * G * (D + 2) +
                      g * (D + 2);
  const size_t stride = static_cast<size_t>(G) * (D + 2);
  // Only the splits that had positions wrote anything worth reading (same arithmetic as above).
  const int length = rows.kv_end[row];
  const int chunk = max((length + scratch.splits - 1) / scratch.splits, kMinPositionsPerBlock);
  const int partials = min(scratch.splits, (length + chunk - 1) / chunk) * kAttentionWarps;
  float m = -FLT_MAX;
#pragma unroll 8
  for (int p = 0; p < partials; ++p) m = fmaxf(m, base[p * stride]);
  float l = 0, acc = 0;
  const int d = threadIdx.x;
#pragma unroll 8
  for (int p = 0; p < partials; ++p) {
    const float* part = base + p * stride;
    if (part[1] == 0.0f) continue;  // an empty split or warp
    const float w = __expf(part[0] - m);
    l += part[1] * w;
    if (d < D) acc += part[2 + d] * w;
  }
  if (d < D) out[static_cast<size_t>(row) * h.q_heads * D + static_cast<size_t>(q_head) * D + d] = __float2bfloat16(acc / l);
  allow_next_kernel();
}

template <int D>
void dispatch_qk(const float* qkv, const float* q_norm, const float* k_norm, float eps, const float* inv_freq,
                 HeadShape h, AttentionRows rows, KvLayout kv, int layer, float* q_out, cudaStream_t s) {
  const dim3 grid(rows.rows, (h.q_heads + 2 * h.kv_heads + kHeadsPerBlock - 1) / kHeadsPerBlock);
  launch(qk_norm_rope_store_kernel<D>, grid, kHeadsPerBlock * 32, 0, s, qkv, q_norm, k_norm, eps, inv_freq, h, rows,
         kv, layer, q_out);
}

template <int D, int G>
void dispatch_attention(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, int layer,
                        AttentionScratch scratch, bf16* out, cudaStream_t s) {
  launch(attention_kernel<D, G>, dim3(rows.rows, h.kv_heads, scratch.splits), kAttentionWarps * 32, 0, s, q, h, rows,
         kv, layer, scratch);
  launch(combine_kernel<D, G>, dim3(rows.rows, h.q_heads), D < 32 ? 32 : D, 0, s, h, rows, scratch, out);
}

template <int D>
void dispatch_group(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, int layer, AttentionScratch scratch,
                    bf16* out, cudaStream_t s) {
  switch (h.q_heads / h.kv_heads) {
    case 1: return dispatch_attention<D, 1>(q, h, rows, kv, layer, scratch, out, s);
    case 2: return dispatch_attention<D, 2>(q, h, rows, kv, layer, scratch, out, s);
    case 4: return dispatch_attention<D, 4>(q, h, rows, kv, layer, scratch, out, s);
    case 8: return dispatch_attention<D, 8>(q, h, rows, kv, layer, scratch, out, s);
    case 16: return dispatch_attention<D, 16>(q, h, rows, kv, layer, scratch, out, s);
    default: throw GpuError("attention: query heads per kv head must be 1, 2, 4, 8 or 16");
  }
}

[[noreturn]] void unsupported_head_dim(int d) {
  throw GpuError("attention: head_dim " + std::to_string(d) + " not built (8, 16, 32, 64, 128, 256 are)");
}

}  // namespace

void qk_norm_rope_store(const float* qkv, const float* q_norm, const float* k_norm, float eps, const float* inv_freq,
                        HeadShape h, AttentionRows rows, KvLayout kv, int layer, float* q_out, cudaStream_t s) {
  switch (h.head_dim) {
    case 8: return dispatch_qk<8>(qkv, q_norm, k_norm, eps, inv_freq, h, rows, kv, layer, q_out, s);
    case 16: return dispatch_qk<16>(qkv, q_norm, k_norm, eps, inv_freq, h, rows, kv, layer, q_out, s);
    case 32: return dispatch_qk<32>(qkv, q_norm, k_norm, eps, inv_freq, h, rows, kv, layer, q_out, s);
    case 64: return dispatch_qk<64>(qkv, q_norm, k_norm, eps, inv_freq, h, rows, kv, layer, q_out, s);
    case 128: return dispatch_qk<128>(qkv, q_norm, k_norm, eps, inv_freq, h, rows, kv, layer, q_out, s);
    case 256: return dispatch_qk<256>(qkv, q_norm, k_norm, eps, inv_freq, h, rows, kv, layer, q_out, s);
    default: unsupported_head_dim(h.head_dim);
  }
}

void paged_attention(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, int layer,
                     AttentionScratch scratch, bf16* out, cudaStream_t s) {
  switch (h.head_dim) {
    case 8: return dispatch_group<8>(q, h, rows, kv, layer, scratch, out, s);
    case 16: return dispatch_group<16>(q, h, rows, kv, layer, scratch, out, s);
    case 32: return dispatch_group<32>(q, h, rows, kv, layer, scratch, out, s);
    case 64: return dispatch_group<64>(q, h, rows, kv, layer, scratch, out, s);
    case 128: return dispatch_group<128>(q, h, rows, kv, layer, scratch, out, s);
    case 256: return dispatch_group<256>(q, h, rows, kv, layer, scratch, out, s);
    default: unsupported_head_dim(h.head_dim);
  }
}

int attention_splits(int rows, int kv_heads, int multiprocessors, int max_splits) {
  const int blocks = rows * kv_heads;
  return std::max(1, std::min(max_splits, (2 * multiprocessors + blocks - 1) / blocks));
}

size_t attention_scratch_floats(int rows, HeadShape h, int splits) {
  return static_cast<size_t>(rows) * h.kv_heads * splits * kAttentionWarps * h.q_heads / h.kv_heads *
         (h.head_dim + 2);
}

}  // namespace ultraserve::gpu
