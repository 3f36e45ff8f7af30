#include "actors/model_worker.h"

#include <chrono>
#include <stdexcept>

#include "model/speculative.h"

namespace ultraserve {

std::string describe_draft(int layers, size_t taps) {
  return "DFlash, " + std::to_string(layers) + " layers, " + std::to_string(taps) + " taps";
}

CpuWorker::CpuWorker(ModelConfig config, ModelWeights weights, int sampleable_vocab, int kv_blocks,
                     int kv_block_size, int max_sequences, size_t threads, std::optional<LoadedDraft> draft)
    : sampleable_vocab_(static_cast<size_t>(sampleable_vocab)),
      pool_(threads),
      model_(config, std::move(weights), pool_),
      cache_(config, kv_blocks, kv_block_size, max_sequences) {
  if (!draft) return;
  draft_cache_ = std::make_unique<PagedKvCache>(draft->config, kv_blocks, kv_block_size);
  draft_ = std::make_unique<DFlashDraft>(std::move(*draft), model_, pool_);
  model_.set_taps(draft_->target_layers());
}

WorkerInfo CpuWorker::info() const {
  WorkerInfo info{"cpu", cache_.total_blocks(), cache_.block_size()};
  info.kv_block_bytes = cache_.block_bytes();
  if (draft_) {
    const ModelConfig& d = draft_->config();
    info.draft = describe_draft(d.num_hidden_layers, draft_->target_layers().size());
    info.draft_block_size = d.dflash->block_size;
  }
  return info;
}

StepResult CpuWorker::execute(const StepPlan& plan) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  for (RequestId id : plan.release) {
    if (auto it = sequences_.find(id); it != sequences_.end()) {
      cache_.release(it->second.kv);
      if (draft_cache_) draft_cache_->release(it->second.draft_kv);
      sequences_.erase(it);
    }
  }
  for (const SequenceAdmission& a : plan.admit) {
    auto [it, inserted] = sequences_.try_emplace(a.id, Sequence{{}, Sampler(a.sampling), {}});
    // The scheduler's ledger mirrors this pool, so a refusal here is a bug, not an overload.
    if (!inserted || !cache_.reserve(it->second.kv, a.kv_tokens) ||
        (draft_cache_ && !draft_cache_->reserve(it->second.draft_kv, a.kv_tokens)))
      throw std::logic_error("worker: cannot admit request " + std::to_string(a.id));
  }

  // The draft proposes each speculative entry's block first; then one target pass runs every
  // entry's rows (a verify block gets logits for all its rows).
  StepResult result;
  std::vector<std::vector<int32_t>> blocks(plan.entries.size());
  std::vector<SequenceStep> steps;
  steps.reserve(plan.entries.size());
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const StepEntry& e = plan.entries[i];
    Sequence& s = sequences_.at(e.id);
    if (e.speculate >= 2) {
      if (!draft_) throw std::logic_error("worker: a speculative step, but no draft");
      const auto t0 = clock::now();
      blocks[i] = {e.tokens.front()};
      for (int32_t t : draft_->propose(*draft_cache_, s.draft_kv, e.tokens.front(), e.speculate)) blocks[i].push_back(t);
      result.draft_seconds += std::chrono::duration<double>(clock::now() - t0).count();
    } else {
      blocks[i] = e.tokens;
    }
    steps.push_back({&s.kv, blocks[i], e.speculate >= 2});
  }

  if (!steps.empty()) {
    std::vector<float> taps;
    const std::vector<float> logits = model_.forward(cache_, steps, draft_ ? &taps : nullptr);
    const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
    const size_t tap_width = draft_ ? draft_->target_layers().size() * model_.config().hidden_size : 0;
    size_t logit_row = 0, tap_row = 0;
    for (size_t i = 0; i < plan.entries.size(); ++i) {
      const StepEntry& e = plan.entries[i];
      Sequence& s = sequences_.at(e.id);
      const size_t rows = blocks[i].size();
      size_t committed = rows;
      if (e.speculate >= 2) {
        const int before = s.kv.length;
        verify(e, blocks[i], std::span(logits).subspan(logit_row * vocab, rows * vocab), s, result);
        committed = rows - (before - s.kv.length);
        logit_row += rows;
      } else {
        if (e.sample) result.sampled.push_back({e.id, s.sampler.sample({logits.data() + logit_row * vocab, sampleable_vocab_})});
        ++logit_row;
      }
      // What the target committed joins the draft's context.
      if (draft_) draft_->append_context(*draft_cache_, s.draft_kv, std::span(taps).subspan(tap_row * tap_width, committed * tap_width));
      tap_row += rows;
    }
  }
  result.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return result;
}

void CpuWorker::verify(const StepEntry& e, std::span<const int32_t> block, std::span<const float> logits, Sequence& s,
                       StepResult& result) {
  // Row i holds the target's logits for the position after block[i].
  const size_t vocab = logits.size() / block.size();
  auto row = [&](size_t i) { return logits.subspan(i * vocab, sampleable_vocab_); };
  const std::vector<int32_t> yielded =
      accept_block(block, [&](size_t i, int32_t proposal) { return s.sampler.verify(row(i), proposal); },
                   [&](size_t i) { return s.sampler.sample(row(i)); });
  for (int32_t t : yielded) result.sampled.push_back({e.id, t});
  // The pass wrote the whole block; keep the anchor and what was accepted.
  s.kv.length -= static_cast<int>(block.size() - yielded.size());
}

}  // namespace ultraserve
