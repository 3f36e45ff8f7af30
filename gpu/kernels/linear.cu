// y = x * w^T for bf16 weights. With a handful of rows the product is a stream over the
// weights: one warp per weight row, 16-byte loads, every row of x applied to each weight chunk
// while it is in registers, so the weights are read exactly once. Beyond kGemvRows rows the
// weights are re-used enough for tensor cores to win, and cuBLAS takes over.

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

constexpr int kWarpsPerBlock = 8;

template <int Rows>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) gemv_kernel(const bf16* w, int n, int k, const bf16* x, float* y) {
  wait_for_previous_kernel();
  const int lane = threadIdx.x % 32;
  const int out = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  if (out < n) {
    const uint4* wrow = reinterpret_cast<const uint4*>(w + static_cast<size_t>(out) * k);
    const int chunks = k / 8;
    float acc[Rows] = {};
#pragma unroll 8  // k = 2048: every chunk of the row in flight at once
    for (int c = lane; c < chunks; c += 32) {
      float wf[8];
      bf16x8_to_float(__ldcs(wrow + c), wf);  // streamed once: keep it out of the cache
#pragma unroll
      for (int r = 0; r < Rows; ++r) {
        float xf[8];
        bf16x8_to_float(reinterpret_cast<const uint4*>(x + static_cast<size_t>(r) * k)[c], xf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[r] = fmaf(wf[i], xf[i], acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      const float v = warp_sum(acc[r]);
      if (lane == r) y[static_cast<size_t>(r) * n + out] = v;
    }
  }
  allow_next_kernel();
}

template <int Rows>
void launch_gemv(const bf16* w, int n, int k, const bf16* x, float* y, cudaStream_t s) {
  launch(gemv_kernel<Rows>, (n + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarpsPerBlock * 32, 0, s, w, n, k, x, y);
}

}  // namespace

void linear(const Matmul& m, const bf16* w, int n, int k, const bf16* x, int rows, float* y, cudaStream_t s) {
  if (k % 8 != 0) throw GpuError("linear: the inner dimension must be a multiple of 8");
  switch (rows <= m.gemv_max_rows ? rows : 0) {
    case 1: return launch_gemv<1>(w, n, k, x, y, s);
    case 2: return launch_gemv<2>(w, n, k, x, y, s);
    case 3: return launch_gemv<3>(w, n, k, x, y, s);
    case 4: return launch_gemv<4>(w, n, k, x, y, s);
    case 5: return launch_gemv<5>(w, n, k, x, y, s);
    case 6: return launch_gemv<6>(w, n, k, x, y, s);
    case 7: return launch_gemv<7>(w, n, k, x, y, s);
    case 8: return launch_gemv<8>(w, n, k, x, y, s);
    default: break;
  }
  static_assert(kMaxGemvRows == 8);
  cublasHandle_t cublas = m.cublas;
  // Column-major view: y^T [n, rows] = w [k, n]^T * x^T [k, rows].
  const float one = 1.0f, zero = 0.0f;
  if (cublasSetStream(cublas, s) != CUBLAS_STATUS_SUCCESS) throw GpuError("cublasSetStream failed");
  const cublasStatus_t status =
      cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &one, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k, &zero, y,
                   CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS) throw GpuError("cublasGemmEx failed: status " + std::to_string(int(status)));
}

}  // namespace ultraserve::gpu
