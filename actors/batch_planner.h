#pragma once
// Continuous batching, as pure logic (the scheduler actor wraps it in messages).
//
// Requests wait in FIFO order until the KV cache can hold their whole budget (prompt +
// max_tokens, in blocks) and the batch has room; then they run until they finish. Each step
// mixes the decode tokens of running requests with prompt chunks of newly admitted ones,
// within a per-step token budget, so a long prompt never stalls the streams already running.
// Cancellation and completion free a request's blocks in the very next step.

#include <cstddef>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "actors/block_size_policy.h"
#include "actors/step.h"

namespace ultraserve {

struct PlannerLimits {
  int max_batch = 64;             // sequences running at once
  int max_step_tokens = 512;      // tokens per step (decodes + prompt chunks)
  int max_prompt_chunk = 0;       // prompt tokens of one request per step; 0: max_step_tokens (the
                                  // GPU sets it for hybrid models: a pass fits its sliding-window rings)
  int kv_blocks = 1024;           // KV pool size, in blocks
  int kv_block_size = 16;         // positions per block
  size_t max_queued = 1024;       // waiting requests before new ones are refused as overloaded
  int block_size = 0;             // speculative block (anchor included) for decodes; 0: none
  bool adaptive_block = false;    // choose each round's block (<= block_size) from measured costs
};

class BatchPlanner {
 public:
  explicit BatchPlanner(const PlannerLimits& limits);

  enum class Admission { queued, overloaded, too_large };
  // too_large: the request's KV budget exceeds the whole pool, so it could never run.
  // `block_size`: the request's own speculative block (0: plain decoding, -1: the server's); never
  // above limits().block_size.
  Admission submit(RequestId id, std::vector<int32_t> prompt, int max_tokens, const SamplingParams& sampling,
                   int block_size = -1);

  // Removes a request wherever it is; its blocks (if any) are released by the next plan.
  // Returns false if the id is unknown.
  bool cancel(RequestId id);

  // Records a token sampled for a request in the last step (a speculative entry gives several,
  // in order); `finished` ends it (its KV is released in the next plan).
  void on_sampled(RequestId id, int32_t token, bool finished);

  // The next step, or nothing when there is neither work nor anything to release. One step
  // is in flight at a time: call again only after the last one's tokens were recorded.
  std::optional<StepPlan> next_step();

  // What the last step cost and, for each speculative round in it, what it gave: the measures
  // the adaptive block size follows.
  void on_step_cost(double seconds, int tokens) { block_policy_.observe_step(seconds, tokens); }
  void on_round(RequestId id, int block, int tokens);

  int kv_blocks_used() const { return kv_used_; }
  int kv_blocks_total() const { return limits_.kv_blocks; }
  size_t queued() const { return waiting_.size(); }
  size_t running() const { return running_.size(); }
  bool is_running(RequestId id) const;  // admitted (holds KV blocks), as opposed to waiting
  bool idle() const { return waiting_.empty() && running_.empty() && pending_release_.empty(); }
  const PlannerLimits& limits() const { return limits_; }
  void set_limits(const PlannerLimits& limits) { limits_ = limits; }

 private:
  struct Sequence {
    std::vector<int32_t> prompt;
    int max_tokens;
    SamplingParams sampling;
    int blocks = 0;
    size_t prefilled = 0;               // prompt tokens already sent to the worker
    std::optional<int32_t> next_input;  // sampled token to feed next step
    int generated = 0;                  // tokens sampled so far
    int block_size = -1;                // its own speculative block (-1: the server's)
    AcceptanceRate acceptance;          // of its draft's proposals
  };
  int speculative_block(const Sequence& s, int budget) const;
  void add_prefill_chunk(RequestId id, Sequence& s, int& budget, StepPlan& plan);
  int blocks_for(const Sequence& s) const;

  PlannerLimits limits_;
  BlockSizePolicy block_policy_;
  std::deque<RequestId> waiting_;
  std::map<RequestId, Sequence> sequences_;  // waiting and running
  std::vector<RequestId> running_;           // admission order
  std::vector<RequestId> pending_release_;
  int kv_used_ = 0;
};

}  // namespace ultraserve
