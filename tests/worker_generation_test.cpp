// The CPU worker driven step by step (actors/worker_generation.h, what speculative_bench and the GPU
// tests use): on the shipped pair, speculative rounds in steps that mix speculative and plain
// entries give the plain greedy output, token for token, and earn tau > 1; sampled requests run
// rounds too. The GPU worker's twin is tests/gpu_speculative_test.cpp.

#include <filesystem>

#include "actors/model_worker.h"
#include "actors/worker_generation.h"
#include "model/checkpoint.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

const std::filesystem::path kDefault = testing::source_dir() / "models" / "default";

std::unique_ptr<CpuWorker> shipped_worker(bool with_draft, std::vector<std::vector<int32_t>>& prompts) {
  LoadedModel m = load_model(kDefault);
  for (const char* text : {"Genesis 1:1 In the beginning", "And the LORD spake unto Moses, saying,", "Absolute, a. ",
                           "en->de: house ->", "John 3:16 For God so loved", "Psalms 23:1 The LORD is my shepherd;"})
    prompts.push_back(m.tokenizer.encode(text));
  const int vocab = sampleable_vocab(m.config, m.tokenizer);
  std::optional<LoadedDraft> draft;
  if (with_draft) draft = load_draft(kDefault / "draft");
  return std::make_unique<CpuWorker>(m.config, std::move(m.weights), vocab, 64, 16, 8, 2, std::move(draft));
}

TEST(WorkerGeneration, CpuSpeculativeRoundsEqualPlainDecodingInMixedSteps) {
  if (!std::filesystem::exists(kDefault / "config.json")) GTEST_SKIP() << "models/default is not trained yet";
  std::vector<std::vector<int32_t>> prompts, unused;
  auto plain = shipped_worker(false, prompts);
  auto speculative = shipped_worker(true, unused);
  const WorkerGeneration want = generate_on_worker(*plain, prompts, {.new_tokens = 24});
  EXPECT_EQ(want.rounds, 0);
  for (int block : {4, 8}) {
    const WorkerGeneration got =
        generate_on_worker(*speculative, prompts, {.new_tokens = 24, .block = block, .alternate_plain = true});
    EXPECT_EQ(got.tokens, want.tokens) << "B = " << block;
    EXPECT_GT(got.rounds, 0);
    EXPECT_GT(got.tau(), 1.2) << "B = " << block << ": a trained draft gains tokens";
  }
}

TEST(WorkerGeneration, SampledRequestsRunRounds) {
  if (!std::filesystem::exists(kDefault / "config.json")) GTEST_SKIP() << "models/default is not trained yet";
  std::vector<std::vector<int32_t>> prompts;
  auto speculative = shipped_worker(true, prompts);
  WorkerGenerationOptions o{.new_tokens = 16, .block = 4};
  o.sampling = {.temperature = 0.7f, .top_k = 20, .top_p = 0.9f, .seed = 3};
  const WorkerGeneration a = generate_on_worker(*speculative, prompts, o);
  const WorkerGeneration b = generate_on_worker(*speculative, prompts, o, 100);
  EXPECT_GT(a.rounds, 0);
  EXPECT_EQ(a.tokens, b.tokens) << "the same seeds give the same tokens";
  for (const auto& t : a.tokens) EXPECT_EQ(t.size(), 16u);
}

}  // namespace
}  // namespace ultraserve
