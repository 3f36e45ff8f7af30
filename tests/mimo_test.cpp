// MiMo-V2 (model_type mimo_v2_flash) on the CPU engine, the properties that need no reference:
// config.json as transformers' MiMoV2FlashConfig reads it (its defaults included) and refused
// clearly where it makes no sense; the sigmoid group-limited routing on hand-worked cases; the
// KV cache and the sliding window (prefill equals token-by-token decoding; a token outside every
// window cannot change a later logit); DFlash speculation on a MiMo target stays lossless.
// Logits against transformers' MiMoV2FlashForCausalLM: reference_model_test (the mimo_* cases).

#include <cmath>

#include "model/checkpoint.h"
#include "model/dflash.h"
#include "model/error.h"
#include "model/routing.h"
#include "model/speculative.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

ModelConfig config(const std::string& name) { return ModelConfig::load(testing::fixture("configs/" + name)); }

// The fixture config with one top-level field set (its line replaced, or a line added).
std::string with(const std::string& name, const std::string& key, const std::string& json_value) {
  std::string text = testing::read_file(testing::fixture("configs/" + name));
  const size_t at = text.find("\"" + key + "\"");
  if (at != std::string::npos) {
    const size_t eol = text.find('\n', at);
    const bool comma = text[eol - 1] == ',';
    text.replace(at, eol - at, "\"" + key + "\": " + json_value + (comma ? "," : ""));
  } else {
    text.insert(text.find('{') + 1, "\n  \"" + key + "\": " + json_value + ",");
  }
  return text;
}

TEST(MimoConfig, TransformersDefaults) {
  const ModelConfig c = config("mimo_window4_groups.json");
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.value_head_dim(), 16);
  EXPECT_FLOAT_EQ(c.value_scale, 0.707f);
  for (int l = 0; l < 6; ++l) EXPECT_EQ(c.is_sliding_layer(l), l != 0 && l != 5) << "layer " << l;
  EXPECT_EQ(c.kv_heads(0), 1);
  EXPECT_EQ(c.kv_heads(1), 2);  // sliding layers have twice the KV heads
  EXPECT_EQ(c.k_dim(1), 48);
  EXPECT_EQ(c.v_dim(1), 32);
  EXPECT_EQ(c.attention_out_dim(), 64);
  EXPECT_EQ(c.rope(0).theta, 5e6);
  EXPECT_EQ(c.rope(1).theta, 1e4);
  EXPECT_EQ(c.rope(0).rotary_dim, 8);  // int(24 * 0.334)
  EXPECT_FALSE(c.is_moe_layer(0));     // mlp_layer_types default: the first layer dense
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_EQ(c.router, ModelConfig::Router::sigmoid_grouped);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
}

TEST(MimoConfig, ExplicitTypesAndRope) {
  const ModelConfig c = config("mimo_explicit_types_tied.json");
  EXPECT_TRUE(c.is_sliding_layer(0));
  EXPECT_FALSE(c.is_sliding_layer(1));
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_EQ(c.rope(1).rotary_dim, 16);  // full: 32 * 0.5
  EXPECT_EQ(c.rope(0).rotary_dim, 8);   // sliding: 32 * 0.25
  EXPECT_EQ(c.rope(1).theta, 1e6);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 1.0);  // null, as published files have it
  EXPECT_EQ(c.sliding->window, 6);
}

TEST(MimoConfig, RefusesWhatCannotWork) {
  const std::string base = "mimo_window4_groups.json";
  const std::pair<std::string, std::string> cases[][1] = {
      {{"layer_types", "[\"full_attention\", \"local\"]"}},
      {{"layer_types", "[\"full_attention\"]"}},
      {{"mlp_layer_types", "[\"dense\"]"}},
      {{"n_group", "3"}},
      {{"topk_group", "5"}},
      {{"num_experts_per_tok", "7"}},
      {{"rope_parameters", "{\"full_attention\": {\"rope_theta\": 1e6, \"partial_rotary_factor\": 0.05}}"}},
      {{"rope_parameters", "{\"full_attention\": {\"rope_type\": \"yarn\"}}"}},
  };
  const char* expected_field[] = {"layer_types", "layer_types", "mlp_layer_types", "n_group", "topk_group",
                                  "num_experts_per_tok", "rope_parameters", "rope_type"};
  for (size_t i = 0; i < std::size(cases); ++i) {
    const auto& [key, value] = cases[i][0];
    try {
      ModelConfig::parse(with(base, key, value), "config.json");
      ADD_FAILURE() << key << " = " << value << " was accepted";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find(expected_field[i]), std::string::npos) << e.what();
    }
  }
}

