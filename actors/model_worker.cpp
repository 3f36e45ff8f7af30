#include "actors/model_worker.h"

#include <chrono>
#include <stdexcept>

namespace ultraserve {

CpuWorker::CpuWorker(ModelConfig config, ModelWeights weights, int sampleable_vocab, int kv_blocks,
                     int kv_block_size, size_t threads)
    : sampleable_vocab_(static_cast<size_t>(sampleable_vocab)),
      pool_(threads),
      model_(config, std::move(weights), pool_),
      cache_(config, kv_blocks, kv_block_size) {}

WorkerInfo CpuWorker::info() const {
  const ModelConfig& c = model_.config();
  WorkerInfo info{"cpu", cache_.total_blocks(), cache_.block_size()};
  info.kv_block_bytes = size_t(c.num_hidden_layers) * 2 * cache_.block_size() * c.kv_dim() * sizeof(float);
  return info;
}

StepResult CpuWorker::execute(const StepPlan& plan) {
  const auto start = std::chrono::steady_clock::now();
  for (RequestId id : plan.release) {
    if (auto it = sequences_.find(id); it != sequences_.end()) {
      cache_.release(it->second.kv);
      sequences_.erase(it);
    }
  }
  for (const SequenceAdmission& a : plan.admit) {
    auto [it, inserted] = sequences_.try_emplace(a.id, Sequence{{}, Sampler(a.sampling)});
    // The scheduler's ledger mirrors this pool, so a refusal here is a bug, not an overload.
    if (!inserted || !cache_.reserve(it->second.kv, a.kv_tokens))
      throw std::logic_error("worker: cannot admit request " + std::to_string(a.id));
  }
  std::vector<SequenceStep> steps;
  steps.reserve(plan.entries.size());
  for (const StepEntry& e : plan.entries) steps.push_back({&sequences_.at(e.id).kv, e.tokens, false});

  StepResult result;
  if (!steps.empty()) {
    const std::vector<float> logits = model_.forward(cache_, steps);
    const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
    for (size_t i = 0; i < plan.entries.size(); ++i) {
      const StepEntry& e = plan.entries[i];
      if (!e.sample) continue;
      const std::span<const float> row(logits.data() + i * vocab, sampleable_vocab_);
      result.sampled.push_back({e.id, sequences_.at(e.id).sampler.sample(row)});
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace ultraserve
