#include "model/dflash.h"

#include <algorithm>
#include <cmath>

#include "model/cpu_kernels.h"
#include "model/error.h"
#include "model/sampler.h"
#include "model/safetensors.h"

namespace ultraserve {

LoadedDraft load_draft(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) throw ModelError(dir.string() + ": not a draft model directory");
  ModelConfig config = ModelConfig::load(dir / "config.json");
  if (!config.dflash)
    throw ModelError((dir / "config.json").string() +
                     ": not a DFlash draft (architectures must name DFlashDraftModel, with a dflash_config)");
  ModelWeights weights = load_weights(CheckpointTensors::open(dir), config);
  return {std::move(config), std::move(weights)};
}

void check_draft_fits(const ModelConfig& draft, const ModelConfig& target, const std::string& source) {
  auto refuse = [&](const std::string& field, const std::string& problem) {
    throw ModelError(source + ": " + field + ": " + problem);
  };
  if (!draft.dflash) refuse("architectures", "not a DFlash draft");
  if (draft.hidden_size != target.hidden_size)
    refuse("hidden_size", std::to_string(draft.hidden_size) + " differs from the target's " +
                              std::to_string(target.hidden_size));
  if (draft.vocab_size != target.vocab_size)
    refuse("vocab_size", std::to_string(draft.vocab_size) + " differs from the target's " +
                             std::to_string(target.vocab_size));
  for (int l : draft.dflash->target_layer_ids)
    if (l >= target.num_hidden_layers)
      refuse("dflash_config.target_layer_ids", "layer " + std::to_string(l) + " is past the target's " +
                                                   std::to_string(target.num_hidden_layers) + " layers");
  if (draft.dflash->mask_token_id >= target.vocab_size)
    refuse("dflash_config.mask_token_id", std::to_string(draft.dflash->mask_token_id) +
                                              " is outside the target's vocabulary of " +
                                              std::to_string(target.vocab_size));
}

DFlashDraft::DFlashDraft(LoadedDraft draft, const CpuModel& target, ThreadPool& pool)
    : config_(std::move(draft.config)), weights_(std::move(draft.weights)), target_(target), pool_(pool) {
  check_draft_fits(config_, target.config(), "the draft's config.json");
}

void DFlashDraft::append_context(PagedKvCache& cache, KvSequence& seq, std::span<const float> taps) {
  const ModelConfig& c = config_;
  const int hidden = c.hidden_size, kvd = c.kv_dim();
  const size_t width = target_layers().size() * static_cast<size_t>(hidden);
  const int n = static_cast<int>(taps.size() / width);
  if (n == 0) return;
  std::vector<float> fused(size_t(n) * hidden);
  matmul_nt(pool_, taps.data(), n, weights_.draft_fc.view(), fused.data());
  for (int r = 0; r < n; ++r) {
    float* row = &fused[size_t(r) * hidden];
    rms_norm(row, weights_.draft_hidden_norm.data(), hidden, c.rms_norm_eps, row);
  }
  // The context enters each layer only as keys and values: no q, o or MLP.
  std::vector<float> k(size_t(n) * kvd), v(size_t(n) * kvd);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    matmul_nt(pool_, fused.data(), n, L.k_proj.view(), k.data());
    matmul_nt(pool_, fused.data(), n, L.v_proj.view(), v.data());
    for (int r = 0; r < n; ++r) {
      const int position = seq.length + r;
      norm_rope_heads(&k[size_t(r) * kvd], c.num_key_value_heads, c.head_dim, L.k_norm.data(), c.rms_norm_eps,
                      position, c.rope_theta);
      std::copy_n(&k[size_t(r) * kvd], kvd, cache.key(seq, l, position));
      std::copy_n(&v[size_t(r) * kvd], kvd, cache.value(seq, l, position));
    }
  }
  seq.length += n;
}

