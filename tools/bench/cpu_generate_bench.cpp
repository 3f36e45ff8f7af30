// CPU decode speed of the generate loop, next to its floor.
//
// At batch 1 a decode step reads every active weight once: the attention and dense weights,
// the router, the top-k experts of each MoE layer, and the LM head, in fp32. The floor is
// those bytes over the memory bandwidth measured here, in the same run (a large memcpy,
// counting bytes read plus written). Output: a table, and JSON with --json FILE.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>

#include "config/command_options.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/random_checkpoint.h"

namespace ultraserve {
namespace {

struct BenchOptions : CommandOptions {
  std::string model, config = "config/models/small-qwen3-moe.json", json;
  int64_t prompt_tokens = 32, new_tokens = 64;
  std::vector<int64_t> threads{1, 2};
  BenchOptions()
      : CommandOptions("cpu_generate_bench [--model DIR | --config FILE] [--prompt-tokens N] [--new-tokens N] "
                       "[--threads '[1,2]'] [--json FILE]") {
    options()
        .add(model, "model", "checkpoint directory (default: a random checkpoint of --config)")
        .add(config, "config", "config.json for the random checkpoint")
        .add(prompt_tokens, "prompt-tokens", "prompt length")
        .add(new_tokens, "new-tokens", "tokens to generate")
        .add(threads, "threads", "thread counts to measure")
        .add(json, "json", "write the results as JSON here");
  }
};

// The best of several parallel memcpys over 1 GiB, counting bytes read plus written. One thread
// cannot saturate a server's memory system, so the floor uses every thread the bench uses.
double memory_bandwidth(size_t threads) {
  const size_t bytes = size_t{1} << 30;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  ThreadPool pool(threads);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(bytes >> 20, [&](size_t begin, size_t end) {
      std::memcpy(b.data() + (begin << 20), a.data() + (begin << 20), (end - begin) << 20);
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * bytes / s);
    a[i] = b[bytes - 1 - i];  // keep the copies observable
  }
  return best;
}

// fp32 bytes one decode token reads at batch 1 (KV cache reads excluded: small at this context).
double bytes_per_token(const ModelConfig& c) {
  const double h = c.hidden_size;
  double per_layer_attn = h * (c.q_dim() + 2.0 * c.kv_dim()) + c.q_dim() * h + 4.0 * h;
  double total = c.vocab_size * h;  // LM head (the embedding row read is negligible)
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    total += per_layer_attn;
    total += c.is_moe_layer(l) ? c.num_experts * h + c.num_experts_per_tok * 3.0 * h * c.moe_intermediate_size
                               : 3.0 * h * c.intermediate_size;
  }
  return total * sizeof(float);
}

}  // namespace
}  // namespace ultraserve

int main(int argc, char** argv) {
  using namespace ultraserve;
  BenchOptions o;
  return run_command(o, std::vector<std::string>(argv + 1, argv + argc), [&] {
    std::filesystem::path dir = o.model;
    std::optional<std::filesystem::path> scratch;
    if (dir.empty()) {
      scratch = std::filesystem::temp_directory_path() / "ultraserve-bench-model";
      RandomCheckpointOptions r;
      r.config_json = o.config;
      r.out_dir = *scratch;
      r.seed = 1;
      write_random_checkpoint(r);
      dir = *scratch;
    }
    LoadedModel loaded = load_model(dir);
    const double bandwidth = memory_bandwidth(static_cast<size_t>(*std::max_element(o.threads.begin(), o.threads.end())));
    const double bytes = bytes_per_token(loaded.config);
    const double floor_ms = bytes / bandwidth * 1e3;

    GenerationRequest request;
    for (int i = 0; i < o.prompt_tokens; ++i) request.prompt.push_back((i * 7919) % 256);
    request.max_tokens = static_cast<int>(o.new_tokens);  // no stop tokens: always the full count

    std::printf("model %s: %.1f MB read per decode token (fp32); memory bandwidth %.1f GB/s (all threads) -> floor %.2f ms/token\n",
                dir.c_str(), bytes / 1e6, bandwidth / 1e9, floor_ms);
    std::printf("| threads | prefill tok/s | decode tok/s | decode ms/token | floor ms/token | of floor |\n");
    std::printf("|---|---|---|---|---|---|\n");
    std::string rows;
    for (int64_t t : o.threads) {
      ThreadPool pool(static_cast<size_t>(t));
      CpuModel model(loaded.config, loaded.weights, pool);
      GenerationStats s = generate(model, loaded.tokenizer, request, [](std::string_view) {});
      const double ms = 1e3 / s.decode_tokens_per_second();
      std::printf("| %ld | %.1f | %.1f | %.2f | %.2f | %.0f%% |\n", static_cast<long>(t),
                  s.prompt_tokens / s.prefill_seconds, s.decode_tokens_per_second(), ms, floor_ms, 100 * floor_ms / ms);
      char row[256];
      std::snprintf(row, sizeof row,
                    "%s{\"threads\": %ld, \"prefill_tokens_per_s\": %.2f, \"decode_tokens_per_s\": %.2f, "
                    "\"decode_ms_per_token\": %.3f}",
                    rows.empty() ? "" : ", ", static_cast<long>(t), s.prompt_tokens / s.prefill_seconds,
                    s.decode_tokens_per_second(), ms);
      rows += row;
    }
    if (!o.json.empty()) {
      std::ofstream out(o.json);
      out << "{\"benchmark\": \"cpu_generate\", \"model\": \"" << dir.string() << "\", \"prompt_tokens\": "
          << o.prompt_tokens << ", \"new_tokens\": " << o.new_tokens << ", \"bytes_per_token\": " << bytes
          << ", \"memory_bandwidth_bytes_per_s\": " << bandwidth << ", \"floor_ms_per_token\": " << floor_ms
          << ", \"runs\": [" << rows << "]}\n";
    }
    if (scratch) std::filesystem::remove_all(*scratch);
  });
}
