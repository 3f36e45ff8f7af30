#include "model/mxfp4_writer.h"

#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>

#include "model/error.h"
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
  // parallel_for must not be left by an exception (its helpers would outlive the job), so
  // each range catches and the first error is rethrown once all are done.
  std::mutex mutex;
  std::exception_ptr error;
  const size_t c = size_t(cols);
  pool.parallel_for(size_t(rows), [&](size_t begin, size_t end) {
    try {
      quantize_mxfp4_rows(values.subspan(begin * c, (end - begin) * c), cols,
                          std::span(m.blocks).subspan(begin * c / 2, (end - begin) * c / 2),
                          std::span(m.scales).subspan(begin * c / kMxBlock, (end - begin) * c / kMxBlock));
    } catch (...) {
      std::lock_guard lock(mutex);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
  return m;
}

Mxfp4TensorFiller::Mxfp4TensorFiller(ThreadPool& pool, Source source, Observer observer)
    : pool_(pool), source_(std::move(source)), observer_(std::move(observer)) {}

const Mxfp4Matrix& Mxfp4TensorFiller::quantized(const std::string& weight_name, int rows, int cols) {
  if (weight_name == cached_name_) return cached_;
  const std::vector<float> values = source_(weight_name, rows, cols);
  cached_ = quantize_mxfp4(pool_, values, rows, cols);
  cached_name_ = weight_name;
  if (observer_) observer_(weight_name, values, cached_);
  return cached_;
}

bool Mxfp4TensorFiller::fill(const TensorSpec& spec, std::span<std::byte> out) {
  const std::optional<std::string> weight_name = mxfp4_weight_name(spec.name);
  if (!weight_name || spec.dtype != DType::U8 || spec.shape.size() != 2) return false;
  const bool is_blocks = spec.name == mxfp4_tensor_names(*weight_name).blocks;
  const int64_t cols = spec.shape[1] * (is_blocks ? 2 : kMxBlock);
  const Mxfp4Matrix& m = quantized(*weight_name, static_cast<int>(spec.shape[0]), static_cast<int>(cols));
  const std::vector<uint8_t>& bytes = is_blocks ? m.blocks : m.scales;
  if (bytes.size() != out.size())
    throw std::logic_error("MXFP4 tensor '" + spec.name + "' does not match its matrix's shape");
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return true;
}

}  // namespace ultraserve
