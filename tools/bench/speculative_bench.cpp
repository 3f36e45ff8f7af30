// What DFlash speculation costs and gives on the CPU engine, per block size B:
//   - draft time: one draft forward proposing B - 1 tokens after the anchor;
//   - verify time: one target pass over the B-token block (what a round costs the target, next
//     to one decode step: with a MoE target a bigger block reads many more experts);
//   - tau (tokens per round) and end-to-end tokens/s of speculative decoding, next to plain decoding
//     of the same prompt on the same engine in the same run.
// With random weights tau is about 1 (the draft is almost always wrong): the times are what this
// bench is for until a trained pair exists; then --model and --draft name it. Table + JSON.

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "config/command_options.h"
#include "model/checkpoint.h"
#include "model/random_checkpoint.h"
#include "model/speculative.h"

namespace ultraserve {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions : CommandOptions {
  std::string model, draft, config = "config/models/small-qwen3-moe.json",
                            draft_config = "config/models/small-qwen3-moe-dflash.json", json;
  std::vector<int64_t> blocks{4, 8, 16};
  int64_t new_tokens = 64, repeats = 5, threads = 0;
  BenchOptions()
      : CommandOptions("speculative_bench [--model DIR --draft DIR | --config FILE --draft-config FILE] "
                       "[--blocks '[4,8,16]'] [--new-tokens N] [--json FILE]") {
    options()
        .add(model, "model", "target checkpoint (default: a random checkpoint of --config)")
        .add(draft, "draft", "DFlash draft checkpoint (default: a random one of --draft-config)")
        .add(config, "config", "target config.json for the random checkpoint")
        .add(draft_config, "draft-config", "draft config.json for the random draft (its shape must fit the target)")
        .add(blocks, "blocks", "block sizes to measure")
        .add(new_tokens, "new-tokens", "tokens each generation makes")
        .add(repeats, "repeats", "timed draft and verify passes per block size")
        .add(threads, "threads", "CPU threads (0: one per core)")
        .add(json, "json", "write the results as JSON here");
  }
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::filesystem::path checkpoint(const std::string& given, const std::string& config, const std::string& name) {
  if (!given.empty()) return given;
  const auto dir = std::filesystem::temp_directory_path() / ("ultraserve-speculative-bench-" + name);
  RandomCheckpointOptions o;
  o.config_json = config;
  o.out_dir = dir;
  o.seed = 1;
  write_random_checkpoint(o);
  return dir;
}

}  // namespace
}  // namespace ultraserve

int main(int argc, char** argv) {
  using namespace ultraserve;
  BenchOptions o;
  return run_command(o, std::vector<std::string>(argv + 1, argv + argc), [&] {
    const LoadedModel target = load_model(checkpoint(o.model, o.config, "target"));
    ThreadPool pool(static_cast<size_t>(o.threads));
    CpuModel model(target.config, target.weights, pool);
    DFlashDraft draft(load_draft(checkpoint(o.draft, o.draft_config, "draft")), model, pool);
    model.set_taps(draft.target_layers());

    GenerationRequest request;
    request.prompt = target.tokenizer.encode("Translate to French: the house is red, and the garden is green.");
    request.max_tokens = static_cast<int>(o.new_tokens);
    const int context = static_cast<int>(request.prompt.size()) + request.max_tokens;
    auto nothing = [](std::string_view) {};

    const GenerationStats plain = generate(model, target.tokenizer, request, nothing);
    const double plain_tps = plain.decode_tokens_per_second();
    std::printf("target %s (%d layers), draft %d layers / %zu taps, %zu threads, prompt %zu tokens\n",
                o.model.empty() ? o.config.c_str() : o.model.c_str(), target.config.num_hidden_layers,
                draft.config().num_hidden_layers, draft.target_layers().size(), pool.size(), request.prompt.size());
    std::printf("plain decode: %.1f tokens/s (%.2f ms/token)\n\n", plain_tps, 1e3 / plain_tps);
    std::printf("| B | draft ms | verify ms | verify / decode step | tau | tokens/s | vs plain |\n|---|---|---|---|---|---|---|\n");

    std::vector<std::string> rows;
    for (int64_t b : o.blocks) {
      const int block = static_cast<int>(b);
      // One round's two passes, timed on the prompt's context.
      PagedKvCache cache(target.config, context / 16 + 2, 16), draft_cache(draft.config(), context / 16 + 2, 16);
      double draft_s = 0, verify_s = 0;
      for (int r = 0; r < o.repeats; ++r) {
        KvSequence seq, ctx;
        cache.reserve(seq, context);
        draft_cache.reserve(ctx, context);
        std::vector<float> taps;
        SequenceStep prefill{&seq, request.prompt};
        model.forward(cache, {&prefill, 1}, &taps);
        draft.append_context(draft_cache, ctx, taps);
        auto t0 = Clock::now();
        std::vector<int32_t> tokens{request.prompt.back()};
        for (int32_t t : draft.propose(draft_cache, ctx, tokens[0], block)) tokens.push_back(t);
        draft_s += seconds_since(t0) / o.repeats;
        t0 = Clock::now();
        SequenceStep verify{&seq, tokens, true};
        model.forward(cache, {&verify, 1}, &taps);
        verify_s += seconds_since(t0) / o.repeats;
        cache.release(seq);
        draft_cache.release(ctx);
      }
      DFlashProposer proposer(draft, context);
      const SpeculativeStats s = speculative_generate(model, proposer, target.tokenizer, request, block, nothing);
      const double tps = s.decode_tokens_per_second();
      std::printf("| %d | %.2f | %.2f | %.2f | %.2f | %.1f | %.2fx |\n", block, draft_s * 1e3, verify_s * 1e3,
                  verify_s * plain_tps, s.mean_acceptance(), tps, tps / plain_tps);
      std::ostringstream j;
      j << "{\"block\": " << block << ", \"draft_ms\": " << draft_s * 1e3 << ", \"verify_ms\": " << verify_s * 1e3
        << ", \"tau\": " << s.mean_acceptance() << ", \"tokens_per_s\": " << tps << "}";
      rows.push_back(j.str());
    }
    if (!o.json.empty()) {
      std::ofstream out(o.json);
      out << "{\"benchmark\": \"speculative_cpu\", \"plain_tokens_per_s\": " << plain_tps << ", \"runs\": [";
      for (size_t i = 0; i < rows.size(); ++i) out << (i ? ", " : "") << rows[i];
      out << "]}\n";
    }
  });
}
