#include <chrono>

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

  // 2^20 heads of 2^20 each: every field in range, but q_dim() overflowed int (UBSan).
  const std::string huge_q_dim =
      R"({"model_type":"qwen3","vocab_size":16,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,)"
      R"("num_attention_heads":1048576,"head_dim":1048576})";
  EXPECT_THROW_WITH(ModelConfig::parse(huge_q_dim, "config.json"), "config.json: head_dim: ",
                    "num_attention_heads x head_dim (1048576 x 1048576) is larger than 2^30");

  // 2^30 layers with a list of mlp_only_layers: parse() searched the list once per layer
  // (minutes; a libFuzzer timeout). Now it answers at once, with the same result.
  const std::string many_layers =
      R"({"model_type":"qwen3_moe","vocab_size":16,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1073741824,)"
      R"("num_attention_heads":2,"num_experts":2,"num_experts_per_tok":1,"moe_intermediate_size":4,)"
      R"("mlp_only_layers":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32]})";
  const auto start = std::chrono::steady_clock::now();
  const ModelConfig c = ModelConfig::parse(many_layers, "config.json");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(c.intermediate_size, 8);
  EXPECT_TRUE(c.is_moe_layer(0));
  EXPECT_FALSE(c.is_moe_layer(1));
}

// Which configs need intermediate_size (some layer is dense) - the rule parse() now applies
// without visiting the layers.
TEST(ModelConfig, IntermediateSizeIsRequiredExactlyWhenSomeLayerIsDense) {
  const std::string moe = R"({"model_type":"qwen3_moe","vocab_size":16,"hidden_size":8,"num_hidden_layers":3,)"
                          R"("num_attention_heads":2,"num_experts":2,"num_experts_per_tok":1,"moe_intermediate_size":4)";
  EXPECT_EQ(ModelConfig::parse(moe + "}", "config.json").intermediate_size, 0);  // every layer routed
  EXPECT_THROW_WITH(ModelConfig::parse(moe + R"(,"decoder_sparse_step":2})", "config.json"), "intermediate_size: missing");
  EXPECT_THROW_WITH(ModelConfig::parse(moe + R"(,"mlp_only_layers":[2]})", "config.json"), "intermediate_size: missing");
  EXPECT_THROW_WITH(ModelConfig::parse(R"({"model_type":"qwen3","vocab_size":16,"hidden_size":8,"num_hidden_layers":1,)"
                                       R"("num_attention_heads":2})", "config.json"),
                    "intermediate_size: missing");
}

}  // namespace
}  // namespace ultraserve
