#pragma once
// Device-side helpers shared by the kernels (warp reductions, bf16 unpacking) and the
// launch helper every kernel goes through (programmatic dependent launch, so that on Hopper
// the next kernel of a step is scheduled while the current one drains: fewer launch gaps).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <utility>

#include "gpu/device_buffer.h"

namespace ultraserve::gpu {

// Waits until the previous kernel of the stream has finished and its writes are visible. Every
// kernel calls this before touching memory another kernel wrote (it is a no-op when the kernel
// was launched without the programmatic-dependent-launch attribute). What a kernel does before
// it may only read what no kernel of the step writes: the GEMVs load their weights there.
__device__ __forceinline__ void wait_for_previous_kernel() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
// Lets the next kernel's blocks be scheduled; its own wait still orders memory. Every kernel
// calls it right after its wait: the next kernel is then launched while this one runs (and
// loads its weights meanwhile), yet never before every block of this one is on the device,
// so waiting blocks cannot crowd out the blocks they wait for. (Called at the end instead, it
// cost the 30B-A3B decode step 3.6%.)
__device__ __forceinline__ void allow_next_kernel() { asm volatile("griddepcontrol.launch_dependents;"); }

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
            Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;  // measured: 2% faster decode than plain launches on the H100
  ULTRASERVE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Eight bf16 values packed in 16 bytes, widened to float.
__device__ __forceinline__ void bf16x8_to_float(const uint4& packed, float out[8]) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&packed);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

}  // namespace ultraserve::gpu
