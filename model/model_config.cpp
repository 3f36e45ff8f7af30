#include "model/model_config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <simdjson.h>

#include "model/error.h"

namespace ultraserve {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

// Reads config.json fields with one rule for every error: "<file>: <field>: <problem>".
class FieldReader {
 public:
  FieldReader(object root, const std::string& source) : root_(root), source_(source) {}

  [[noreturn]] void fail(std::string_view field, const std::string& problem) const {
    throw ModelError(source_ + ": " + std::string(field) + ": " + problem);
  }

  bool has(std::string_view key) const {
    element e;
    return !root_[key].get(e) && !e.is_null();
  }

  int positive_int(std::string_view key) const { return int_in(key, 1, 1 << 30); }

  int int_in(std::string_view key, int64_t lo, int64_t hi) const {
    if (!has(key)) fail(key, "missing");
    return checked_int(root_[key].value(), key, lo, hi);
  }

  int int_or(std::string_view key, int fallback, int64_t lo, int64_t hi) const {
    return has(key) ? int_in(key, lo, hi) : fallback;
  }

  double positive_number_or(std::string_view key, double fallback) const {
    if (!has(key)) return fallback;
    double v = number(root_[key].value(), key);
    if (!(v > 0)) fail(key, "must be positive");
    return v;
  }

  bool bool_or(std::string_view key, bool fallback) const {
    if (!has(key)) return fallback;
    bool v;
    if (root_[key].get(v)) fail(key, "must be true or false");
    return v;
  }

  std::string string(std::string_view key) const {
    std::string_view v;
    if (!has(key)) fail(key, "missing");
    if (root_[key].get(v)) fail(key, "must be a string");
    return std::string(v);
  }

  // An int or a list of ints (eos_token_id, mlp_only_layers).
  std::vector<int32_t> int_list(std::string_view key, int64_t lo, int64_t hi) const {
    std::vector<int32_t> out;
    if (!has(key)) return out;
    element e = root_[key].value();
    simdjson::dom::array items;
    if (!e.get(items)) {  // (a range-for over get_array().value() would iterate a dead temporary)
      for (element item : items) out.push_back(checked_int(item, key, lo, hi));
    } else {
      out.push_back(checked_int(e, key, lo, hi));
    }
    return out;
  }

  // A list of strings, each one of `allowed` when that is not empty (layer_types, mlp_layer_types).
  std::vector<std::string> string_list(std::string_view key, std::initializer_list<std::string_view> allowed = {}) const {
    std::vector<std::string> out;
    if (!has(key)) return out;
    simdjson::dom::array items;
    if (root_[key].get(items)) fail(key, "must be a list of strings");
    for (element item : items) {
      std::string_view v;
      if (item.get(v)) fail(key, "must be a list of strings");
      if (allowed.size() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
        std::string names;
        for (std::string_view a : allowed) names += (names.empty() ? "'" : ", '") + std::string(a) + "'";
        fail(key, "entry " + std::to_string(out.size()) + " must be one of " + names);
      }
      out.emplace_back(v);
    }
    return out;
  }

  // A string that must be `only` (when present): fields whose other values we cannot honour.
  void require_string_or_absent(std::string_view key, std::string_view only, const std::string& why) const {
    if (!has(key)) return;
    const std::string v = string(key);
    if (v != only) fail(key, "'" + v + "' is not supported (only '" + std::string(only) + "'" + why + ")");
  }

  element get(std::string_view key) const { return root_[key].value(); }
  const std::string& source() const { return source_; }

