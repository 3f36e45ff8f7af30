#pragma once
// A checkpoint's weights in the fp32 layout the CPU forward pass reads, with every tensor's
// name and shape checked against config.json at load time.
//
// Any matrix may be stored as one BF16/F16/F32 `.weight` tensor or as block-scaled FP8 (an
// F8_E4M3 `.weight` + `.weight_scale_inv`, model/fp8_tensors.h; the checkpoints written here and
// published ones make FP8 only the linear layers' weights); routed experts' matrices may instead
// be MXFP4 `.blocks` + `.scales` (model/mxfp4_tensors.h). The CPU engine dequantizes both to fp32.
// A GPU loader that wants the 4-bit bytes reads them from the checkpoint itself with
// find_mxfp4() / load_expert_mxfp4(), so they are never held twice.

#include <filesystem>
#include <vector>

#include "model/cpu_kernels.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace ultraserve {

struct Matrix {
  int rows = 0, cols = 0;
  std::vector<float> data;
  MatrixView view() const { return {data.data(), rows, cols}; }
};

struct FeedForward {  // SwiGLU: down(silu(gate(x)) * up(x))
  Matrix gate, up, down;
};

struct LayerWeights {
  std::vector<float> input_norm, post_attention_norm, q_norm, k_norm;  // q/k norm: empty without qk_norm
  Matrix q_proj, k_proj, v_proj, o_proj;
  std::vector<float> sinks;          // [heads] attention-sink logits (MiMo-V2's sliding layers)
  bool moe = false;
  FeedForward dense;                 // when !moe
  Matrix router;                     // [num_experts, hidden] when moe
  std::vector<float> router_bias;    // [num_experts] e_score_correction_bias (sigmoid_grouped routing)
  std::vector<FeedForward> experts;  // when moe
};

// How a checkpoint stores its routed experts' matrices (every one the same way).
enum class ExpertStorage {
  dense,  // one BF16/F16/F32 .weight tensor each
  fp8,    // F8_E4M3 .weight + .weight_scale_inv
  mxfp4,  // .blocks + .scales
};

struct ModelWeights {
  ExpertStorage expert_storage = ExpertStorage::dense;  // as stored; `experts` are fp32 either way
  Matrix embed_tokens;
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  Matrix lm_head;  // empty when tie_word_embeddings: the forward pass uses embed_tokens
  const Matrix& output_matrix() const { return lm_head.data.empty() ? embed_tokens : lm_head; }
  // A DFlash draft only (config.dflash): it has no embed_tokens or lm_head of its own, and
  // fuses the target's tapped hidden states as hidden_norm(fc(concat(taps))).
  Matrix draft_fc;                       // [hidden, taps * hidden]
  std::vector<float> draft_hidden_norm;  // [hidden]
};

ModelWeights load_weights(const CheckpointTensors& tensors, const ModelConfig& config);

// One matrix as fp32, whichever way it is stored (float, FP8 or MXFP4), for callers that stream
// a checkpoint matrix by matrix (quantize). Assumes check_weights() has accepted `tensors`.
Matrix load_matrix(const CheckpointTensors& tensors, const ModelConfig& config, const std::string& weight_name);

// The names and shapes a config implies, in checkpoint order (shared by the loader, the
// random-checkpoint writer and the quantizer so they can never disagree). Names are those of
// the float form (".weight"); a matrix may be stored as FP8, a routed expert's as MXFP4 instead.
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  int layer = -1;              // the decoder layer it belongs to; -1 outside the layers
  bool routed_expert = false;  // mlp.experts.E.{gate,up,down}_proj
  // A linear layer's weight: attention q/k/v/o, dense MLP and routed experts' gate/up/down.
  // These are what FP8 checkpoints store in FP8 (embeddings, norms, router and LM head stay float).
  bool linear = false;
};
std::vector<WeightSpec> expected_weights(const ModelConfig& config);

// Checks every tensor the config implies — present, a float dtype, a valid FP8 pair (a matrix)
// or a valid MXFP4 pair (a routed expert), the shape config.json implies — and returns how the
// routed experts are stored. Throws ModelError naming the file and tensor otherwise, or when
// experts mix storages.
ExpertStorage check_weights(const CheckpointTensors& tensors, const ModelConfig& config);

}  // namespace ultraserve
