#include "model/weights.h"

#include <optional>

#include "model/error.h"
#include "model/fp8_tensors.h"
#include "model/mxfp4_tensors.h"

namespace ultraserve {
namespace {

// A DFlash draft names its tensors without the "model." prefix.
std::string model_prefix(const ModelConfig& c) { return c.dflash ? "" : "model."; }
std::string layer_prefix(const ModelConfig& c, int l) { return model_prefix(c) + "layers." + std::to_string(l) + "."; }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void add_ffn(std::vector<WeightSpec>& out, const std::string& prefix, int64_t hidden, int64_t width, int layer,
             bool routed_expert) {
  out.push_back({prefix + "gate_proj.weight", {width, hidden}, layer, routed_expert, true});
  out.push_back({prefix + "up_proj.weight", {width, hidden}, layer, routed_expert, true});
  out.push_back({prefix + "down_proj.weight", {hidden, width}, layer, routed_expert, true});
}

void check_float_tensor(const CheckpointTensors& tensors, const WeightSpec& spec) {
  const TensorView* v = tensors.find(spec.name);
  if (!v) {
    const std::string alternative = spec.routed_expert ? " or MXFP4 .blocks + .scales" : "";
    throw ModelError(tensors.source() + ": tensor '" + spec.name + "'" + alternative +
                     " is missing (config.json requires it)");
  }
  if (v->dtype != DType::F32 && v->dtype != DType::BF16 && v->dtype != DType::F16)
    throw ModelError(*v->file + ": tensor '" + spec.name + "' has dtype " + std::string(dtype_name(v->dtype)) +
                     ", expected BF16, F16 or F32" + (spec.shape.size() == 2 ? " (or F8_E4M3 with block scales)" : ""));
  if (v->shape != spec.shape)
    throw ModelError(*v->file + ": tensor '" + spec.name + "' has shape " + v->shape_string() +
                     " but config.json implies " + shape_string(spec.shape));
}

void check_mxfp4_tensors(const CheckpointTensors& tensors, const WeightSpec& spec) {
  const Mxfp4TensorNames names = mxfp4_tensor_names(spec.name);
  const Mxfp4View v = *find_mxfp4(tensors, spec.name);
  if (const TensorView* both = tensors.find(spec.name))
    throw ModelError(*both->file + ": tensor '" + spec.name + "' and its MXFP4 form '" + names.blocks +
                     "' are both present; keep one");
  if (std::vector<int64_t>{v.rows, v.cols} != spec.shape)
    throw ModelError(*tensors.find(names.blocks)->file + ": tensor '" + names.blocks + "' is MXFP4 of a [" +
                     std::to_string(v.rows) + ", " + std::to_string(v.cols) + "] matrix but config.json implies " +
                     shape_string(spec.shape));
}

void check_fp8_shape(const Fp8Tensor& t, const TensorView& weight, const WeightSpec& spec) {
  if (std::vector<int64_t>{t.rows, t.cols} != spec.shape)
    throw ModelError(*weight.file + ": tensor '" + spec.name + "' has shape " + weight.shape_string() +
                     " but config.json implies " + shape_string(spec.shape));
}

const char* storage_name(ExpertStorage s) {
  switch (s) {
    case ExpertStorage::fp8: return "FP8";
    case ExpertStorage::mxfp4: return "MXFP4";
    case ExpertStorage::dense: break;
  }
  return "a float .weight";
}

// Fetches tensors already validated by check_weights() and converts them to fp32.
class Fetcher {
 public:
  Fetcher(const CheckpointTensors& t, const ModelConfig& c) : tensors_(t), config_(c) {}

  std::vector<float> vector(const std::string& name) const {
    const TensorView* v = tensors_.find(name);
    std::vector<float> out(static_cast<size_t>(v->numel()));
    convert_to_f32(v->dtype, v->bytes.data(), out.size(), out.data());
    return out;
  }
  Matrix matrix(const std::string& name) const { return load_matrix(tensors_, config_, name); }
  FeedForward ffn(const std::string& prefix) const {
    return {matrix(prefix + "gate_proj.weight"), matrix(prefix + "up_proj.weight"), matrix(prefix + "down_proj.weight")};
  }

 private:
  const CheckpointTensors& tensors_;
  const ModelConfig& config_;
};

}  // namespace

std::vector<WeightSpec> expected_weights(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  std::vector<WeightSpec> out;
  if (c.dflash) {  // the draft's fusion of the target's hidden states; it has no embeddings
    out.push_back({"fc.weight", {h, static_cast<int64_t>(c.dflash->target_layer_ids.size()) * h}});
    out.push_back({"hidden_norm.weight", {h}});
  } else {
    out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(c, l);
    out.push_back({p + "input_layernorm.weight", {h}, l});
    out.push_back({p + "self_attn.q_proj.weight", {c.q_dim(), h}, l, false, true});
    out.push_back({p + "self_attn.k_proj.weight", {c.k_dim(l), h}, l, false, true});
    out.push_back({p + "self_attn.v_proj.weight", {c.v_dim(l), h}, l, false, true});
    out.push_back({p + "self_attn.o_proj.weight", {h, c.attention_out_dim()}, l, false, true});
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, l});
      out.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, l});
    }
    if (c.is_sliding_layer(l) && c.sliding->sinks) out.push_back({p + "self_attn.sinks", {c.num_attention_heads}, l});
    out.push_back({p + "post_attention_layernorm.weight", {h}, l});
    if (c.is_moe_layer(l)) {
      out.push_back({p + "mlp.gate.weight", {c.num_experts, h}, l});
      if (c.router == ModelConfig::Router::sigmoid_grouped)
        out.push_back({p + "mlp.gate.e_score_correction_bias", {c.num_experts}, l});
      for (int e = 0; e < c.num_experts; ++e)
        add_ffn(out, p + "mlp.experts." + std::to_string(e) + ".", h, c.moe_intermediate_size, l, true);
    } else {
      add_ffn(out, p + "mlp.", h, c.intermediate_size, l, false);
    }
  }
  out.push_back({model_prefix(c) + "norm.weight", {h}});
  if (!c.tie_word_embeddings && !c.dflash) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
}

