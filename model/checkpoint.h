#pragma once
// Loads an HF checkpoint directory: config.json, the safetensors weights, tokenizer.json
// and the stop tokens (config.json and generation_config.json eos ids, plus ChatML's end
// tokens when the tokenizer has them, so chat and base prompts both stop).

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
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

// The shipped default model (models/default, with its draft in draft/): the one under the current
// folder, else the one of the source tree this binary was built from; "" when neither exists.
// serve, generate and evaluate use it when no --model is named.
std::string default_model_dir();

// A model folder may carry its DFlash draft in draft/ (a folder with its own config.json).
std::optional<std::filesystem::path> bundled_draft(const std::filesystem::path& model_dir);

// The draft a command uses, the same rule everywhere: none with --no-draft, else the one named
// with --draft, else the model's bundled one (if any).
std::optional<std::filesystem::path> choose_draft(const std::filesystem::path& model_dir, const std::string& named,
                                                  bool no_draft);

// The token ids sampling may pick: those the tokenizer can decode. Checkpoints pad the
// embedding past the tokenizer (Qwen3: 151,936 rows, 151,669 tokens); the padding rows
// are never real tokens, so their logits are left out of sampling.
inline int sampleable_vocab(const ModelConfig& config, const Tokenizer& tokenizer) {
  return std::min(config.vocab_size, tokenizer.vocab_size());
}

}  // namespace ultraserve
