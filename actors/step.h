#pragma once
// What the scheduler asks of a worker for one step, and what comes back. Plain data: the
// scheduler decides *what* runs, the worker owns *how* (weights, KV memory, device).

#include <cstdint>
#include <vector>

#include "model/sampler.h"

namespace ultraserve {

using RequestId = uint64_t;

// A sequence the worker has not seen: it reserves KV room for `kv_tokens` positions up front
// (prompt + max_tokens), so a step never runs out of KV memory midway.
struct SequenceAdmission {
  RequestId id;
  int kv_tokens;
  SamplingParams sampling;
};

struct StepEntry {
  RequestId id;
  std::vector<int32_t> tokens;  // a prompt chunk, or the last sampled token
  bool sample;                  // sample the next token after these (false for a non-final prompt chunk)
  // >= 2: a speculative round on the last sampled token: the worker's draft proposes
  // speculate - 1 tokens after it, the target verifies them in this pass, and the entry yields
  // 1..speculate tokens (the accepted ones, then the target's own).
  int speculate = 0;
};

// Applied in this order: release (KV blocks of finished or cancelled requests back to the
// pool), admit (reserve KV for new ones), then run the entries as one batched forward pass.
struct StepPlan {
  std::vector<RequestId> release;
  std::vector<SequenceAdmission> admit;
  std::vector<StepEntry> entries;
};

struct SampledToken {
  RequestId id;
  int32_t token;
};

struct StepResult {
  // One per entry with sample == true, in entry order; a speculative entry's tokens follow
  // each other, in order.
  std::vector<SampledToken> sampled;
  double seconds = 0;        // time the worker spent on the step
  double draft_seconds = 0;  // of which the draft's proposals (speculative entries only)
};

}  // namespace ultraserve
