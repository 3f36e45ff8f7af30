#pragma once
// One warp's share of a bf16 GEMV: the dot products of one weight row with a few rows of x. Used
// by the GEMV kernel (linear.cu) and by the kernel that fuses the router into routing (moe.cu),
// so that both give the router the same logits, sum for sum.

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {

// Weights do not depend on the kernel before, so a warp loads the first kPreloadedChunks chunks
// of its row per lane (all of a 2048-wide bf16 row) before it waits for that kernel: launched
// early (programmatic dependent launch), a GEMV streams its weights while the kernel before it
// drains. The sums run in the same order either way.
constexpr int kPreloadedChunks = 8;

// Lane `lane`'s first chunks (16 bytes, 8 weights) of a row of `chunks`: l, l + 32, ...
__device__ __forceinline__ void preload_row(const uint4* wrow, int chunks, bool mine, int lane,
                                            uint4 (&early)[kPreloadedChunks]) {
#pragma unroll
  for (int j = 0; j < kPreloadedChunks; ++j)
    early[j] = mine && lane + 32 * j < chunks ? __ldcs(wrow + lane + 32 * j) : uint4{};  // streamed once
}

// acc[r] += this lane's part of row . x[r] (x: Rows rows of chunks * 8 bf16, in global or shared
// memory); the warp's sum of acc[r] is the dot product.
template <int Rows>
__device__ __forceinline__ void row_dot(const uint4* wrow, int chunks, const bf16* x, int lane,
                                        const uint4 (&early)[kPreloadedChunks], float (&acc)[Rows]) {
  const auto apply = [&](uint4 raw, int c) {
    float wf[8];
    bf16x8_to_float(raw, wf);
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      float xf[8];
      bf16x8_to_float(reinterpret_cast<const uint4*>(x + static_cast<size_t>(r) * chunks * 8)[c], xf);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[r] = fmaf(wf[i], xf[i], acc[r]);
    }
  };
#pragma unroll
  for (int j = 0; j < kPreloadedChunks; ++j)
    if (lane + 32 * j < chunks) apply(early[j], lane + 32 * j);
#pragma unroll 8  // the rest of a longer row, every chunk in flight at once
  for (int c = lane + 32 * kPreloadedChunks; c < chunks; c += 32) apply(__ldcs(wrow + c), c);
}

// y[r, out] = the warp's sum of acc[r], for each row r (lane r writes it).
template <int Rows>
__device__ __forceinline__ void store_warp_sums(const float (&acc)[Rows], int lane, float* y, int n, int out) {
#pragma unroll
  for (int r = 0; r < Rows; ++r) {
    const float v = warp_sum(acc[r]);
    if (lane == r) y[static_cast<size_t>(r) * n + out] = v;
  }
}

}  // namespace ultraserve::gpu
