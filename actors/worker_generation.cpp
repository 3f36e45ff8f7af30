#include "actors/worker_generation.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace ultraserve {

double WorkerGeneration::decode_tokens_per_second() const {
  size_t generated = 0;
  for (const auto& t : tokens) generated += t.size() - 1;
  return decode_seconds > 0 ? double(generated) / decode_seconds : 0.0;
}

WorkerGeneration generate_on_worker(ModelWorker& worker, std::span<const std::vector<int32_t>> prompts,
                                    const WorkerGenerationOptions& o, RequestId first_id) {
  if (o.new_tokens < 1) throw std::invalid_argument("generate_on_worker: new_tokens must be positive");
  const size_t n = prompts.size();
  auto speculates = [&](size_t i) { return o.block >= 2 && !(o.alternate_plain && i % 2 == 1); };
  WorkerGeneration g;
  g.tokens.resize(n);

  // Prefill: each prompt in one entry, or in chunks of what the worker takes of one sequence per
  // step (a hybrid model on the GPU); the admissions come with the first step.
  const size_t chunk = worker.info().max_rows_per_sequence > 0 ? size_t(worker.info().max_rows_per_sequence) : SIZE_MAX;
  StepPlan prefill;
  for (size_t i = 0; i < n; ++i) {
    SamplingParams sampling = o.sampling;
    sampling.seed += i;
    // Room for the last round's whole block, past the tokens kept.
    const int kv = static_cast<int>(prompts[i].size()) + o.new_tokens + std::max(o.block, 1);
    prefill.admit.push_back({first_id + i, kv, sampling});
  }
  for (size_t offset = 0;; offset += chunk) {
    for (size_t i = 0; i < n; ++i) {
      if (offset >= prompts[i].size()) continue;
      const size_t end = offset + std::min(chunk, prompts[i].size() - offset);
      prefill.entries.push_back(
          {first_id + i, {prompts[i].begin() + offset, prompts[i].begin() + end}, end == prompts[i].size()});
    }
    if (prefill.entries.empty()) break;
    const StepResult r = worker.execute(prefill);
    g.prefill_seconds += r.seconds;
    for (const SampledToken& t : r.sampled) g.tokens[t.id - first_id].push_back(t.token);
    prefill = {};
  }

  auto done = [&](size_t i) { return g.tokens[i].size() >= size_t(o.new_tokens); };
  for (;;) {
    StepPlan step;
    for (size_t i = 0; i < n; ++i)
      if (!done(i))
        step.entries.push_back({first_id + i, {g.tokens[i].back()}, true, speculates(i) ? o.block : 0});
    if (step.entries.empty()) break;
    const StepResult r = worker.execute(step);
    g.decode_seconds += r.seconds;
    g.draft_seconds += r.draft_seconds;
    ++g.decode_steps;
    for (const SampledToken& t : r.sampled) g.tokens[t.id - first_id].push_back(t.token);
    for (const StepEntry& e : step.entries)
      if (e.speculate >= 2) ++g.rounds;
  }
  for (size_t i = 0; i < n; ++i)
    if (speculates(i)) g.round_tokens += static_cast<int>(g.tokens[i].size()) - 1;

  StepPlan release;
  for (size_t i = 0; i < n; ++i) {
    release.release.push_back(first_id + i);
    g.tokens[i].resize(size_t(o.new_tokens));
  }
  worker.execute(release);
  return g;
}

}  // namespace ultraserve
