#pragma once
// A checkpoint's weights in the fp32 layout the CPU forward pass reads, with every tensor's
// name and shape checked against config.json at load time.

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
  std::vector<float> input_norm, post_attention_norm, q_norm, k_norm;
  Matrix q_proj, k_proj, v_proj, o_proj;
  bool moe = false;
  FeedForward dense;                 // when !moe
  Matrix router;                     // [num_experts, hidden] when moe
  std::vector<FeedForward> experts;  // when moe
};

struct ModelWeights {
  Matrix embed_tokens;
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  Matrix lm_head;  // empty when tie_word_embeddings: the forward pass uses embed_tokens
  const Matrix& output_matrix() const { return lm_head.data.empty() ? embed_tokens : lm_head; }
};

ModelWeights load_weights(const CheckpointTensors& tensors, const ModelConfig& config);

// The names and shapes a config implies, in checkpoint order (shared by the loader and the
// random-checkpoint writer so the two can never disagree).
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<WeightSpec> expected_weights(const ModelConfig& config);

}  // namespace ultraserve
