// The CUDA forward pass against the CPU forward pass (itself checked against HF transformers
// in reference_model_test) on the four fixture configs, plus the batching paths: mixed
// prefill/decode passes, CUDA-graph replays with padding, and the GPU worker. Skips where there
// is no GPU (CI); scripts/gpu.sh runs it on the GPU machine.
//
// Tolerances: the GPU feeds bf16 activations to its matrix products (as transformers' bf16
// inference does) where the CPU keeps fp32, so logits agree to bf16 precision, not fp32. Per
// row, error = max |gpu - cpu| / max |cpu|; 95% of rows must be within 2e-2, and every row
// within 1e-1: on these tiny random MoE models a bf16 rounding now and then flips a near-tied
// router choice, and that token then takes another expert (measured worst: 5.8e-2; see
// docs/perf.md). Batching must not change results beyond accumulation order: <= 1e-3.

#include <cmath>
#include <iostream>
#include <numeric>

#include "actors/gpu_worker.h"
#include "gpu/device_info.h"
#include "gpu/gpu_model.h"
#include "model/checkpoint.h"
#include "model/cpu_model.h"
#include "model/mxfp4.h"
#include "model/sampler.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

constexpr double kBf16Tolerance = 2e-2;       // 95% of rows
constexpr double kRoutingFlipTolerance = 1e-1;  // every row
constexpr double kBatchingTolerance = 1e-3;
constexpr int kPromptLength = 40;  // > 8 rows: the prefill goes through cuBLAS
constexpr int kGreedyTokens = 32;

bool have_gpu() { return !gpu::probe_devices().devices.empty(); }

std::vector<int32_t> prompt_ids(int length, int vocab, int salt = 0) {
  std::vector<int32_t> ids(length);
  for (int i = 0; i < length; ++i) ids[i] = (i * 37 + 11 + salt * 101) % vocab;
  return ids;
}

// One sequence's KV blocks on the GPU model, and passes over it.
class GpuSequence {
 public:
  GpuSequence(gpu::GpuModel& model, KvBlockPool& pool, int capacity) : model_(model), pool_(pool) {
    if (!pool.reserve(kv_, capacity)) throw std::runtime_error("test KV pool too small");
  }
  ~GpuSequence() { pool_.release(kv_); }
  // Appends `tokens`; returns the logits of every new row.
  std::vector<float> append(std::span<const int32_t> tokens) {
    gpu::PassRequest r;
    r.tables.emplace_back(kv_.blocks);
    for (size_t i = 0; i < tokens.size(); ++i) {
      r.tokens.push_back(tokens[i]);
      r.positions.push_back(kv_.length + int(i));
      r.table_of.push_back(0);
      r.output_rows.push_back(int(i));
    }
    r.want_logits = true;
    kv_.length += int(tokens.size());
    return model_.run(r).logits;
  }

 private:
  gpu::GpuModel& model_;
  KvBlockPool& pool_;
  KvSequence kv_;
};

gpu::GpuModelOptions small_options(gpu::ExpertFormat experts) {
  gpu::GpuModelOptions o;
  o.experts = experts;
  o.kv_blocks = 64;
  o.max_rows = 128;
  o.max_context = 256;
  o.max_sequences = 16;
  return o;
}

struct CpuReference {
  LoadedModel model;
  ThreadPool pool{2};
  std::unique_ptr<CpuModel> cpu;
  explicit CpuReference(LoadedModel m) : model(std::move(m)), cpu(std::make_unique<CpuModel>(model.config, model.weights, pool)) {}
};

