#include "model/checkpoint.h"

#include <algorithm>

#include "model/error.h"

namespace ultraserve {

LoadedModel load_model(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) throw ModelError(dir.string() + ": not a model directory");
  ModelConfig config = ModelConfig::load(dir / "config.json");
  Tokenizer tokenizer = Tokenizer::load(dir / "tokenizer.json");
  if (tokenizer.vocab_size() > config.vocab_size)
    throw ModelError((dir / "tokenizer.json").string() + ": " + std::to_string(tokenizer.vocab_size()) +
                     " tokens do not fit the model's vocab_size " + std::to_string(config.vocab_size));
  ModelWeights weights = load_weights(CheckpointTensors::open(dir), config);

  std::vector<int32_t> stops = config.eos_token_ids;
  const auto generation_config = dir / "generation_config.json";
  if (std::filesystem::exists(generation_config))
    for (int32_t id : parse_eos_token_ids(read_text_file(generation_config), generation_config.string(),
                                          config.vocab_size))
      stops.push_back(id);
  for (const char* name : {"<|im_end|>", "<|endoftext|>"})
    if (auto id = tokenizer.token_to_id(name)) stops.push_back(*id);
  std::sort(stops.begin(), stops.end());
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  return {std::move(config), std::move(weights), std::move(tokenizer), std::move(stops)};
}

std::string default_model_dir() {
  for (const std::filesystem::path& dir : {std::filesystem::path("models/default"),
                                          std::filesystem::path(ULTRASERVE_SHIPPED_MODELS) / "default"})
    if (std::filesystem::exists(dir / "config.json")) return dir.string();
  return "";
}

std::optional<std::filesystem::path> bundled_draft(const std::filesystem::path& model_dir) {
  const auto dir = model_dir / "draft";
  if (std::filesystem::exists(dir / "config.json")) return dir;
  return std::nullopt;
}

std::optional<std::filesystem::path> choose_draft(const std::filesystem::path& model_dir, const std::string& named,
                                                  bool no_draft) {
  if (no_draft) return std::nullopt;
  if (!named.empty()) return std::filesystem::path(named);
  return bundled_draft(model_dir);
}

}  // namespace ultraserve
