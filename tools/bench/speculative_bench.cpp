// What DFlash speculation costs and gives, on the CPU or the GPU engine, through the same
// ModelWorker interface the scheduler drives (actors/worker_generation.h). Per block size B:
//   - draft time: the draft's pass proposing B - 1 tokens after the anchor, per round;
//   - verify time: the target's pass over the B-token block (the rest of the round), next to one
//     plain decode step: with a MoE target a bigger block reads many more experts;
//   - tau (tokens per round) and end-to-end decode tokens/s, next to plain decoding of the same
//     prompts on the same worker in the same run. Batch 1: prompts run one after another.
// With random weights tau is about 1 (the draft is almost always wrong) and the times are what
// the bench is for; a trained pair (--model, --draft; --text for held-out document starts)
// gives tau. On the GPU, random weights are made on the device: the 30B-A3B shape and its
// draft's need no checkpoint. Table + JSON.

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "actors/gpu_worker.h"
#include "actors/worker_generation.h"
#include "config/command_options.h"
#include "gpu/gpu_model.h"
#include "model/checkpoint.h"
#include "model/heldout_text.h"
#include "model/random_checkpoint.h"

namespace ultraserve {
namespace {

struct BenchOptions : CommandOptions {
  std::string device = "cpu", model, draft, config = "config/models/small-qwen3-moe.json",
              draft_config = "config/models/small-qwen3-moe-dflash.json", text, from = "starts", json;
  std::vector<int64_t> blocks{4, 8, 16};
  int64_t new_tokens = 64, prompts = 8, prompt_tokens = 24, threads = 0, seed = 1, gemv_rows = gpu::GpuModelOptions{}.gemv_max_rows;
  BenchOptions()
      : CommandOptions("speculative_bench [--device cpu|cuda] [--model DIR --draft DIR [--text FILE.jsonl [--from starts|middles]] | "
                       "--config FILE --draft-config FILE] [--blocks '[4,8,16]'] [--new-tokens N] [--json FILE]") {
    options()
        .add(device, "device", "cpu, or cuda (GPU 0)")
        .add(model, "model", "target checkpoint (default: random weights of --config)")
        .add(draft, "draft", "DFlash draft checkpoint (default: random weights of --draft-config)")
        .add(config, "config", "target config.json for random weights")
        .add(draft_config, "draft-config", "draft config.json for random weights (its shape must fit the target)")
        .add(text, "text", "held-out JSONL to take prompts from (default: fixed in-domain prompts)")
        .add(from, "from", "where in each --text document a prompt is: starts, or middles (continuing a text)")
        .add(prompts, "prompts", "prompts, run one after another")
        .add(prompt_tokens, "prompt-tokens", "tokens per prompt taken from --text (or made up, for random weights)")
        .add(blocks, "blocks", "block sizes to measure")
        .add(new_tokens, "new-tokens", "tokens each generation makes")
        .add(threads, "threads", "CPU threads (0: one per core)")
        .add(seed, "seed", "random weights seed")
        .add(gemv_rows, "gemv-rows", "GPU: passes of up to this many rows use our GEMV, larger ones cuBLAS (0..8)")
        .add(json, "json", "write the results as JSON here");
  }
};

std::filesystem::path random_checkpoint(const std::string& config, const std::string& name, uint64_t seed) {
  const auto dir = std::filesystem::temp_directory_path() / ("ultraserve-speculative-bench-" + name);
  RandomCheckpointOptions o;
  o.config_json = config;
  o.out_dir = dir;
  o.seed = seed;
  write_random_checkpoint(o);
  return dir;
}

// The target, its draft and prompts, however they were named.
struct Setup {
  ModelConfig config, draft_config;
  std::unique_ptr<ModelWorker> worker;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> sources;  // of each prompt, with --text ("" otherwise)
  std::string described;
};

std::vector<std::vector<int32_t>> fixed_prompts(const Tokenizer& tokenizer, size_t count) {
  const char* texts[] = {"Genesis 1:1 In the beginning", "And the LORD spake unto Moses, saying,",
                         "Translate to French: the house is red, and the garden is green.", "Absolute, a. ",
                         "en->de: house ->", "John 3:16 For God so loved", "Psalms 23:1 The LORD is my shepherd;",
                         "And it came to pass, when"};
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < count; ++i) prompts.push_back(tokenizer.encode(texts[i % std::size(texts)]));
  return prompts;
}

Setup setup(const BenchOptions& o) {
  Setup s;
  const bool cuda = o.device == "cuda";
  if (!cuda && o.device != "cpu") throw UsageError("--device must be cpu or cuda");
  const bool random_on_device = cuda && o.model.empty();
  const size_t prompts = static_cast<size_t>(o.prompts);
  if (random_on_device) {  // no checkpoint at all: weights made on the GPU, made-up prompt ids
    s.config = ModelConfig::load(o.config);
    s.draft_config = ModelConfig::load(o.draft_config);
    check_draft_fits(s.draft_config, s.config, o.draft_config);
    gpu::GpuModelOptions g;
    g.max_rows = 256;
    g.max_sequences = 8;
    g.max_context = static_cast<int>(o.prompt_tokens + o.new_tokens) + 64;
    g.gemv_max_rows = static_cast<int>(o.gemv_rows);
    s.worker = std::make_unique<GpuWorker>(gpu::GpuModel::random(s.config, uint64_t(o.seed), g, &s.draft_config), 0,
                                           s.config.vocab_size);
    for (size_t p = 0; p < prompts; ++p) {
      std::vector<int32_t> ids(size_t(o.prompt_tokens));
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((p * 7919 + i * 104729 + 13) % s.config.vocab_size);
      s.prompts.push_back(std::move(ids));
    }
    s.described = o.config + " + " + o.draft_config + " (random weights on the device)";
    return s;
  }
  LoadedModel target = load_model(o.model.empty() ? random_checkpoint(o.config, "target", o.seed) : std::filesystem::path(o.model));
  LoadedDraft draft = load_draft(o.draft.empty() ? random_checkpoint(o.draft_config, "draft", o.seed + 1)
                                                 : std::filesystem::path(o.draft));
  check_draft_fits(draft.config, target.config, "the draft");
  s.config = target.config;
  s.draft_config = draft.config;
  if (o.from != "starts" && o.from != "middles") throw UsageError("--from must be starts or middles");
  if (o.text.empty()) {
    s.prompts = fixed_prompts(target.tokenizer, prompts);
  } else {
    for (HeldoutPrompt& p : heldout_prompts(read_documents(o.text), target.tokenizer, prompts, size_t(o.prompt_tokens),
                                            o.from == "starts" ? PromptPlace::start : PromptPlace::middle)) {
      s.prompts.push_back(std::move(p.ids));
      s.sources.push_back(std::move(p.source));
    }
  }
  s.sources.resize(s.prompts.size());
  if (s.prompts.empty()) throw std::runtime_error("no prompts: the --text documents are all too short for --prompt-tokens");
  const int vocab = sampleable_vocab(target.config, target.tokenizer);
  int longest = 0;
  for (const auto& p : s.prompts) longest = std::max(longest, int(p.size()));
  const int context = longest + static_cast<int>(o.new_tokens) + 64;
  if (cuda) {
    gpu::GpuModelOptions g;
    g.max_rows = std::max(256, longest);
    g.max_sequences = 8;
    g.max_context = context;
    g.gemv_max_rows = static_cast<int>(o.gemv_rows);
    s.worker = std::make_unique<GpuWorker>(
        gpu::GpuModel::load(target.config, target.weights, g, &draft.config, &draft.weights), 0, vocab);
  } else {
    s.worker = std::make_unique<CpuWorker>(target.config, std::move(target.weights), vocab, context / 16 + 2, 16, 1,
                                           size_t(o.threads), std::move(draft));
  }
  s.described = (o.model.empty() ? o.config : o.model) + " + " + (o.draft.empty() ? o.draft_config : o.draft) +
                (o.text.empty() ? "" : ", prompts: the " + o.from + " of documents spread over " + o.text);
  return s;
}

// Batch 1: each prompt on its own.
std::vector<WorkerGeneration> run_each(ModelWorker& worker, const std::vector<std::vector<int32_t>>& prompts,
                                       const WorkerGenerationOptions& options) {
  std::vector<WorkerGeneration> each;
  RequestId id = 1;
  for (const auto& p : prompts) each.push_back(generate_on_worker(worker, std::span(&p, 1), options, id++));
  return each;
}

// The figures of the prompts `chosen` picks, summed.
template <class Chosen>
WorkerGeneration summed(const std::vector<WorkerGeneration>& each, Chosen chosen) {
  WorkerGeneration total;
  for (size_t p = 0; p < each.size(); ++p) {
    if (!chosen(p)) continue;
    const WorkerGeneration& g = each[p];
    total.tokens.push_back(g.tokens.front());
    total.rounds += g.rounds;
    total.round_tokens += g.round_tokens;
    total.prefill_seconds += g.prefill_seconds;
    total.decode_seconds += g.decode_seconds;
    total.draft_seconds += g.draft_seconds;
    total.decode_steps += g.decode_steps;
  }
  return total;
}

WorkerGeneration run_one_by_one(ModelWorker& worker, const std::vector<std::vector<int32_t>>& prompts,
                                const WorkerGenerationOptions& options) {
  return summed(run_each(worker, prompts, options), [](size_t) { return true; });
}

}  // namespace
}  // namespace ultraserve