 private:
  int checked_int(element e, std::string_view key, int64_t lo, int64_t hi) const {
    int64_t v;
    if (e.get(v)) fail(key, "must be an integer");
    if (v < lo || v > hi)
      fail(key, "value " + std::to_string(v) + " outside [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
    return static_cast<int>(v);
  }

  double number(element e, std::string_view key) const {
    double v;
    if (!e.get(v)) return v;
    int64_t i;
    if (!e.get(i)) return static_cast<double>(i);
    fail(key, "must be a number");
  }

  object root_;
  std::string source_;
};

double read_rope_theta(const FieldReader& f) {
  // transformers 5 writes rope_parameters {rope_type, rope_theta}; older files a flat rope_theta.
  if (f.has("rope_parameters")) {
    element rp = f.get("rope_parameters");
    object o;
    if (rp.get(o)) f.fail("rope_parameters", "must be an object");
    std::string_view type = "default";
    element t;
    if (!o["rope_type"].get(t) && t.is_string()) type = t.get_string().value();
    if (type != "default")
      f.fail("rope_parameters.rope_type", "'" + std::string(type) + "' is not supported (only 'default')");
    element theta;
    if (!o["rope_theta"].get(theta)) {
      double v;
      int64_t i;
      if (!theta.get(v) && v > 0) return v;
      if (!theta.get(i) && i > 0) return static_cast<double>(i);
      f.fail("rope_parameters.rope_theta", "must be a positive number");
    }
  }
  if (f.has("rope_scaling")) f.fail("rope_scaling", "RoPE scaling is not supported");
  return f.positive_number_or("rope_theta", 10000.0);
}

// A DFlash draft says so in `architectures` (and carries a dflash_config).
bool is_dflash_draft(const FieldReader& f) {
  if (f.has("dflash_config")) return true;
  if (!f.has("architectures")) return false;
  simdjson::dom::array names;
  if (f.get("architectures").get(names)) return false;
  for (element name : names)
    if (name.is_string() && name.get_string().value() == "DFlashDraftModel") return true;
  return false;
}

// The draft's own fields: dflash_config {mask_token_id, target_layer_ids[, block_size]}, or a
// top-level block_size as older checkpoints write it. Whether they suit a target is checked
// when the pair is loaded (check_draft_fits in model/dflash.h).
ModelConfig::DFlash read_dflash(const FieldReader& f, const ModelConfig& c) {
  if (c.model_type != "qwen3") f.fail("model_type", "a DFlash draft's layers must be 'qwen3'");
  if (!f.has("dflash_config")) f.fail("dflash_config", "missing (a DFlashDraftModel needs it)");
  object d;
  if (f.get("dflash_config").get(d)) f.fail("dflash_config", "must be an object");
  const FieldReader df(d, f.source() + ": dflash_config");
  ModelConfig::DFlash out;
  out.mask_token_id = df.int_in("mask_token_id", 0, (1 << 30));
  for (int32_t id : df.int_list("target_layer_ids", 0, 1 << 20)) out.target_layer_ids.push_back(id);
  if (out.target_layer_ids.empty()) df.fail("target_layer_ids", "missing or empty");
  out.block_size = df.has("block_size") ? df.int_in("block_size", 2, 64) : f.int_or("block_size", 16, 2, 64);
  return out;
}

// quantization_config: block-scaled FP8 is the one method we load (model/fp8.h).
ModelConfig::Fp8Quantization read_quantization(const FieldReader& f) {
  object q;
  if (f.get("quantization_config").get(q)) f.fail("quantization_config", "must be an object");
  const FieldReader qf(q, f.source() + ": quantization_config");
  if (!qf.has("quant_method")) qf.fail("quant_method", "missing");
  qf.require_string_or_absent("quant_method", "fp8", ": block-scaled FP8 E4M3 weights");
  qf.require_string_or_absent("fmt", "e4m3", ": FP8 E4M3 weights");
  qf.require_string_or_absent("activation_scheme", "dynamic", "");
  ModelConfig::Fp8Quantization out;
  if (qf.has("weight_block_size")) {
    const std::vector<int32_t> block = qf.int_list("weight_block_size", 1, 1 << 20);
    if (block.size() != 2) qf.fail("weight_block_size", "must be [rows, cols]");
    out.block = {block[0], block[1]};
  }
  out.modules_to_not_convert = qf.string_list("modules_to_not_convert");
  return out;
}

// One entry of MiMo-V2's rope_parameters {full_attention: {...}, sliding_attention: {...}}:
// {rope_type "default", rope_theta, partial_rotary_factor}; HF's defaults where it is absent.
ModelConfig::Rope read_layer_rope(const FieldReader& f, std::string_view kind, double default_theta, int head_dim) {
  double theta = default_theta, partial = 0.334;
  if (f.has("rope_parameters")) {
    object all, one;
    if (f.get("rope_parameters").get(all)) f.fail("rope_parameters", "must be an object");
    if (!all[kind].get(one)) {
      const FieldReader r(one, f.source() + ": rope_parameters." + std::string(kind));
      if (r.has("rope_type") && r.string("rope_type") != "default")
        r.fail("rope_type", "'" + r.string("rope_type") + "' is not supported (only 'default')");
      theta = r.positive_number_or("rope_theta", default_theta);
      partial = r.positive_number_or("partial_rotary_factor", partial);
    }
  }
  if (partial > 1) f.fail("rope_parameters", std::string(kind) + ".partial_rotary_factor must be at most 1");
  const int rotary = static_cast<int>(head_dim * partial);  // HF: int(head_dim * factor)
  if (rotary < 2 || rotary % 2)
    f.fail("rope_parameters", std::string(kind) + ": head_dim x partial_rotary_factor gives " +
                                  std::to_string(rotary) + " rotary dims; RoPE needs an even number >= 2");
  return {theta, rotary};
}

// MiMo-V2's own fields (transformers' MiMoV2FlashConfig, with its defaults), onto a config whose
// common fields are read. Sliding layers have twice the KV heads and a sink logit per head.
void read_mimo_v2(const FieldReader& f, ModelConfig& c) {
  c.qk_norm = false;
  c.v_head_dim = f.int_or("v_head_dim", 128, 1, 1 << 20);
  c.value_scale = static_cast<float>(f.positive_number_or("attention_value_scale", 0.707));
  const ModelConfig::Rope full = read_layer_rope(f, "full_attention", 5'000'000.0, c.head_dim);
  c.rope_theta = full.theta;
  c.rotary_dim = full.rotary_dim;
  ModelConfig::Sliding sw;
  sw.window = f.int_or("sliding_window", 128, 1, 1 << 30);
  sw.kv_heads = 2 * c.num_key_value_heads;
  const ModelConfig::Rope sliding = read_layer_rope(f, "sliding_attention", 10'000.0, c.head_dim);
  sw.rope_theta = sliding.theta;
  sw.rotary_dim = sliding.rotary_dim;
  sw.sinks = true;
  const auto types = f.string_list("layer_types", {"full_attention", "sliding_attention"});
  if (!types.empty() && types.size() != size_t(c.num_hidden_layers))
    f.fail("layer_types", "has " + std::to_string(types.size()) + " entries for " +
                              std::to_string(c.num_hidden_layers) + " layers");
  for (const std::string& t : types) sw.layers.push_back(t == "sliding_attention");
  c.sliding = std::move(sw);
  if (c.num_attention_heads % c.sliding->kv_heads != 0)
    f.fail("num_key_value_heads", "twice it (the sliding layers' KV heads) must divide num_attention_heads");

  c.num_experts = f.positive_int("n_routed_experts");
  c.num_experts_per_tok = f.int_in("num_experts_per_tok", 1, c.num_experts);
  c.moe_intermediate_size = f.positive_int("moe_intermediate_size");
  c.norm_topk_prob = f.bool_or("norm_topk_prob", true);
  c.router = ModelConfig::Router::sigmoid_grouped;
  c.n_group = f.int_or("n_group", 1, 1, c.num_experts);
  if (c.num_experts % c.n_group != 0) f.fail("n_group", "must divide n_routed_experts");
  c.topk_group = f.int_or("topk_group", 1, 1, c.n_group);
  if (c.num_experts / c.n_group < 2) f.fail("n_group", "groups need at least 2 experts (a group scores its best 2)");
  if (c.num_experts_per_tok > c.topk_group * (c.num_experts / c.n_group))
    f.fail("num_experts_per_tok", "more than the experts of topk_group groups");
  c.routed_scaling_factor = f.positive_number_or("routed_scaling_factor", 1.0);  // null in published files
  // mlp_layer_types: "dense" layers have the plain MLP (HF's default: layer 0 only).
  const auto mlp = f.string_list("mlp_layer_types", {"dense", "sparse"});
  if (!mlp.empty() && mlp.size() != size_t(c.num_hidden_layers))
    f.fail("mlp_layer_types", "has " + std::to_string(mlp.size()) + " entries for " +
                                  std::to_string(c.num_hidden_layers) + " layers");
  if (mlp.empty()) c.mlp_only_layers = {0};
  for (size_t l = 0; l < mlp.size(); ++l)
    if (mlp[l] == "dense") c.mlp_only_layers.push_back(static_cast<int>(l));
}

object parse_object(simdjson::dom::parser& parser, simdjson::padded_string& padded, const std::string& source) {
  element root;
  if (auto err = parser.parse(padded).get(root))
    throw ModelError(source + ": malformed JSON (" + simdjson::error_message(err) + ")");
  object obj;
  if (root.get(obj)) throw ModelError(source + ": the top level must be a JSON object");
  return obj;
}

}  // namespace

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(path.string() + ": cannot open (missing or unreadable)");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int32_t> parse_eos_token_ids(std::string_view json, const std::string& source, int vocab_size) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  return FieldReader(parse_object(parser, padded, source), source).int_list("eos_token_id", 0, vocab_size - 1);
}

bool ModelConfig::is_sliding_layer(int layer) const {
  if (!sliding) return false;
  if (!sliding->layers.empty()) return sliding->layers[size_t(layer)];
  return !(layer == 0 || (layer + 1) % 6 == 0);  // MiMo-V2's default: full on layer 0 and every 6th
}

ModelConfig::Rope ModelConfig::rope(int layer) const {
  if (is_sliding_layer(layer)) return {sliding->rope_theta, sliding->rotary_dim};
  return {rope_theta, rotary_dim ? rotary_dim : head_dim};
}

int64_t ModelConfig::paged_kv_values_per_position() const {
  int64_t n = 0;
  for (int l = 0; l < num_hidden_layers; ++l)
    if (!is_sliding_layer(l)) n += k_dim(l) + v_dim(l);
  return n;
}

bool ModelConfig::is_moe_layer(int layer) const {
  if (num_experts == 0) return false;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end())
    return false;
  return (layer + 1) % decoder_sparse_step == 0;
}

