// DFlash speculative decoding on the CPU: the draft checkpoint format, the target's taps, and
// the property that matters most: speculation is lossless. Greedy output equals the target's
// plain greedy output token for token (50 prompts, several block sizes, a random draft that is
// almost always wrong and an oracle that is right except where it is told to be wrong), and a
// verified sample is distributed as the target's (chi-square tests at significance 0.001).

#include <array>
#include <cmath>
#include <map>

#include "model/checkpoint.h"
#include "model/cpu_kernels.h"
#include "model/dflash.h"
#include "model/generate.h"
#include "model/speculative.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

class DFlashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir;
    target_ = new LoadedModel(load_model(testing::make_checkpoint(*dir_, "moe_topk2_norm.json", 21)));
    draft_dir_ = testing::make_checkpoint(*dir_, "dflash_draft_moe_topk2.json", 5);
  }
  static void TearDownTestSuite() {
    delete target_;
    delete dir_;
  }

  static GenerationRequest request(const std::string& prompt, int max_tokens, float temperature = 0, uint64_t seed = 0) {
    GenerationRequest r;
    r.prompt = target_->tokenizer.encode(prompt);
    r.max_tokens = max_tokens;
    r.stop_token_ids = target_->stop_token_ids;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    return r;
  }

  static inline testing::ScratchDir* dir_ = nullptr;
  static inline LoadedModel* target_ = nullptr;
  static inline std::filesystem::path draft_dir_;
  ThreadPool pool_{2};
};

// Proposes the target's true continuation (`truth`, its plain greedy output), except at every
// `wrong_every`-th generated position, where it proposes another token. It counts committed
// tokens from the taps it is given, so it knows which generated token the anchor is.
class OracleProposer : public Proposer {
 public:
  OracleProposer(std::vector<int32_t> truth, int wrong_every, size_t prompt_tokens, size_t tap_width)
      : truth_(std::move(truth)), wrong_every_(wrong_every), prompt_(prompt_tokens), tap_width_(tap_width) {}
  void on_committed(std::span<const float> taps) override { committed_ += taps.size() / tap_width_; }
  std::vector<int32_t> propose(int32_t, int count) override {
    std::vector<int32_t> out;
    for (int i = 0; i < count; ++i) {
      const size_t at = committed_ - prompt_ + 1 + i;  // the anchor is generated token committed - prompt
      const int32_t right = at < truth_.size() ? truth_[at] : 0;
      out.push_back(at % wrong_every_ == 0 ? (right + 1) % 256 : right);
    }
    return out;
  }

 private:
  std::vector<int32_t> truth_;
  int wrong_every_;
  size_t prompt_, tap_width_, committed_ = 0;
};

TEST_F(DFlashTest, DraftCheckpointLoadsInThePublishedLayout) {
  const LoadedDraft d = load_draft(draft_dir_);
  ASSERT_TRUE(d.config.dflash);
  EXPECT_EQ(d.config.dflash->target_layer_ids, (std::vector<int>{0, 2}));
  EXPECT_EQ(d.config.dflash->mask_token_id, 300);
  EXPECT_EQ(d.config.dflash->block_size, 8);
  EXPECT_EQ(d.weights.draft_fc.rows, 64);
  EXPECT_EQ(d.weights.draft_fc.cols, 2 * 64);
  EXPECT_TRUE(d.weights.embed_tokens.data.empty()) << "a draft shares the target's embeddings";
  EXPECT_EQ(d.weights.layers.size(), 2u);
  EXPECT_NO_THROW(check_draft_fits(d.config, target_->config, "draft"));
  EXPECT_FALSE(std::filesystem::exists(draft_dir_ / "tokenizer.json"));
}

