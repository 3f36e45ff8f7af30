// Loading whole checkpoints: what make-checkpoint writes loads back, and every way a
// checkpoint directory can be wrong gives an error naming the file and the problem.

#include "model/checkpoint.h"
#include "model/error.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

using testing::ScratchDir;

TEST(Checkpoint, RandomCheckpointLoadsBackInEveryDtypeAndShardLayout) {
  ScratchDir dir;
  for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
    for (uint64_t shard : {uint64_t{4} << 30, uint64_t{64} << 10}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " shard " + std::to_string(shard));
      auto path = testing::make_checkpoint(dir, "moe_topk2_norm.json", 7, dtype, shard);
      EXPECT_EQ(std::filesystem::exists(path / "model.safetensors.index.json"), shard < (1 << 20));
      LoadedModel m = load_model(path);
      EXPECT_EQ(m.weights.layers.size(), 3u);
      EXPECT_EQ(m.weights.layers[0].experts.size(), 8u);
      EXPECT_EQ(m.tokenizer.vocab_size(), 259);
      // eos from config.json (256 = <|endoftext|>) plus ChatML's <|im_end|> (258).
      EXPECT_EQ(m.stop_token_ids, (std::vector<int32_t>{256, 258}));
    }
  }
}

TEST(Checkpoint, SameSeedSameBytesOtherSeedOtherBytes) {
  ScratchDir a, b, c;
  auto pa = testing::make_checkpoint(a, "dense_qwen3.json", 5);
  auto pb = testing::make_checkpoint(b, "dense_qwen3.json", 5);
  auto pc = testing::make_checkpoint(c, "dense_qwen3.json", 6);
  EXPECT_EQ(testing::read_file(pa / "model.safetensors"), testing::read_file(pb / "model.safetensors"));
  EXPECT_NE(testing::read_file(pa / "model.safetensors"), testing::read_file(pc / "model.safetensors"));
}

TEST(Checkpoint, RefusesShapesThatDisagreeWithTheConfig) {
  ScratchDir dir;
  auto path = testing::make_checkpoint(dir, "dense_qwen3.json");
  std::string config = testing::read_file(path / "config.json");
  config.replace(config.find("\"intermediate_size\": 160"), 24, "\"intermediate_size\": 128");
  testing::write_file(path / "config.json", config);
  EXPECT_THROW_WITH(load_model(path), "model.safetensors", "model.layers.0.mlp.gate_proj.weight",
                    "[160, 64]", "config.json implies [128, 64]");
}

TEST(Checkpoint, RefusesMissingTensors) {
  ScratchDir dir;
  auto path = testing::make_checkpoint(dir, "dense_qwen3.json");
  std::string config = testing::read_file(path / "config.json");
  config.replace(config.find("\"tie_word_embeddings\": true"), 27, "\"tie_word_embeddings\": false");
  testing::write_file(path / "config.json", config);
  EXPECT_THROW_WITH(load_model(path), "model.safetensors", "'lm_head.weight' is missing");
}

TEST(Checkpoint, RefusesMissingFilesAndForeignTokenizers) {
  ScratchDir dir;
  EXPECT_THROW_WITH(load_model(dir / "nope"), "nope", "not a model directory");

  auto path = testing::make_checkpoint(dir, "dense_qwen3.json");
  const std::string tokenizer = testing::read_file(path / "tokenizer.json");
  testing::write_file(path / "tokenizer.json", R"({"model":{"type":"WordPiece","vocab":{"a":0}}})");
  EXPECT_THROW_WITH(load_model(path), "tokenizer.json");
  std::filesystem::remove(path / "tokenizer.json");
  EXPECT_THROW_WITH(load_model(path), "tokenizer.json");
  testing::write_file(path / "tokenizer.json", tokenizer);

  std::filesystem::remove(path / "model.safetensors");
  EXPECT_THROW_WITH(load_model(path), "no model.safetensors");
  std::filesystem::remove(path / "config.json");
  EXPECT_THROW_WITH(load_model(path), "config.json", "cannot open");
}

TEST(Checkpoint, RefusesTruncatedWeights) {
  ScratchDir dir;
  auto path = testing::make_checkpoint(dir, "dense_qwen3.json");
  std::string weights = testing::read_file(path / "model.safetensors");
  testing::write_file(path / "model.safetensors", weights.substr(0, weights.size() / 2));
  EXPECT_THROW_WITH(load_model(path), "model.safetensors", "truncated file");
}

TEST(Checkpoint, RefusesBadGenerationConfig) {
  ScratchDir dir;
  auto path = testing::make_checkpoint(dir, "dense_qwen3.json");
  testing::write_file(path / "generation_config.json", R"({"eos_token_id": [1, 100000]})");
  EXPECT_THROW_WITH(load_model(path), "generation_config.json", "eos_token_id");
  testing::write_file(path / "generation_config.json", R"({"eos_token_id": [1, 2]})");
  EXPECT_EQ(load_model(path).stop_token_ids, (std::vector<int32_t>{1, 2, 256, 258}));
}

TEST(Checkpoint, RefusesBadMakeCheckpointInput) {
  ScratchDir dir;
  RandomCheckpointOptions o;
  o.config_json = dir / "missing.json";
  o.out_dir = dir / "out";
  EXPECT_THROW_WITH(write_random_checkpoint(o), "missing.json", "cannot open");
  testing::write_file(dir / "tiny.json",
                      R"({"model_type":"qwen3","vocab_size":100,"hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2})");
  o.config_json = dir / "tiny.json";
  EXPECT_THROW_WITH(write_random_checkpoint(o), "vocab_size 100 is too small", "--tokenizer");
}

}  // namespace
}  // namespace ultraserve
