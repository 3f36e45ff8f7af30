// Block-scaled FP8 products on Hopper's FP8 tensor cores, through cuBLASLt (CUDA 12.9+): the
// weights keep their 128 x 128 block scales (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F), the
// activations are quantized per row in blocks of 128 columns (VEC128_32F, scale = amax / 448:
// DeepSeek-V3's recipe). The layouts cuBLASLt reads were found by a probe on the H200 against an
// fp64 reference (docs/gpu.md): weight scales [n / 128][k / 128] row-major (ours), activation
// scales [k / 128][rows] (rows contiguous), weights as the transposed A operand, so that D is y.

#include <cublasLt.h>
#include <cuda_fp8.h>

#include "gpu/cuda_util.cuh"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {
namespace {

constexpr int kQuantizeWarps = 8;

// One warp per (row, 128-column block), four values a lane.
__global__ void __launch_bounds__(kQuantizeWarps * 32)
    quantize_rows_kernel(const bf16* x, int rows, int k, uint8_t* codes, float* scales) {
  wait_for_previous_kernel();
  allow_next_kernel();
  const int lane = threadIdx.x % 32;
  const int blocks_per_row = k / kFp8Block;
  const int block = blockIdx.x * kQuantizeWarps + threadIdx.x / 32;
  if (block < rows * blocks_per_row) {
    const int row = block / blocks_per_row, column_block = block % blocks_per_row;
    const size_t first = static_cast<size_t>(row) * k + column_block * kFp8Block + lane * 4;
    const uint2 raw = *reinterpret_cast<const uint2*>(x + first);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
    const float v[4] = {a.x, a.y, b.x, b.y};
    const float amax = warp_max(fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3]))));
    const float scale = amax > 0 ? amax / 448.0f : 1.0f;
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      packed |= uint32_t(__nv_cvt_float_to_fp8(v[i] / scale, __NV_SATFINITE, __NV_E4M3)) << (8 * i);
    *reinterpret_cast<uint32_t*>(codes + first) = packed;
    if (lane == 0) scales[static_cast<size_t>(column_block) * rows + row] = scale;
  }
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw GpuError(std::string(what) + " failed: status " + std::to_string(int(status)));
}

}  // namespace

// One product shape's cuBLASLt descriptors and chosen algorithm, made once (graph capture then
// only enqueues the matmul); `supported` false where cuBLASLt offers no algorithm.
struct Fp8TensorCores::Plan {
  bool supported = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  const float* bound_scales[2] = {nullptr, nullptr};  // the scale pointers set on desc
};

Fp8TensorCores::Fp8TensorCores(int max_rows, int max_k, void* workspace, size_t workspace_bytes)
    : codes_(size_t(max_rows) * max_k), scales_(size_t(max_rows) * (max_k / kFp8Block + 1)),
      workspace_(workspace), workspace_bytes_(workspace_bytes) {
  check(cublasLtCreate(&lt_), "cublasLtCreate");
}

Fp8TensorCores::~Fp8TensorCores() {
  for (auto& [shape, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan->a);
    cublasLtMatrixLayoutDestroy(plan->b);
    cublasLtMatrixLayoutDestroy(plan->d);
    cublasLtMatmulDescDestroy(plan->desc);
  }
  if (lt_) cublasLtDestroy(lt_);
}

Fp8TensorCores::Plan& Fp8TensorCores::plan(int n, int k, int rows, const float* weight_scales) {
  std::unique_ptr<Plan>& p = plans_[{n, k, rows}];
  if (p) return *p;
  p = std::make_unique<Plan>();
  check(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t transposed = CUBLAS_OP_T, plain = CUBLAS_OP_N;
  const int32_t blocks = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, vectors = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transposed, sizeof(transposed)), "TRANSA");
  check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &plain, sizeof(plain)), "TRANSB");
  check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &blocks, sizeof(blocks)), "A_SCALE_MODE");
  check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vectors, sizeof(vectors)), "B_SCALE_MODE");
  bind_scales(*p, weight_scales);  // the heuristic offers block-scaled algorithms only with the scales set
  // Column-major views: A = W^T (k x n, W row-major), B = x^T (k x rows), D = y^T (n x rows).
  check(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, k, n, k), "layout A");
  check(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, k, rows, k), "layout B");
  check(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, n, rows, n), "layout D");
  cublasLtMatmulPreference_t preference;
  check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                       sizeof(workspace_bytes_));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(lt_, p->desc, p->a, p->b, p->d, p->d, preference, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  p->supported = status == CUBLAS_STATUS_SUCCESS && found > 0;
  p->algo = result.algo;
  return *p;
}

void Fp8TensorCores::bind_scales(Plan& p, const float* weight_scales) {
  const float* scales[2] = {weight_scales, scales_.get()};
  if (scales[0] == p.bound_scales[0] && scales[1] == p.bound_scales[1]) return;
  check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scales[0], sizeof(scales[0])),
        "A_SCALE_POINTER");
  check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scales[1], sizeof(scales[1])),
        "B_SCALE_POINTER");
  p.bound_scales[0] = scales[0], p.bound_scales[1] = scales[1];
}

bool Fp8TensorCores::multiply(const Fp8Weight& w, const bf16* x, int rows, float* y, cudaStream_t s) {
  // cuBLASLt reads the weights' scale rows in multiples of 4 blocks (the probe: k = 256 and 384 came
  // out wrong, 512 and 1024 right), and ours are not padded.
  if (w.k % (4 * kFp8Block) || w.n % 16 || size_t(rows) * w.k > codes_.size()) return false;
  Plan& p = plan(w.n, w.k, rows, w.scale_inv);
  if (!p.supported) return false;
  bind_scales(p, w.scale_inv);  // another weight of this shape
  const int blocks = rows * (w.k / kFp8Block);
  launch(quantize_rows_kernel, (blocks + kQuantizeWarps - 1) / kQuantizeWarps, kQuantizeWarps * 32, 0, s, x, rows,
         w.k, codes_.get(), scales_.get());
  const float one = 1.0f, zero = 0.0f;
  check(cublasLtMatmul(lt_, p.desc, &one, w.codes, p.a, codes_.get(), p.b, &zero, y, p.d, y, p.d, &p.algo, workspace_,
                       workspace_bytes_, s),
        "cublasLtMatmul");
  return true;
}

}  // namespace ultraserve::gpu