std::vector<int32_t> DFlashDraft::propose(PagedKvCache& cache, const KvSequence& seq, int32_t anchor,
                                          int block_size) {
  const int hidden = config_.hidden_size;
  const Matrix& embed = target_.weights().embed_tokens;
  std::vector<float> x(size_t(block_size) * hidden);
  for (int r = 0; r < block_size; ++r) {
    const int32_t token = r == 0 ? anchor : mask_token_id();
    std::copy_n(embed.data.data() + size_t(token) * hidden, hidden, &x[size_t(r) * hidden]);
  }
  for (int l = 0; l < config_.num_hidden_layers; ++l) layer(cache, seq, l, seq.length, block_size, x);

  // Slots 1.. through the target's LM head; slot 0 (the anchor) predicts nothing new.
  const int slots = block_size - 1;
  std::vector<float> normed(size_t(slots) * hidden);
  for (int r = 0; r < slots; ++r)
    rms_norm(&x[size_t(r + 1) * hidden], weights_.final_norm.data(), hidden, config_.rms_norm_eps,
             &normed[size_t(r) * hidden]);
  const int vocab = config_.vocab_size;
  std::vector<float> logits(size_t(slots) * vocab);
  matmul_nt(pool_, normed.data(), slots, target_.weights().output_matrix().view(), logits.data());
  std::vector<int32_t> proposed(slots);
  for (int r = 0; r < slots; ++r) proposed[r] = argmax(std::span(logits).subspan(size_t(r) * vocab, vocab));
  return proposed;
}

void DFlashDraft::layer(PagedKvCache& cache, const KvSequence& seq, int l, int start, int block,
                        std::vector<float>& x) {
  const ModelConfig& c = config_;
  const LayerWeights& L = weights_.layers[l];
  const int hidden = c.hidden_size, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const int group = c.num_attention_heads / c.num_key_value_heads;

  std::vector<float> normed(x.size());
  for (int r = 0; r < block; ++r)
    rms_norm(&x[size_t(r) * hidden], L.input_norm.data(), hidden, c.rms_norm_eps, &normed[size_t(r) * hidden]);
  std::vector<float> q(size_t(block) * qd), k(size_t(block) * kvd), v(size_t(block) * kvd);
  matmul_nt(pool_, normed.data(), block, L.q_proj.view(), q.data());
  matmul_nt(pool_, normed.data(), block, L.k_proj.view(), k.data());
  matmul_nt(pool_, normed.data(), block, L.v_proj.view(), v.data());
  for (int r = 0; r < block; ++r) {
    norm_rope_heads(&q[size_t(r) * qd], c.num_attention_heads, hd, L.q_norm.data(), c.rms_norm_eps, start + r,
                    c.rope_theta);
    norm_rope_heads(&k[size_t(r) * kvd], c.num_key_value_heads, hd, L.k_norm.data(), c.rms_norm_eps, start + r,
                    c.rope_theta);
  }

  // Every block row attends to the whole context and the whole block (not causal).
  std::vector<float> attn(size_t(block) * qd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool_.parallel_for(size_t(block) * c.num_attention_heads, [&](size_t begin, size_t end) {
    std::vector<float> scores(start + block);
    for (size_t task = begin; task < end; ++task) {
      const int r = static_cast<int>(task / c.num_attention_heads), h = static_cast<int>(task % c.num_attention_heads);
      const int kv_head = h / group;
      const float* qh = &q[size_t(r) * qd + size_t(h) * hd];
      auto key = [&](int p) {
        return p < start ? cache.key(seq, l, p) + kv_head * hd : &k[size_t(p - start) * kvd + kv_head * hd];
      };
      auto value = [&](int p) {
        return p < start ? cache.value(seq, l, p) + kv_head * hd : &v[size_t(p - start) * kvd + kv_head * hd];
      };
      for (int p = 0; p < start + block; ++p) scores[p] = dot(qh, key(p), hd) * scale;
      softmax(scores);
      float* out = &attn[size_t(r) * qd + size_t(h) * hd];
      std::fill_n(out, hd, 0.f);
      for (int p = 0; p < start + block; ++p) {
        const float* vh = value(p);
        for (int d = 0; d < hd; ++d) out[d] += scores[p] * vh[d];
      }
    }
  });
  std::vector<float> projected(size_t(block) * hidden);
  matmul_nt(pool_, attn.data(), block, L.o_proj.view(), projected.data());
  for (size_t i = 0; i < projected.size(); ++i) x[i] += projected[i];

  for (int r = 0; r < block; ++r)
    rms_norm(&x[size_t(r) * hidden], L.post_attention_norm.data(), hidden, c.rms_norm_eps, &normed[size_t(r) * hidden]);
  std::vector<float> mlp(x.size());
  feed_forward(pool_, L.dense, normed.data(), block, mlp.data());
  for (size_t i = 0; i < mlp.size(); ++i) x[i] += mlp[i];
}

}  // namespace ultraserve
