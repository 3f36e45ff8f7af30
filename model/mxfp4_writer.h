#pragma once
// Writing MXFP4 matrices into safetensors files (make-checkpoint --experts mxfp4, quantize):
// a filler for write_safetensors that quantizes each matrix once for its two tensors.

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/mxfp4.h"
#include "model/safetensors.h"
#include "model/thread_pool.h"

namespace ultraserve {

// Throws ModelError (naming `config_source`) unless the config has routed experts whose
// matrices can be MXFP4: hidden_size and moe_intermediate_size multiples of 32.
void require_mxfp4_experts(const ModelConfig& config, const std::string& config_source);

// quantize_mxfp4 with the rows split over a thread pool (same bytes as the serial one).
Mxfp4Matrix quantize_mxfp4(ThreadPool& pool, std::span<const float> values, int rows, int cols);

// Fills the .blocks and .scales tensors write_safetensors asks for. A matrix's two tensors are
// written one after the other, so the matrix quantized for the first is kept for the second.
class Mxfp4TensorFiller {
 public:
  // The fp32 values, row-major, of the [rows, cols] matrix a ".weight" name stands for.
  using Source = std::function<std::vector<float>(const std::string& weight_name, int rows, int cols)>;
  // Told of each matrix once, when it is quantized, with the values it came from.
  using Observer =
      std::function<void(const std::string& weight_name, std::span<const float> values, const Mxfp4Matrix& q)>;

  Mxfp4TensorFiller(ThreadPool& pool, Source source, Observer observer = {});

  // Fills `out` and returns true when `spec` is a .blocks or .scales tensor; false otherwise.
  bool fill(const TensorSpec& spec, std::span<std::byte> out);

 private:
  const Mxfp4Matrix& quantized(const std::string& weight_name, int rows, int cols);

  ThreadPool& pool_;
  Source source_;
  Observer observer_;
  std::string cached_name_;
  Mxfp4Matrix cached_;
};

}  // namespace ultraserve
