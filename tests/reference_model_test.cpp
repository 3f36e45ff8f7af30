// The CPU forward pass against HF transformers (Qwen3MoeForCausalLM / Qwen3ForCausalLM, fp32)
// on the random checkpoints listed in tests/fixtures/reference/cases.json. The reference
// logits were made by tools/reference/model_reference.py from checkpoints that our own
// make-checkpoint wrote; this test writes the same checkpoints again (same config, seed, dtype
// and sharding, hence the same bytes) and compares:
//   - prefill logits at every prompt position: relative error <= 1e-4, where relative error
//     is max |ours - ref| / max |ref| over a row (the scale of a row, not of one entry: an
//     entry near zero has no meaningful relative error);
//   - the greedy continuation, token for token, with the logits of every decode step.

#include <cmath>
#include <iostream>

#include <simdjson.h>

#include "model/checkpoint.h"
#include "model/cpu_model.h"
#include "model/sampler.h"
#include "model/safetensors.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

constexpr double kMaxRelativeError = 1e-4;

struct Case {
  std::string name, config, dtype;
  uint64_t seed, shard_mb;
  bool awaiting_reference;  // listed before its fixture was made (on the GPU machine, which has HF)
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> load_cases() {
  simdjson::dom::parser parser;
  auto doc = parser.load(testing::fixture("reference/cases.json").string());
  std::vector<Case> cases;
  for (auto c : doc["cases"].get_array()) {
    bool awaiting = false;
    (void)c["awaiting_reference"].get(awaiting);  // absent: the fixture exists
    cases.push_back({std::string(c["name"].get_string().value()), std::string(c["config"].get_string().value()),
                     std::string(c["dtype"].get_string().value()), c["seed"].get_uint64().value(),
                     c["shard_mb"].get_uint64().value(), awaiting});
  }
  return cases;
}

std::vector<float> floats(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype, t.bytes.data(), out.size(), out.data());
  return out;
}

std::vector<int32_t> ints(const TensorView& t) {
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

class ReferenceModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceModelTest, MatchesTransformers) {
  const Case& c = GetParam();
  const auto fixture_path = testing::fixture("reference/" + c.name + ".safetensors");
  if (c.awaiting_reference && !std::filesystem::exists(fixture_path))
    GTEST_SKIP() << c.name << ": its HF fixture is not made yet (scripts/gpu.sh run references)";
  ASSERT_TRUE(std::filesystem::exists(fixture_path))
      << fixture_path << " is missing: run tools/reference/model_reference.py (see docs/testing.md)";
  auto fixture = SafetensorsFile::open(fixture_path);

  testing::ScratchDir dir;
  RandomCheckpointOptions o;
  o.config_json = testing::fixture("configs/" + c.config);
  o.out_dir = dir / c.name;
  o.seed = c.seed;
  o.dtype = c.dtype == "bf16" ? DType::BF16 : c.dtype == "f16" ? DType::F16 : DType::F32;
  o.shard_bytes = c.shard_mb << 20;
  write_random_checkpoint(o);
  LoadedModel loaded = load_model(o.out_dir);
  ThreadPool pool(2);
  CpuModel model(loaded.config, loaded.weights, pool);
  const int vocab = loaded.config.vocab_size;

  double worst = 0;
  int prompts = 0;
  for (const auto& [name, view] : fixture->tensors()) {
    if (!name.ends_with(".ids")) continue;
    const std::string p = name.substr(0, name.size() - 4);
    SCOPED_TRACE(c.name + " " + p);
    ++prompts;
    const auto ids = ints(view);
    const auto ref_logits = floats(fixture->tensors().at(p + ".logits"));
    const auto ref_greedy = ints(fixture->tensors().at(p + ".greedy"));
    const auto ref_step_logits = floats(fixture->tensors().at(p + ".greedy_logits"));

    PagedKvCache cache(loaded.config, 16, 16);
    KvSequence seq;
    ASSERT_TRUE(cache.reserve(seq, static_cast<int>(ids.size() + ref_greedy.size())));
    SequenceStep step{&seq, ids, true};
    auto logits = model.forward(cache, {&step, 1});
    ASSERT_EQ(logits.size(), ref_logits.size());
    for (size_t r = 0; r < ids.size(); ++r) {
      double err = testing::row_relative_error(std::span(logits).subspan(r * vocab, vocab),
                                      std::span(ref_logits).subspan(r * vocab, vocab));
      worst = std::max(worst, err);
      EXPECT_LE(err, kMaxRelativeError) << "prefill position " << r;
    }

    std::span<const float> last = std::span(logits).subspan((ids.size() - 1) * vocab, vocab);
    std::span<const float> ref_last = std::span(ref_logits).subspan((ids.size() - 1) * vocab, vocab);
    std::vector<float> step_logits;
    for (size_t k = 0; k < ref_greedy.size(); ++k) {
      const int32_t ours = argmax(last);
      ASSERT_EQ(ours, ref_greedy[k]) << "greedy diverges at token " << k << "; reference top-2 margin "
                                     << testing::top2_margin(ref_last);
      step = {&seq, {&ours, 1}, false};
      step_logits = model.forward(cache, {&step, 1});
      last = step_logits;
      ref_last = std::span(ref_step_logits).subspan(k * vocab, vocab);
      double err = testing::row_relative_error(last, ref_last);
      worst = std::max(worst, err);
      EXPECT_LE(err, kMaxRelativeError) << "decode step " << k;
    }
  }
  EXPECT_GE(prompts, 3);
  std::cout << "[ reference ] " << c.name << ": max relative error " << worst << " over " << prompts
            << " prompts (limit " << kMaxRelativeError << ")\n";
}

INSTANTIATE_TEST_SUITE_P(Cases, ReferenceModelTest, ::testing::ValuesIn(load_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace ultraserve
