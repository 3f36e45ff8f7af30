#include "model/error.h"
#include "model/model_config.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

TEST(ModelConfig, ReadsQwen3MoeFields) {
  ModelConfig c = ModelConfig::load(testing::fixture("configs/moe_top4_unnormed_tied.json"));
  EXPECT_EQ(c.model_type, "qwen3_moe");
  EXPECT_EQ(c.head_dim, 32);  // explicit, not hidden / heads
  EXPECT_EQ(c.num_experts, 16);
  EXPECT_EQ(c.num_experts_per_tok, 4);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_TRUE(c.is_moe_layer(0));
  EXPECT_FALSE(c.is_moe_layer(1));  // mlp_only_layers
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{257});
}

TEST(ModelConfig, SparseStepAndEosList) {
  ModelConfig c = ModelConfig::load(testing::fixture("configs/moe_sparse_step2_top1.json"));
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{256, 258}));
}

TEST(ModelConfig, ReadsTransformers5RopeParameters) {
  ModelConfig c = ModelConfig::parse(
      R"({"model_type":"qwen3","vocab_size":10,"hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,
          "num_attention_heads":2,"rope_parameters":{"rope_type":"default","rope_theta":5000}})",
      "x.json");
  EXPECT_EQ(c.rope_theta, 5000.0);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_FALSE(c.is_moe_layer(0));
}

TEST(ModelConfig, RefusesBadConfigsNamingFileAndField) {
  const std::string base = R"("vocab_size":10,"hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2)";
  struct Case { std::string json; const char* needle; };
  const std::vector<Case> cases{
      {"{", "malformed JSON"},
      {"[1]", "top level must be a JSON object"},
      {"{" + base + "}", "model_type: missing"},
      {R"({"model_type":"llama",)" + base + "}", "'llama' is not supported"},
      {R"({"model_type":"qwen3","vocab_size":"ten","hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2})",
       "vocab_size: must be an integer"},
      {R"({"model_type":"qwen3","vocab_size":-5,"hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2})",
       "vocab_size: value -5 outside"},
      {R"({"model_type":"qwen3","num_key_value_heads":3,)" + base + "}", "num_key_value_heads: must divide"},
      {R"({"model_type":"qwen3","rope_scaling":{"type":"yarn"},)" + base + "}", "rope_scaling"},
      {R"({"model_type":"qwen3","eos_token_id":99,)" + base + "}", "eos_token_id: value 99 outside"},
      {R"({"model_type":"qwen3_moe",)" + base + "}", "num_experts: missing"},
      {R"({"model_type":"qwen3_moe","num_experts":4,"num_experts_per_tok":5,"moe_intermediate_size":4,)" + base + "}",
       "num_experts_per_tok: value 5 outside"},
      {R"({"model_type":"qwen3","hidden_act":"gelu",)" + base + "}", "hidden_act"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.json);
    EXPECT_THROW_WITH(ModelConfig::parse(c.json, "dir/config.json"), "dir/config.json: ", c.needle);
  }
  EXPECT_THROW_WITH(ModelConfig::load("/nonexistent/config.json"), "/nonexistent/config.json", "cannot open");
}

// Inputs found by the config.json fuzzer (tests/fuzz/model_config_fuzzer.cpp), replayed here.
TEST(ModelConfig, FuzzFindings) {
  // More heads than hidden_size and no head_dim: the derived head_dim was 0 and accepted.
  const std::string heads_over_hidden =
      R"({"model_type": "qwen3", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, )"
      R"("num_attention_heads": 20, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "eos_token_id": [1, 2]})";
  EXPECT_THROW_WITH(ModelConfig::parse(heads_over_hidden, "config.json"), "config.json: head_dim: missing",
                    "hidden_size / num_attention_heads (8 / 20) is 0");
}

}  // namespace
}  // namespace ultraserve
