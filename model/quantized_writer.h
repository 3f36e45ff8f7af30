#pragma once
// Writing quantized matrices into safetensors files (make-checkpoint, quantize): the quantizers
// split over a thread pool, and a filler for write_safetensors that quantizes each matrix once
// for all of its tensors — MXFP4 .blocks + .scales (model/mxfp4_tensors.h) or FP8 .weight +
// .weight_scale_inv (model/fp8_tensors.h).

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "model/fp8.h"
#include "model/model_config.h"
#include "model/mxfp4.h"
#include "model/safetensors.h"
#include "model/thread_pool.h"

namespace ultraserve {

// Throws ModelError (naming `config_source`) unless the config has routed experts whose
// matrices can be MXFP4: hidden_size and moe_intermediate_size multiples of 32.
void require_mxfp4_experts(const ModelConfig& config, const std::string& config_source);

// quantize_mxfp4 and quantize_fp8 with the rows split over a thread pool (same bytes as the serial ones).
Mxfp4Matrix quantize_mxfp4(ThreadPool& pool, std::span<const float> values, int rows, int cols);
Fp8Matrix quantize_fp8(ThreadPool& pool, std::span<const float> values, int rows, int cols, Fp8BlockSize block);

// Fills the quantized tensors write_safetensors asks for: U8 .blocks/.scales pairs (MXFP4), and
// F8_E4M3 weights with their F32 .weight_scale_inv (FP8, in `fp8_block`s). A matrix's tensors
// are written one after the other (an FP8 scale right after its weight), so the matrix
// quantized for the first is kept for the rest.
class QuantizedTensorFiller {
 public:
  // The fp32 values, row-major, of the [rows, cols] matrix a ".weight" name stands for.
  using Source = std::function<std::vector<float>(const std::string& weight_name, int rows, int cols)>;
  // Told of each matrix once, when it is quantized, with the values it came from and what the
  // quantized form dequantizes to.
  using Observer = std::function<void(const std::string& weight_name, std::span<const float> values,
                                      std::span<const float> dequantized)>;

  QuantizedTensorFiller(ThreadPool& pool, Source source, Fp8BlockSize fp8_block = {}, Observer observer = {});

  // Fills `out` and returns true when `spec` is one of those tensors; false otherwise.
  bool fill(const TensorSpec& spec, std::span<std::byte> out);

 private:
  using Quantized = std::variant<Mxfp4Matrix, Fp8Matrix>;
  template <typename Format>
  const Format& quantized(const std::string& weight_name, int rows, int cols);

  ThreadPool& pool_;
  Source source_;
  Fp8BlockSize fp8_block_;
  Observer observer_;
  std::string cached_name_;
  std::optional<Quantized> cached_;
};

}  // namespace ultraserve
