#pragma once
// The Qwen3 / Qwen3-MoE forward pass on the CPU, in fp32, for a batch of sequences that
// each bring zero or more new tokens (prefill chunks and decode steps mix freely).
// Layer by layer it mirrors transformers' Qwen3MoeForCausalLM:
//   x = embed(tokens)
//   for each layer:  x += o_proj(attention(rope(q_norm(q)), rope(k_norm(k)), v))   on rms_norm(x)
//                    x += mlp(rms_norm(x))   (SwiGLU, or softmax top-k routed experts)
//   logits = lm_head(rms_norm(x))

#include <cstdint>
#include <span>
#include <vector>

#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/thread_pool.h"
#include "model/weights.h"

namespace ultraserve {

struct SequenceStep {
  KvSequence* kv;                     // the sequence's cache; its K/V for `tokens` are appended
  std::span<const int32_t> tokens;    // new tokens, at positions kv->length ...
  bool all_logits = false;            // logits for every new token, or only for the last
};

class CpuModel {
 public:
  CpuModel(ModelConfig config, ModelWeights weights, ThreadPool& pool);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }

  // The layers whose outputs forward() reports in `taps` (a DFlash draft's target_layer_ids).
  void set_taps(std::vector<int> layers);
  const std::vector<int>& taps() const { return tap_layers_; }

  // Runs the new tokens of every step through the model. The caller reserved KV room for
  // them (cache.reserve(*step.kv, step.kv->length + step.tokens.size())). Returns the logits,
  // [rows, vocab], rows in step order: every new token of an all_logits step, else its last.
  // With `taps`, also the tapped layers' outputs for EVERY new token, [tokens, taps x hidden].
  std::vector<float> forward(PagedKvCache& cache, std::span<const SequenceStep> steps,
                             std::vector<float>* taps = nullptr);

 private:
  struct Batch;  // per-call scratch: token rows, their sequences and positions
  void attention_block(PagedKvCache& cache, int layer, Batch& b);
  void mlp_block(int layer, Batch& b);
  void routed_experts(const LayerWeights& L, const float* in, int n, float* out);

  ModelConfig config_;
  ModelWeights weights_;
  ThreadPool& pool_;
  std::vector<int> tap_layers_;
};

// out[n, hidden] = down(silu(gate(in)) * up(in)): a dense MLP or one routed expert.
void feed_forward(ThreadPool& pool, const FeedForward& f, const float* in, int n, float* out);

}  // namespace ultraserve
