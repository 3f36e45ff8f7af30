#include <iostream>

#include "config/command_options.h"
#include "model/random_checkpoint.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

struct MakeCheckpointOptions : CommandOptions {
  std::string config, out, tokenizer, dtype = "bf16";
  int64_t seed = 0;
  int64_t shard_mb = 4096;

  MakeCheckpointOptions()
      : CommandOptions("ultraserve make-checkpoint --config FILE --out DIR [--seed N] [--dtype bf16|f16|f32] "
                       "[--shard-mb N] [--tokenizer FILE]") {
    options()
        .add(config, "config", "config.json describing the architecture (required)")
        .add(out, "out", "output directory (required)")
        .add(seed, "seed", "random seed (same seed, same weights)")
        .add(dtype, "dtype", "weight dtype: bf16, f16 or f32")
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
    if (dtype == "bf16") o.dtype = DType::BF16;
    else if (dtype == "f16") o.dtype = DType::F16;
    else if (dtype == "f32") o.dtype = DType::F32;
    else throw UsageError("--dtype must be bf16, f16 or f32 (got '" + dtype + "')");
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
