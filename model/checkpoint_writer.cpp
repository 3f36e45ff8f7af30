#include "model/checkpoint_writer.h"

#include <cstdio>
#include <fstream>

#include "model/error.h"

namespace ultraserve {

namespace {
const std::string kSingle = "model.safetensors", kIndex = "model.safetensors.index.json";
}  // namespace

uint64_t write_checkpoint_weights(const std::filesystem::path& dir, const std::vector<ShardPlan>& shards,
                                  const TensorFiller& fill) {
  // transformers refuses safetensors files whose metadata lacks format "pt".
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  uint64_t total = 0;
  std::string weight_map;
  for (const ShardPlan& shard : shards) {
    write_safetensors(dir / shard.file, shard.tensors, fill, metadata);
    for (const TensorSpec& t : shard.tensors) {
      total += t.nbytes();
      weight_map += (weight_map.empty() ? "" : ",\n    ") + json_string(t.name) + ": " + json_string(shard.file);
    }
  }
  if (shards.size() == 1 && shards[0].file == kSingle) {
    std::filesystem::remove(dir / kIndex);
    return total;
  }
  std::filesystem::remove(dir / kSingle);
  write_text_file(dir / kIndex, "{\n  \"metadata\": {\"total_size\": " + std::to_string(total) +
                                    "},\n  \"weight_map\": {\n    " + weight_map + "\n  }\n}\n");
  return total;
}

std::string shard_file_name(size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

void write_text_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  if (!out || !out.write(text.data(), static_cast<std::streamsize>(text.size())))
    throw ModelError(p.string() + ": cannot write");
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", c); out += buf; }
    else out += static_cast<char>(c);
  }
  return out + "\"";
}

}  // namespace ultraserve
