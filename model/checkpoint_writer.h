#pragma once
// Writing a checkpoint's weights in HF's layout: one model.safetensors, or shards listed by a
// model.safetensors.index.json. Shared by make-checkpoint and quantize.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/safetensors.h"

namespace ultraserve {


struct ShardPlan {
  std::string file;                  // a plain file name inside the checkpoint directory
  std::vector<TensorSpec> tensors;  // in the order they are laid out
};

// Writes the shards into `dir`, tensor by tensor through `fill`. A lone shard named
// model.safetensors is the whole checkpoint; anything else gets an index. The other layout's
// entry file is removed, so a directory written over reads back as this checkpoint.
// Returns the bytes of weights written.
uint64_t write_checkpoint_weights(const std::filesystem::path& dir, const std::vector<ShardPlan>& shards,
                                  const TensorFiller& fill);

// HF's shard names: "model-00001-of-00003.safetensors".
std::string shard_file_name(size_t index, size_t count);

void write_text_file(const std::filesystem::path& path, const std::string& text);  // ModelError on failure
std::string json_string(const std::string& s);  // s as a quoted JSON string

}  // namespace ultraserve
