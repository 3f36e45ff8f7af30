// Row-wise kernels: embedding lookup, residual add + RMS norm, SwiGLU activation.

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

constexpr int kRowThreads = 256;

__global__ void embed_kernel(const bf16* table, const int32_t* tokens, int hidden, float* x) {
  wait_for_previous_kernel();
  const int r = blockIdx.x;
  const bf16* row = table + static_cast<size_t>(tokens[r]) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) x[static_cast<size_t>(r) * hidden + i] = __bfloat162float(row[i]);
  allow_next_kernel();
}

__device__ float block_sum(float v) {
  __shared__ float partial[kRowThreads / 32];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0;
#pragma unroll
  for (int w = 0; w < kRowThreads / 32; ++w) total += partial[w];
  return total;
}

// One block per output row; the row (at most kMaxHidden floats) stays in shared memory
// between the sum of squares and the scaling.
constexpr int kMaxHidden = 8192;

__global__ void __launch_bounds__(kRowThreads) add_rms_norm_kernel(float* x, ResidualDelta delta, const float* weight,
                                                                   float eps, int hidden, const int32_t* row_map,
                                                                   bool store_residual, bf16* out) {
  __shared__ float row[kMaxHidden];
  wait_for_previous_kernel();
  const int i = blockIdx.x;
  const int r = row_map ? row_map[i] : i;
  float* xr = x + static_cast<size_t>(r) * hidden;
  float squares = 0;
  for (int c = threadIdx.x; c < hidden; c += kRowThreads) {
    float v = xr[c];
    if (delta.dense) v += delta.dense[static_cast<size_t>(r) * hidden + c];
    for (int j = 0; j < delta.top_k; ++j) {
      const size_t pair = static_cast<size_t>(r) * delta.top_k + j;
      v += delta.expert_weight[pair] * delta.expert_out[pair * hidden + c];
    }
    if (store_residual) xr[c] = v;
    row[c] = v;
    squares += v * v;
  }
  const float scale = rsqrtf(block_sum(squares) / hidden + eps);
  for (int c = threadIdx.x; c < hidden; c += kRowThreads)
    out[static_cast<size_t>(i) * hidden + c] = __float2bfloat16(row[c] * scale * weight[c]);
  allow_next_kernel();
}

__global__ void silu_mul_kernel(const float* gate_up, int width, bf16* out) {
  wait_for_previous_kernel();
  const int r = blockIdx.x;
  const float* g = gate_up + static_cast<size_t>(r) * 2 * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const float gate = g[i];
    out[static_cast<size_t>(r) * width + i] = __float2bfloat16(gate / (1.0f + __expf(-gate)) * g[width + i]);
  }
  allow_next_kernel();
}

}  // namespace

void embed_tokens(const bf16* table, const int32_t* tokens, int rows, int hidden, float* x, cudaStream_t s) {
  launch(embed_kernel, rows, kRowThreads, 0, s, table, tokens, hidden, x);
}

void add_rms_norm(float* x, ResidualDelta delta, const float* weight, float eps, int hidden, const int32_t* row_map,
                  int out_rows, bool store_residual, bf16* out, cudaStream_t s) {
  if (hidden > kMaxHidden) throw GpuError("add_rms_norm: hidden size above " + std::to_string(kMaxHidden));
  launch(add_rms_norm_kernel, out_rows, kRowThreads, 0, s, x, delta, weight, eps, hidden, row_map, store_residual,
         out);
}

void silu_mul(const float* gate_up, int rows, int width, bf16* out, cudaStream_t s) {
  launch(silu_mul_kernel, rows, kRowThreads, 0, s, gate_up, width, out);
}

}  // namespace ultraserve::gpu
