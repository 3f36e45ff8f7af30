// Seeded random weights generated in place on the device: a counter-based hash of (seed,
// index), so the result does not depend on the launch shape.

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

__device__ __forceinline__ uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void uniform_bf16_kernel(bf16* out, size_t count, float scale, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t bits = static_cast<uint32_t>(mix(seed * 0x9e3779b97f4a7c15ull + i) >> 40);  // 24 bits
    out[i] = __float2bfloat16((bits * (2.0f / 16777216.0f) - 1.0f) * scale);
  }
}

__global__ void random_bytes_kernel(uint8_t* out, size_t count, uint64_t seed, uint8_t mask) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<uint8_t>(mix(seed * 0x9e3779b97f4a7c15ull + i) >> 56) & mask;
}

constexpr int kBlocks = 4096, kThreads = 256;

}  // namespace

void fill_uniform_bf16(bf16* out, size_t count, float scale, uint64_t seed, cudaStream_t s) {
  uniform_bf16_kernel<<<kBlocks, kThreads, 0, s>>>(out, count, scale, seed);
  ULTRASERVE_CUDA_CHECK(cudaGetLastError());
}

void fill_random_bytes(uint8_t* out, size_t count, uint64_t seed, cudaStream_t s, uint8_t mask) {
  random_bytes_kernel<<<kBlocks, kThreads, 0, s>>>(out, count, seed, mask);
  ULTRASERVE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ultraserve::gpu
