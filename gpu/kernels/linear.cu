// y = x * w^T for bf16 weights, and for block-scaled FP8 ones (below). With a handful of rows the
// product is a stream over the weights: one warp per weight row, 16-byte loads, every row of x
// applied to each weight chunk while it is in registers, so the weights are read exactly once.
// Beyond gemv_max_rows rows the weights are re-used enough for tensor cores to win, and cuBLAS
// takes over.

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <type_traits>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/gemv_row.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

constexpr int kWarpsPerBlock = 8;

// Calls f(std::integral_constant<int, rows>{}) when 1 <= rows <= kMaxGemvRows (the GEMVs' row
// counts are template arguments); false otherwise.
template <int R = 1, typename F>
bool with_gemv_rows(int rows, F&& f) {
  if constexpr (R > kMaxGemvRows) {
    return false;
  } else {
    if (rows == R) {
      f(std::integral_constant<int, R>{});
      return true;
    }
    return with_gemv_rows<R + 1>(rows, f);
  }
}

template <int Rows>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) gemv_kernel(const bf16* w, int n, int k, const bf16* x, float* y) {
  const int lane = threadIdx.x % 32;
  const int out = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int chunks = k / 8;
  const uint4* wrow = reinterpret_cast<const uint4*>(w + static_cast<size_t>(min(out, n - 1)) * k);
  uint4 early[kPreloadedChunks];
  preload_row(wrow, chunks, out < n, lane, early);
  wait_for_previous_kernel();
  allow_next_kernel();
  if (out >= n) return;
  float acc[Rows] = {};
  row_dot<Rows>(wrow, chunks, x, lane, early, acc);
  store_warp_sums(acc, lane, y, n, out);
}

template <int Rows>
void launch_gemv(const bf16* w, int n, int k, const bf16* x, float* y, cudaStream_t s) {
  launch(gemv_kernel<Rows>, (n + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarpsPerBlock * 32, 0, s, w, n, k, x, y);
}

// FP8: a warp per weight row, 16 codes per 16-byte load (so k % 16 == 0), each decoded as fp16
// pairs (exact for E4M3) and scaled by its 128-column block's scale.
template <int Rows>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_fp8_kernel(const uint8_t* codes, const float* scale_inv, int n, int k, const bf16* x, float* y) {
  const int lane = threadIdx.x % 32;
  const int out = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int row = min(out, n - 1);
  const uint4* wrow = reinterpret_cast<const uint4*>(codes + static_cast<size_t>(row) * k);
  const float* scales = scale_inv + static_cast<size_t>(row / kFp8Block) * ((k + kFp8Block - 1) / kFp8Block);
  const int chunks = k / 16;
  uint4 early[kPreloadedChunks];
  float early_scale[kPreloadedChunks];
#pragma unroll
  for (int j = 0; j < kPreloadedChunks; ++j) {
    const int c = lane + 32 * j;
    const bool mine = out < n && c < chunks;
    early[j] = mine ? __ldcs(wrow + c) : uint4{};
    early_scale[j] = mine ? scales[c * 16 / kFp8Block] : 0.0f;
  }
  wait_for_previous_kernel();
  allow_next_kernel();
  if (out >= n) return;
  float acc[Rows] = {};
  const auto apply = [&](uint4 raw, float scale, int c) {
    float wf[16];
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i] & 0xffff), __NV_E4M3);
      const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i] >> 16), __NV_E4M3);
      const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&lo));
      const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&hi));
      wf[4 * i] = a.x * scale, wf[4 * i + 1] = a.y * scale, wf[4 * i + 2] = b.x * scale, wf[4 * i + 3] = b.y * scale;
    }
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      const uint4* xr = reinterpret_cast<const uint4*>(x + static_cast<size_t>(r) * k) + 2 * c;
      float xf[16];
      bf16x8_to_float(xr[0], xf);
      bf16x8_to_float(xr[1], xf + 8);
#pragma unroll
      for (int i = 0; i < 16; ++i) acc[r] = fmaf(wf[i], xf[i], acc[r]);
    }
  };
#pragma unroll
  for (int j = 0; j < kPreloadedChunks; ++j)
    if (lane + 32 * j < chunks) apply(early[j], early_scale[j], lane + 32 * j);
#pragma unroll 4
  for (int c = lane + 32 * kPreloadedChunks; c < chunks; c += 32) apply(__ldcs(wrow + c), scales[c * 16 / kFp8Block], c);
  store_warp_sums(acc, lane, y, n, out);
}

template <int Rows>
void launch_gemv_fp8(const Fp8Weight& w, const bf16* x, float* y, cudaStream_t s) {
  launch(gemv_fp8_kernel<Rows>, (w.n + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarpsPerBlock * 32, 0, s, w.codes,
         w.scale_inv, w.n, w.k, x, y);
}

// One thread per 8 codes.
__global__ void dequantize_fp8_kernel(const uint8_t* codes, const float* scale_inv, int n, int k, bf16* out) {
  wait_for_previous_kernel();
  allow_next_kernel();
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (i < static_cast<size_t>(n) * k) {
    const int row = static_cast<int>(i / k), col = static_cast<int>(i % k);
    const float scale = scale_inv[static_cast<size_t>(row / kFp8Block) * ((k + kFp8Block - 1) / kFp8Block) + col / kFp8Block];
    const uint2 raw = *reinterpret_cast<const uint2*>(codes + i);
    const uint32_t words[2] = {raw.x, raw.y};
    __align__(16) bf16 v[8];
#pragma unroll
    for (int w = 0; w < 2; ++w)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const __half2_raw pair =
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[w] >> (16 * h)), __NV_E4M3);
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&pair));
        v[4 * w + 2 * h] = __float2bfloat16(f.x * scale);
        v[4 * w + 2 * h + 1] = __float2bfloat16(f.y * scale);
      }
    *reinterpret_cast<uint4*>(out + i) = *reinterpret_cast<const uint4*>(v);
  }
}

}  // namespace

void linear_fp8(const Matmul& m, const Fp8Weight& w, const bf16* x, int rows, float* y, bf16* scratch, cudaStream_t s) {
  if (w.k % 16 != 0) throw GpuError("linear_fp8: the inner dimension must be a multiple of 16");
  if (rows <= m.gemv_max_rows &&
      with_gemv_rows(rows, [&](auto r) { launch_gemv_fp8<decltype(r)::value>(w, x, y, s); }))
    return;
  if (m.fp8_tensor_cores && m.fp8_tensor_cores->multiply(w, x, rows, y, s)) return;
  const size_t groups = static_cast<size_t>(w.n) * w.k / 8;
  launch(dequantize_fp8_kernel, static_cast<unsigned>((groups + 255) / 256), 256, 0, s, w.codes, w.scale_inv, w.n, w.k,
         scratch);
  linear({m.cublas, 0}, scratch, w.n, w.k, x, rows, y, s);
}

void linear(const Matmul& m, const bf16* w, int n, int k, const bf16* x, int rows, float* y, cudaStream_t s) {
  if (k % 8 != 0) throw GpuError("linear: the inner dimension must be a multiple of 8");
  if (rows <= m.gemv_max_rows &&
      with_gemv_rows(rows, [&](auto r) { launch_gemv<decltype(r)::value>(w, n, k, x, y, s); }))
    return;
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