// Compares prefill logits at every position and a greedy continuation. Returns the worst error.
double compare_with_cpu(const ModelConfig& config, CpuModel& cpu, gpu::GpuModel& gpu_model, const std::string& label) {
  const int vocab = config.vocab_size;
  const auto ids = prompt_ids(kPromptLength, vocab);
  PagedKvCache cache(config, 16, 16);
  KvSequence seq;
  EXPECT_TRUE(cache.reserve(seq, kPromptLength + kGreedyTokens));
  SequenceStep step{&seq, ids, true};
  std::vector<float> cpu_logits = cpu.forward(cache, {&step, 1});

  KvBlockPool pool(gpu_model.info().kv_blocks, gpu_model.info().kv_block_size);
  GpuSequence gseq(gpu_model, pool, kPromptLength + kGreedyTokens);
  std::vector<float> gpu_logits = gseq.append(ids);

  std::vector<double> errors;
  for (int r = 0; r < kPromptLength; ++r)
    errors.push_back(testing::row_relative_error(std::span(gpu_logits).subspan(size_t(r) * vocab, vocab),
                                        std::span(cpu_logits).subspan(size_t(r) * vocab, vocab)));
  std::span<const float> cpu_last = std::span(cpu_logits).subspan(size_t(kPromptLength - 1) * vocab, vocab);
  std::span<const float> gpu_last = std::span(gpu_logits).subspan(size_t(kPromptLength - 1) * vocab, vocab);
  int identical = 0;
  for (int k = 0; k < kGreedyTokens; ++k) {
    const int32_t want = argmax(cpu_last), got = argmax(gpu_last);
    if (want != got) {
      // A divergence is acceptable only at a near-tie, within bf16 noise of the logits' scale.
      const float scale = *std::max_element(cpu_last.begin(), cpu_last.end());
      EXPECT_LE(testing::top2_margin(cpu_last), kBf16Tolerance * std::fabs(scale))
          << label << ": greedy diverges at token " << k << " away from a near-tie";
      std::cout << "[ gpu ] " << label << ": greedy diverges at token " << k << " (CPU top-2 margin "
                << testing::top2_margin(cpu_last) << ", a near-tie)\n";
      break;
    }
    ++identical;
    step = {&seq, {&want, 1}, false};
    cpu_logits = cpu.forward(cache, {&step, 1});
    cpu_last = cpu_logits;
    gpu_logits = gseq.append({&want, 1});
    gpu_last = gpu_logits;
    errors.push_back(testing::row_relative_error(gpu_last, cpu_last));
  }
  std::sort(errors.begin(), errors.end());
  const double worst = errors.back(), p95 = errors[errors.size() * 95 / 100];
  EXPECT_LE(p95, kBf16Tolerance) << label;
  EXPECT_LE(worst, kRoutingFlipTolerance) << label;
  std::cout << "[ gpu ] " << label << ": relative error p95 " << p95 << ", max " << worst << " over " << errors.size()
            << " rows; greedy identical for " << identical << " of " << kGreedyTokens << " tokens\n";
  return worst;
}

class GpuModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
  }
};

TEST_P(GpuModelTest, MatchesCpuWithBf16Experts) {
  testing::ScratchDir dir;
  CpuReference ref(load_model(testing::make_checkpoint(dir, GetParam(), 5)));
  auto gpu_model = gpu::GpuModel::load(ref.model.config, ref.model.weights, small_options(gpu::ExpertFormat::bf16));
  compare_with_cpu(ref.model.config, *ref.cpu, *gpu_model, GetParam() + " bf16");
}

INSTANTIATE_TEST_SUITE_P(Configs, GpuModelTest,
                         ::testing::Values("moe_topk2_norm.json", "moe_top4_unnormed_tied.json",
                                           "moe_sparse_step2_top1.json", "dense_qwen3.json"));

// MXFP4 experts: the GPU must compute exactly the model whose experts are the dequantised
// MXFP4 values, so the CPU reference runs on those.
TEST(GpuModelMxfp4, MatchesCpuOnDequantisedExperts) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  testing::ScratchDir dir;
  LoadedModel model = load_model(testing::make_checkpoint(dir, "moe_topk2_norm.json", 6));
  auto gpu_model = gpu::GpuModel::load(model.config, model.weights, small_options(gpu::ExpertFormat::mxfp4));
  ASSERT_EQ(gpu_model->info().experts, gpu::ExpertFormat::mxfp4);
  for (LayerWeights& layer : model.weights.layers)
    for (FeedForward& e : layer.experts)
      for (Matrix* m : {&e.gate, &e.up, &e.down}) m->data = dequantize_mxfp4(quantize_mxfp4(m->data, m->rows, m->cols));
  CpuReference ref(std::move(model));
  compare_with_cpu(ref.model.config, *ref.cpu, *gpu_model, "moe_topk2_norm mxfp4");
}

