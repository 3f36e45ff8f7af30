#include "model/fp8_tensors.h"

#include <cmath>
#include <stdexcept>

#include "model/error.h"

namespace ultraserve {
namespace {

const std::string kWeight = ".weight", kScaleInv = ".weight_scale_inv";

[[noreturn]] void fail(const TensorView& v, const std::string& problem) {
  throw ModelError(*v.file + ": tensor '" + v.name + "' " + problem);
}

std::string shape_string(std::array<int64_t, 2> s) {
  std::string out = "[";
  out += std::to_string(s[0]);
  out += ", ";
  out += std::to_string(s[1]);
  return out + "]";
}

}  // namespace

std::string fp8_scale_name(const std::string& weight_name) {
  if (!weight_name.ends_with(kWeight)) throw std::logic_error("not a .weight name: " + weight_name);
  return weight_name + "_scale_inv";
}

std::optional<std::string> fp8_weight_name(const std::string& tensor_name) {
  if (!tensor_name.ends_with(kScaleInv)) return std::nullopt;
  return tensor_name.substr(0, tensor_name.size() - kScaleInv.size()) + kWeight;
}

std::vector<TensorSpec> fp8_tensor_specs(const std::string& weight_name, int64_t rows, int64_t cols,
                                         Fp8BlockSize block) {
  const auto [scale_rows, scale_cols] = fp8_scale_shape(rows, cols, block);
  return {{weight_name, DType::F8_E4M3, {rows, cols}},
          {fp8_scale_name(weight_name), DType::F32, {scale_rows, scale_cols}}};
}

std::optional<Fp8Tensor> find_fp8(const CheckpointTensors& tensors, const std::string& weight_name,
                                  const std::optional<ModelConfig::Fp8Quantization>& fp8) {
  const std::string scale_name = fp8_scale_name(weight_name);
  const TensorView* weight = tensors.find(weight_name);
  const TensorView* scale = tensors.find(scale_name);
  if (!weight || weight->dtype != DType::F8_E4M3) {
    if (!scale) return std::nullopt;
    // A stray scale would silently be ignored: the checkpoint is not what it claims to be.
    fail(*scale, weight ? "is present but '" + weight_name + "' is " + std::string(dtype_name(weight->dtype)) +
                              ", not F8_E4M3 (only FP8 weights have block scales)"
                        : "is present but its weight '" + weight_name + "' is missing");
  }
  if (!fp8)
    fail(*weight,
         "is F8_E4M3 but config.json has no quantization_config (quant_method \"fp8\") to say how "
         "it is scaled");
  if (weight->shape.size() != 2) fail(*weight, "has shape " + weight->shape_string() + ", expected 2-D (FP8)");
  if (!scale) fail(*weight, "is F8_E4M3 but its block scales '" + scale_name + "' are missing");
  if (scale->dtype != DType::F32 && scale->dtype != DType::BF16)
    fail(*scale, "has dtype " + std::string(dtype_name(scale->dtype)) + ", expected F32 or BF16 (FP8 block scales)");
  const std::array<int64_t, 2> expected = fp8_scale_shape(weight->shape[0], weight->shape[1], fp8->block);
  if (scale->shape != std::vector<int64_t>(expected.begin(), expected.end()))
    fail(*scale, "has shape " + scale->shape_string() + " but '" + weight_name + "' " + weight->shape_string() +
                     " with weight_block_size " + shape_string({fp8->block.rows, fp8->block.cols}) + " implies " +
                     shape_string(expected));

  Fp8Tensor t{static_cast<int>(weight->shape[0]),
              static_cast<int>(weight->shape[1]),
              fp8->block,
              {reinterpret_cast<const uint8_t*>(weight->bytes.data()), weight->bytes.size()},
              std::vector<float>(static_cast<size_t>(scale->numel()))};
  convert_to_f32(scale->dtype, scale->bytes.data(), t.scale_inv.size(), t.scale_inv.data());
  for (size_t i = 0; i < t.scale_inv.size(); ++i)
    if (!std::isfinite(t.scale_inv[i]) || t.scale_inv[i] < 0)
      fail(*scale, "holds scale " + std::to_string(t.scale_inv[i]) + " at block " + std::to_string(i) +
                       " (block scales must be finite and non-negative)");
  return t;
}

}  // namespace ultraserve