TEST_F(DFlashTest, DraftsThatDoNotFitTheTargetAreRefused) {
  const ModelConfig good = load_draft(draft_dir_).config;
  auto refused = [&](auto change, const char* needle) {
    ModelConfig c = good;
    change(c);
    EXPECT_THROW_WITH(check_draft_fits(c, target_->config, "draft/config.json"), "draft/config.json", needle);
  };
  refused([](ModelConfig& c) { c.hidden_size = 128; }, "hidden_size");
  refused([](ModelConfig& c) { c.vocab_size = 1024; }, "vocab_size");
  refused([](ModelConfig& c) { c.dflash->target_layer_ids = {0, 3}; }, "layer 3 is past the target's 3 layers");
  refused([](ModelConfig& c) { c.dflash->mask_token_id = 512; }, "mask_token_id");
  // And a target checkpoint is no draft.
  EXPECT_THROW_WITH(load_draft(testing::make_checkpoint(*dir_, "dense_qwen3.json")), "not a DFlash draft");
  // A dflash_config without its fields, in config.json itself.
  testing::write_file(*dir_ / "bad_draft.json", R"({"architectures":["DFlashDraftModel"],"model_type":"qwen3",
    "vocab_size":512,"hidden_size":64,"intermediate_size":96,"num_hidden_layers":1,"num_attention_heads":4,
    "dflash_config":{"mask_token_id":300}})");
  EXPECT_THROW_WITH(ModelConfig::load(*dir_ / "bad_draft.json"), "bad_draft.json", "target_layer_ids");
}

TEST_F(DFlashTest, TapsAreTheLayersOutputs) {
  // The last layer's output, normed and through the LM head, is the logits.
  CpuModel model(target_->config, target_->weights, pool_);
  model.set_taps({0, 2});
  PagedKvCache cache(target_->config, 4, 16);
  KvSequence seq;
  cache.reserve(seq, 20);
  const std::vector<int32_t> prompt = target_->tokenizer.encode("taps of every token");
  SequenceStep step{&seq, prompt, true};
  std::vector<float> taps;
  const std::vector<float> logits = model.forward(cache, {&step, 1}, &taps);
  const int hidden = target_->config.hidden_size, vocab = target_->config.vocab_size;
  ASSERT_EQ(taps.size(), prompt.size() * 2 * hidden);
  for (size_t r = 0; r < prompt.size(); ++r) {
    std::vector<float> normed(hidden), mine(vocab);
    rms_norm(&taps[(r * 2 + 1) * hidden], target_->weights.final_norm.data(), hidden, target_->config.rms_norm_eps,
             normed.data());
    matmul_nt(pool_, normed.data(), 1, target_->weights.output_matrix().view(), mine.data());
    for (int v = 0; v < vocab; ++v) ASSERT_NEAR(mine[v], logits[r * vocab + v], 1e-4) << r << " " << v;
  }
  EXPECT_THROW(model.set_taps({3}), std::out_of_range);
}

TEST_F(DFlashTest, GreedySpeculationEqualsPlainGreedy) {
  CpuModel target(target_->config, target_->weights, pool_);
  DFlashDraft draft(load_draft(draft_dir_), target, pool_);
  target.set_taps(draft.target_layers());
  int rounds = 0, proposals_accepted = 0;
  for (int p = 0; p < 50; ++p) {
    const std::string prompt = "prompt number " + std::to_string(p) + (p % 3 ? " with more words" : "");
    const GenerationRequest r = request(prompt, 24);
    const std::vector<int32_t> plain = generate(target, target_->tokenizer, r, [](std::string_view) {}).tokens;
    for (int block : {2, 4, 8, 16}) {
      SCOPED_TRACE(prompt + ", block " + std::to_string(block));
      DFlashProposer dflash(draft, r.prompt.size() + r.max_tokens);
      EXPECT_EQ(speculative_generate(target, dflash, target_->tokenizer, r, block, [](std::string_view) {}).tokens,
                plain);
      // The oracle's runs are accepted and it is rejected at every 5th position: both paths, all offsets.
      OracleProposer oracle(plain, 5, r.prompt.size(), draft.target_layers().size() * target_->config.hidden_size);
      const SpeculativeStats s = speculative_generate(target, oracle, target_->tokenizer, r, block, [](std::string_view) {});
      EXPECT_EQ(s.tokens, plain);
      rounds += s.rounds;
      proposals_accepted += s.generated_tokens - 1 - s.rounds;
    }
  }
  EXPECT_GT(proposals_accepted, rounds) << "the oracle's runs must be accepted, more than one a round on average";
}

// Pearson's statistic of observed counts against expected probabilities, and the number of
// cells with a non-zero expectation (the test's degrees of freedom + 1).
std::pair<double, int> chi_square(const std::map<int32_t, int>& counts, std::span<const float> probs, int n) {
  double stat = 0;
  int cells = 0;
  for (size_t t = 0; t < probs.size(); ++t) {
    if (probs[t] == 0) continue;
    ++cells;
    const double expected = probs[t] * n, observed = counts.count(t) ? counts.at(t) : 0;
    stat += (observed - expected) * (observed - expected) / expected;
  }
  return {stat, cells};
}

