#pragma once
// Loads an HF checkpoint directory: config.json, the safetensors weights, tokenizer.json
// and the stop tokens (config.json and generation_config.json eos ids, plus ChatML's end
// tokens when the tokenizer has them, so chat and base prompts both stop).

#include <algorithm>
#include <filesystem>
#include <vector>

#include "model/model_config.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace ultraserve {

struct LoadedModel {
  ModelConfig config;
  ModelWeights weights;
  Tokenizer tokenizer;
  std::vector<int32_t> stop_token_ids;
};

LoadedModel load_model(const std::filesystem::path& dir);

// The token ids sampling may pick: those the tokenizer can decode. Checkpoints pad the
// embedding past the tokenizer (Qwen3: 151,936 rows, 151,669 tokens); the padding rows
// are never real tokens, so their logits are left out of sampling.
inline int sampleable_vocab(const ModelConfig& config, const Tokenizer& tokenizer) {
  return std::min(config.vocab_size, tokenizer.vocab_size());
}

}  // namespace ultraserve
