#include "actors/batch_planner.h"

#include <algorithm>

namespace ultraserve {

BatchPlanner::BatchPlanner(const PlannerLimits& limits) : limits_(limits) {}

int BatchPlanner::blocks_for(const Sequence& s) const {
  const int tokens = static_cast<int>(s.prompt.size()) + s.max_tokens;
  return (tokens + limits_.kv_block_size - 1) / limits_.kv_block_size;
}

BatchPlanner::Admission BatchPlanner::submit(RequestId id, std::vector<int32_t> prompt, int max_tokens,
                                             const SamplingParams& sampling, int block_size) {
  Sequence s{std::move(prompt), max_tokens, sampling};
  s.block_size = block_size;
  if (blocks_for(s) > limits_.kv_blocks) return Admission::too_large;
  if (waiting_.size() >= limits_.max_queued) return Admission::overloaded;
  sequences_.emplace(id, std::move(s));
  waiting_.push_back(id);
  return Admission::queued;
}

bool BatchPlanner::cancel(RequestId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return false;
  if (auto w = std::find(waiting_.begin(), waiting_.end(), id); w != waiting_.end()) {
    waiting_.erase(w);
  } else {
    std::erase(running_, id);
    kv_used_ -= it->second.blocks;
    pending_release_.push_back(id);
  }
  sequences_.erase(it);
  return true;
}

bool BatchPlanner::is_running(RequestId id) const {
  return std::find(running_.begin(), running_.end(), id) != running_.end();
}

void BatchPlanner::on_sampled(RequestId id, int32_t token, bool finished) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;  // cancelled while its step was in flight
  if (finished) {
    std::erase(running_, id);
    kv_used_ -= it->second.blocks;
    pending_release_.push_back(id);
    sequences_.erase(it);
  } else {
    it->second.next_input = token;
    ++it->second.generated;
  }
}

// The block for a decode of `s`: the configured size, cut so that its verify pass stays inside
// the request's KV budget (positions < prompt + max_tokens) and the step's token budget; below
// 2 there is nothing to verify and the decode is plain.
int BatchPlanner::speculative_block(const Sequence& s, int budget) const {
  const int wanted = limits_.adaptive_block
                         ? block_policy_.choose(s.acceptance.rate(), limits_.block_size, static_cast<int>(running_.size()))
                         : limits_.block_size;
  const int own = s.block_size >= 0 ? s.block_size : wanted;
  const int block = std::min({wanted, own, s.max_tokens - s.generated + 1, budget});
  return block >= 2 ? block : 0;
}

void BatchPlanner::on_round(RequestId id, int block, int tokens) {
  if (auto it = sequences_.find(id); it != sequences_.end()) it->second.acceptance.observe(block - 1, tokens);
}

void BatchPlanner::add_prefill_chunk(RequestId id, Sequence& s, int& budget, StepPlan& plan) {
  const size_t remaining = s.prompt.size() - s.prefilled;
  size_t chunk = std::min<size_t>(remaining, static_cast<size_t>(budget));
  if (limits_.max_prompt_chunk > 0) chunk = std::min<size_t>(chunk, static_cast<size_t>(limits_.max_prompt_chunk));
  if (chunk == 0) return;
  StepEntry e{id, {s.prompt.begin() + s.prefilled, s.prompt.begin() + s.prefilled + chunk}, chunk == remaining};
  s.prefilled += chunk;
  budget -= static_cast<int>(chunk);
  plan.entries.push_back(std::move(e));
}

std::optional<StepPlan> BatchPlanner::next_step() {
  StepPlan plan;
  plan.release.swap(pending_release_);
  int budget = limits_.max_step_tokens;

  // Running requests first: one decode token each, then any unfinished prompt chunks.
  for (RequestId id : running_) {
    Sequence& s = sequences_.at(id);
    if (s.next_input && budget > 0) {
      const int block = speculative_block(s, budget);
      plan.entries.push_back({id, {*s.next_input}, true, block});
      s.next_input.reset();
      budget -= std::max(block, 1);  // a verify pass runs the whole block
    }
  }
  for (RequestId id : running_) {
    Sequence& s = sequences_.at(id);
    if (s.prefilled < s.prompt.size()) add_prefill_chunk(id, s, budget, plan);
  }
  // Then admit waiting requests in arrival order while the batch, the KV pool and the token
  // budget allow. Strict FIFO: a large request at the head is not overtaken by small ones.
  while (!waiting_.empty() && budget > 0 && static_cast<int>(running_.size()) < limits_.max_batch) {
    const RequestId id = waiting_.front();
    Sequence& s = sequences_.at(id);
    const int blocks = blocks_for(s);
    if (kv_used_ + blocks > limits_.kv_blocks) break;
    waiting_.pop_front();
    s.blocks = blocks;
    kv_used_ += blocks;
    running_.push_back(id);
    plan.admit.push_back({id, static_cast<int>(s.prompt.size()) + s.max_tokens, s.sampling});
    add_prefill_chunk(id, s, budget, plan);
  }
  if (plan.entries.empty() && plan.release.empty() && plan.admit.empty()) return std::nullopt;
  return plan;
}

}  // namespace ultraserve
