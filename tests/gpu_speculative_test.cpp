// DFlash on the GPU, on the shipped trained pair (models/default and its draft/):
//   - the GPU draft proposes what the CPU draft (itself checked against the paper's recipe in
//     dflash_test) proposes from the same context, up to bf16 noise;
//   - the GPU worker's speculative rounds are lossless: greedy output equals plain greedy
//     output token for token on 50 prompts at B = 4, 8, 16, in steps that mix speculative and
//     plain entries; where they part, only at a near-tie of the target's logits (the two runs
//     pass different row counts through the kernels, so their roundings differ);
//   - sampled requests run speculative rounds too;
//   - the whole server on the GPU with the shipped draft: concurrent WebSocket clients get the
//     plain greedy output, with its acceptance length in each done message.
// Skips where there is no GPU (CI); scripts/gpu.sh runs it on the GPU machine.

#include <algorithm>
#include <iostream>
#include <optional>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/gpu_worker.h"
#include "actors/server.h"
#include "actors/worker_generation.h"
#include "gpu/device_info.h"
#include "gpu/gpu_error.h"
#include "gpu/gpu_model.h"
#include "model/checkpoint.h"
#include "model/cpu_model.h"
#include "model/dflash.h"
#include "model/kv_block_pool.h"
#include "tests/test_clients.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

constexpr int kNewTokens = 32;
constexpr double kNearTie = 2e-2;  // of the largest logit: bf16 noise

const std::filesystem::path kDefault = testing::source_dir() / "models" / "default";

bool have_gpu() { return !gpu::probe_devices().devices.empty(); }

gpu::GpuModelOptions options() {
  gpu::GpuModelOptions o;
  o.kv_blocks = 512;
  o.max_rows = 1024;
  o.max_context = 512;
  o.max_sequences = 64;
  return o;
}

// 50 prompts in the shipped model's domains: verses, dictionary entries, translation pairs, chat.
std::vector<std::string> prompt_texts() {
  const char* starts[] = {"Genesis 1:1 In the beginning", "And the LORD spake unto Moses, saying,",
                          "John 3:16 For God so loved", "Psalms 23:1 The LORD is my shepherd;",
                          "And it came to pass, when", "Absolute, a. ", "Water, n. ", "House, n. ",
                          "en->de: house ->", "de->en: Wasser ->"};
  const char* tails[] = {"", " and", " the", ", and he said", " of the"};
  std::vector<std::string> texts;
  for (const char* s : starts)
    for (const char* t : tails) texts.push_back(std::string(s) + t);
  return texts;
}

class ShippedPair : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    if (!std::filesystem::exists(kDefault / "config.json")) GTEST_SKIP() << "models/default is not trained yet";
    model_ = load_model(kDefault);
    const auto dir = bundled_draft(kDefault);
    ASSERT_TRUE(dir);
    draft_ = load_draft(*dir);
    vocab_ = sampleable_vocab(model_->config, model_->tokenizer);
    for (const std::string& t : prompt_texts()) prompts_.push_back(model_->tokenizer.encode(t));
  }
  std::unique_ptr<gpu::GpuModel> gpu_model(bool with_draft) {
    return gpu::GpuModel::load(model_->config, model_->weights, options(), with_draft ? &draft_.config : nullptr,
                               with_draft ? &draft_.weights : nullptr);
  }

  std::optional<LoadedModel> model_;  // LoadedModel has no empty state
  LoadedDraft draft_;
  int vocab_ = 0;
  std::vector<std::vector<int32_t>> prompts_;
};

