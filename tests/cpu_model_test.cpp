// Properties of the CPU forward pass that must hold whatever the weights: batching,
// chunked prefill and the paged KV cache change nothing in the results.

#include <cmath>

#include "model/checkpoint.h"
#include "model/cpu_model.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

using testing::ScratchDir;

class CpuModelTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    loaded_ = std::make_unique<LoadedModel>(load_model(testing::make_checkpoint(dir_, GetParam(), 11)));
    model_ = std::make_unique<CpuModel>(loaded_->config, loaded_->weights, pool_);
    cache_ = std::make_unique<PagedKvCache>(loaded_->config, 64, 4);  // small blocks: sequences span many
  }

  std::vector<int32_t> prompt(int length, int salt) const {
    std::vector<int32_t> ids;
    for (int i = 0; i < length; ++i) ids.push_back((i * 37 + salt * 101) % loaded_->config.vocab_size);
    return ids;
  }

  std::vector<float> run(KvSequence& seq, std::span<const int32_t> tokens, bool all = false) {
    EXPECT_TRUE(cache_->reserve(seq, seq.length + static_cast<int>(tokens.size())));
    SequenceStep step{&seq, tokens, all};
    return model_->forward(*cache_, {&step, 1});
  }

  static void expect_close(std::span<const float> a, std::span<const float> b) {
    ASSERT_EQ(a.size(), b.size());
    float worst = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::fabs(a[i] - b[i]));
      scale = std::max(scale, std::fabs(b[i]));
    }
    EXPECT_LE(worst, 1e-5f * scale);
  }

  ScratchDir dir_;
  ThreadPool pool_{2};
  std::unique_ptr<LoadedModel> loaded_;
  std::unique_ptr<CpuModel> model_;
  std::unique_ptr<PagedKvCache> cache_;
};

TEST_P(CpuModelTest, ChunkedPrefillEqualsWholePrefill) {
  const auto ids = prompt(23, 1);
  KvSequence whole, chunked;
  const auto expected = run(whole, ids, true);
  std::vector<float> got;
  for (size_t begin = 0; begin < ids.size(); begin += 5) {
    auto part = run(chunked, std::span(ids).subspan(begin, std::min<size_t>(5, ids.size() - begin)), true);
    got.insert(got.end(), part.begin(), part.end());
  }
  expect_close(got, expected);
  cache_->release(whole);
  cache_->release(chunked);
  EXPECT_EQ(cache_->used_blocks(), 0);
}

TEST_P(CpuModelTest, BatchedSequencesEqualOneAtATime) {
  const int vocab = loaded_->config.vocab_size;
  std::vector<std::vector<int32_t>> prompts{prompt(9, 2), prompt(1, 3), prompt(17, 4)};
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) {
    KvSequence s;
    alone.push_back(run(s, p));
    cache_->release(s);
  }
  // The same prompts in one batch, plus a sequence in decode (one new token) mixed in.
  KvSequence decoding;
  run(decoding, prompt(6, 5));
  std::vector<KvSequence> seqs(prompts.size());
  std::vector<SequenceStep> steps;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(cache_->reserve(seqs[i], static_cast<int>(prompts[i].size())));
    steps.push_back({&seqs[i], prompts[i], false});
  }
  const int32_t next = 7;
  ASSERT_TRUE(cache_->reserve(decoding, decoding.length + 1));
  steps.push_back({&decoding, {&next, 1}, false});
  const auto batched = model_->forward(*cache_, steps);
  ASSERT_EQ(batched.size(), 4u * vocab);
  for (size_t i = 0; i < prompts.size(); ++i)
    expect_close(std::span(batched).subspan(i * vocab, vocab), alone[i]);
  EXPECT_EQ(decoding.length, 7);
}

TEST_P(CpuModelTest, RefusesUnreservedKvAndOutOfVocabularyTokens) {
  KvSequence s;
  const auto ids = prompt(3, 1);
  SequenceStep step{&s, ids, false};
  EXPECT_THROW(model_->forward(*cache_, {&step, 1}), std::logic_error);
  const int32_t bad = loaded_->config.vocab_size;
  ASSERT_TRUE(cache_->reserve(s, 1));
  step = {&s, {&bad, 1}, false};
  EXPECT_THROW(model_->forward(*cache_, {&step, 1}), std::out_of_range);
}

INSTANTIATE_TEST_SUITE_P(Configs, CpuModelTest,
                         ::testing::Values("moe_topk2_norm.json", "moe_top4_unnormed_tied.json", "dense_qwen3.json"));

TEST(PagedKvCache, ReservesAndReleasesBlocks) {
  ModelConfig c = ModelConfig::load(testing::fixture("configs/dense_qwen3.json"));
  PagedKvCache cache(c, 4, 8);
  KvSequence a, b;
  EXPECT_TRUE(cache.reserve(a, 17));  // 3 blocks
  EXPECT_EQ(cache.used_blocks(), 3);
  EXPECT_FALSE(cache.reserve(b, 9));  // needs 2, one left: refused whole
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_TRUE(cache.reserve(b, 8));
  EXPECT_EQ(cache.free_blocks(), 0);
  cache.release(a);
  EXPECT_EQ(cache.free_blocks(), 3);
  EXPECT_TRUE(a.blocks.empty());
}

}  // namespace
}  // namespace ultraserve
