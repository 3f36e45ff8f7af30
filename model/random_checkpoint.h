#pragma once
// Writes a random-weight checkpoint in HF layout for any supported config.json: the config
// as given (with a quantization_config added for FP8), the weights as safetensors (sharded with
// an index when larger than a shard), and a tokenizer.json. Tests and GPU benchmarks use it to
// get a model of any shape.
//
// Weights are seeded per tensor and per chunk, so the same (config, seed) gives the same bytes
// on any machine and any thread count. Scales keep activations O(1) at any width, so greedy
// continuations are decided by clear margins rather than by rounding:
//   embeddings ~ N(0, 1), linear [out, in] ~ N(0, 1/in), norm weights ~ 1 + 0.1 N(0, 1).

#include <cstdint>
#include <filesystem>
#include <optional>

#include "model/dtype.h"
#include "model/weights.h"

namespace ultraserve {

struct RandomCheckpointOptions {
  std::filesystem::path config_json;
  std::filesystem::path out_dir;
  uint64_t seed = 0;
  // F8_E4M3: the linear layers' weights (WeightSpec::linear) as block-scaled FP8 (an F8_E4M3
  // .weight + F32 .weight_scale_inv, model/fp8_tensors.h) quantized from the values the BF16
  // checkpoint of the same seed holds, every other tensor BF16, and config.json with a
  // quantization_config (weight_block_size [128, 128]) unless it has one already.
  DType dtype = DType::BF16;
  // Routed experts' matrices: in `expert_dtype` (default: `dtype`), or with `experts` mxfp4 as
  // .blocks/.scales quantized from those values (from the BF16 ones when that dtype is FP8), so
  // the bytes equal what `ultraserve quantize` makes of the checkpoint written without it.
  std::optional<DType> expert_dtype;
  ExpertStorage experts = ExpertStorage::dense;
  uint64_t shard_bytes = 4ull << 30;
  // Copied as the checkpoint's tokenizer; without it a byte-level tokenizer with 256 byte
  // tokens and the ChatML special tokens is written (the vocabulary must have room for it).
  std::optional<std::filesystem::path> tokenizer_json;
};

// Returns the total bytes of weights written.
uint64_t write_random_checkpoint(const RandomCheckpointOptions& options);

}  // namespace ultraserve
