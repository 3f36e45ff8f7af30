// Host weights -> device: bf16 conversion, q|k|v and gate|up fusion, expert quantisation.

#include <cmath>
#include <cstring>

#include "gpu/device_weights.h"
#include "gpu/expert_tiles.h"
#include "model/fp8.h"
#include "model/mxfp4.h"

namespace ultraserve::gpu {
namespace {

uint16_t to_bf16(float f) {  // round to nearest even, as torch's .to(bfloat16)
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return 0x7fc0;
  bits += 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host, size_t& bytes) {
  DeviceBuffer<T> d(host.size());
  if (!host.empty()) ULTRASERVE_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
  bytes += d.bytes();
  return d;
}

// Row-wise concatenation of matrices with equal column counts, as bf16.
DeviceBuffer<uint16_t> stacked_bf16(std::initializer_list<const Matrix*> parts, size_t& bytes) {
  std::vector<uint16_t> host;
  for (const Matrix* m : parts)
    for (float v : m->data) host.push_back(to_bf16(v));
  return to_device(host, bytes);
}

// The same concatenation as a linear layer: bf16, or FP8 in 128 x 128 blocks of the fused
// matrix. Published FP8 checkpoints have q/k/v heights that are multiples of 128, so their
// blocks are the fused matrix's, and quantizing the loaded (dequantized) values again gives
// back their codes; the scales come back up to an fp32 rounding (amax / 448 of q x scale).
DeviceLinear stacked_linear(std::initializer_list<const Matrix*> parts, bool fp8, size_t& bytes) {
  DeviceLinear d;
  d.cols = (*parts.begin())->cols;
  for (const Matrix* m : parts) d.rows += m->rows;
  if (!fp8 || d.cols % 16) {  // the FP8 GEMV reads 16 codes at a time
    d.bf16 = stacked_bf16(parts, bytes);
    return d;
  }
  std::vector<float> host;
  for (const Matrix* m : parts) host.insert(host.end(), m->data.begin(), m->data.end());
  const Fp8Matrix q = quantize_fp8(host, d.rows, d.cols, Fp8BlockSize{});  // 128 x 128, as the kernels read
  d.fp8 = to_device(q.codes, bytes);
  d.scale_inv = to_device(q.scale_inv, bytes);
  return d;
}

// Every expert of a layer, expert-major; for gate/up, each expert's gate rows then its up rows
// (bf16), or, as MXFP4, in the tensor cores' tile order (gpu/expert_tiles.h).
struct ExpertBytes {
  Mxfp4Tiles tiles;  // mxfp4: codes and scales
  std::vector<uint8_t> bf16;
  void append(std::initializer_list<const Matrix*> parts, ExpertFormat format, TileRows order) {
    if (format == ExpertFormat::mxfp4) {
      Mxfp4Matrix stacked{0, (*parts.begin())->cols, {}, {}};
      for (const Matrix* m : parts) {  // quantized row by row, so stacking the quantized rows is the same
        const Mxfp4Matrix q = quantize_mxfp4(m->data, m->rows, m->cols);
        stacked.rows += q.rows;
        stacked.blocks.insert(stacked.blocks.end(), q.blocks.begin(), q.blocks.end());
        stacked.scales.insert(stacked.scales.end(), q.scales.begin(), q.scales.end());
      }
      append_mxfp4_tiles(stacked, order, tiles);
      return;
    }
    for (const Matrix* m : parts)
      for (float v : m->data) {
        const uint16_t b = to_bf16(v);
        bf16.push_back(static_cast<uint8_t>(b & 0xff));
        bf16.push_back(static_cast<uint8_t>(b >> 8));
      }
  }
  const std::vector<uint8_t>& values() const { return tiles.codes.empty() ? bf16 : tiles.codes; }
};

}  // namespace

ExpertFormat usable_expert_format(const ModelConfig& config, ExpertFormat wanted) {
  const bool fits = config.hidden_size % kMxBlock == 0 && config.moe_intermediate_size % kMxBlock == 0;
  return wanted == ExpertFormat::mxfp4 && fits ? ExpertFormat::mxfp4 : ExpertFormat::bf16;
}

std::vector<float> rope_inverse_frequencies(double theta, int rotary_dim) {
  std::vector<float> f(rotary_dim / 2);
  for (int i = 0; i < rotary_dim / 2; ++i)
    f[i] = static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * i) / rotary_dim));
  return f;
}

