#pragma once
// A model's weights in device memory, in the layout the kernels read:
//   bf16   attention projections (q|k|v fused into one matrix), router, dense MLP (gate|up
//          fused), embeddings and LM head; the projections and dense MLP in block-scaled FP8
//          instead when the checkpoint's config has an FP8 quantization_config
//   fp32   norm weights, RoPE inverse frequencies (one table per layer kind in a hybrid model),
//          attention sinks and the router's score-correction bias (MiMo-V2)
//   experts per layer, expert-major: bf16 (gate rows then up rows), or MXFP4 codes + scales in
//          the tensor cores' tile order (gpu/expert_tiles.h; model/mxfp4.h has the format)
// bf16 is held as uint16_t here so that g++-built code can own these buffers.

#include <cstdint>
#include <vector>

#include "gpu/device_buffer.h"
#include "gpu/expert_format.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace ultraserve::gpu {

// A linear layer's weight [rows, cols]: bf16, or block-scaled FP8 (E4M3 codes, one fp32 scale per
// 128 x 128 block: model/fp8.h's layout).
struct DeviceLinear {
  int rows = 0, cols = 0;
  DeviceBuffer<uint16_t> bf16;
  DeviceBuffer<uint8_t> fp8;
  DeviceBuffer<float> scale_inv;
  bool is_fp8() const { return !fp8.empty(); }
  size_t bytes() const { return bf16.bytes() + fp8.bytes() + scale_inv.bytes(); }
};

struct DeviceLayerWeights {
  DeviceBuffer<float> input_norm, post_attention_norm, q_norm, k_norm;  // q/k norm: empty without qk_norm
  DeviceLinear qkv, o;  // [q_dim + k_dim + v_dim, hidden], [hidden, attention_out_dim]
  DeviceBuffer<float> sinks;      // [heads] attention-sink logits, or empty
  bool moe = false;
  DeviceLinear dense_gate_up, dense_down;            // [2 intermediate, hidden], [hidden, intermediate]
  DeviceBuffer<uint16_t> router;                     // [experts, hidden]
  DeviceBuffer<float> router_bias;                   // [experts] e_score_correction_bias (sigmoid routing)
  DeviceBuffer<uint8_t> experts_gate_up, experts_gate_up_scales, experts_down, experts_down_scales;
};

struct DeviceModelWeights {
  ExpertFormat experts = ExpertFormat::bf16;
  DeviceBuffer<uint16_t> embed;    // [vocab, hidden]
  DeviceBuffer<uint16_t> lm_head;  // empty when tied to embed
  DeviceBuffer<float> final_norm;
  DeviceBuffer<float> inv_freq, sliding_inv_freq;  // RoPE of the full-attention and the sliding layers
  std::vector<DeviceLayerWeights> layers;
  size_t bytes = 0;  // all of the above

  const uint16_t* output_matrix() const { return lm_head.empty() ? embed.get() : lm_head.get(); }
};

// A DFlash draft (model/dflash.h): its layers, final norm and RoPE frequencies in `stack`, whose
// embeddings stay empty (the draft borrows the target's embeddings and LM head), and the fusion
// of the target's tapped hidden states into its context features.
struct DeviceDraftWeights {
  DeviceModelWeights stack;
  DeviceBuffer<uint16_t> fc;        // bf16 [hidden, taps * hidden]
  DeviceBuffer<float> hidden_norm;  // [hidden]
  size_t bytes() const { return stack.bytes + fc.bytes() + hidden_norm.bytes(); }
};

// The format experts get: `wanted`, unless the shapes rule MXFP4 out (dims not multiples of 32).
ExpertFormat usable_expert_format(const ModelConfig& config, ExpertFormat wanted);

// Copies host weights to the current device (converting to bf16, quantising experts to MXFP4
// when `experts` says so). The host weights are fp32 whatever the checkpoint stores:
// load_weights() has dequantized block-scaled FP8 (and MXFP4) already, so an FP8 checkpoint is
// served from bf16 roundings of its dequantized values until an FP8 GEMV kernel reads the bytes.
DeviceModelWeights upload_weights(const ModelConfig& config, const ModelWeights& weights, ExpertFormat experts);

DeviceDraftWeights upload_draft_weights(const ModelConfig& config, const ModelWeights& weights);

// Seeded random weights made on the current device: benchmark shapes need no checkpoint.
DeviceModelWeights random_device_weights(const ModelConfig& config, ExpertFormat experts, uint64_t seed);
DeviceDraftWeights random_draft_weights(const ModelConfig& config, uint64_t seed);

// RoPE inverse frequencies as transformers computes them (fp32): rotary_dim / 2 of them.
std::vector<float> rope_inverse_frequencies(double theta, int rotary_dim);
// The model's RoPE tables on the device: inv_freq, and sliding_inv_freq for a hybrid model.
void upload_rope_tables(const ModelConfig& config, DeviceModelWeights& d);

}  // namespace ultraserve::gpu
