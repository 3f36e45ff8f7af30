// GPU decode speed of a model shape, next to its floor, with random weights made on the device
// (a Qwen3-30B-A3B shape needs no 60 GB checkpoint).
//
// Measured, in one run on one GPU:
//   - the floor's denominators: streaming read bandwidth (a read-only kernel) and device-to-device
//     copy bandwidth (bytes read + written);
//   - batch-1 decode ms/token at each --contexts length, next to the floor: the bytes a step must
//     read (weights of the active experts, attention, LM head, the KV of the context) / bandwidth;
//   - decode throughput at each --batches size;
//   - one multi-token pass over each --pass-tokens count (the price of verifying a speculative
//     block: with 128 experts a 16-token pass reads many more experts than one token does);
//   - for a hybrid model (MiMo-V2), the KV bytes a token of context costs, against the same
//     model with full attention on every layer.
// --layers cuts the shape to its first N layers (a model too large for one GPU: per-layer costs
// are what scale).
// Each timing is host wall-clock over --steps calls of GpuModel::run (graph replay, D2H of the
// sampled ids, synchronisation): what a serving step costs. Output: a table, and JSON.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "config/command_options.h"
#include "gpu/device_info.h"
#include "gpu/gpu_model.h"
#include "model/kv_block_pool.h"
#include "model/kv_cache.h"

namespace ultraserve {
namespace {

struct BenchOptions : CommandOptions {
  std::string config = "config/models/qwen3-30b-a3b.json", experts = "mxfp4", json;
  std::vector<int64_t> contexts{128, 4096}, batches{8, 32, 128}, pass_tokens{1, 2, 4, 8, 16};
  int64_t steps = 50, batch_context = 512, seed = 1, gemv_rows = gpu::GpuModelOptions{}.gemv_max_rows, layers = 0,
          combine_max_splits = gpu::GpuModelOptions{}.attention_combine_max_splits,
          split_positions = gpu::GpuModelOptions{}.attention_split_positions,
          persistent = gpu::GpuModelOptions{}.persistent_decode;
  bool fp8_tensor_cores = false;
  BenchOptions()
      : CommandOptions("gpu_decode_bench [--config FILE] [--experts mxfp4|bf16] [--contexts '[128,4096]'] "
                       "[--batches '[8,32,128]'] [--pass-tokens '[1,2,4,8,16]'] [--steps N] [--json FILE]") {
    options()
        .add(config, "config", "config.json of the model shape")
        .add(layers, "layers", "run only the first N layers of the shape (0: all)")
        .add(experts, "experts", "expert weight format: mxfp4 or bf16")
        .add(contexts, "contexts", "batch-1 decode context lengths")
        .add(batches, "batches", "decode batch sizes")
        .add(batch_context, "batch-context", "context length of each sequence in the batch runs")
        .add(pass_tokens, "pass-tokens", "multi-token pass sizes")
        .add(steps, "steps", "timed calls per measurement")
        .add(seed, "seed", "weights seed")
        .add(gemv_rows, "gemv-rows", "passes of up to this many rows use our GEMV, larger ones cuBLAS (0..8)")
        .add(fp8_tensor_cores, "fp8-tensor-cores", "FP8 projections of larger passes on FP8 tensor cores")
        .add(combine_max_splits, "combine-max-splits", "rows of up to this many attention splits merged by the combine kernel")
        .add(split_positions, "split-positions", "the fewest context positions an attention split gets")
        .add(persistent, "persistent", "1: batch-1 decode as the gapless persistent step where it can; 0: kernel by kernel")
        .add(json, "json", "write the results as JSON here");
  }
};

using Clock = std::chrono::steady_clock;

class Bench {
 public:
  Bench(gpu::GpuModel& model, int steps)
      : model_(model), steps_(steps), pool_(model.info().kv_blocks, model.info().kv_block_size, model.info().kv_rings) {}

  // Seconds per call of `rows_per_sequence` new rows for each of `batch` sequences that already
  // hold `context` positions. Every row is an output (decode, or a verify pass), so passes
  // replay CUDA graphs where a bucket fits.
  double seconds_per_pass(int batch, int context, int rows_per_sequence) {
    std::vector<KvSequence> kv(batch);
    for (KvSequence& s : kv)
      if (!pool_.reserve(s, context + (steps_ + 4) * rows_per_sequence))
        throw std::runtime_error("KV pool too small for this measurement");
    std::vector<int32_t> next(batch * rows_per_sequence, 1);
    double seconds = 0;
    for (int step = -3; step < steps_; ++step) {  // three warm-up calls (graph capture)
      gpu::PassRequest pass;
      for (int s = 0; s < batch; ++s) {
        pass.tables.emplace_back(kv[s].blocks);
        pass.rings.push_back(kv[s].ring);
        for (int i = 0; i < rows_per_sequence; ++i) {
          pass.tokens.push_back(next[s * rows_per_sequence + i]);
          pass.positions.push_back(context + i + (rows_per_sequence == 1 ? step + 3 : 0));
          pass.table_of.push_back(s);
          pass.output_rows.push_back(int(pass.output_rows.size()));
        }
      }
      const auto t0 = Clock::now();
      next = model_.run(pass).argmax;
      if (step >= 0) seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    for (KvSequence& s : kv) pool_.release(s);
    return seconds / steps_;
  }

 private:
  gpu::GpuModel& model_;
  int steps_;
  KvBlockPool pool_;
};

std::string list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return "[" + out + "]";
}

}  // namespace
}  // namespace ultraserve

