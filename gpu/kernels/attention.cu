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

#include "gpu/kernels/attention_split.cuh"

namespace ultraserve::gpu {
namespace {

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
      if (const float* w = is_q ? q_norm : k_norm) head_rms_norm<D>(v, w, eps, lane);
      float partner[P];
      if constexpr (!Partial) {
        partners_in_lanes<D>(v, partner);
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
      rotate_half(v, partner, rope, position, lane);
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

template <int DK, int DV, int G>
__global__ void __launch_bounds__(AttentionTile<DK, DV, G>::kThreads, 1)
    attention_kernel(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                     AttentionScratch scratch, bf16* out) {
  using Tile = AttentionTile<DK, DV, G>;
  extern __shared__ __align__(16) unsigned char tile_memory[];
  const TileMemory<Tile> tile(tile_memory);
  const int row = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  // Before the wait: rows and block tables are copied in ahead of a pass's first kernel, and a
  // kernel starts only once the one before it has passed its own wait, so no kernel it could
  // overlap writes them. The first tile's addresses are looked up while the previous kernel drains.
  const ContextSplit s = context_split(kv, rows, scratch, row, split);
  if (s.begin >= s.end) return;  // a split past the context: nothing waits for it
  locate_tile<Tile>(kv, s.table, kv_head, s.begin, s.end, tile.key_at[0], tile.value_at[0]);

  wait_for_previous_kernel();
  allow_next_kernel();
  const float softmax_scale = rsqrtf(static_cast<float>(DK));
  const float4* q4 = reinterpret_cast<const float4*>(q + static_cast<size_t>(row) * h.q_heads * DK +
                                                     static_cast<size_t>(kv_head) * G * DK);
  for (int i = threadIdx.x; i < G * DK / 4; i += Tile::kThreads) {
    const float4 v = q4[i];
    reinterpret_cast<float4*>(&tile.q[0][0])[i] =
        make_float4(v.x * softmax_scale, v.y * softmax_scale, v.z * softmax_scale, v.w * softmax_scale);
  }
  attend_split<Tile>(s, row, kv_head, split, h, kv, sinks, scratch, tile, out);
}

// One block per (row, query head), one thread per value dim, for rows of 2 to combine_max_splits
// splits (the attention kernel wrote the others itself).
template <int DV, int G>
__global__ void combine_kernel(HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                               AttentionScratch scratch, bf16* out) {
  // Every block waits, even one with nothing to do: the next kernel's wait covers the attention
  // kernel only through this one's.
  wait_for_previous_kernel();
  allow_next_kernel();
  combine_head<DV, G>(h, rows, kv, sinks, scratch, blockIdx.x, blockIdx.y, threadIdx.x, out);
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