// The chi-square quantile at 1 - 0.001 for `df` degrees of freedom (Wilson-Hilferty).
double critical_value(int df) {
  const double z = 3.0902, a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

TEST(SpeculativeSampling, AVerifiedProposalIsDistributedAsTheTarget) {
  // Whatever the draft proposes (the likeliest token, an unlikely one, one top-k cut away), the
  // verdict's token has exactly the target's distribution.
  const std::vector<float> logits{2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f};
  for (SamplingParams params : {SamplingParams{1.0f, 0, 1.0f, 7}, SamplingParams{0.7f, 4, 0.95f, 8}}) {
    Sampler reference(params);
    std::vector<float> probs(logits.size());
    reference.distribution(logits, probs);
    for (int32_t proposal : {0, 3, 5}) {
      SCOPED_TRACE("temperature " + std::to_string(params.temperature) + ", proposal " + std::to_string(proposal));
      Sampler sampler(params);
      std::map<int32_t, int> counts;
      constexpr int kTrials = 20000;
      for (int i = 0; i < kTrials; ++i) ++counts[sampler.verify(logits, proposal).token];
      for (const auto& [token, n] : counts) EXPECT_GT(probs[token], 0.f) << "token " << token << " has no mass";
      const auto [stat, cells] = chi_square(counts, probs, kTrials);
      EXPECT_LT(stat, critical_value(cells - 1)) << "chi-square over " << cells << " cells";
    }
  }
  // Greedy: kept iff it is the argmax.
  Sampler greedy(SamplingParams{});
  EXPECT_TRUE(greedy.verify(logits, 0).accepted);
  EXPECT_EQ(greedy.verify(logits, 2).token, 0);
}

TEST_F(DFlashTest, SampledSpeculationHasTheTargetsDistribution) {
  // End to end on the test model (a 259-token vocabulary): the second generated token, drawn by
  // verifying the draft's block, against the same token drawn by plain sampling. The first token
  // is the same draw in both (the same seed), so the two histograms must agree: a chi-square
  // test of homogeneity, cells with few expected counts pooled.
  CpuModel target(target_->config, target_->weights, pool_);
  DFlashDraft draft(load_draft(draft_dir_), target, pool_);
  target.set_taps(draft.target_layers());
  constexpr int kRuns = 2000;
  std::map<std::pair<int32_t, int32_t>, std::array<int, 2>> table;  // (first, second) -> [plain, speculative]
  for (int seed = 0; seed < kRuns; ++seed) {
    GenerationRequest r = request("sample me", 2, 0.6f, 1000 + seed);
    r.stop_token_ids.clear();  // two tokens every time
    const auto plain = generate(target, target_->tokenizer, r, [](std::string_view) {}).tokens;
    DFlashProposer dflash(draft, r.prompt.size() + r.max_tokens);
    const auto spec = speculative_generate(target, dflash, target_->tokenizer, r, 4, [](std::string_view) {}).tokens;
    ASSERT_EQ(plain.size(), 2u);
    ASSERT_EQ(spec.size(), 2u);
    ASSERT_EQ(plain[0], spec[0]) << "the first token is the same draw";
    ++table[{plain[0], plain[1]}][0];
    ++table[{spec[0], spec[1]}][1];
  }
  // Pool the cells whose expected count is under 5 into one.
  std::vector<std::array<double, 2>> cells;
  std::array<double, 2> pooled{0, 0};
  for (const auto& [key, n] : table) {
    if ((n[0] + n[1]) / 2.0 < 5) pooled[0] += n[0], pooled[1] += n[1];
    else cells.push_back({double(n[0]), double(n[1])});
  }
  if (pooled[0] + pooled[1] > 0) cells.push_back(pooled);
  ASSERT_GE(cells.size(), 3u) << "too concentrated a distribution to test";
  double stat = 0;
  for (const auto& c : cells) {
    const double expected = (c[0] + c[1]) / 2;  // equal sample sizes
    for (double observed : c) stat += (observed - expected) * (observed - expected) / expected;
  }
  EXPECT_LT(stat, critical_value(static_cast<int>(cells.size()) - 1)) << cells.size() << " cells";
}

}  // namespace
}  // namespace ultraserve
