#pragma once
// Small helpers shared by the tests: scratch directories, files, and tiny checkpoints.

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "model/random_checkpoint.h"
#include "tests/test_time.h"

namespace ultraserve::testing {

// The source and build trees, as configured; the environment variables of the same names
// override them where the tests run elsewhere (scripts/gpu.sh carries them to a GPU machine).
inline std::filesystem::path source_dir() {
  const char* env = std::getenv("ULTRASERVE_SOURCE_DIR");
  return env ? env : ULTRASERVE_SOURCE_DIR;
}
inline std::filesystem::path binary_dir() {
  const char* env = std::getenv("ULTRASERVE_BINARY_DIR");
  return env ? env : ULTRASERVE_BINARY_DIR;
}
inline std::filesystem::path fixture(const std::string& relative) { return source_dir() / "tests/fixtures" / relative; }

// A fresh directory under the system temp dir, removed when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("ultraserve-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// A random checkpoint of one of the configs in tests/fixtures/configs.
inline std::filesystem::path make_checkpoint(const ScratchDir& dir, const std::string& config, uint64_t seed = 1,
                                             DType dtype = DType::BF16, uint64_t shard_bytes = 4ull << 30) {
  RandomCheckpointOptions o;
  o.config_json = fixture("configs/" + config);
  o.out_dir = dir / config;
  o.seed = seed;
  o.dtype = dtype;
  o.shard_bytes = shard_bytes;
  write_random_checkpoint(o);
  return o.out_dir;
}

// A tensor of a model.safetensors with its bytes, for tests that break a checkpoint on purpose.
struct StoredTensor {
  TensorSpec spec;
  std::vector<std::byte> bytes;
};

// Rewrites dir/model.safetensors after `edit` changed its tensors; a tensor whose size changed
// gets zeros (or its bytes cut short), which is all the header checks look at.
inline void rewrite_weights(const std::filesystem::path& dir,
                            const std::function<void(std::vector<StoredTensor>&)>& edit) {
  std::vector<StoredTensor> tensors;
  {
    auto file = SafetensorsFile::open(dir / "model.safetensors");
    for (const auto& [name, v] : file->tensors())
      tensors.push_back({{name, v.dtype, v.shape}, {v.bytes.begin(), v.bytes.end()}});
  }
  edit(tensors);
  std::vector<TensorSpec> specs;
  for (StoredTensor& t : tensors) {
    t.bytes.resize(t.spec.nbytes());
    specs.push_back(t.spec);
  }
  write_safetensors(dir / "model.safetensors", specs, [&](const TensorSpec& spec, std::span<std::byte> out) {
    for (const StoredTensor& t : tensors)
      if (t.spec.name == spec.name) std::memcpy(out.data(), t.bytes.data(), out.size());
  });
}

inline StoredTensor& find_stored(std::vector<StoredTensor>& tensors, const std::string& name) {
  for (StoredTensor& t : tensors)
    if (t.spec.name == name) return t;
  throw std::logic_error("no tensor " + name);
}

inline void erase_stored(std::vector<StoredTensor>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const StoredTensor& t) { return t.spec.name == name; });
}

// max |ours - ref| / max |ref| over one logits row: the error measure of every logits test.
inline double row_relative_error(std::span<const float> ours, std::span<const float> ref) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::fabs(double(ours[i]) - ref[i]));
    scale = std::max(scale, std::fabs(double(ref[i])));
  }
  return diff / scale;
}

// How far the reference's best token is ahead of its second best: a greedy divergence at a
// near-tie is a rounding difference, anywhere else a bug.
inline float top2_margin(std::span<const float> logits) {
  float a = -INFINITY, b = -INFINITY;
  for (float v : logits) {
    if (v > a) b = a, a = v;
    else if (v > b) b = v;
  }
  return a - b;
}

// The test model with a long context whose stop tokens can never be sampled: the config's
// end-of-sequence id (300) lies past the tokenizer's 259 tokens, and the tokenizer's special
// tokens are renamed so that none is taken for a stop token. A request with a large max_tokens
// runs until it is cancelled or times out, so tests of "while a request is running" never race
// against the request's own end.
inline std::filesystem::path make_endless_checkpoint(const ScratchDir& dir, uint64_t seed = 3) {
  std::string config = read_file(fixture("configs/moe_topk2_norm.json"));
  for (auto [from, to] : {std::pair{"\"max_position_embeddings\": 256", "\"max_position_embeddings\": 65536"},
                          {"\"eos_token_id\": 256", "\"eos_token_id\": 300"}}) {
    const size_t at = config.find(from);
    if (at == std::string::npos) throw std::runtime_error(std::string("fixture lacks ") + from);
    config.replace(at, std::string(from).size(), to);
  }
  write_file(dir / "endless.json", config);
  RandomCheckpointOptions o;
  o.config_json = dir / "endless.json";
  o.out_dir = dir / "endless";
  o.seed = seed;
  write_random_checkpoint(o);
  std::string tokenizer = read_file(o.out_dir / "tokenizer.json");
  for (const std::string name : {"<|endoftext|>", "<|im_end|>"})
    tokenizer.replace(tokenizer.find(name), name.size(), "<|renamed_" + name.substr(2));
  write_file(o.out_dir / "tokenizer.json", tokenizer);
  return o.out_dir;
}

// Asserts that `fn` throws ModelError (or another std::exception) whose message contains each needle.
#define EXPECT_THROW_WITH(stmt, ...)                                                  \
  do {                                                                                \
    try {                                                                             \
      stmt;                                                                           \
      ADD_FAILURE() << "expected an exception from: " #stmt;                          \
    } catch (const std::exception& e) {                                               \
      for (const std::string& needle : std::vector<std::string>{__VA_ARGS__})         \
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)              \
            << "message '" << e.what() << "' lacks '" << needle << "'";               \
    }                                                                                 \
  } while (0)

}  // namespace ultraserve::testing