// Five sequences in one mixed pass (prefill chunks of different lengths), then decode steps of
// all five replayed from a padded CUDA graph, against each sequence run alone without graphs.
TEST(GpuModelBatching, MixedPassesAndGraphsMatchSeparateRuns) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  testing::ScratchDir dir;
  LoadedModel model = load_model(testing::make_checkpoint(dir, "moe_top4_unnormed_tied.json", 8));
  const int vocab = model.config.vocab_size;
  gpu::GpuModelOptions no_graphs = small_options(gpu::ExpertFormat::bf16);
  no_graphs.graph_batch_sizes.clear();
  auto alone = gpu::GpuModel::load(model.config, model.weights, no_graphs);
  auto batched = gpu::GpuModel::load(model.config, model.weights, small_options(gpu::ExpertFormat::bf16));

  constexpr int kSequences = 5, kDecodeSteps = 6;
  KvBlockPool alone_pool(alone->info().kv_blocks, alone->info().kv_block_size);
  KvBlockPool batch_pool(batched->info().kv_blocks, batched->info().kv_block_size);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<KvSequence> kv(kSequences);
  gpu::PassRequest mixed;
  for (int s = 0; s < kSequences; ++s) {
    prompts.push_back(prompt_ids(3 + 7 * s, vocab, s));
    ASSERT_TRUE(batch_pool.reserve(kv[s], 64));
  }
  for (int s = 0; s < kSequences; ++s) {
    mixed.tables.emplace_back(kv[s].blocks);
    for (size_t i = 0; i < prompts[s].size(); ++i) {
      mixed.tokens.push_back(prompts[s][i]);
      mixed.positions.push_back(int(i));
      mixed.table_of.push_back(s);
    }
    mixed.output_rows.push_back(int(mixed.tokens.size()) - 1);
    kv[s].length = int(prompts[s].size());
  }
  mixed.want_logits = true;
  gpu::PassResult batch_out = batched->run(mixed);

  std::vector<std::unique_ptr<GpuSequence>> singles;
  std::vector<int32_t> next(kSequences);
  for (int s = 0; s < kSequences; ++s) {
    singles.push_back(std::make_unique<GpuSequence>(*alone, alone_pool, 64));
    const std::vector<float> logits = singles[s]->append(prompts[s]);
    const auto last = std::span(logits).subspan(logits.size() - vocab, vocab);
    EXPECT_LE(testing::row_relative_error(std::span(batch_out.logits).subspan(size_t(s) * vocab, vocab), last),
              kBatchingTolerance)
        << "prefill of sequence " << s;
    next[s] = argmax(last);
    EXPECT_EQ(batch_out.argmax[s], next[s]) << "device argmax of sequence " << s;
  }
  for (int step = 0; step < kDecodeSteps; ++step) {
    gpu::PassRequest decode;  // five rows: replayed from the graph of bucket 8, three rows padding
    for (int s = 0; s < kSequences; ++s) {
      decode.tables.emplace_back(kv[s].blocks);
      decode.tokens.push_back(next[s]);
      decode.positions.push_back(kv[s].length++);
      decode.table_of.push_back(s);
      decode.output_rows.push_back(s);
    }
    decode.want_logits = true;
    batch_out = batched->run(decode);
    for (int s = 0; s < kSequences; ++s) {
      const std::vector<float> logits = singles[s]->append({&next[s], 1});
      EXPECT_LE(testing::row_relative_error(std::span(batch_out.logits).subspan(size_t(s) * vocab, vocab), logits),
                kBatchingTolerance)
          << "decode step " << step << " of sequence " << s;
      next[s] = argmax(logits);
      EXPECT_EQ(batch_out.argmax[s], next[s]);
    }
  }
}

// The worker (what the server runs): admissions, a prompt in two chunks, greedy and seeded
// sampled requests side by side, release. Greedy tokens match a plain GPU greedy loop.
TEST(GpuWorkerTest, RunsStepPlans) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  testing::ScratchDir dir;
  LoadedModel model = load_model(testing::make_checkpoint(dir, "moe_topk2_norm.json", 9));
  const int vocab = model.config.vocab_size;
  auto reference_model = gpu::GpuModel::load(model.config, model.weights, small_options(gpu::ExpertFormat::mxfp4));
  GpuWorker worker(gpu::GpuModel::load(model.config, model.weights, small_options(gpu::ExpertFormat::mxfp4)), 0, vocab);
  EXPECT_NE(worker.info().device.find("cuda:0"), std::string::npos);

  const auto prompt = prompt_ids(20, vocab);
  std::vector<int32_t> expected;
  {
    KvBlockPool pool(reference_model->info().kv_blocks, reference_model->info().kv_block_size);
    GpuSequence seq(*reference_model, pool, 64);
    std::vector<float> logits = seq.append(prompt);
    for (int i = 0; i < 8; ++i) {
      expected.push_back(argmax(std::span(logits).subspan(logits.size() - vocab, vocab)));
      logits = seq.append({&expected.back(), 1});
    }
  }

  StepPlan first;
  first.admit = {{1, 64, {}}, {2, 64, {.temperature = 0.8f, .top_k = 20, .seed = 7}}};
  first.entries = {{1, std::vector<int32_t>(prompt.begin(), prompt.begin() + 12), false},
                   {2, prompt_ids(5, vocab, 3), true}};
  StepResult r = worker.execute(first);
  ASSERT_EQ(r.sampled.size(), 1u);
  int32_t sampled_token = r.sampled[0].token;
  EXPECT_GE(sampled_token, 0);
  EXPECT_LT(sampled_token, vocab);

  StepPlan second;
  second.entries = {{1, std::vector<int32_t>(prompt.begin() + 12, prompt.end()), true}, {2, {sampled_token}, true}};
  r = worker.execute(second);
  ASSERT_EQ(r.sampled.size(), 2u);
  std::vector<int32_t> got{r.sampled[0].token};
  sampled_token = r.sampled[1].token;
  for (int i = 1; i < 8; ++i) {
    StepPlan decode;
    decode.entries = {{1, {got.back()}, true}, {2, {sampled_token}, true}};
    r = worker.execute(decode);
    got.push_back(r.sampled[0].token);
    sampled_token = r.sampled[1].token;
  }
  EXPECT_EQ(got, expected);
  StepPlan done;
  done.release = {1, 2};
  worker.execute(done);
}

}  // namespace
}  // namespace ultraserve
