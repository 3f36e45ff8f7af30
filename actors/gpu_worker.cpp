#include "actors/gpu_worker.h"

#include <chrono>
#include <stdexcept>
#include <string>

namespace ultraserve {

GpuWorker::GpuWorker(std::unique_ptr<gpu::GpuModel> model, int device, int sampleable_vocab)
    : model_(std::move(model)),
      device_(device),
      sampleable_vocab_(sampleable_vocab),
      pool_(model_->info().kv_blocks, model_->info().kv_block_size) {}

WorkerInfo GpuWorker::info() const {
  const gpu::GpuModelInfo& m = model_->info();
  WorkerInfo info{"cuda:" + std::to_string(device_) + " (" + m.device_name + ")", m.kv_blocks, m.kv_block_size};
  info.kv_block_bytes = m.kv_bytes / (m.kv_blocks + 1);
  info.weight_bytes = m.weight_bytes;
  return info;
}

StepResult GpuWorker::execute(const StepPlan& plan) {
  const auto start = std::chrono::steady_clock::now();
  for (RequestId id : plan.release) {
    if (auto it = sequences_.find(id); it != sequences_.end()) {
      pool_.release(it->second.kv);
      sequences_.erase(it);
    }
  }
  for (const SequenceAdmission& a : plan.admit) {
    auto [it, inserted] = sequences_.try_emplace(a.id, Sequence{{}, Sampler(a.sampling), a.sampling.temperature == 0});
    // The scheduler's ledger mirrors this pool, so a refusal here is a bug, not an overload.
    if (!inserted || !pool_.reserve(it->second.kv, a.kv_tokens))
      throw std::logic_error("worker: cannot admit request " + std::to_string(a.id));
  }

  gpu::PassRequest pass;
  std::vector<Sequence*> sampled;  // per output row
  for (const StepEntry& e : plan.entries) {
    Sequence& s = sequences_.at(e.id);
    const int table = static_cast<int>(pass.tables.size());
    pass.tables.emplace_back(s.kv.blocks);
    for (size_t i = 0; i < e.tokens.size(); ++i) {
      pass.tokens.push_back(e.tokens[i]);
      pass.positions.push_back(s.kv.length + static_cast<int>(i));
      pass.table_of.push_back(table);
    }
    s.kv.length += static_cast<int>(e.tokens.size());
    if (e.sample) {
      pass.output_rows.push_back(static_cast<int32_t>(pass.tokens.size()) - 1);
      pass.want_logits |= !s.greedy;
      sampled.push_back(&s);
    }
  }

  StepResult result;
  if (!pass.tokens.empty()) {
    if (pass.output_rows.empty()) pass.output_rows.push_back(0);  // a pass always yields a row; unused here
    const gpu::PassResult out = model_->run(pass);
    size_t row = 0;
    for (const StepEntry& e : plan.entries) {
      if (!e.sample) continue;
      Sequence& s = *sampled[row];
      const int32_t token =
          s.greedy ? out.argmax[row]
                   : s.sampler.sample(std::span<const float>(out.logits.data() + row * model_->info().vocab_size, sampleable_vocab_));
      result.sampled.push_back({e.id, token});
      ++row;
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace ultraserve
