#pragma once
// Expert weights as the kernels read them: a "unit" is what one lane loads at a time, 16 bytes of
// weights (+ a scale byte for MXFP4), dotted with the matching bf16 inputs. The load is split
// from the decode so that a lane can put all its loads in flight first. Shared by the expert
// kernels (moe.cu) and the persistent decode step (decode_step.cu).

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
struct ExpertUnit<ExpertFormat::mxfp4> {
  static constexpr int kValues = 32;  // one MX block
  __host__ __device__ static size_t row_bytes(int cols) { return static_cast<size_t>(cols) / 2; }
  __device__ static float scale(const uint8_t* scales, int unit) {
    return exp2f(static_cast<float>(scales[unit]) - 113.0f);  // 2^(s - 127), times the 2^14 of dot()
  }
  // The unit's 32 weights dotted with 32 inputs (4 groups of 8 bf16), without the block scale.
  // Two E2M1 nibbles are widened at once, as an fp16 pair: the nibble's 3 magnitude bits go to
  // bits 9-11 (the exponent's low two bits and the mantissa's top bit) and its sign to bit 15,
  // which makes the half the E2M1 value times 2^-14 (e = 0 lands on the subnormal 0.5 * 2^-14, as
  // it should). In fp32 that is a normal number, so the products are exact, and the 2^14 is in
  // the scale: three integer ops and two conversions per pair of weights.
  __device__ static float dot(const uint4& raw, const uint4 (&x)[4]) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    float sum = 0;
#pragma unroll
    for (int w = 0; w < 4; ++w)
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // nibbles q and q + 4 of the word: bits 4q.. and 16 + 4q..
        const uint32_t t = words[w] >> (4 * q);
        const uint32_t bits = ((t << 9) & 0x0E000E00u) | ((t << 12) & 0x80008000u);
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&bits));
        sum = fmaf(f.x, bf16_at(x[w], q), sum);
        sum = fmaf(f.y, bf16_at(x[w], q + 4), sum);
      }
    return sum;
  }
};

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
