// Fuzz target: config.json parsing (model/model_config.h, ModelConfig::parse), plus the
// eos_token_id reader that generation_config.json goes through. A config that parses must
// satisfy what the model code relies on (positive sizes, heads divisible, ids in range).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "model/error.h"
#include "model/model_config.h"
#include "tests/fuzz/fuzz_support.h"

using namespace ultraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  ModelConfig c;
  try {
    c = ModelConfig::parse(json, "config.json");
  } catch (const ModelError&) {
    return 0;
  }
  FUZZ_CHECK(c.model_type == "qwen3" || c.model_type == "qwen3_moe");
  FUZZ_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_hidden_layers > 0);
  FUZZ_CHECK(c.num_attention_heads > 0 && c.num_key_value_heads > 0);
  FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0);
  FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0);
  FUZZ_CHECK(c.rms_norm_eps > 0 && c.rope_theta > 0);
  for (int32_t id : c.eos_token_ids) FUZZ_CHECK(id >= 0 && id < c.vocab_size);
  if (c.model_type == "qwen3_moe") {
    FUZZ_CHECK(c.num_experts > 0);
    FUZZ_CHECK(c.num_experts_per_tok >= 1 && c.num_experts_per_tok <= c.num_experts);
    FUZZ_CHECK(c.moe_intermediate_size > 0 && c.decoder_sparse_step >= 1);
    for (int l : c.mlp_only_layers) FUZZ_CHECK(l >= 0 && l < c.num_hidden_layers);
  } else {
    FUZZ_CHECK(c.num_experts == 0);
  }
  (void)c.q_dim();
  (void)c.kv_dim();
  (void)c.is_moe_layer(0);
  (void)c.is_moe_layer(c.num_hidden_layers - 1);
  try {
    for (int32_t id : parse_eos_token_ids(json, "generation_config.json", c.vocab_size))
      FUZZ_CHECK(id >= 0 && id < c.vocab_size);
  } catch (const ModelError&) {
  }
  return 0;
}