void upload_rope_tables(const ModelConfig& config, DeviceModelWeights& d) {
  const auto table = [&](ModelConfig::Rope r) {
    const std::vector<float> f = rope_inverse_frequencies(r.theta, r.rotary_dim);
    DeviceBuffer<float> b(f.size());
    ULTRASERVE_CUDA_CHECK(cudaMemcpy(b.get(), f.data(), b.bytes(), cudaMemcpyHostToDevice));
    d.bytes += b.bytes();
    return b;
  };
  d.inv_freq = table({config.rope_theta, config.rotary_dim ? config.rotary_dim : config.head_dim});
  if (config.sliding) d.sliding_inv_freq = table({config.sliding->rope_theta, config.sliding->rotary_dim});
}

DeviceModelWeights upload_weights(const ModelConfig& config, const ModelWeights& weights, ExpertFormat experts) {
  DeviceModelWeights d;
  d.experts = usable_expert_format(config, experts);
  const bool fp8 = config.fp8.has_value();
  if (!weights.embed_tokens.data.empty()) d.embed = stacked_bf16({&weights.embed_tokens}, d.bytes);
  if (!weights.lm_head.data.empty()) d.lm_head = stacked_bf16({&weights.lm_head}, d.bytes);
  d.final_norm = to_device(weights.final_norm, d.bytes);
  upload_rope_tables(config, d);
  for (const LayerWeights& L : weights.layers) {
    DeviceLayerWeights& l = d.layers.emplace_back();
    l.input_norm = to_device(L.input_norm, d.bytes);
    l.post_attention_norm = to_device(L.post_attention_norm, d.bytes);
    l.q_norm = to_device(L.q_norm, d.bytes);
    l.k_norm = to_device(L.k_norm, d.bytes);
    l.qkv = stacked_linear({&L.q_proj, &L.k_proj, &L.v_proj}, fp8, d.bytes);
    l.o = stacked_linear({&L.o_proj}, fp8, d.bytes);
    l.sinks = to_device(L.sinks, d.bytes);
    l.moe = L.moe;
    if (!L.moe) {
      l.dense_gate_up = stacked_linear({&L.dense.gate, &L.dense.up}, fp8, d.bytes);
      l.dense_down = stacked_linear({&L.dense.down}, fp8, d.bytes);
      continue;
    }
    l.router = stacked_bf16({&L.router}, d.bytes);
    l.router_bias = to_device(L.router_bias, d.bytes);
    ExpertBytes gate_up, down;
    for (const FeedForward& e : L.experts) {
      gate_up.append({&e.gate, &e.up}, d.experts, TileRows::gate_up_pairs);
      down.append({&e.down}, d.experts, TileRows::consecutive);
    }
    l.experts_gate_up = to_device(gate_up.values(), d.bytes);
    l.experts_gate_up_scales = to_device(gate_up.tiles.scales, d.bytes);
    l.experts_down = to_device(down.values(), d.bytes);
    l.experts_down_scales = to_device(down.tiles.scales, d.bytes);
  }
  return d;
}

DeviceDraftWeights upload_draft_weights(const ModelConfig& config, const ModelWeights& weights) {
  DeviceDraftWeights d;
  d.stack = upload_weights(config, weights, ExpertFormat::bf16);
  size_t bytes = 0;
  d.fc = stacked_bf16({&weights.draft_fc}, bytes);
  d.hidden_norm = to_device(weights.draft_hidden_norm, bytes);
  return d;
}

}  // namespace ultraserve::gpu
