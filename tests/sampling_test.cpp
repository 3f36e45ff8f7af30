// Sampling, stop strings and the per-request generation state.

#include <cmath>
#include <map>

#include "model/generation.h"
#include "model/random_checkpoint.h"
#include "model/sampler.h"
#include "model/stop_strings.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

TEST(Sampler, GreedyTakesTheArgmax) {
  Sampler s({});
  std::vector<float> logits{0.1f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(s.sample(logits), 1);
}

TEST(Sampler, TopKOneIsGreedyAtAnyTemperature) {
  Sampler s({5.0f, 1, 1.0f, 42});
  std::vector<float> logits{0.1f, 2.0f, -1.0f, 1.9f};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(logits), 1);
}

TEST(Sampler, DistributionAppliesTemperatureTopKAndTopP) {
  std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  std::vector<float> p(4);
  Sampler({1.0f, 0, 1.0f, 0}).distribution(logits, p);
  EXPECT_NEAR(p[0], 0.5, 1e-6);
  EXPECT_NEAR(p[3], 0.05, 1e-6);
  Sampler({1.0f, 2, 1.0f, 0}).distribution(logits, p);  // top-2 renormalised
  EXPECT_NEAR(p[0], 0.625, 1e-6);
  EXPECT_NEAR(p[1], 0.375, 1e-6);
  EXPECT_EQ(p[2], 0.f);
  Sampler({1.0f, 0, 0.9f, 0}).distribution(logits, p);  // 0.5 + 0.3 + 0.15 reaches 0.9
  EXPECT_NEAR(p[2], 0.15 / 0.95, 1e-6);
  EXPECT_EQ(p[3], 0.f);
  Sampler({0.5f, 0, 1.0f, 0}).distribution(logits, p);  // squares, renormalised
  EXPECT_NEAR(p[0], 0.25 / (0.25 + 0.09 + 0.0225 + 0.0025), 1e-5);
}

TEST(Sampler, SeededSamplingIsReproducibleAndFollowsTheDistribution) {
  std::vector<float> logits{std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  Sampler a({1.0f, 0, 1.0f, 123}), b({1.0f, 0, 1.0f, 123});
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    int t = a.sample(logits);
    ASSERT_EQ(t, b.sample(logits));
    ++counts[t];
  }
  EXPECT_NEAR(counts[0] / double(n), 0.6, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.1, 0.02);
}

TEST(StopStrings, HoldsBackPossiblePrefixesAndCutsAtTheStop) {
  StopStringMatcher m({"END", "\n\n"});
  EXPECT_EQ(m.push("hello E").text, "hello ");
  auto r = m.push("N");
  EXPECT_EQ(r.text, "");
  EXPECT_FALSE(r.stopped);
  r = m.push("Xo");  // "ENX" is no stop: released
  EXPECT_EQ(r.text, "ENXo");
  r = m.push("ab\n");
  EXPECT_EQ(r.text, "ab");
  r = m.push("\nrest");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  StopStringMatcher n({"stop"});
  r = n.push("a stop b");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "a ");
  StopStringMatcher none({});
  EXPECT_EQ(none.push("anything").text, "anything");
  StopStringMatcher tail({"xyz"});
  EXPECT_EQ(tail.push("abx").text, "ab");
  EXPECT_EQ(tail.flush(), "x");
}

class GenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto path = testing::make_checkpoint(dir_, "dense_qwen3.json");
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(path / "tokenizer.json"));
  }
  std::vector<int32_t> ids(const std::string& s) { return tokenizer_->encode(s); }
  std::string run(Generation& g, const std::vector<int32_t>& tokens, FinishReason* finish) {
    std::string text;
    for (int32_t t : tokens) {
      auto u = g.on_token(t);
      text += u.text;
      *finish = u.finish;
      if (u.finish != FinishReason::none) break;
    }
    return text;
  }
  testing::ScratchDir dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(GenerationTest, StopsAtStopTokenWithoutEmittingIt) {
  GenerationRequest req;
  req.stop_token_ids = {258};
  Generation g(req, *tokenizer_);
  auto tokens = ids("hi");
  tokens.push_back(258);
  tokens.push_back('x');
  FinishReason f;
  EXPECT_EQ(run(g, tokens, &f), "hi");
  EXPECT_EQ(f, FinishReason::stop);
  EXPECT_EQ(g.tokens().size(), 2u);
}

TEST_F(GenerationTest, StopsAtMaxTokensAndFlushesHeldText) {
  GenerationRequest req;
  req.max_tokens = 3;
  req.stop = {"abcd"};
  Generation g(req, *tokenizer_);
  FinishReason f;
  EXPECT_EQ(run(g, ids("xabc"), &f), "xab");  // "abc" could begin "abcd", yet length ends it
  EXPECT_EQ(f, FinishReason::length);
}

TEST_F(GenerationTest, StopStringCutsTheText) {
  GenerationRequest req;
  req.stop = {"lo w"};
  Generation g(req, *tokenizer_);
  FinishReason f;
  EXPECT_EQ(run(g, ids("hello world"), &f), "hel");
  EXPECT_EQ(f, FinishReason::stop);
}

TEST_F(GenerationTest, NeverEmitsHalfACharacter) {
  GenerationRequest req;
  Generation g(req, *tokenizer_);
  const auto tokens = ids("é");  // two byte tokens
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(g.on_token(tokens[0]).text, "");
  EXPECT_EQ(g.on_token(tokens[1]).text, "é");
}

}  // namespace
}  // namespace ultraserve
