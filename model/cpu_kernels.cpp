#include "model/cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ultraserve {

float dot(const float* a, const float* b, int n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void matmul_nt(ThreadPool& pool, const float* x, int n, MatrixView w, float* y) {
  // Each weight row is read once per block of 4 input rows: at batch 1 this is a GEMV bound
  // by the bytes of the weights, at larger n the blocking cuts those bytes by 4.
  constexpr int kRowBlock = 4;
  pool.parallel_for(static_cast<size_t>(w.rows), [&](size_t begin, size_t end) {
    for (int r0 = 0; r0 < n; r0 += kRowBlock) {
      int rn = std::min(kRowBlock, n - r0);
      for (size_t o = begin; o < end; ++o) {
        const float* wr = w.data + o * static_cast<size_t>(w.cols);
        for (int r = 0; r < rn; ++r)
          y[static_cast<size_t>(r0 + r) * w.rows + o] = dot(x + static_cast<size_t>(r0 + r) * w.cols, wr, w.cols);
      }
    }
  });
}

void rms_norm(const float* x, const float* weight, int dim, double eps, float* out) {
  double ss = 0.0;
  for (int i = 0; i < dim; ++i) ss += static_cast<double>(x[i]) * x[i];
  float scale = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
  for (int i = 0; i < dim; ++i) out[i] = weight[i] * (x[i] * scale);
}

void apply_rope(float* head, int head_dim, int position, double theta) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    // Same arithmetic order as HF: inv_freq in fp32, angle = position * inv_freq in fp32.
    float inv_freq = static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * i) / head_dim));
    float angle = static_cast<float>(position) * inv_freq;
    float c = std::cos(angle), s = std::sin(angle);
    float a = head[i], b = head[i + half];
    head[i] = a * c - b * s;
    head[i + half] = b * c + a * s;
  }
}

void softmax(std::span<float> x) {
  float m = -std::numeric_limits<float>::infinity();
  for (float v : x) m = std::max(m, v);
  double sum = 0.0;
  for (float& v : x) {
    v = std::exp(v - m);
    sum += v;
  }
  float inv = static_cast<float>(1.0 / sum);
  for (float& v : x) v *= inv;
}

void norm_rope_heads(float* heads, int count, int head_dim, const float* norm, double eps, int position,
                     double theta, int rotary_dim) {
  for (int h = 0; h < count; ++h) {
    float* head = heads + static_cast<size_t>(h) * head_dim;
    if (norm) rms_norm(head, norm, head_dim, eps, head);
    apply_rope(head, rotary_dim ? rotary_dim : head_dim, position, theta);
  }
}

}  // namespace ultraserve