int main(int argc, char** argv) {
  using namespace ultraserve;
  BenchOptions o;
  return run_command(o, std::vector<std::string>(argv + 1, argv + argc), [&] {
    Setup s = setup(o);
    const WorkerInfo info = s.worker->info();
    const int new_tokens = static_cast<int>(o.new_tokens);
    // One untimed round of everything first: the GPU captures a CUDA graph per pass shape on first use.
    run_one_by_one(*s.worker, {s.prompts.front()}, {.new_tokens = 4});
    for (int64_t b : o.blocks)
      run_one_by_one(*s.worker, {s.prompts.front()}, {.new_tokens = 2 * static_cast<int>(b), .block = int(b)});
    const WorkerGeneration plain = run_one_by_one(*s.worker, s.prompts, {.new_tokens = new_tokens});
    const double plain_tps = plain.decode_tokens_per_second();
    const double step_ms = 1e3 * plain.decode_seconds / plain.decode_steps;
    std::printf("%s on %s\ntarget %d layers, draft: %s; %zu prompts, %d new tokens each, batch 1\n",
                s.described.c_str(), info.device.c_str(), s.config.num_hidden_layers, info.draft.c_str(),
                s.prompts.size(), new_tokens);
    std::printf("plain decode: %.1f tokens/s (%.3f ms/step)\n\n", plain_tps, step_ms);
    std::printf("| B | draft ms | verify ms | verify / decode step | tau | tokens/s | vs plain | outputs = plain |\n"
                "|---|---|---|---|---|---|---|---|\n");

    std::vector<std::string> rows;
    std::vector<std::vector<WorkerGeneration>> per_block;
    for (int64_t b : o.blocks) {
      const int block = static_cast<int>(b);
      per_block.push_back(run_each(*s.worker, s.prompts, {.new_tokens = new_tokens, .block = block}));
      const WorkerGeneration g = summed(per_block.back(), [](size_t) { return true; });
      const double draft_ms = 1e3 * g.draft_seconds / g.decode_steps;
      const double verify_ms = 1e3 * (g.decode_seconds - g.draft_seconds) / g.decode_steps;
      const double tps = g.decode_tokens_per_second();
      size_t same = 0;
      for (size_t p = 0; p < s.prompts.size(); ++p) same += g.tokens[p] == plain.tokens[p];
      std::printf("| %d | %.3f | %.3f | %.2f | %.2f | %.1f | %.2fx | %zu/%zu |\n", block, draft_ms, verify_ms,
                  verify_ms / step_ms, g.tau(), tps, tps / plain_tps, same, s.prompts.size());
      std::ostringstream j;
      j << "{\"block\": " << block << ", \"draft_ms\": " << draft_ms << ", \"verify_ms\": " << verify_ms
        << ", \"tau\": " << g.tau() << ", \"tokens_per_s\": " << tps << ", \"same_as_plain\": " << same << "}";
      rows.push_back(j.str());
    }
    // tau by the source of the prompts (held-out text mixes kinds that draft very differently).
    std::vector<std::string> sources = s.sources;
    std::sort(sources.begin(), sources.end());
    sources.erase(std::unique(sources.begin(), sources.end()), sources.end());
    std::string by_source;
    if (sources.size() > 1) {
      std::printf("\n| prompts from | prompts |");
      for (int64_t b : o.blocks) std::printf(" tau B = %d |", int(b));
      std::printf("\n|---|---|");
      for (size_t i = 0; i < o.blocks.size(); ++i) std::printf("---|");
      std::printf("\n");
      for (const std::string& source : sources) {
        const auto from = [&](size_t p) { return s.sources[p] == source; };
        std::printf("| %s | %zu |", source.c_str(), size_t(std::count(s.sources.begin(), s.sources.end(), source)));
        by_source += std::string(by_source.empty() ? "" : ", ") + "\"" + source + "\": [";
        for (size_t i = 0; i < per_block.size(); ++i) {
          const double tau = summed(per_block[i], from).tau();
          std::printf(" %.2f |", tau);
          by_source += (i ? ", " : "") + std::to_string(tau);
        }
        by_source += "]";
        std::printf("\n");
      }
    }
    if (!o.json.empty()) {
      std::ofstream out(o.json);
      out << "{\"benchmark\": \"speculative\", \"device\": \"" << info.device << "\", \"prompts\": " << s.prompts.size()
          << ", \"new_tokens\": " << new_tokens << ", \"plain_tokens_per_s\": " << plain_tps
          << ", \"plain_step_ms\": " << step_ms << ", \"runs\": [";
      for (size_t i = 0; i < rows.size(); ++i) out << (i ? ", " : "") << rows[i];
      out << "], \"tau_by_source\": {" << by_source << "}}\n";
    }
  });
}
