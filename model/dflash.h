#pragma once
// The DFlash draft (block-diffusion speculative decoding, arXiv 2602.06036; checkpoints in the
// layout z-lab publishes): a few Qwen3 layers that propose a whole block of tokens in ONE
// forward pass, conditioned on the target's hidden states.
//
//   context feature of each committed token   c = hidden_norm(fc(concat(target layer outputs at the taps)))
//   every draft layer: Q from the block only; K, V = [k/v_proj(c) for the context ; k/v_proj(block)],
//                      k_norm and RoPE (the draft's rope_theta, absolute positions) on both;
//                      attention is NOT causal: the block sees all of the context and all of itself
//   block = target.embed([anchor, MASK x (B-1)]) -> layers -> norm -> target.lm_head
//   slot j (1..B-1) proposes, greedily, the token at position start + j
// The context's keys and values live in the draft's own paged cache (one entry per committed
// token and draft layer); the block's are recomputed every round and never stored.

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "model/cpu_model.h"
#include "model/kv_cache.h"

namespace ultraserve {

struct LoadedDraft {
  ModelConfig config;  // config.dflash is set
  ModelWeights weights;
};

// config.json and the safetensors of a DFlashDraftModel directory (it has no tokenizer: it
// shares the target's). Throws ModelError naming the file when it is not a DFlash draft.
LoadedDraft load_draft(const std::filesystem::path& dir);

// Refuses, naming `source` and the field, a draft that cannot serve this target: another
// hidden size or vocabulary, a tapped layer the target does not have, a mask id outside the
// vocabulary.
void check_draft_fits(const ModelConfig& draft, const ModelConfig& target, const std::string& source);

class DFlashDraft {
 public:
  // `target` lends its embeddings and LM head; it must outlive the draft.
  DFlashDraft(LoadedDraft draft, const CpuModel& target, ThreadPool& pool);

  const ModelConfig& config() const { return config_; }
  const std::vector<int>& target_layers() const { return config_.dflash->target_layer_ids; }
  int mask_token_id() const { return config_.dflash->mask_token_id; }

  // Appends the context of newly committed target tokens at positions seq.length..: `taps`
  // holds their tapped target hidden states, [tokens, taps x hidden], as CpuModel::forward
  // reports them. The caller reserved room in `cache` (a cache of this draft's shape).
  void append_context(PagedKvCache& cache, KvSequence& seq, std::span<const float> taps);

  // The block after `anchor` (the newest token, at position seq.length, not yet in the
  // context): block_size - 1 greedy proposals for positions seq.length + 1 ...
  std::vector<int32_t> propose(PagedKvCache& cache, const KvSequence& seq, int32_t anchor, int block_size);

 private:
  void layer(PagedKvCache& cache, const KvSequence& seq, int l, int start, int block, std::vector<float>& x);

  ModelConfig config_;
  ModelWeights weights_;
  const CpuModel& target_;
  ThreadPool& pool_;
};

}  // namespace ultraserve
