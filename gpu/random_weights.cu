// Random weights of a config's shapes, made on the device from a seed.
//
// Scales keep activations in a sane range through many layers: matrices are uniform in
// +-1/sqrt(fan-in) (unit-variance outputs for unit-variance inputs, up to a constant), norms
// are 1, and MXFP4 experts get random E2M1 codes (mean square ~ 8.5) under a block scale of
// 2^-2 / sqrt(fan-in) (E8M0 byte = 125 - log2(sqrt(fan-in)) rounded).

#include <cmath>

#include "gpu/cuda_util.cuh"
#include "gpu/device_weights.h"
#include "gpu/kernels/kernels.cuh"

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
  DeviceBuffer<float> ones(size_t n) {
    std::vector<float> host(n, 1.0f);
    DeviceBuffer<float> d(n);
    ULTRASERVE_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
    bytes += d.bytes();
    return d;
  }
  // `count` matrices of [rows, cols], back to back, in `format`; scales empty for bf16.
  void experts(size_t count, size_t rows, size_t cols, ExpertFormat format, DeviceBuffer<uint8_t>& values,
               DeviceBuffer<uint8_t>& scales) {
    if (format == ExpertFormat::bf16) {
      DeviceBuffer<uint16_t> m = matrix(count * rows, cols);  // same bytes, viewed as bytes below
      values = DeviceBuffer<uint8_t>(m.bytes());
      ULTRASERVE_CUDA_CHECK(cudaMemcpy(values.get(), m.get(), m.bytes(), cudaMemcpyDeviceToDevice));
      return;
    }
    values = DeviceBuffer<uint8_t>(count * rows * cols / 2);
    fill_random_bytes(values.get(), values.size(), seed + ++next, 0);
    scales = DeviceBuffer<uint8_t>(count * rows * cols / 32);
    const int scale_byte = static_cast<int>(std::lround(125.0 - 0.5 * std::log2(double(cols))));
    ULTRASERVE_CUDA_CHECK(cudaMemset(scales.get(), scale_byte, scales.size()));
    bytes += values.bytes() + scales.bytes();
  }
};

}  // namespace

DeviceModelWeights random_device_weights(const ModelConfig& c, ExpertFormat experts, uint64_t seed) {
  DeviceModelWeights d;
  d.experts = usable_expert_format(c, experts);
  Maker make{seed, d.bytes};
  d.embed = make.matrix(c.vocab_size, c.hidden_size);
  if (!c.tie_word_embeddings) d.lm_head = make.matrix(c.vocab_size, c.hidden_size);
  d.final_norm = make.ones(c.hidden_size);
  const std::vector<float> inv_freq = rope_inverse_frequencies(c);
  d.inv_freq = DeviceBuffer<float>(inv_freq.size());
  ULTRASERVE_CUDA_CHECK(cudaMemcpy(d.inv_freq.get(), inv_freq.data(), d.inv_freq.bytes(), cudaMemcpyHostToDevice));
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    DeviceLayerWeights& l = d.layers.emplace_back();
    l.input_norm = make.ones(c.hidden_size);
    l.post_attention_norm = make.ones(c.hidden_size);
    l.q_norm = make.ones(c.head_dim);
    l.k_norm = make.ones(c.head_dim);
    l.qkv = make.matrix(c.q_dim() + 2 * c.kv_dim(), c.hidden_size);
    l.o = make.matrix(c.hidden_size, c.q_dim());
    l.moe = c.is_moe_layer(layer);
    if (!l.moe) {
      l.dense_gate_up = make.matrix(2 * c.intermediate_size, c.hidden_size);
      l.dense_down = make.matrix(c.hidden_size, c.intermediate_size);
      continue;
    }
    l.router = make.matrix(c.num_experts, c.hidden_size);
    make.experts(c.num_experts, 2 * c.moe_intermediate_size, c.hidden_size, d.experts, l.experts_gate_up,
                 l.experts_gate_up_scales);
    make.experts(c.num_experts, c.hidden_size, c.moe_intermediate_size, d.experts, l.experts_down,
                 l.experts_down_scales);
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
