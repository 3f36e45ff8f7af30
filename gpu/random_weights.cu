// Random weights of a config's shapes, made on the device from a seed.
//
// Scales keep activations in a sane range through many layers: matrices are uniform in
// +-1/sqrt(fan-in) (unit-variance outputs for unit-variance inputs, up to a constant), norms
// are 1, and MXFP4 experts get random E2M1 codes (mean square ~ 8.5) under a block scale of
// 2^-2 / sqrt(fan-in) (E8M0 byte = 125 - log2(sqrt(fan-in)) rounded). FP8 linear layers (a
// config with an FP8 quantization_config) get random E4M3 codes with the lowest exponent bit
// cleared (never the NaN code) under one scale that gives them the bf16 matrices' mean square.

#include <cmath>

#include "gpu/cuda_util.cuh"
#include "gpu/device_weights.h"
#include "gpu/expert_tiles.h"
#include "gpu/kernels/kernels.cuh"
#include "model/fp8.h"

namespace ultraserve::gpu {
namespace {

struct Maker {
  uint64_t seed;
  size_t& bytes;
  uint64_t next = 0;

  DeviceBuffer<uint16_t> matrix(size_t rows, size_t cols) {
    DeviceBuffer<uint16_t> m(rows * cols);
    fill_uniform_bf16(reinterpret_cast<bf16*>(m.get()), m.size(), 1.0f / std::sqrt(float(cols)), seed + ++next, 0);
    bytes += m.bytes();
    return m;
  }
  DeviceLinear linear(size_t rows, size_t cols, bool fp8) {
    DeviceLinear d;
    d.rows = static_cast<int>(rows), d.cols = static_cast<int>(cols);
    if (!fp8 || cols % 16) {
      d.bf16 = matrix(rows, cols);
      return d;
    }
    constexpr uint8_t kMask = 0xf7;
    double mean_square = 0;
    for (int c = 0; c < 256; ++c) mean_square += (c & ~kMask) ? 0.0 : double(e4m3_to_f32(uint8_t(c))) * e4m3_to_f32(uint8_t(c)) / 128;
    d.fp8 = DeviceBuffer<uint8_t>(rows * cols);
    fill_random_bytes(d.fp8.get(), d.fp8.size(), seed + ++next, 0, kMask);
    const auto scales = fp8_scale_shape(int64_t(rows), int64_t(cols), Fp8BlockSize{});
    d.scale_inv = filled(size_t(scales[0] * scales[1]), float(std::sqrt(1.0 / (3.0 * double(cols) * mean_square))));
    bytes += d.fp8.bytes();
    return d;
  }
  DeviceBuffer<float> ones(size_t n) { return filled(n, 1.0f); }
  DeviceBuffer<float> filled(size_t n, float value) {
    std::vector<float> host(n, value);
    DeviceBuffer<float> d(n);
    ULTRASERVE_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
    bytes += d.bytes();
    return d;
  }
  // `count` matrices of [rows, cols], back to back, in `format` (MXFP4: as tiles in `order`);
  // scales empty for bf16.
  void experts(size_t count, size_t rows, size_t cols, ExpertFormat format, TileRows order,
               DeviceBuffer<uint8_t>& values, DeviceBuffer<uint8_t>& scales) {
    if (format == ExpertFormat::bf16) {
      DeviceBuffer<uint16_t> m = matrix(count * rows, cols);  // same bytes, viewed as bytes below
      values = DeviceBuffer<uint8_t>(m.bytes());
      ULTRASERVE_CUDA_CHECK(cudaMemcpy(values.get(), m.get(), m.bytes(), cudaMemcpyDeviceToDevice));
      return;
    }
    values = DeviceBuffer<uint8_t>(count * mxfp4_tile_code_bytes(int(rows), int(cols), order));
    fill_random_bytes(values.get(), values.size(), seed + ++next, 0);  // random codes: any order is as random
    scales = DeviceBuffer<uint8_t>(count * mxfp4_tile_scale_bytes(int(rows), int(cols), order));
    const int scale_byte = static_cast<int>(std::lround(125.0 - 0.5 * std::log2(double(cols))));
    ULTRASERVE_CUDA_CHECK(cudaMemset(scales.get(), scale_byte, scales.size()));
    bytes += values.bytes() + scales.bytes();
  }
};

}  // namespace

DeviceModelWeights random_device_weights(const ModelConfig& c, ExpertFormat experts, uint64_t seed) {
  DeviceModelWeights d;
  d.experts = usable_expert_format(c, experts);
  const bool fp8 = c.fp8.has_value();
  Maker make{seed, d.bytes};
  d.embed = make.matrix(c.vocab_size, c.hidden_size);
  if (!c.tie_word_embeddings) d.lm_head = make.matrix(c.vocab_size, c.hidden_size);
  d.final_norm = make.ones(c.hidden_size);
  upload_rope_tables(c, d);
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    DeviceLayerWeights& l = d.layers.emplace_back();
    l.input_norm = make.ones(c.hidden_size);
    l.post_attention_norm = make.ones(c.hidden_size);
    if (c.qk_norm) {
      l.q_norm = make.ones(c.head_dim);
      l.k_norm = make.ones(c.head_dim);
    }
    l.qkv = make.linear(c.q_dim() + c.k_dim(layer) + c.v_dim(layer), c.hidden_size, fp8);
    l.o = make.linear(c.hidden_size, c.attention_out_dim(), fp8);
    if (c.is_sliding_layer(layer) && c.sliding->sinks) l.sinks = make.filled(c.num_attention_heads, 0.5f);
    l.moe = c.is_moe_layer(layer);
    if (!l.moe) {
      l.dense_gate_up = make.linear(2 * c.intermediate_size, c.hidden_size, fp8);
      l.dense_down = make.linear(c.hidden_size, c.intermediate_size, fp8);
      continue;
    }
    l.router = make.matrix(c.num_experts, c.hidden_size);
    if (c.router == ModelConfig::Router::sigmoid_grouped) l.router_bias = make.filled(c.num_experts, 0.0f);
    make.experts(c.num_experts, 2 * c.moe_intermediate_size, c.hidden_size, d.experts, TileRows::gate_up_pairs,
                 l.experts_gate_up, l.experts_gate_up_scales);
    make.experts(c.num_experts, c.hidden_size, c.moe_intermediate_size, d.experts, TileRows::consecutive,
                 l.experts_down, l.experts_down_scales);
  }
  ULTRASERVE_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

DeviceDraftWeights random_draft_weights(const ModelConfig& c, uint64_t seed) {
  ModelConfig layers_only = c;
  layers_only.vocab_size = 0;  // the draft has no embeddings of its own
  layers_only.tie_word_embeddings = true;
  DeviceDraftWeights d;
  d.stack = random_device_weights(layers_only, ExpertFormat::bf16, seed);
  size_t bytes = 0;
  Maker make{seed ^ 0x5eedd4af7ull, bytes};
  d.fc = make.matrix(c.hidden_size, c.dflash->target_layer_ids.size() * size_t(c.hidden_size));
  d.hidden_norm = make.ones(c.hidden_size);
  ULTRASERVE_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

}  // namespace ultraserve::gpu
