// Which scale layouts cuBLASLt's block-scaled FP8 matmul reads on Hopper (its documentation names
// the modes, BLK128x128_32F and VEC128_32F, not the layouts): y = x W^T for W [n, k] with one scale
// per 128 x 128 block and x [rows, k] with one scale per row and 128 columns, against an fp64
// reference on the host, for each candidate layout and a few shapes. gpu/kernels/fp8_gemm.cu uses
// what this finds (`bash scripts/gpu.sh run fp8-probe`; docs/gpu.md has the result).
#include <cublasLt.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

struct Layout {
  bool weight_scales_k_major;   // [k/128][n/128] instead of [n/128][k/128]
  bool weight_rows_padded;      // [n/128][k/128] with rows padded to 4 blocks
  bool activation_scales_rows;  // [k/128][rows] instead of [rows][k/128]
};

float e4m3(uint8_t code) {
  __nv_fp8_e4m3 f;
  f.__x = code;
  return float(f);
}

// The largest |error| / max |reference| of one layout and shape, or -1 when cuBLASLt has no algorithm.
double probe(int n, int k, int rows, Layout layout, cublasLtHandle_t lt, void* workspace, size_t workspace_bytes) {
  std::mt19937 rng(n * 31 + k);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.5f, 2.0f);
  const int kb = k / 128, nb = n / 128, ld = layout.weight_rows_padded ? (kb + 3) / 4 * 4 : kb;
  std::vector<uint8_t> w(size_t(n) * k), x(size_t(rows) * k);
  for (uint8_t& c : w) c = uint8_t(byte(rng) & 0xb7);  // no NaN codes
  for (uint8_t& c : x) c = uint8_t(byte(rng) & 0xb7);
  std::vector<float> ws(size_t(nb) * kb), xs(size_t(rows) * kb);
  for (float& s : ws) s = scale(rng);
  for (float& s : xs) s = scale(rng);
  std::vector<float> ws_laid(size_t(nb) * ld), xs_laid(xs.size());
  for (int j = 0; j < nb; ++j)
    for (int t = 0; t < kb; ++t) ws_laid[layout.weight_scales_k_major ? t * nb + j : j * ld + t] = ws[j * kb + t];
  for (int r = 0; r < rows; ++r)
    for (int t = 0; t < kb; ++t) xs_laid[layout.activation_scales_rows ? t * rows + r : r * kb + t] = xs[r * kb + t];

  uint8_t *dw, *dx;
  float *dws, *dxs, *dy;
  cudaMalloc(&dw, w.size());
  cudaMalloc(&dx, x.size());
  cudaMalloc(&dws, ws_laid.size() * 4);
  cudaMalloc(&dxs, xs_laid.size() * 4);
  cudaMalloc(&dy, size_t(rows) * n * 4);
  cudaMemcpy(dw, w.data(), w.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dx, x.data(), x.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dws, ws_laid.data(), ws_laid.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dxs, xs_laid.data(), xs_laid.size() * 4, cudaMemcpyHostToDevice);

  // As the engine calls it: A = W^T (transposed), B = x^T, D = y^T, column-major views.
  cublasLtMatmulDesc_t desc;
  cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t transposed = CUBLAS_OP_T, plain = CUBLAS_OP_N;
  const int32_t blocks = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, vectors = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transposed, sizeof(transposed));
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &plain, sizeof(plain));
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &blocks, sizeof(blocks));
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vectors, sizeof(vectors));
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dws, sizeof(dws));
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dxs, sizeof(dxs));
  cublasLtMatrixLayout_t a, b, d;
  cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, k, n, k);
  cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, k, rows, k);
  cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, n, rows, n);
  cublasLtMatmulPreference_t preference;
  cublasLtMatmulPreferenceCreate(&preference);
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                       sizeof(workspace_bytes));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  double worst = -1;
  if (cublasLtMatmulAlgoGetHeuristic(lt, desc, a, b, d, d, preference, 1, &result, &found) == CUBLAS_STATUS_SUCCESS &&
      found > 0) {
    const float one = 1, zero = 0;
    cublasLtMatmul(lt, desc, &one, dw, a, dx, b, &zero, dy, d, dy, d, &result.algo, workspace, workspace_bytes, 0);
    std::vector<float> y(size_t(rows) * n);
    cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost);
    std::vector<double> ref(y.size());
    double largest = 0;
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < n; ++j) {
        double sum = 0;
        for (int t = 0; t < k; ++t)
          sum += double(e4m3(w[size_t(j) * k + t])) * ws[(j / 128) * kb + t / 128] * e4m3(x[size_t(r) * k + t]) *
                 xs[r * kb + t / 128];
        ref[size_t(r) * n + j] = sum;
        largest = std::max(largest, std::fabs(sum));
      }
    worst = 0;
    for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - ref[i]) / largest);
  }
  cublasLtMatmulPreferenceDestroy(preference);
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(d);
  cublasLtMatmulDescDestroy(desc);
  for (void* p : {(void*)dw, (void*)dx, (void*)dws, (void*)dxs, (void*)dy}) cudaFree(p);
  return worst;
}

}  // namespace

int main() {
  cublasLtHandle_t lt;
  cublasLtCreate(&lt);
  const size_t workspace_bytes = 32u << 20;
  void* workspace;
  cudaMalloc(&workspace, workspace_bytes);
  std::printf("| n | k | rows | weight scales | activation scales | max error |\n|---|---|---|---|---|---|\n");
  auto row = [&](int n, int k, int rows, Layout l) {
    const double e = probe(n, k, rows, l, lt, workspace, workspace_bytes);
    const char* weights = l.weight_scales_k_major ? "[k/128][n/128]"
                          : l.weight_rows_padded  ? "[n/128][k/128], rows padded to 4"
                                                  : "[n/128][k/128]";
    const std::string error = e < 0 ? "no algorithm" : std::to_string(e);
    std::printf("| %d | %d | %d | %s | %s | %s |\n", n, k, rows, weights,
                l.activation_scales_rows ? "[k/128][rows]" : "[rows][k/128]", error.c_str());
  };
  for (bool k_major : {false, true})
    for (bool by_rows : {false, true}) row(512, 1024, 16, {k_major, false, by_rows});
  for (int rows : {1, 8, 40}) row(512, 1024, rows, {false, false, true});
  for (int k : {256, 384, 512})
    for (bool padded : {false, true}) row(768, k, 40, {false, padded, true});
  row(13568, 4096, 40, {false, false, true});  // MiMo-V2-Flash's q|k|v and o
  row(4096, 8192, 40, {false, false, true});
  return 0;
}
