// The shipped default (models/default, trained by tools/train/): it loads with its draft, the
// draft is lossless on it (greedy output with speculation equals plain greedy output), and the
// draft still earns the acceptance measured when the pair was made: tau at block 8 at least 80%
// of the figure `ultraserve evaluate` recorded in models/default/evaluation.json.
// Skips while the default is not trained yet (models/README.md says why).

#include <fstream>
#include <regex>
#include <sstream>

#include "model/checkpoint.h"
#include "model/dflash.h"
#include "model/generate.h"
#include "model/speculative.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

const std::filesystem::path kDefault = testing::source_dir() / "models" / "default";

// The tau `ultraserve evaluate` recorded for `block` ("block": 8, "tau": 3.2 in evaluation.json).
double recorded_tau(int block) {
  std::ifstream in(kDefault / "evaluation.json");
  std::stringstream text;
  text << in.rdbuf();
  const std::regex entry("\"block\":\\s*" + std::to_string(block) + ",\\s*\"tau\":\\s*([0-9.]+)");
  std::smatch m;
  const std::string s = text.str();
  return std::regex_search(s, m, entry) ? std::stod(m[1]) : 0.0;
}

TEST(ShippedModel, DraftIsLosslessAndKeepsItsMeasuredAcceptance) {
  if (!std::filesystem::exists(kDefault / "config.json")) GTEST_SKIP() << "models/default is not trained yet";
  ASSERT_EQ(default_model_dir().empty(), false);
  LoadedModel loaded = load_model(kDefault);
  ThreadPool pool(2);
  const std::vector<int32_t> stops = loaded.stop_token_ids;
  Tokenizer tokenizer = std::move(loaded.tokenizer);
  CpuModel model(std::move(loaded.config), std::move(loaded.weights), pool);
  const auto draft_dir = bundled_draft(kDefault);
  ASSERT_TRUE(draft_dir) << "the shipped default carries its draft in draft/";
  DFlashDraft draft(load_draft(*draft_dir), model, pool);
  model.set_taps(draft.target_layers());

  const char* prompts[] = {"Genesis 1:1 In the beginning", "And the LORD spake unto Moses, saying,",
                           "en->de: house ->", "<|im_start|>user\nTranslate into German: water<|im_end|>\n"
                                               "<|im_start|>assistant\n",
                           "Absolute, a. ", "John 3:16 For God so loved"};
  int gained = 0, rounds = 0;
  for (const char* text : prompts) {
    GenerationRequest request;
    request.prompt = tokenizer.encode(text);
    request.max_tokens = 48;
    request.stop_token_ids = stops;
    const GenerationStats plain = generate(model, tokenizer, request, [](auto) {});
    DFlashProposer proposer(draft, static_cast<int>(request.prompt.size()) + request.max_tokens);
    const SpeculativeStats spec = speculative_generate(model, proposer, tokenizer, request, 8, [](auto) {});
    EXPECT_EQ(spec.tokens, plain.tokens) << "prompt: " << text;
    gained += spec.tokens_gained();
    rounds += spec.rounds;
  }
  const double tau = double(gained) / rounds, recorded = recorded_tau(8);
  ASSERT_GT(recorded, 0) << "models/default/evaluation.json has no tau for block 8";
  EXPECT_GE(tau, 0.8 * recorded) << "tau at block 8 on these prompts; evaluate recorded " << recorded;
}

}  // namespace
}  // namespace ultraserve
