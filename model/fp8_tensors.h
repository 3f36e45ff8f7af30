#pragma once
// Block-scaled FP8 matrices inside a checkpoint, in DeepSeek-V3's published layout: the matrix's
// own ".weight" tensor holds the E4M3 codes (dtype F8_E4M3, the matrix's shape) and
// ".weight_scale_inv" beside it the block scales (F32, or BF16 as some exports write them;
// shape [ceil(rows / B0), ceil(cols / B1)] for config.json's weight_block_size [B0, B1]).
// The format itself is model/fp8.h's.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/fp8.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace ultraserve {

// "x.weight" -> "x.weight_scale_inv"; and back (nullopt for other names).
std::string fp8_scale_name(const std::string& weight_name);
std::optional<std::string> fp8_weight_name(const std::string& tensor_name);

// The two tensors storing a [rows, cols] matrix, codes first (the order they are written).
std::vector<TensorSpec> fp8_tensor_specs(const std::string& weight_name, int64_t rows, int64_t cols,
                                         Fp8BlockSize block);

// A checkpoint's FP8 matrix: the codes view the checkpoint's mmap'ed bytes (valid while the
// CheckpointTensors lives); the scales are copied as fp32 (they are 1/16384 of the matrix).
struct Fp8Tensor {
  int rows = 0, cols = 0;
  Fp8BlockSize block;
  std::span<const uint8_t> codes;
  std::vector<float> scale_inv;
  Fp8View view() const { return {rows, cols, block, codes, scale_inv}; }
};

// The FP8 form of `weight_name`: nullopt when the checkpoint has that tensor in another dtype
// (or not at all) and no scale tensor for it. Throws ModelError, naming the file and tensor, when
// the weight is F8_E4M3 but config.json has no quantization_config (`fp8` empty), its scale
// tensor is missing, not F32/BF16, not the shape the block size implies, or holds a non-finite
// or negative scale; when the weight is not 2-D; or when a scale tensor sits beside a weight that is
// not F8_E4M3 (or is missing).
std::optional<Fp8Tensor> find_fp8(const CheckpointTensors& tensors, const std::string& weight_name,
                                  const std::optional<ModelConfig::Fp8Quantization>& fp8);

}  // namespace ultraserve