TEST_F(ShippedPair, GpuDraftProposesWhatTheCpuDraftProposes) {
  constexpr int kBlock = 16;
  ThreadPool pool(2);
  CpuModel cpu(model_->config, model_->weights, pool);
  DFlashDraft cpu_draft(LoadedDraft{draft_.config, draft_.weights}, cpu, pool);
  cpu.set_taps(cpu_draft.target_layers());
  auto gpu = gpu_model(true);
  KvBlockPool blocks(gpu->info().kv_blocks, gpu->info().kv_block_size);

  int same = 0, compared = 0;
  for (const auto& prompt : prompts_) {
    const int n = static_cast<int>(prompt.size());
    PagedKvCache cache(model_->config, 8, 16), draft_cache(draft_.config, 8, 16);
    KvSequence seq, ctx;
    ASSERT_TRUE(cache.reserve(seq, n + kBlock));
    ASSERT_TRUE(draft_cache.reserve(ctx, n + kBlock));
    std::vector<float> taps;
    SequenceStep step{&seq, prompt};
    const std::vector<float> logits = cpu.forward(cache, {&step, 1}, &taps);
    cpu_draft.append_context(draft_cache, ctx, taps);
    const int32_t anchor = argmax(std::span(logits).first(size_t(vocab_)));
    const std::vector<int32_t> cpu_block = cpu_draft.propose(draft_cache, ctx, anchor, kBlock);

    KvSequence kv;
    ASSERT_TRUE(blocks.reserve(kv, n + kBlock));
    gpu::PassRequest prefill;
    prefill.tables.emplace_back(kv.blocks);
    for (int i = 0; i < n; ++i) {
      prefill.tokens.push_back(prompt[i]);
      prefill.positions.push_back(i);
      prefill.table_of.push_back(0);
    }
    prefill.output_rows = {n - 1};
    const int32_t gpu_anchor = gpu->run(prefill).argmax.at(0);
    gpu::PassRequest block;
    block.tables.emplace_back(kv.blocks);
    for (int j = 0; j < kBlock; ++j) {
      block.tokens.push_back(j == 0 ? anchor : draft_.config.dflash->mask_token_id);
      block.positions.push_back(n + j);
      block.table_of.push_back(0);
      block.kv_end.push_back(n + kBlock);
      block.output_rows.push_back(j);
    }
    const std::vector<int32_t> gpu_rows = gpu->propose(block).argmax;
    blocks.release(kv);
    EXPECT_EQ(gpu_anchor, anchor) << "the targets' greedy tokens after the prompt differ";
    for (int j = 1; j < kBlock; ++j) {
      same += gpu_rows[j] == cpu_block[j - 1];
      ++compared;
    }
  }
  const double agreement = double(same) / compared;
  std::cout << "[ gpu ] draft proposals, GPU vs CPU: " << same << " of " << compared << " agree ("
            << agreement * 100 << "%)\n";
  EXPECT_GE(agreement, 0.9);
}

// The target's logits for the token after `tokens`, from one plain GPU pass.
std::vector<float> next_logits(gpu::GpuModel& model, std::span<const int32_t> tokens) {
  KvBlockPool pool(model.info().kv_blocks, model.info().kv_block_size);
  KvSequence kv;
  if (!pool.reserve(kv, static_cast<int>(tokens.size()))) throw std::runtime_error("test KV pool too small");
  gpu::PassRequest r;
  r.tables.emplace_back(kv.blocks);
  for (size_t i = 0; i < tokens.size(); ++i) {
    r.tokens.push_back(tokens[i]);
    r.positions.push_back(int(i));
    r.table_of.push_back(0);
  }
  r.output_rows = {int(tokens.size()) - 1};
  r.want_logits = true;
  return model.run(r).logits;
}

