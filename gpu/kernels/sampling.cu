// Greedy sampling on the device: only the chosen ids cross to the host.

#include <cfloat>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

constexpr int kThreads = 512;

__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* logits, int stride, int vocab, int32_t* tokens) {
  __shared__ float best_value[kThreads / 32];
  __shared__ int best_index[kThreads / 32];
  wait_for_previous_kernel();
  allow_next_kernel();
  const float* row = logits + static_cast<size_t>(blockIdx.x) * stride;
  float value = -FLT_MAX;
  int index = 0x7fffffff;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = row[i];
    if (v > value) value = v, index = i;  // i ascends per thread: the first maximum wins
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, value, o);
    const int j = __shfl_xor_sync(0xffffffffu, index, o);
    if (v > value || (v == value && j < index)) value = v, index = j;
  }
  if (threadIdx.x % 32 == 0) best_value[threadIdx.x / 32] = value, best_index[threadIdx.x / 32] = index;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w)
      if (best_value[w] > value || (best_value[w] == value && best_index[w] < index))
        value = best_value[w], index = best_index[w];
    tokens[blockIdx.x] = index;
  }
}

}  // namespace

void argmax_rows(const float* logits, int rows, int stride, int vocab, int32_t* tokens, cudaStream_t s) {
  launch(argmax_kernel, rows, kThreads, 0, s, logits, stride, vocab, tokens);
}

}  // namespace ultraserve::gpu