int main(int argc, char** argv) {
  using namespace ultraserve;
  BenchOptions o;
  return run_command(o, std::vector<std::string>(argv + 1, argv + argc), [&] {
    ModelConfig config = ModelConfig::load(o.config);
    if (o.layers > 0 && o.layers < config.num_hidden_layers) {
      config.num_hidden_layers = static_cast<int>(o.layers);
      if (config.sliding && !config.sliding->layers.empty()) config.sliding->layers.resize(size_t(o.layers));
    }
    const auto probe = gpu::probe_devices();
    if (probe.devices.empty()) throw std::runtime_error("no GPU: " + probe.error);
    const double read_bw = gpu::measure_read_bandwidth(0, size_t{2} << 30);
    const double copy_bw = gpu::measure_copy_bandwidth(0, size_t{2} << 30);

    const int max_batch = static_cast<int>(*std::max_element(o.batches.begin(), o.batches.end()));
    const int max_pass = static_cast<int>(*std::max_element(o.pass_tokens.begin(), o.pass_tokens.end()));
    const int max_context = static_cast<int>(*std::max_element(o.contexts.begin(), o.contexts.end()));
    gpu::GpuModelOptions mo;
    mo.experts = o.experts == "bf16" ? gpu::ExpertFormat::bf16 : gpu::ExpertFormat::mxfp4;
    mo.max_rows = std::max(max_batch, max_pass);
    mo.max_sequences = std::max(max_batch, 2);  // and the stage timing's sequence
    mo.max_context = std::max<int>(max_context, o.batch_context) + (o.steps + 8) * max_pass;
    mo.graph_batch_sizes = {1, 2, 4, 8, 16, 32, 64, 128};
    mo.gemv_max_rows = static_cast<int>(o.gemv_rows);
    mo.fp8_tensor_cores = o.fp8_tensor_cores;
    mo.attention_combine_max_splits = static_cast<int>(o.combine_max_splits);
    mo.attention_split_positions = static_cast<int>(o.split_positions);
    mo.persistent_decode = o.persistent != 0;
    const size_t blocks_needed =
        size_t(max_batch) * ((o.batch_context + o.steps + 8) / mo.kv_block_size + 2) + mo.max_context / mo.kv_block_size + 2;
    mo.kv_blocks = static_cast<int>(blocks_needed);
    const auto load0 = Clock::now();
    auto model = gpu::GpuModel::random(config, static_cast<uint64_t>(o.seed), mo);
    const double load_s = std::chrono::duration<double>(Clock::now() - load0).count();
    const gpu::GpuModelInfo& info = model->info();
    Bench bench(*model, static_cast<int>(o.steps));

    std::printf("%s | %s, %d layers, %d experts top-%d, experts %s | weights %.2f GB (made in %.1f s)\n",
                info.device_name.c_str(), o.config.c_str(), config.num_hidden_layers, config.num_experts,
                config.num_experts_per_tok, gpu::to_string(info.experts).c_str(), info.weight_bytes / 1e9, load_s);
    std::printf("read bandwidth %.0f GB/s, copy bandwidth %.0f GB/s (read + write)\n", read_bw / 1e9, copy_bw / 1e9);
    std::printf("one-row passes: %s\n\n", info.decode_step.c_str());

    std::vector<std::string> rows;
    std::printf("| batch-1 decode | context | MB read/token | floor ms (read bw) | floor ms (copy bw) | ms/token | tokens/s | of floor |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    for (int64_t context : o.contexts) {
      const double s = bench.seconds_per_pass(1, static_cast<int>(context), 1);
      const double bytes = static_cast<double>(model->decode_bytes(static_cast<int>(context)));
      const double floor_read = bytes / read_bw, floor_copy = bytes / copy_bw;
      std::printf("| | %ld | %.1f | %.3f | %.3f | %.3f | %.0f | %.0f%% |\n", long(context), bytes / 1e6, floor_read * 1e3,
                  floor_copy * 1e3, s * 1e3, 1 / s, 100 * floor_read / s);
      std::ostringstream j;
      j << "{\"kind\": \"decode\", \"batch\": 1, \"context\": " << context << ", \"bytes_per_token\": " << bytes
        << ", \"floor_ms_read_bw\": " << floor_read * 1e3 << ", \"floor_ms_copy_bw\": " << floor_copy * 1e3
        << ", \"ms_per_token\": " << s * 1e3 << "}";
      rows.push_back(j.str());
    }
    // Where a batch-1 decode step at the first context goes, stage by stage.
    std::vector<std::string> stages;
    {
      KvBlockPool pool(info.kv_blocks, info.kv_block_size, info.kv_rings);
      KvSequence seq;
      pool.reserve(seq, static_cast<int>(o.contexts.front()) + 1);
      gpu::PassRequest pass;
      pass.tables.emplace_back(seq.blocks);
      pass.rings.push_back(seq.ring);
      pass.tokens = {1};
      pass.positions = {static_cast<int32_t>(o.contexts.front())};
      pass.table_of = {0};
      pass.output_rows = {0};
      std::printf("\n| decode stage (batch 1, context %ld, no graph) | launches | us/step |\n|---|---|---|\n",
                  long(o.contexts.front()));
      double total = 0;
      for (const gpu::StageTime& t : model->stage_times(pass, 10)) {
        std::printf("| %s | %d | %.1f |\n", t.stage.c_str(), t.calls, t.seconds * 1e6);
        total += t.seconds;
        std::ostringstream j;
        j << "{\"stage\": \"" << t.stage << "\", \"launches\": " << t.calls << ", \"us\": " << t.seconds * 1e6 << "}";
        stages.push_back(j.str());
      }
      std::printf("| total | | %.1f |\n", total * 1e6);
    }
    std::printf("\n| batched decode | batch | context | ms/step | tokens/s |\n|---|---|---|---|---|\n");
    for (int64_t batch : o.batches) {
      const double s = bench.seconds_per_pass(static_cast<int>(batch), static_cast<int>(o.batch_context), 1);
      std::printf("| | %ld | %ld | %.3f | %.0f |\n", long(batch), long(o.batch_context), s * 1e3, batch / s);
      std::ostringstream j;
      j << "{\"kind\": \"decode\", \"batch\": " << batch << ", \"context\": " << o.batch_context
        << ", \"ms_per_step\": " << s * 1e3 << ", \"tokens_per_s\": " << batch / s << "}";
      rows.push_back(j.str());
    }
    std::printf("\n| multi-token pass | tokens | context | ms/pass | ms/token |\n|---|---|---|---|---|\n");
    for (int64_t tokens : o.pass_tokens) {
      const double s = bench.seconds_per_pass(1, 128, static_cast<int>(tokens));
      std::printf("| | %ld | 128 | %.3f | %.3f |\n", long(tokens), s * 1e3, s * 1e3 / tokens);
      std::ostringstream j;
      j << "{\"kind\": \"pass\", \"tokens\": " << tokens << ", \"context\": 128, \"ms_per_pass\": " << s * 1e3 << "}";
      rows.push_back(j.str());
    }
    std::string kv_json = "null";
    if (config.sliding) {  // bf16 keys and values per position of context, and per live sequence
      ModelConfig everywhere_full = config;
      everywhere_full.sliding.reset();
      const double hybrid = 2.0 * config.paged_kv_values_per_position(), full = 2.0 * everywhere_full.paged_kv_values_per_position();
      double ring = 0;
      int sliding_layers = 0;
      for (int l = 0; l < config.num_hidden_layers; ++l)
        if (config.is_sliding_layer(l)) {
          ++sliding_layers;
          ring += 2.0 * (config.k_dim(l) + config.v_dim(l)) * (config.sliding->window + PagedKvCache::kMaxRollback);
        }
      std::printf("\n| KV cache (bf16) | per token of context | per sequence (rings: window + 64) | at 4,096 tokens | at 32,768 tokens |\n|---|---|---|---|---|\n");
      std::printf("| hybrid (%d of %d layers sliding, window %d) | %.1f KB | %.1f MB | %.1f MB | %.1f MB |\n",
                  sliding_layers, config.num_hidden_layers, config.sliding->window, hybrid / 1e3, ring / 1e6,
                  (hybrid * 4096 + ring) / 1e6, (hybrid * 32768 + ring) / 1e6);
      std::printf("| full attention on every layer | %.1f KB | 0 | %.1f MB | %.1f MB |\n", full / 1e3, full * 4096 / 1e6,
                  full * 32768 / 1e6);
      std::ostringstream j;
      j << "{\"hybrid_bytes_per_position\": " << hybrid << ", \"hybrid_ring_bytes_per_sequence\": " << ring
        << ", \"full_attention_bytes_per_position\": " << full << "}";
      kv_json = j.str();
    }
    if (!o.json.empty()) {
      std::ofstream out(o.json);
      out << "{\"benchmark\": \"gpu_decode\", \"device\": \"" << info.device_name << "\", \"config\": \"" << o.config
          << "\", \"experts\": \"" << gpu::to_string(info.experts) << "\", \"weight_bytes\": " << info.weight_bytes
          << ", \"read_bandwidth_bytes_per_s\": " << read_bw << ", \"copy_bandwidth_bytes_per_s\": " << copy_bw
          << ", \"layers\": " << config.num_hidden_layers << ", \"decode_step\": \"" << info.decode_step
          << "\", \"runs\": " << list(rows)
          << ", \"decode_stages\": " << list(stages) << ", \"kv_cache\": " << kv_json << "}\n";
    }
  });
}