TEST_F(ShippedPair, SpeculativeRoundsAreLosslessInMixedSteps) {
  GpuWorker plain(gpu_model(false), 0, vocab_);
  GpuWorker speculative(gpu_model(true), 0, vocab_);
  auto reference = gpu_model(false);
  ASSERT_EQ(speculative.info().draft_block_size, draft_.config.dflash->block_size);

  const WorkerGeneration want = generate_on_worker(plain, prompts_, {.new_tokens = kNewTokens});
  for (int block : {4, 8, 16}) {
    // At B = 8 every second sequence decodes plainly in the same steps.
    const WorkerGeneration got = generate_on_worker(
        speculative, prompts_, {.new_tokens = kNewTokens, .block = block, .alternate_plain = block == 8});
    int identical = 0;
    for (size_t p = 0; p < prompts_.size(); ++p) {
      const auto& a = want.tokens[p];
      const auto& b = got.tokens[p];
      const size_t k = std::mismatch(a.begin(), a.end(), b.begin()).first - a.begin();
      if (k == a.size()) {
        ++identical;
        continue;
      }
      std::vector<int32_t> context = prompts_[p];
      context.insert(context.end(), a.begin(), a.begin() + k);
      const std::vector<float> logits = next_logits(*reference, context);
      const std::span<const float> row = std::span(logits).first(size_t(vocab_));
      const float scale = std::fabs(*std::max_element(row.begin(), row.end()));
      EXPECT_LE(testing::top2_margin(row), kNearTie * scale)
          << "B = " << block << ", prompt " << p << ": output parts from plain greedy at token " << k
          << " away from a near-tie";
    }
    std::cout << "[ gpu ] B = " << block << ": " << identical << " of " << prompts_.size()
              << " generations identical to plain greedy; tau " << got.tau() << " over " << got.rounds
              << " rounds\n";
    EXPECT_GE(identical, int(prompts_.size()) * 9 / 10);
    EXPECT_GT(got.tau(), 1.2) << "a trained draft gains tokens";
  }
}

TEST_F(ShippedPair, SampledRequestsSpeculateToo) {
  GpuWorker speculative(gpu_model(true), 0, vocab_);
  WorkerGenerationOptions o{.new_tokens = kNewTokens, .block = 8};
  o.sampling = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 7};
  const WorkerGeneration got = generate_on_worker(speculative, prompts_, o);
  for (const auto& tokens : got.tokens) {
    ASSERT_EQ(tokens.size(), size_t(kNewTokens));
    for (int32_t t : tokens) EXPECT_TRUE(t >= 0 && t < vocab_);
  }
  std::cout << "[ gpu ] sampled, B = 8: tau " << got.tau() << " over " << got.rounds << " rounds\n";
  EXPECT_GT(got.rounds, 0);
}

TEST_F(ShippedPair, ServerSpeculatesOnTheGpu) {
  constexpr int kClients = 8, kMaxTokens = 48;
  std::vector<std::vector<int32_t>> prompts(prompts_.begin(), prompts_.begin() + kClients);
  GpuWorker plain(gpu_model(false), 0, vocab_);
  const WorkerGeneration want = generate_on_worker(plain, prompts, {.new_tokens = kMaxTokens});

  caf::actor_system_config config;
  caf::actor_system system{config};
  ServerSettings settings;
  settings.model = kDefault;
  settings.draft = kDefault / "draft";
  settings.devices.device = "cuda";
  settings.net.port = 0;
  settings.planner.block_size = 8;
  Server server(system, settings);

  const std::vector<std::string> texts = prompt_texts();
  std::vector<std::unique_ptr<testing::WsClient>> clients;  // one each: all in the same batches
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<testing::WsClient>(server.port()));
    clients.back()->send(R"({"type":"generate","id":"g)" + std::to_string(i) + R"(","prompt":")" + texts[i] +
                         R"(","max_tokens":)" + std::to_string(kMaxTokens) + R"(,"temperature":0})");
  }
  int identical = 0;
  for (int i = 0; i < kClients; ++i) {
    const auto events = clients[i]->read_until_done("g" + std::to_string(i));
    ASSERT_EQ(events.back().type, "done") << events.back().message;
    std::vector<int32_t> got;
    for (const auto& e : events)
      if (e.type == "delta") got.insert(got.end(), e.tokens.begin(), e.tokens.end());
    // The server stops at a stop token; the plain run went on.
    ASSERT_LE(got.size(), want.tokens[i].size());
    identical += std::equal(got.begin(), got.end(), want.tokens[i].begin());
    EXPECT_GE(events.back().acceptance, 1.0) << "a speculative request reports its acceptance length";
  }
  std::cout << "[ gpu ] server on the GPU with the draft: " << identical << " of " << kClients
            << " outputs identical to plain greedy\n";
  EXPECT_GE(identical, kClients - 1);
}

TEST_F(ShippedPair, ProposeWithoutADraftIsRefused) {
  auto gpu = gpu_model(false);
  gpu::PassRequest r;
  EXPECT_THROW(gpu->propose(r), gpu::GpuError);
}

}  // namespace
}  // namespace ultraserve
