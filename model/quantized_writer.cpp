#include "model/quantized_writer.h"

#include <cstring>
#include <stdexcept>

#include "model/error.h"
#include "model/fp8_tensors.h"
#include "model/mxfp4_tensors.h"

namespace ultraserve {

void require_mxfp4_experts(const ModelConfig& c, const std::string& config_source) {
  bool any_moe = false;
  for (int l = 0; l < c.num_hidden_layers; ++l) any_moe |= c.is_moe_layer(l);
  if (!any_moe) throw ModelError(config_source + ": the model has no routed experts to store as MXFP4");
  if (c.hidden_size % kMxBlock != 0 || c.moe_intermediate_size % kMxBlock != 0)
    throw ModelError(config_source + ": MXFP4 experts need hidden_size (" + std::to_string(c.hidden_size) +
                     ") and moe_intermediate_size (" + std::to_string(c.moe_intermediate_size) +
                     ") to be multiples of 32");
}

Mxfp4Matrix quantize_mxfp4(ThreadPool& pool, std::span<const float> values, int rows, int cols) {
  if (rows < 0 || cols <= 0 || cols % kMxBlock != 0 || values.size() != size_t(rows) * size_t(cols))
    throw std::invalid_argument("quantize_mxfp4: " + std::to_string(values.size()) + " values as [" +
                                std::to_string(rows) + ", " + std::to_string(cols) +
                                "] (columns must be a positive multiple of 32)");
  Mxfp4Matrix m{rows, cols, std::vector<uint8_t>(values.size() / 2), std::vector<uint8_t>(values.size() / kMxBlock)};
  const size_t c = size_t(cols);
  pool.parallel_for_rethrowing(size_t(rows), [&](size_t begin, size_t end) {
    quantize_mxfp4_rows(values.subspan(begin * c, (end - begin) * c), cols,
                        std::span(m.blocks).subspan(begin * c / 2, (end - begin) * c / 2),
                        std::span(m.scales).subspan(begin * c / kMxBlock, (end - begin) * c / kMxBlock));
  });
  return m;
}

Fp8Matrix quantize_fp8(ThreadPool& pool, std::span<const float> values, int rows, int cols, Fp8BlockSize block) {
  if (rows < 0 || cols <= 0 || values.size() != size_t(rows) * size_t(cols))
    throw std::invalid_argument("quantize_fp8: " + std::to_string(values.size()) + " values as [" +
                                std::to_string(rows) + ", " + std::to_string(cols) + "]");
  const auto [scale_rows, scale_cols] = fp8_scale_shape(rows, cols, block);
  Fp8Matrix m{rows, cols, block, std::vector<uint8_t>(values.size()),
              std::vector<float>(size_t(scale_rows * scale_cols))};
  // Ranges of whole block rows: a block's scale needs all of its rows.
  const size_t c = size_t(cols), b = size_t(block.rows), sc = size_t(scale_cols);
  pool.parallel_for_rethrowing(size_t(scale_rows), [&](size_t begin, size_t end) {
    const size_t first = begin * b, last = std::min(end * b, size_t(rows));
    quantize_fp8_block_rows(values.subspan(first * c, (last - first) * c), cols, block,
                            std::span(m.codes).subspan(first * c, (last - first) * c),
                            std::span(m.scale_inv).subspan(begin * sc, (end - begin) * sc));
  });
  return m;
}

QuantizedTensorFiller::QuantizedTensorFiller(ThreadPool& pool, Source source, Fp8BlockSize fp8_block, Observer observer)
    : pool_(pool), source_(std::move(source)), fp8_block_(fp8_block), observer_(std::move(observer)) {}

template <typename Format>
const Format& QuantizedTensorFiller::quantized(const std::string& weight_name, int rows, int cols) {
  if (weight_name == cached_name_ && cached_ && std::holds_alternative<Format>(*cached_))
    return std::get<Format>(*cached_);
  const std::vector<float> values = source_(weight_name, rows, cols);
  if constexpr (std::is_same_v<Format, Fp8Matrix>)
    cached_ = quantize_fp8(pool_, values, rows, cols, fp8_block_);
  else
    cached_ = quantize_mxfp4(pool_, values, rows, cols);
  cached_name_ = weight_name;
  const Format& q = std::get<Format>(*cached_);
  if (observer_) {
    if constexpr (std::is_same_v<Format, Fp8Matrix>)
      observer_(weight_name, values, dequantize_fp8(q));
    else
      observer_(weight_name, values, dequantize_mxfp4(q));
  }
  return q;
}

bool QuantizedTensorFiller::fill(const TensorSpec& spec, std::span<std::byte> out) {
  if (spec.shape.size() != 2) return false;
  std::span<const uint8_t> bytes;
  if (const std::optional<std::string> mxfp4 = mxfp4_weight_name(spec.name); mxfp4 && spec.dtype == DType::U8) {
    const bool is_blocks = spec.name == mxfp4_tensor_names(*mxfp4).blocks;
    const int64_t cols = spec.shape[1] * (is_blocks ? 2 : kMxBlock);
    const Mxfp4Matrix& m = quantized<Mxfp4Matrix>(*mxfp4, static_cast<int>(spec.shape[0]), static_cast<int>(cols));
    bytes = is_blocks ? m.blocks : m.scales;
  } else if (spec.dtype == DType::F8_E4M3) {
    bytes = quantized<Fp8Matrix>(spec.name, static_cast<int>(spec.shape[0]), static_cast<int>(spec.shape[1])).codes;
  } else if (const std::optional<std::string> fp8 = fp8_weight_name(spec.name); fp8 && spec.dtype == DType::F32) {
    // The scales' shape does not give the matrix's (blocks may be partial): it is the cached one.
    if (*fp8 != cached_name_ || !cached_ || !std::holds_alternative<Fp8Matrix>(*cached_))
      throw std::logic_error("FP8 scales '" + spec.name + "' must be written right after their weight");
    const std::vector<float>& scales = std::get<Fp8Matrix>(*cached_).scale_inv;
    bytes = {reinterpret_cast<const uint8_t*>(scales.data()), scales.size() * sizeof(float)};
  } else {
    return false;
  }
  if (bytes.size() != out.size())
    throw std::logic_error("quantized tensor '" + spec.name + "' does not match its matrix's shape");
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return true;
}

}  // namespace ultraserve
