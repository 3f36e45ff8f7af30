#pragma once
// Expert weights as the persistent decode step (decode_step.cu) reads them, row by row: a "unit"
// is what one lane loads at a time, 16 bytes of bf16 weights, dotted with the matching bf16
// inputs. The load is split from the dot so that a lane can put all its loads in flight first.
// (The expert kernels, moe.cu, multiply tiles on tensor cores instead: expert_mma.cuh.)

#include <cuda_fp16.h>

#include "gpu/cuda_util.cuh"
#include "gpu/expert_format.h"

namespace ultraserve::gpu {

template <ExpertFormat F>
struct ExpertUnit;

// x values i and i + 4 of an 8-value bf16 group, as floats (bf16 is the top half of an fp32).
__device__ __forceinline__ float bf16_at(const uint4& packed, int i) {
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
  const uint32_t w = words[i / 2];
  return __uint_as_float(i % 2 ? w & 0xffff0000u : w << 16);
}

template <>
struct ExpertUnit<ExpertFormat::bf16> {
  static constexpr int kValues = 8;
  __host__ __device__ static size_t row_bytes(int cols) { return static_cast<size_t>(cols) * 2; }
  __device__ static float scale(const uint8_t*, int) { return 1.0f; }
  __device__ static float dot(const uint4& raw, const uint4 (&x)[1]) {
    float sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) sum = fmaf(bf16_at(raw, i), bf16_at(x[0], i), sum);
    return sum;
  }
};

}  // namespace ultraserve::gpu