ExpertStorage check_weights(const CheckpointTensors& tensors, const ModelConfig& c) {
  std::optional<ExpertStorage> experts;  // decided by the first routed expert
  std::string first_expert;
  for (const WeightSpec& spec : expected_weights(c)) {
    ExpertStorage storage = ExpertStorage::dense;
    if (spec.routed_expert && has_mxfp4(tensors, spec.name)) {
      check_mxfp4_tensors(tensors, spec);
      storage = ExpertStorage::mxfp4;
    } else if (const std::optional<Fp8Tensor> fp8 = spec.shape.size() == 2 ? find_fp8(tensors, spec.name, c.fp8)
                                                                           : std::nullopt) {
      // Any matrix may be FP8 (it costs nothing to accept), not only the linear layers'.
      check_fp8_shape(*fp8, *tensors.find(spec.name), spec);
      storage = ExpertStorage::fp8;
    } else {
      check_float_tensor(tensors, spec);
    }
    if (!spec.routed_expert) continue;
    if (!experts) experts = storage, first_expert = spec.name;
    // One storage for all experts, so a GPU loader never meets a half-quantized checkpoint.
    if (storage != *experts)
      throw ModelError(tensors.source() + ": routed experts mix storages: '" + first_expert + "' is " +
                       storage_name(*experts) + " but '" + spec.name + "' is " + storage_name(storage));
  }
  return experts.value_or(ExpertStorage::dense);
}

Matrix load_matrix(const CheckpointTensors& tensors, const ModelConfig& c, const std::string& name) {
  auto zeros = [](int64_t rows, int64_t cols) {
    return Matrix{static_cast<int>(rows), static_cast<int>(cols), std::vector<float>(size_t(rows) * size_t(cols))};
  };
  if (const std::optional<Fp8Tensor> q = find_fp8(tensors, name, c.fp8)) {
    Matrix m = zeros(q->rows, q->cols);
    dequantize_fp8(q->view(), m.data);
    return m;
  }
  if (const TensorView* v = tensors.find(name)) {
    Matrix m = zeros(v->shape[0], v->shape[1]);
    convert_to_f32(v->dtype, v->bytes.data(), m.data.size(), m.data.data());
    return m;
  }
  const Mxfp4View q = *find_mxfp4(tensors, name);  // a routed expert stored as MXFP4
  Matrix m = zeros(q.rows, q.cols);
  dequantize_mxfp4(q, m.data);
  return m;
}

ModelWeights load_weights(const CheckpointTensors& tensors, const ModelConfig& c) {
  ModelWeights w;
  w.expert_storage = check_weights(tensors, c);
  Fetcher f(tensors, c);
  if (c.dflash) {
    w.draft_fc = f.matrix("fc.weight");
    w.draft_hidden_norm = f.vector("hidden_norm.weight");
  } else {
    w.embed_tokens = f.matrix("model.embed_tokens.weight");
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(c, l);
    LayerWeights& L = w.layers.emplace_back();
    L.input_norm = f.vector(p + "input_layernorm.weight");
    L.post_attention_norm = f.vector(p + "post_attention_layernorm.weight");
    if (c.qk_norm) {
      L.q_norm = f.vector(p + "self_attn.q_norm.weight");
      L.k_norm = f.vector(p + "self_attn.k_norm.weight");
    }
    if (c.is_sliding_layer(l) && c.sliding->sinks) L.sinks = f.vector(p + "self_attn.sinks");
    L.q_proj = f.matrix(p + "self_attn.q_proj.weight");
    L.k_proj = f.matrix(p + "self_attn.k_proj.weight");
    L.v_proj = f.matrix(p + "self_attn.v_proj.weight");
    L.o_proj = f.matrix(p + "self_attn.o_proj.weight");
    L.moe = c.is_moe_layer(l);
    if (L.moe) {
      L.router = f.matrix(p + "mlp.gate.weight");
      if (c.router == ModelConfig::Router::sigmoid_grouped)
        L.router_bias = f.vector(p + "mlp.gate.e_score_correction_bias");
      for (int e = 0; e < c.num_experts; ++e) L.experts.push_back(f.ffn(p + "mlp.experts." + std::to_string(e) + "."));
    } else {
      L.dense = f.ffn(p + "mlp.");
    }
  }
  w.final_norm = f.vector(model_prefix(c) + "norm.weight");
  if (!c.tie_word_embeddings && !c.dflash) w.lm_head = f.matrix("lm_head.weight");
  return w;
}

}  // namespace ultraserve
