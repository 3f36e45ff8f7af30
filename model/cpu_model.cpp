#include "model/cpu_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "model/cpu_kernels.h"
#include "model/routing.h"

namespace ultraserve {

struct CpuModel::Batch {
  int n = 0;                          // token rows in this call
  std::vector<KvSequence*> seq;       // row -> its sequence
  std::vector<int> position;          // row -> absolute position
  std::vector<float> x;               // [n, hidden] residual stream
  std::vector<float> normed;          // [n, hidden]
};

CpuModel::CpuModel(ModelConfig config, ModelWeights weights, ThreadPool& pool)
    : config_(std::move(config)), weights_(std::move(weights)), pool_(pool) {}

void CpuModel::set_taps(std::vector<int> layers) {
  for (int l : layers)
    if (l < 0 || l >= config_.num_hidden_layers)
      throw std::out_of_range("tap layer " + std::to_string(l) + " outside the model's " +
                              std::to_string(config_.num_hidden_layers) + " layers");
  tap_layers_ = std::move(layers);
}

std::vector<float> CpuModel::forward(PagedKvCache& cache, std::span<const SequenceStep> steps, std::vector<float>* taps) {
  const int hidden = config_.hidden_size;
  Batch b;
  std::vector<int> output_rows;
  for (const SequenceStep& s : steps) {
    const int count = static_cast<int>(s.tokens.size());
    if (cache.blocks_for(s.kv->length + count) > static_cast<int>(s.kv->blocks.size()))
      throw std::logic_error("CpuModel::forward: KV room was not reserved for the new tokens");
    for (int i = 0; i < count; ++i) {
      int32_t t = s.tokens[i];
      if (t < 0 || t >= config_.vocab_size)
        throw std::out_of_range("token id " + std::to_string(t) + " outside the vocabulary");
      if (s.all_logits || i == count - 1) output_rows.push_back(b.n);
      b.seq.push_back(s.kv);
      b.position.push_back(s.kv->length + i);
      ++b.n;
    }
  }
  b.x.resize(static_cast<size_t>(b.n) * hidden);
  b.normed.resize(b.x.size());
  {
    size_t row = 0;
    for (const SequenceStep& s : steps)
      for (int32_t t : s.tokens)
        std::copy_n(weights_.embed_tokens.data.data() + static_cast<size_t>(t) * hidden, hidden,
                    b.x.data() + hidden * row++);
  }

  const size_t tap_width = tap_layers_.size() * static_cast<size_t>(hidden);
  if (taps) taps->assign(static_cast<size_t>(b.n) * tap_width, 0.f);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    attention_block(cache, l, b);
    mlp_block(l, b);
    if (!taps) continue;
    for (size_t t = 0; t < tap_layers_.size(); ++t)  // the layer's OUTPUT (HF hidden_states[l + 1])
      if (tap_layers_[t] == l)
        for (int r = 0; r < b.n; ++r)
          std::copy_n(&b.x[size_t(r) * hidden], hidden, taps->data() + size_t(r) * tap_width + t * hidden);
  }
  for (const SequenceStep& s : steps) s.kv->length += static_cast<int>(s.tokens.size());

  const int rows = static_cast<int>(output_rows.size());
  std::vector<float> last(static_cast<size_t>(rows) * hidden);
  for (int r = 0; r < rows; ++r)
    rms_norm(b.x.data() + static_cast<size_t>(output_rows[r]) * hidden, weights_.final_norm.data(), hidden,
             config_.rms_norm_eps, last.data() + static_cast<size_t>(r) * hidden);
  std::vector<float> logits(static_cast<size_t>(rows) * config_.vocab_size);
  matmul_nt(pool_, last.data(), rows, weights_.output_matrix().view(), logits.data());
  return logits;
}