// 4 experts in 2 groups of 2, top-2 from the best group only.
TEST(Routing, SigmoidGroupLimitedChoosesWithTheBiasWeighsWithout) {
  ModelConfig c;
  c.num_experts = 4;
  c.num_experts_per_tok = 2;
  c.router = ModelConfig::Router::sigmoid_grouped;
  c.n_group = 2;
  c.topk_group = 1;
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 2.0;
  auto sigmoid = [](float x) { return 1.0f / (1.0f + std::exp(-x)); };
  // Scores: group 0 = {e0 high, e1 low}, group 1 = {e2, e3 medium}: group 1 sums higher.
  const std::vector<float> logits{3.0f, -3.0f, 1.0f, 1.0f};
  const std::vector<float> no_bias(4, 0.f);
  std::vector<ExpertChoice> out(2);
  choose_experts(c, logits, no_bias, out);
  EXPECT_EQ(out[0].expert, 2);
  EXPECT_EQ(out[1].expert, 3);  // e0 has the best score, but its group lost
  EXPECT_FLOAT_EQ(out[0].weight, 2.0f * sigmoid(1.0f));
  // A bias moves the choice (group 0 now wins, e1 first), but the weights stay the plain scores.
  const std::vector<float> bias{0.f, 1.5f, 0.f, 0.f};
  choose_experts(c, logits, bias, out);
  EXPECT_EQ(out[0].expert, 1);
  EXPECT_EQ(out[1].expert, 0);
  EXPECT_FLOAT_EQ(out[0].weight, 2.0f * sigmoid(-3.0f));
  // Normalised: the weights sum to the scaling factor.
  c.norm_topk_prob = true;
  choose_experts(c, logits, no_bias, out);
  EXPECT_NEAR(out[0].weight + out[1].weight, 2.0f, 1e-6f);
}

class MimoModel : public ::testing::TestWithParam<std::string> {
 protected:
  std::vector<float> logits_of_prefill(CpuModel& model, const std::vector<int32_t>& tokens) {
    PagedKvCache cache(model.config(), 16, 8);
    KvSequence seq;
    cache.reserve(seq, int(tokens.size()));
    SequenceStep step{&seq, tokens, true};
    return model.forward(cache, std::span(&step, 1));
  }
  testing::ScratchDir dir_;
  ThreadPool pool_{2};
};

