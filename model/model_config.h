#pragma once
// The architecture hyper-parameters of a checkpoint, read from its HF config.json.
// One struct serves dense Qwen3 ("qwen3"), Qwen3-MoE ("qwen3_moe") and MiMo-V2 ("mimo_v2_flash"):
// the MoE fields are zero for a dense model, and MiMo-V2's differences from Qwen3-MoE are options
// (hybrid sliding-window attention with sinks, value heads narrower than query/key heads, partial
// RoPE, no q/k norm, sigmoid group-limited routing).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/fp8.h"

namespace ultraserve {

struct ModelConfig {
  std::string model_type;  // "qwen3", "qwen3_moe" or "mimo_v2_flash"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;  // dense MLP width (dense layers and mlp_only_layers)
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;

  // Mixture of experts (zero / empty for dense models).
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int moe_intermediate_size = 0;
  int decoder_sparse_step = 1;
  bool norm_topk_prob = false;
  std::vector<int> mlp_only_layers;

  std::vector<int32_t> eos_token_ids;

  // Attention options (Qwen3 values by default).
  int v_head_dim = 0;         // value head width; 0: head_dim (MiMo-V2: 128 against head_dim 192)
  int rotary_dim = 0;         // RoPE on the first rotary_dim dims of a head; 0: all (MiMo-V2: partial)
  bool qk_norm = true;        // per-head RMSNorm of q and k before RoPE (Qwen3; MiMo-V2 has none)
  float value_scale = 1.0f;   // values are multiplied by it (MiMo-V2's attention_value_scale)
  // Hybrid attention (MiMo-V2): sliding layers attend to the last sliding_window positions only,
  // with their own KV head count, RoPE and a learned sink logit per query head.
  struct Sliding {
    int window = 0;
    int kv_heads = 0;
    double rope_theta = 10000.0;
    int rotary_dim = 0;
    bool sinks = false;
    std::vector<bool> layers;  // per layer; empty: MiMo-V2's rule (full on layer 0 and every 6th)
  };
  std::optional<Sliding> sliding;

  // Routing: softmax top-k (Qwen3-MoE), or sigmoid scores with a per-expert bias for the choice,
  // the best topk_group of n_group expert groups, and weights from the plain scores (MiMo-V2,
  // as DeepSeek-V3 without shared experts), scaled by routed_scaling_factor.
  enum class Router { softmax_topk, sigmoid_grouped };
  Router router = Router::softmax_topk;
  int n_group = 1, topk_group = 1;
  double routed_scaling_factor = 1.0;

  // A DFlash draft (architectures ["DFlashDraftModel"]): Qwen3 layers that read a target's
  // hidden states. Its checkpoint has no embeddings or LM head (it uses the target's), no
  // "model." prefix, and adds fc [hidden, taps * hidden] and hidden_norm (see model/dflash.h).
  struct DFlash {
    std::vector<int> target_layer_ids;  // target layers whose OUTPUTS it reads, in order
    int mask_token_id = -1;             // fills the block after the anchor
    int block_size = 16;                // tokens per block it was trained for (anchor included)
  };
  std::optional<DFlash> dflash;

  // Block-scaled FP8 weights (quantization_config {"quant_method": "fp8", "fmt": "e4m3",
  // "activation_scheme": "dynamic", "weight_block_size": [128, 128]}, as DeepSeek-V3 and MiMo-V2
  // publish it). Only the weight format matters to us: activations are computed in float, so
  // "dynamic" activation quantization is the only scheme accepted (a static one would need
  // activation scales we would ignore). Which tensors are FP8 is read from each tensor's dtype.
  struct Fp8Quantization {
    Fp8BlockSize block;  // weight_block_size; [128, 128] when absent, as transformers defaults
    // Accepted but not needed: a module it names is stored in a float dtype, and loads as such.
    std::vector<std::string> modules_to_not_convert;
  };
  std::optional<Fp8Quantization> fp8;  // set when config.json has a quantization_config

  // The layer has a routed-expert MLP (same rule as transformers' Qwen3MoeDecoderLayer).
  bool is_moe_layer(int layer) const;
  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }  // a uniform model's (not hybrid)

  // Per-layer attention shape: the same for every layer unless the model is hybrid.
  bool is_sliding_layer(int layer) const;
  int kv_heads(int layer) const { return is_sliding_layer(layer) ? sliding->kv_heads : num_key_value_heads; }
  int value_head_dim() const { return v_head_dim ? v_head_dim : head_dim; }
  int k_dim(int layer) const { return kv_heads(layer) * head_dim; }
  int v_dim(int layer) const { return kv_heads(layer) * value_head_dim(); }
  int attention_out_dim() const { return num_attention_heads * value_head_dim(); }  // o_proj's input
  struct Rope {
    double theta;
    int rotary_dim;
  };
  Rope rope(int layer) const;
  // Key and value floats one position takes in the paged KV cache: the full-attention layers
  // (sliding layers keep a fixed ring per sequence instead, see model/kv_cache.h).
  int64_t paged_kv_values_per_position() const;

  // Parses and validates; `source` names the file in error messages.
  static ModelConfig parse(std::string_view json, const std::string& source);
  static ModelConfig load(const std::filesystem::path& config_json);
};

// The eos_token_id (an int or a list) of a JSON object such as generation_config.json;
// empty when absent. Ids must lie in [0, vocab_size).
std::vector<int32_t> parse_eos_token_ids(std::string_view json, const std::string& source, int vocab_size);

// A whole text file, or a ModelError naming it.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace ultraserve
