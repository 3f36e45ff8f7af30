// Continuous batching as pure logic: admission by KV budget, FIFO order, the per-step token
// budget, and KV blocks coming back in the very next step after finish or cancel.

#include <gtest/gtest.h>

#include "actors/batch_planner.h"

namespace ultraserve {
namespace {

std::vector<int32_t> prompt(int n) { return std::vector<int32_t>(n, 7); }

PlannerLimits small_limits() {
  PlannerLimits l;
  l.max_batch = 2;
  l.max_step_tokens = 8;
  l.kv_blocks = 4;
  l.kv_block_size = 4;
  l.max_queued = 3;
  return l;
}

TEST(BatchPlanner, IdleHasNoStep) {
  BatchPlanner p(small_limits());
  EXPECT_FALSE(p.next_step());
  EXPECT_TRUE(p.idle());
}

TEST(BatchPlanner, AdmitsPrefillsThenDecodes) {
  BatchPlanner p(small_limits());
  ASSERT_EQ(p.submit(1, prompt(3), 2, {}), BatchPlanner::Admission::queued);  // 5 tokens: 2 blocks
  auto s1 = p.next_step();
  ASSERT_TRUE(s1);
  ASSERT_EQ(s1->admit.size(), 1u);
  EXPECT_EQ(s1->admit[0].kv_tokens, 5);
  ASSERT_EQ(s1->entries.size(), 1u);
  EXPECT_EQ(s1->entries[0].tokens.size(), 3u);
  EXPECT_TRUE(s1->entries[0].sample);
  EXPECT_EQ(p.kv_blocks_used(), 2);

  p.on_sampled(1, 42, false);
  auto s2 = p.next_step();
  ASSERT_TRUE(s2);
  EXPECT_TRUE(s2->admit.empty());
  ASSERT_EQ(s2->entries.size(), 1u);
  EXPECT_EQ(s2->entries[0].tokens, std::vector<int32_t>{42});

  p.on_sampled(1, 43, true);  // finished: blocks freed now, released by the next step
  EXPECT_EQ(p.kv_blocks_used(), 0);
  auto s3 = p.next_step();
  ASSERT_TRUE(s3);
  EXPECT_EQ(s3->release, std::vector<RequestId>{1});
  EXPECT_TRUE(s3->entries.empty());
  EXPECT_FALSE(p.next_step());
}

TEST(BatchPlanner, LongPromptsArePrefilledInChunksWithinTheStepBudget) {
  BatchPlanner p(small_limits());
  ASSERT_EQ(p.submit(1, prompt(11), 1, {}), BatchPlanner::Admission::queued);
  auto s1 = p.next_step();
  ASSERT_EQ(s1->entries.size(), 1u);
  EXPECT_EQ(s1->entries[0].tokens.size(), 8u);
  EXPECT_FALSE(s1->entries[0].sample);  // not the end of the prompt yet
  auto s2 = p.next_step();
  ASSERT_EQ(s2->entries.size(), 1u);
  EXPECT_EQ(s2->entries[0].tokens.size(), 3u);
  EXPECT_TRUE(s2->entries[0].sample);
}

// A worker that takes few rows of one sequence per pass (a hybrid model's rings on the GPU) caps
// each request's prompt chunk, while the step still fills its budget from other requests.
TEST(BatchPlanner, PromptChunksStayWithinTheWorkersPerSequenceLimit) {
  PlannerLimits limits = small_limits();
  limits.max_prompt_chunk = 3;
  BatchPlanner p(limits);
  ASSERT_EQ(p.submit(1, prompt(7), 1, {}), BatchPlanner::Admission::queued);
  ASSERT_EQ(p.submit(2, prompt(2), 1, {}), BatchPlanner::Admission::queued);
  auto s1 = p.next_step();
  ASSERT_TRUE(s1);
  ASSERT_EQ(s1->entries.size(), 2u);
  EXPECT_EQ(s1->entries[0].tokens.size(), 3u);
  EXPECT_FALSE(s1->entries[0].sample);
  EXPECT_EQ(s1->entries[1].tokens.size(), 2u);
  p.on_sampled(2, 5, false);
  std::vector<size_t> chunks;
  for (auto s = p.next_step(); s && chunks.size() < 4; s = p.next_step()) {
    for (const StepEntry& e : s->entries)
      if (e.id == 1) chunks.push_back(e.tokens.size());
    for (const StepEntry& e : s->entries)
      if (e.sample) p.on_sampled(e.id, 5, true);
  }
  EXPECT_EQ(chunks, (std::vector<size_t>{3, 1}));  // 3 + 3 + 1 = 7
}

TEST(BatchPlanner, WaitsForKvAndKeepsArrivalOrder) {
  BatchPlanner p(small_limits());
  p.submit(1, prompt(8), 4, {});  // 3 blocks
  p.submit(2, prompt(4), 4, {});  // 2 blocks: does not fit beside 1
  p.submit(3, prompt(1), 1, {});  // 1 block: would fit, but must not overtake 2
  auto s1 = p.next_step();
  ASSERT_EQ(s1->admit.size(), 1u);
  EXPECT_EQ(s1->admit[0].id, 1u);
  EXPECT_EQ(p.queued(), 2u);
  p.on_sampled(1, 5, false);
  auto s2 = p.next_step();
  EXPECT_TRUE(s2->admit.empty());
  EXPECT_TRUE(p.cancel(1));
  auto s3 = p.next_step();
  EXPECT_EQ(s3->release, std::vector<RequestId>{1});
  ASSERT_EQ(s3->admit.size(), 2u);  // 2 then 3, in order
  EXPECT_EQ(s3->admit[0].id, 2u);
  EXPECT_EQ(s3->admit[1].id, 3u);
}

TEST(BatchPlanner, RespectsMaxBatch) {
  BatchPlanner p(small_limits());
  for (RequestId id = 1; id <= 3; ++id) p.submit(id, prompt(1), 1, {});
  auto s = p.next_step();
  EXPECT_EQ(s->admit.size(), 2u);
  EXPECT_EQ(p.running(), 2u);
  EXPECT_EQ(p.queued(), 1u);
}

TEST(BatchPlanner, RefusesWhenQueueIsFullOrRequestCanNeverFit) {
  BatchPlanner p(small_limits());
  EXPECT_EQ(p.submit(9, prompt(10), 10, {}), BatchPlanner::Admission::too_large);  // 5 blocks > 4
  for (RequestId id = 1; id <= 3; ++id) EXPECT_EQ(p.submit(id, prompt(1), 1, {}), BatchPlanner::Admission::queued);
  EXPECT_EQ(p.submit(4, prompt(1), 1, {}), BatchPlanner::Admission::overloaded);
}

TEST(BatchPlanner, CancelOfWaitingOrUnknownRequests) {
  BatchPlanner p(small_limits());
  p.submit(1, prompt(1), 1, {});
  EXPECT_TRUE(p.cancel(1));
  EXPECT_FALSE(p.cancel(1));
  EXPECT_FALSE(p.next_step());  // a waiting request holds no KV: nothing to release
  p.on_sampled(77, 1, false);   // a token for a cancelled request is ignored
  EXPECT_TRUE(p.idle());
}

TEST(BatchPlanner, DecodesComeBeforeNewPrefills) {
  PlannerLimits l = small_limits();
  l.max_step_tokens = 4;
  l.kv_blocks = 16;
  BatchPlanner p(l);
  p.submit(1, prompt(2), 4, {});
  p.next_step();
  p.on_sampled(1, 9, false);
  p.submit(2, prompt(10), 1, {});
  auto s = p.next_step();
  ASSERT_EQ(s->entries.size(), 2u);
  EXPECT_EQ(s->entries[0].id, 1u);  // the running stream's decode first
  EXPECT_EQ(s->entries[1].tokens.size(), 3u);  // then what is left of the budget
}

TEST(BatchPlanner, SpeculativeDecodesStayInsideTheKvAndStepBudgets) {
  PlannerLimits l = small_limits();
  l.block_size = 6;
  l.kv_blocks = 16;
  BatchPlanner p(l);
  ASSERT_EQ(p.submit(1, prompt(2), 4, {}), BatchPlanner::Admission::queued);
  ASSERT_TRUE(p.next_step());  // prefill
  p.on_sampled(1, 5, false);   // 1 of 4 generated: the verify pass may write 4 more positions
  auto s = p.next_step();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->entries[0].speculate, 4);
  for (int32_t t : {6, 7, 8}) p.on_sampled(1, t, false);  // 4 of 4: nothing left to verify
  EXPECT_EQ(p.next_step()->entries[0].speculate, 0);
}

// A fitted cost of a + b * tokens seconds per step.
void fit(BlockSizePolicy& p, double a, double b) {
  for (int i = 0; i < 40; ++i) p.observe_step(a + b * (1 + i % 16), 1 + i % 16);
}

TEST(BlockSizePolicy, ChoosesTheBlockWithTheMostTokensPerSecond) {
  BlockSizePolicy p;
  EXPECT_EQ(p.choose(0.9, 16, 1), 16) << "no measurements yet: the configured block";
  fit(p, 1e-3, 1e-4);  // a fixed step cost that a block shares out
  ASSERT_TRUE(p.fitted());
  // alpha 0.9 at 1 + 0.1 B ms: E(B) / cost peaks at B = 11.
  EXPECT_EQ(p.choose(0.9, 16, 1), 11);
  EXPECT_EQ(p.choose(0.9, 8, 1), 8) << "never above the configured block";
  EXPECT_EQ(p.choose(0.05, 16, 1), 0) << "proposals that fail cost more than they give";
  // When tokens are what costs (a MoE verify pass reading many experts), blocks shrink.
  BlockSizePolicy expensive;
  fit(expensive, 1e-4, 1e-3);
  EXPECT_EQ(expensive.choose(0.5, 16, 1), 0);
  EXPECT_GE(expensive.choose(0.99, 16, 1), 2);
}

TEST(BlockSizePolicy, AcceptanceFollowsRecentRounds) {
  AcceptanceRate r;
  EXPECT_DOUBLE_EQ(r.rate(), 0.5);
  for (int i = 0; i < 20; ++i) r.observe(7, 8);  // every proposal accepted
  EXPECT_GT(r.rate(), 0.95);
  for (int i = 0; i < 40; ++i) r.observe(7, 1);  // the first one rejected
  EXPECT_LT(r.rate(), 0.2);
}

TEST(BatchPlanner, AdaptiveBlockFollowsTheRequestsAcceptance) {
  PlannerLimits l = small_limits();
  l.block_size = 8;
  l.adaptive_block = true;
  l.kv_blocks = 64;
  l.max_step_tokens = 64;
  BatchPlanner p(l);
  ASSERT_EQ(p.submit(1, prompt(2), 200, {}), BatchPlanner::Admission::queued);
  ASSERT_TRUE(p.next_step());
  p.on_sampled(1, 5, false);
  EXPECT_EQ(p.next_step()->entries[0].speculate, 8) << "before any measurement";
  for (int i = 0; i < 40; ++i) p.on_step_cost(1e-3 + 1e-4 * (1 + i % 8), 1 + i % 8);
  for (int i = 0; i < 30; ++i) p.on_round(1, 8, 1);  // its draft is always wrong
  p.on_sampled(1, 6, false);
  EXPECT_EQ(p.next_step()->entries[0].speculate, 0) << "plain decodes serve it better";
}

}  // namespace
}  // namespace ultraserve
