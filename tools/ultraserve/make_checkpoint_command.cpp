#include <iostream>

#include "config/command_options.h"
#include "model/random_checkpoint.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

// fp8: block-scaled FP8 E4M3 linear weights (the other tensors BF16), as DeepSeek-V3 publishes them.
DType weight_dtype(const std::string& option, const std::string& value, const std::string& choices) {
  if (value == "bf16") return DType::BF16;
  if (value == "f16") return DType::F16;
  if (value == "f32") return DType::F32;
  if (value == "fp8") return DType::F8_E4M3;
  throw UsageError(option + " must be " + choices + " (got '" + value + "')");
}

struct MakeCheckpointOptions : CommandOptions {
  std::string config, out, tokenizer, dtype = "bf16", experts;
  int64_t seed = 0;
  int64_t shard_mb = 4096;

  MakeCheckpointOptions()
      : CommandOptions("ultraserve make-checkpoint --config FILE --out DIR [--seed N] [--dtype bf16|f16|f32|fp8] "
                       "[--experts bf16|f16|f32|fp8|mxfp4] [--shard-mb N] [--tokenizer FILE]") {
    options()
        .add(config, "config", "config.json describing the architecture (required)")
        .add(out, "out", "output directory (required)")
        .add(seed, "seed", "random seed (same seed, same weights)")
        .add(dtype, "dtype", "weight dtype: bf16, f16, f32 or fp8 (linear weights block-scaled FP8, the rest bf16)")
        .add(experts, "experts", "routed experts' storage: bf16, f16, f32, fp8 or mxfp4 (default: --dtype)")
        .add(shard_mb, "shard-mb", "largest safetensors shard in MiB; bigger checkpoints get an index")
        .add(tokenizer, "tokenizer", "tokenizer.json to copy (default: a 256-byte byte-level tokenizer)");
  }

  RandomCheckpointOptions validated() const {
    if (config.empty()) throw UsageError("--config is required");
    if (out.empty()) throw UsageError("--out is required");
    if (shard_mb <= 0) throw UsageError("--shard-mb must be positive");
    RandomCheckpointOptions o;
    o.config_json = config;
    o.out_dir = out;
    o.seed = static_cast<uint64_t>(seed);
    o.shard_bytes = static_cast<uint64_t>(shard_mb) << 20;
    o.dtype = weight_dtype("--dtype", dtype, "bf16, f16, f32 or fp8");
    if (experts == "mxfp4") o.experts = ExpertStorage::mxfp4;
    else if (!experts.empty()) o.expert_dtype = weight_dtype("--experts", experts, "bf16, f16, f32, fp8 or mxfp4");
    if (!tokenizer.empty()) o.tokenizer_json = tokenizer;
    return o;
  }
};

}  // namespace

int make_checkpoint_command(const Args& args) {
  MakeCheckpointOptions opts;
  return run_command(opts, args, [&] {
    const uint64_t bytes = write_random_checkpoint(opts.validated());
    std::cerr << "wrote " << opts.out << " (" << bytes / (1 << 20) << " MiB of weights)\n";
  });
}

}  // namespace ultraserve