ModelConfig ModelConfig::parse(std::string_view json, const std::string& source) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  FieldReader f(parse_object(parser, padded, source), source);

  ModelConfig c;
  c.model_type = f.string("model_type");
  const bool mimo = c.model_type == "mimo_v2_flash";
  if (c.model_type != "qwen3" && c.model_type != "qwen3_moe" && !mimo)
    f.fail("model_type", "'" + c.model_type + "' is not supported (supported: qwen3, qwen3_moe, mimo_v2_flash)");
  c.vocab_size = f.positive_int("vocab_size");
  c.hidden_size = f.positive_int("hidden_size");
  c.num_hidden_layers = f.positive_int("num_hidden_layers");
  c.num_attention_heads = f.positive_int("num_attention_heads");
  c.num_key_value_heads = f.int_or("num_key_value_heads", c.num_attention_heads, 1, 1 << 20);
  c.head_dim = f.int_or("head_dim", mimo ? 192 : c.hidden_size / c.num_attention_heads, 1, 1 << 20);
  // The fallback skips int_or's range check: with more heads than hidden_size it is 0, which
  // would make every attention head empty (and 1/sqrt(head_dim) infinite). Found by fuzzing.
  if (c.head_dim < 1)
    f.fail("head_dim", "missing, and hidden_size / num_attention_heads (" + std::to_string(c.hidden_size) + " / " +
                           std::to_string(c.num_attention_heads) + ") is 0");
  c.max_position_embeddings = f.int_or("max_position_embeddings", 32768, 1, 1 << 30);
  c.rms_norm_eps = f.positive_number_or("rms_norm_eps", mimo ? 1e-5 : 1e-6);
  if (!mimo) c.rope_theta = read_rope_theta(f);
  c.tie_word_embeddings = f.bool_or("tie_word_embeddings", false);
  c.eos_token_ids = f.int_list("eos_token_id", 0, c.vocab_size - 1);

  // q_dim() and kv_dim() are ints: heads x head_dim must fit (2^20 heads of 2^20 each passed the
  // per-field checks and overflowed, undefined behaviour; found while fuzzing).
  if (int64_t(c.num_attention_heads) * c.head_dim > (int64_t(1) << 30))
    f.fail("head_dim", "num_attention_heads x head_dim (" + std::to_string(c.num_attention_heads) + " x " +
                           std::to_string(c.head_dim) + ") is larger than 2^30");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    f.fail("num_key_value_heads", "must divide num_attention_heads");
  if (c.head_dim % 2 != 0) f.fail("head_dim", "must be even (RoPE rotates pairs)");
  if (f.bool_or("attention_bias", false)) f.fail("attention_bias", "attention biases are not supported");
  if (!mimo && f.bool_or("use_sliding_window", false))
    f.fail("use_sliding_window", "sliding-window attention is not supported for " + c.model_type);
  if (f.has("hidden_act") && f.string("hidden_act") != "silu")
    f.fail("hidden_act", "only 'silu' is supported");

  if (mimo) read_mimo_v2(f, c);
  if (c.model_type == "qwen3_moe") {
    // transformers 5 writes num_local_experts (its attribute_map alias of num_experts).
    if (!f.has("num_experts") && !f.has("num_local_experts"))
      f.fail("num_experts", "missing (nor num_local_experts, as transformers 5 writes it)");
    c.num_experts = f.has("num_experts") ? f.positive_int("num_experts") : f.positive_int("num_local_experts");
    c.num_experts_per_tok = f.int_in("num_experts_per_tok", 1, c.num_experts);
    c.moe_intermediate_size = f.positive_int("moe_intermediate_size");
    c.decoder_sparse_step = f.int_or("decoder_sparse_step", 1, 1, 1 << 20);
    c.norm_topk_prob = f.bool_or("norm_topk_prob", false);
    for (int32_t l : f.int_list("mlp_only_layers", 0, c.num_hidden_layers - 1)) c.mlp_only_layers.push_back(l);
  }
  // Whether some layer has a dense MLP, without visiting every layer: num_hidden_layers may be
  // up to 2^30, and a loop calling is_moe_layer() (a search of mlp_only_layers) on each took
  // minutes for such a file before failing further on (found while fuzzing). A layer is dense
  // when the model has no experts, when it is listed in mlp_only_layers (entries are checked
  // to be layers), or when (layer + 1) % decoder_sparse_step != 0, which holds for layer 0
  // whenever the step is above 1.
  const bool any_dense = c.num_experts == 0 || !c.mlp_only_layers.empty() || c.decoder_sparse_step > 1;
  c.intermediate_size = any_dense ? f.positive_int("intermediate_size") : f.int_or("intermediate_size", 0, 0, 1 << 30);
  if (is_dflash_draft(f)) c.dflash = read_dflash(f, c);
  if (f.has("quantization_config")) c.fp8 = read_quantization(f);
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& config_json) {
  return parse(read_text_file(config_json), config_json.string());
}

}  // namespace ultraserve