TEST_P(MimoModel, PrefillEqualsTokenByTokenDecoding) {
  LoadedModel m = load_model(testing::make_checkpoint(dir_, GetParam(), 11));
  CpuModel model(m.config, m.weights, pool_);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back((i * 37 + 11) % 256);  // longer than every window
  const std::vector<float> all = logits_of_prefill(model, tokens);
  PagedKvCache cache(model.config(), 16, 8);
  KvSequence seq;
  cache.reserve(seq, int(tokens.size()));
  const int vocab = m.config.vocab_size;
  for (size_t i = 0; i < tokens.size(); i += 3) {  // chunks of 3 through the cache
    const size_t n = std::min<size_t>(3, tokens.size() - i);
    SequenceStep step{&seq, std::span(tokens).subspan(i, n), true};
    const std::vector<float> part = model.forward(cache, std::span(&step, 1));
    for (size_t r = 0; r < n; ++r) {
      const std::span<const float> ours(&part[r * vocab], vocab), ref(&all[(i + r) * vocab], vocab);
      ASSERT_LT(testing::row_relative_error(ours, ref), 1e-5) << "position " << i + r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, MimoModel,
                         ::testing::Values("mimo_window4_groups.json", "mimo_explicit_types_tied.json",
                                           "mimo_groups8_window16.json"));

// With every layer sliding (window w, L layers), position p sees tokens from p - L(w - 1) on.
TEST(MimoWindow, TokensOutsideEveryWindowDoNotMatter) {
  testing::ScratchDir dir;
  const std::string text = with("mimo_explicit_types_tied.json", "layer_types",
                                "[\"sliding_attention\", \"sliding_attention\", \"sliding_attention\", "
                                "\"sliding_attention\"]");
  testing::write_file(dir / "all_sliding.json", text);
  RandomCheckpointOptions o;
  o.config_json = dir / "all_sliding.json";
  o.out_dir = dir / "m";
  o.seed = 3;
  write_random_checkpoint(o);
  LoadedModel m = load_model(o.out_dir);
  ThreadPool pool(2);
  CpuModel model(m.config, m.weights, pool);
  const int vocab = m.config.vocab_size, reach = 4 * (6 - 1);
  std::vector<int32_t> a(32, 65), b = a;
  b[0] = 200;
  auto logits = [&](const std::vector<int32_t>& tokens) {
    PagedKvCache cache(m.config, 8, 8);
    KvSequence seq;
    cache.reserve(seq, int(tokens.size()));
    SequenceStep step{&seq, tokens, true};
    return model.forward(cache, std::span(&step, 1));
  };
  const std::vector<float> la = logits(a), lb = logits(b);
  auto row = [&](const std::vector<float>& l, int p) { return std::vector<float>(&l[p * vocab], &l[(p + 1) * vocab]); };
  EXPECT_NE(row(la, reach), row(lb, reach)) << "position " << reach << " still sees token 0";
  EXPECT_EQ(row(la, reach + 1), row(lb, reach + 1)) << "position " << reach + 1 << " must not see token 0";
}

// More live sequences than the rings made up front (a batch limit raised while serving): the pool
// adds rings, and every sequence computes what it computes alone.
TEST(MimoWindow, RingsFollowTheLiveSequences) {
  testing::ScratchDir dir;
  LoadedModel m = load_model(testing::make_checkpoint(dir, "mimo_window4_groups.json", 9));
  ThreadPool pool(2);
  CpuModel model(m.config, m.weights, pool);
  const int vocab = m.config.vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  for (int s = 0; s < 3; ++s) {
    prompts.emplace_back();
    for (int i = 0; i < 12; ++i) prompts.back().push_back((s * 53 + i * 11) % 256);
  }
  auto alone = [&](const std::vector<int32_t>& tokens) {
    PagedKvCache cache(m.config, 4, 8);
    KvSequence seq;
    cache.reserve(seq, int(tokens.size()));
    SequenceStep step{&seq, tokens};
    return model.forward(cache, std::span(&step, 1));
  };
  PagedKvCache shared(m.config, 16, 8, 1);  // one ring made up front, three sequences
  std::vector<KvSequence> seqs(3);
  std::vector<SequenceStep> steps;
  for (int s = 0; s < 3; ++s) {
    ASSERT_TRUE(shared.reserve(seqs[s], 12));
    steps.push_back({&seqs[s], prompts[s]});
  }
  EXPECT_EQ(shared.total_rings(), 3);
  EXPECT_EQ(shared.free_rings(), 0);
  const std::vector<float> together = model.forward(shared, steps);
  for (int s = 0; s < 3; ++s) {
    const std::vector<float> ref = alone(prompts[s]);
    EXPECT_LT(testing::row_relative_error(std::span(together).subspan(size_t(s) * vocab, vocab), ref), 1e-5)
        << "sequence " << s;
  }
  shared.release(seqs[1]);
  EXPECT_EQ(shared.free_rings(), 1);
}

TEST(MimoDFlash, SpeculationOnAMimoTargetIsLossless) {
  testing::ScratchDir dir;
  LoadedModel target = load_model(testing::make_checkpoint(dir, "mimo_window4_groups.json", 2));
  ThreadPool pool(2);
  CpuModel model(target.config, target.weights, pool);
  DFlashDraft draft(load_draft(testing::make_checkpoint(dir, "dflash_draft_moe_topk2.json", 4)), model, pool);
  model.set_taps(draft.target_layers());
  for (int prompt = 0; prompt < 6; ++prompt) {
    GenerationRequest request;
    for (int i = 0; i < 5 + prompt * 4; ++i) request.prompt.push_back((prompt * 31 + i * 7) % 256);
    request.max_tokens = 24;
    const GenerationStats plain = generate(model, target.tokenizer, request, [](auto) {});
    DFlashProposer proposer(draft, int(request.prompt.size()) + request.max_tokens);
    const SpeculativeStats spec = speculative_generate(model, proposer, target.tokenizer, request, 4, [](auto) {});
    EXPECT_EQ(spec.tokens, plain.tokens) << "prompt " << prompt;
  }
}

}  // namespace
}  // namespace ultraserve
