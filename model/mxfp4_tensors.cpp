#include "model/mxfp4_tensors.h"

#include <algorithm>
#include <stdexcept>

#include "model/error.h"

namespace ultraserve {
namespace {

const std::string kWeight = ".weight", kBlocks = ".blocks", kScales = ".scales";

std::span<const uint8_t> as_bytes(const TensorView& v) {
  return {reinterpret_cast<const uint8_t*>(v.bytes.data()), v.bytes.size()};
}

[[noreturn]] void fail(const TensorView& v, const std::string& problem) {
  throw ModelError(*v.file + ": tensor '" + v.name + "' " + problem);
}

void require_u8_matrix(const TensorView& v) {
  if (v.dtype != DType::U8) fail(v, "has dtype " + std::string(dtype_name(v.dtype)) + ", expected U8 (MXFP4)");
  if (v.shape.size() != 2) fail(v, "has shape " + v.shape_string() + ", expected 2-D (MXFP4)");
}

}  // namespace

Mxfp4TensorNames mxfp4_tensor_names(const std::string& weight_name) {
  if (!weight_name.ends_with(kWeight)) throw std::logic_error("not a .weight name: " + weight_name);
  const std::string base = weight_name.substr(0, weight_name.size() - kWeight.size());
  return {base + kBlocks, base + kScales};
}

std::optional<std::string> mxfp4_weight_name(const std::string& tensor_name) {
  for (const std::string* suffix : {&kBlocks, &kScales})
    if (tensor_name.ends_with(*suffix)) return tensor_name.substr(0, tensor_name.size() - suffix->size()) + kWeight;
  return std::nullopt;
}

std::vector<TensorSpec> mxfp4_tensor_specs(const std::string& weight_name, int64_t rows, int64_t cols) {
  const Mxfp4TensorNames n = mxfp4_tensor_names(weight_name);
  return {{n.blocks, DType::U8, {rows, cols / 2}}, {n.scales, DType::U8, {rows, cols / kMxBlock}}};
}

bool has_mxfp4(const CheckpointTensors& tensors, const std::string& weight_name) {
  const Mxfp4TensorNames n = mxfp4_tensor_names(weight_name);
  return tensors.find(n.blocks) || tensors.find(n.scales);
}

std::optional<Mxfp4View> find_mxfp4(const CheckpointTensors& tensors, const std::string& weight_name) {
  const Mxfp4TensorNames n = mxfp4_tensor_names(weight_name);
  const TensorView* blocks = tensors.find(n.blocks);
  const TensorView* scales = tensors.find(n.scales);
  if (!blocks && !scales) return std::nullopt;
  if (!blocks || !scales)
    fail(blocks ? *blocks : *scales, "is present but its MXFP4 partner '" + (blocks ? n.scales : n.blocks) +
                                         "' is missing (a matrix needs both .blocks and .scales)");
  require_u8_matrix(*blocks);
  require_u8_matrix(*scales);
  const int64_t rows = blocks->shape[0], cols = blocks->shape[1] * 2;
  if (cols == 0 || cols % kMxBlock != 0)
    fail(*blocks, "has shape " + blocks->shape_string() + ": rows of " + std::to_string(cols) +
                      " values are not whole MXFP4 blocks of 32");
  if (scales->shape != std::vector<int64_t>{rows, cols / kMxBlock})
    fail(*scales, "has shape " + scales->shape_string() + " but '" + n.blocks + "' " + blocks->shape_string() +
                      " implies [" + std::to_string(rows) + ", " + std::to_string(cols / kMxBlock) + "]");
  const std::span<const uint8_t> scale_bytes = as_bytes(*scales);
  if (auto nan = std::find(scale_bytes.begin(), scale_bytes.end(), uint8_t{255}); nan != scale_bytes.end())
    fail(*scales, "holds scale byte 255 (E8M0 NaN) at block " + std::to_string(nan - scale_bytes.begin()));
  return Mxfp4View{static_cast<int>(rows), static_cast<int>(cols), as_bytes(*blocks), scale_bytes};
}

std::optional<Mxfp4Matrix> load_expert_mxfp4(const CheckpointTensors& tensors, const std::string& weight_name) {
  const std::optional<Mxfp4View> v = find_mxfp4(tensors, weight_name);
  if (!v) return std::nullopt;
  return Mxfp4Matrix{v->rows, v->cols, {v->blocks.begin(), v->blocks.end()}, {v->scales.begin(), v->scales.end()}};
}

}  // namespace ultraserve