void CpuModel::attention_block(PagedKvCache& cache, int layer, Batch& b) {
  const ModelConfig& c = config_;
  const LayerWeights& L = weights_.layers[layer];
  const int hidden = c.hidden_size, hd = c.head_dim, vhd = c.value_head_dim(), heads = c.num_attention_heads;
  const int qd = c.q_dim(), kd = c.k_dim(layer), vd = c.v_dim(layer);
  const int group = heads / c.kv_heads(layer);
  const ModelConfig::Rope rope = c.rope(layer);
  const bool sliding = c.is_sliding_layer(layer);
  const int n = b.n;

  for (int r = 0; r < n; ++r)
    rms_norm(&b.x[size_t(r) * hidden], L.input_norm.data(), hidden, c.rms_norm_eps, &b.normed[size_t(r) * hidden]);
  std::vector<float> q(size_t(n) * qd), k(size_t(n) * kd), v(size_t(n) * vd);
  matmul_nt(pool_, b.normed.data(), n, L.q_proj.view(), q.data());
  matmul_nt(pool_, b.normed.data(), n, L.k_proj.view(), k.data());
  matmul_nt(pool_, b.normed.data(), n, L.v_proj.view(), v.data());
  if (c.value_scale != 1.0f)
    for (float& x : v) x *= c.value_scale;

  // Per-head q/k RMSNorm (Qwen3), then RoPE.
  const float* q_norm = c.qk_norm ? L.q_norm.data() : nullptr;
  const float* k_norm = c.qk_norm ? L.k_norm.data() : nullptr;
  for (int r = 0; r < n; ++r) {
    norm_rope_heads(&q[size_t(r) * qd], heads, hd, q_norm, c.rms_norm_eps, b.position[r], rope.theta, rope.rotary_dim);
    norm_rope_heads(&k[size_t(r) * kd], c.kv_heads(layer), hd, k_norm, c.rms_norm_eps, b.position[r], rope.theta,
                    rope.rotary_dim);
  }
  // A token attends to itself and to earlier new tokens of its sequence straight from k and v
  // (a sequence's rows are consecutive positions), to older ones through the cache. The new K/V
  // go into the cache after attention: a sliding layer's ring may be shorter than the pass.
  auto key_at = [&](int r, int p) -> const float* {
    return p >= b.seq[r]->length ? &k[size_t(r - (b.position[r] - p)) * kd] : cache.key(*b.seq[r], layer, p);
  };
  auto value_at = [&](int r, int p) -> const float* {
    return p >= b.seq[r]->length ? &v[size_t(r - (b.position[r] - p)) * vd] : cache.value(*b.seq[r], layer, p);
  };

  std::vector<float> attn(size_t(n) * c.attention_out_dim());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool_.parallel_for(size_t(n) * heads, [&](size_t begin, size_t end) {
    std::vector<float> scores;
    for (size_t task = begin; task < end; ++task) {
      const int r = static_cast<int>(task / heads), h = static_cast<int>(task % heads);
      const int kv_head = h / group;
      // Causal: positions up to its own; a sliding layer sees only the last `window` of them.
      const int last = b.position[r], first = sliding ? std::max(0, last - c.sliding->window + 1) : 0;
      const float* qh = &q[size_t(r) * qd + size_t(h) * hd];
      scores.resize(last - first + 1);
      for (int p = first; p <= last; ++p)
        scores[p - first] = dot(qh, key_at(r, p) + kv_head * hd, hd) * scale;
      // An attention sink is one more logit in the softmax that attends to nothing.
      if (!L.sinks.empty()) scores.push_back(L.sinks[h]);
      softmax(scores);
      float* out = &attn[(size_t(r) * heads + h) * vhd];
      std::fill_n(out, vhd, 0.f);
      for (int p = first; p <= last; ++p) {
        const float* vh = value_at(r, p) + kv_head * vhd;
        const float w = scores[p - first];
        for (int d = 0; d < vhd; ++d) out[d] += w * vh[d];
      }
    }
  });

  for (int r = 0; r < n; ++r) {
    std::copy_n(&k[size_t(r) * kd], kd, cache.key(*b.seq[r], layer, b.position[r]));
    std::copy_n(&v[size_t(r) * vd], vd, cache.value(*b.seq[r], layer, b.position[r]));
  }

  std::vector<float> projected(size_t(n) * hidden);
  matmul_nt(pool_, attn.data(), n, L.o_proj.view(), projected.data());
  for (size_t i = 0; i < projected.size(); ++i) b.x[i] += projected[i];
}

void CpuModel::mlp_block(int layer, Batch& b) {
  const LayerWeights& L = weights_.layers[layer];
  const int hidden = config_.hidden_size;
  for (int r = 0; r < b.n; ++r)
    rms_norm(&b.x[size_t(r) * hidden], L.post_attention_norm.data(), hidden, config_.rms_norm_eps,
             &b.normed[size_t(r) * hidden]);
  std::vector<float> out(b.x.size(), 0.f);
  if (L.moe)
    routed_experts(L, b.normed.data(), b.n, out.data());
  else
    feed_forward(pool_, L.dense, b.normed.data(), b.n, out.data());
  for (size_t i = 0; i < out.size(); ++i) b.x[i] += out[i];
}

void feed_forward(ThreadPool& pool, const FeedForward& f, const float* in, int n, float* out) {
  const int width = f.gate.rows;
  std::vector<float> gate(size_t(n) * width), up(size_t(n) * width);
  matmul_nt(pool, in, n, f.gate.view(), gate.data());
  matmul_nt(pool, in, n, f.up.view(), up.data());
  for (size_t i = 0; i < gate.size(); ++i) gate[i] = silu(gate[i]) * up[i];
  matmul_nt(pool, gate.data(), n, f.down.view(), out);
}

void CpuModel::routed_experts(const LayerWeights& L, const float* in, int n, float* out) {
  const ModelConfig& c = config_;
  const int hidden = c.hidden_size, experts = c.num_experts, top_k = c.num_experts_per_tok;

  std::vector<float> router_logits(size_t(n) * experts);
  matmul_nt(pool_, in, n, L.router.view(), router_logits.data());

  // Each token's experts (model/routing.h), then the tokens grouped by expert so that each
  // expert's weights are read once for all of its tokens.
  std::vector<std::vector<std::pair<int, float>>> tokens_of(experts);
  std::vector<ExpertChoice> chosen(top_k);
  for (int r = 0; r < n; ++r) {
    choose_experts(c, std::span<const float>(&router_logits[size_t(r) * experts], experts), L.router_bias, chosen);
    for (const ExpertChoice& e : chosen) tokens_of[e.expert].push_back({r, e.weight});
  }

  std::vector<float> gathered, result;
  for (int e = 0; e < experts; ++e) {
    const auto& assigned = tokens_of[e];
    if (assigned.empty()) continue;
    const int m = static_cast<int>(assigned.size());
    gathered.resize(size_t(m) * hidden);
    result.resize(size_t(m) * hidden);
    for (int i = 0; i < m; ++i) std::copy_n(in + size_t(assigned[i].first) * hidden, hidden, &gathered[size_t(i) * hidden]);
    feed_forward(pool_, L.experts[e], gathered.data(), m, result.data());
    for (int i = 0; i < m; ++i) {
      float* dst = out + size_t(assigned[i].first) * hidden;
      const float w = assigned[i].second;
      for (int d = 0; d < hidden; ++d) dst[d] += w * result[size_t(i) * hidden + d];
    }
  }
}

}  // namespace ultraserve
