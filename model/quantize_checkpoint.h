#pragma once
// `ultraserve quantize`: rewrites an HF checkpoint with every routed expert's matrix as MXFP4
// (.blocks + .scales, model/mxfp4.h) and every other tensor byte for byte. It streams: the
// input is mmap'ed and the output written tensor by tensor, so memory holds one tensor at a
// time, never the model. Shards keep their names and their tensors' order; the other files of
// the checkpoint directory (config.json, tokenizer files, generation_config.json, ...) are
// copied as they are, since the loader tells MXFP4 experts by their tensor names.
//
// Experts stored as block-scaled FP8 are dequantized and quantized again (their
// .weight_scale_inv goes with them); FP8 tensors outside the experts stay FP8, and config.json's
// quantization_config with them.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/quantization_error.h"

namespace ultraserve {

struct QuantizeProgress {
  size_t tensors_done = 0, tensors_total = 0;  // output tensors
  uint64_t bytes_done = 0, bytes_total = 0;     // output weight bytes
  const std::string* tensor = nullptr;          // the one just written
};

struct QuantizeOptions {
  std::filesystem::path model_dir, out_dir;
  bool force = false;  // write into an out_dir that exists and is not empty
  size_t threads = 0;  // 0: one per core
  std::function<void(const QuantizeProgress&)> progress;
};

struct QuantizeReport {
  std::map<int, QuantizationError> layers;  // dequantized vs original experts, by decoder layer
  QuantizationError overall;
  uint64_t bytes_in = 0, bytes_out = 0;     // weight bytes
  std::vector<std::string> copied_files;    // besides the weights
};

// Throws ModelError when the input is not a valid checkpoint (the loader's checks), has no
// routed experts, experts MXFP4 cannot hold (widths not multiples of 32) or already MXFP4;
// when out_dir is the input, or exists and is not empty without `force`.
QuantizeReport quantize_checkpoint(const QuantizeOptions& options);

}  // namespace ultraserve
