#include "actors/gpu_worker.h"

#include <chrono>
#include <stdexcept>
#include <string>

#include "model/speculative.h"

namespace ultraserve {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Appends `tokens` of one sequence, from position `start`, to a pass.
void add_rows(gpu::PassRequest& pass, const KvSequence& kv, std::span<const int32_t> tokens, int start) {
  const int table = static_cast<int>(pass.tables.size());
  pass.tables.emplace_back(kv.blocks);
  pass.rings.push_back(kv.ring);
  for (size_t i = 0; i < tokens.size(); ++i) {
    pass.tokens.push_back(tokens[i]);
    pass.positions.push_back(start + static_cast<int>(i));
    pass.table_of.push_back(table);
  }
}

}  // namespace

GpuWorker::GpuWorker(std::unique_ptr<gpu::GpuModel> model, int device, int sampleable_vocab)
    : model_(std::move(model)),
      device_(device),
      sampleable_vocab_(sampleable_vocab),
      pool_(model_->info().kv_blocks, model_->info().kv_block_size, model_->info().kv_rings) {}

void GpuWorker::DevicePool::grow_rings(int) {
  // The rings are device memory sized at load for max_sequences, the scheduler's batch limit.
  throw std::logic_error("worker: more live sequences than the GPU model has sliding-window rings");
}

WorkerInfo GpuWorker::info() const {
  const gpu::GpuModelInfo& m = model_->info();
  WorkerInfo info;
  info.device = "cuda:" + std::to_string(device_) + " (" + m.device_name + ")";
  info.kv_blocks = m.kv_blocks;
  info.kv_block_size = m.kv_block_size;
  info.max_rows_per_sequence = m.max_rows_per_sequence;
  info.kv_block_bytes = m.kv_bytes / (m.kv_blocks + 1);
  info.weight_bytes = m.weight_bytes;
  if (m.draft_layers > 0) {
    info.draft = describe_draft(m.draft_layers, size_t(m.draft_taps));
    info.draft_block_size = m.draft_block_size;
  }
  return info;
}

int32_t GpuWorker::sample(Sequence& s, const gpu::PassResult& out, size_t row) {
  if (s.greedy) return out.argmax[row];
  const size_t vocab = static_cast<size_t>(model_->info().vocab_size);
  return s.sampler.sample(std::span<const float>(out.logits.data() + row * vocab, size_t(sampleable_vocab_)));
}

std::vector<std::vector<int32_t>> GpuWorker::propose(const StepPlan& plan, StepResult& result) {
  std::vector<std::vector<int32_t>> blocks(plan.entries.size());
  gpu::PassRequest pass;
  const int mask = model_->info().draft_mask_token;
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const StepEntry& e = plan.entries[i];
    if (e.speculate < 2) continue;
    if (mask < 0) throw std::logic_error("worker: a speculative step, but no draft");
    const KvSequence& kv = sequences_.at(e.id).kv;
    std::vector<int32_t> block(size_t(e.speculate), mask);
    block[0] = e.tokens.front();
    add_rows(pass, kv, block, kv.length);
    for (int j = 0; j < e.speculate; ++j) {
      pass.kv_end.push_back(kv.length + e.speculate);  // the block sees all of itself
      pass.output_rows.push_back(static_cast<int32_t>(pass.output_rows.size()));
    }
    blocks[i] = std::move(block);
  }
  if (pass.tokens.empty()) return blocks;

  const auto t0 = Clock::now();
  const gpu::PassResult out = model_->propose(pass);
  result.draft_seconds += seconds_since(t0);
  size_t row = 0;
  for (std::vector<int32_t>& block : blocks) {
    // Slot j's row proposes the token at its own position; the anchor's row is skipped.
    for (size_t j = 1; j < block.size(); ++j) block[j] = out.argmax[row + j];
    row += block.size();
  }
  return blocks;
}

StepResult GpuWorker::execute(const StepPlan& plan) {
  const auto start = Clock::now();
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

  StepResult result;
  const std::vector<std::vector<int32_t>> blocks = propose(plan, result);

  // One target pass: a speculative entry's block wants every row's next token, a plain entry
  // only its last row's (when it samples at all).
  gpu::PassRequest pass;
  std::vector<size_t> first_output(plan.entries.size());
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const StepEntry& e = plan.entries[i];
    Sequence& s = sequences_.at(e.id);
    const bool speculative = e.speculate >= 2;
    const std::span<const int32_t> tokens = speculative ? std::span<const int32_t>(blocks[i]) : e.tokens;
    add_rows(pass, s.kv, tokens, s.kv.length);
    s.kv.length += static_cast<int>(tokens.size());
    first_output[i] = pass.output_rows.size();
    const size_t outputs = speculative ? tokens.size() : e.sample ? 1 : 0;
    for (size_t j = tokens.size() - outputs; j < tokens.size(); ++j)
      pass.output_rows.push_back(static_cast<int32_t>(pass.tokens.size() - tokens.size() + j));
    pass.want_logits |= outputs > 0 && !s.greedy;
  }
  if (pass.tokens.empty()) {
    result.seconds = seconds_since(start);
    return result;
  }
  if (pass.output_rows.empty()) pass.output_rows.push_back(0);  // a pass always yields a row; unused here
  const gpu::PassResult out = model_->run(pass);

  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const StepEntry& e = plan.entries[i];
    Sequence& s = sequences_.at(e.id);
    const size_t o = first_output[i];
    if (e.speculate >= 2) {
      const size_t vocab = static_cast<size_t>(model_->info().vocab_size);
      auto judge = [&](size_t row, int32_t proposal) -> Sampler::Verdict {
        if (s.greedy) return {out.argmax[o + row] == proposal, out.argmax[o + row]};
        return s.sampler.verify({out.logits.data() + (o + row) * vocab, size_t(sampleable_vocab_)}, proposal);
      };
      const std::vector<int32_t> yielded =
          accept_block(blocks[i], judge, [&](size_t row) { return sample(s, out, o + row); });
      for (int32_t t : yielded) result.sampled.push_back({e.id, t});
      s.kv.length -= static_cast<int>(blocks[i].size() - yielded.size());  // keep the anchor and the accepted
    } else if (e.sample) {
      result.sampled.push_back({e.id, sample(s, out, o)});
    }
  }
  result.seconds = seconds_since(start);
  return result;
}

}  // namespace ultraserve
