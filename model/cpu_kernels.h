#pragma once
// The fp32 building blocks of the CPU forward pass. Row-major everywhere; a weight matrix
// is [out_features, in_features] exactly as HF stores nn.Linear weights.

#include <cmath>
#include <cstddef>
#include <span>

#include "model/thread_pool.h"

namespace ultraserve {

struct MatrixView {
  const float* data;
  int rows;  // out_features
  int cols;  // in_features
};

// y[n, w.rows] = x[n, w.cols] * w^T, parallel over output features.
void matmul_nt(ThreadPool& pool, const float* x, int n, MatrixView w, float* y);

float dot(const float* a, const float* b, int n);

// out = x / rms(x) * weight, over `dim` elements.
void rms_norm(const float* x, const float* weight, int dim, double eps, float* out);

// Rotates (first half, second half) pairs of one head in place: HF's rotate_half convention.
void apply_rope(float* head, int head_dim, int position, double theta);

// Per-head RMS norm (q_norm / k_norm; skipped when `norm` is null) then RoPE on the first
// `rotary_dim` dims of each head (0: all of them; fewer is MiMo-V2's partial RoPE), in place,
// for `count` consecutive heads.
void norm_rope_heads(float* heads, int count, int head_dim, const float* norm, double eps, int position,
                     double theta, int rotary_dim = 0);

// In-place softmax; returns nothing, handles -inf entries.
void softmax(std::span<float> x);

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace ultraserve
