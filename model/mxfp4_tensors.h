#pragma once
// MXFP4 matrices inside a checkpoint: the names and shapes of their two tensors, and reading
// them back validated. The layout itself is model/mxfp4.h's contract.
//
// For a GPU loader: walk expected_weights(config), and for each routed expert (`routed_expert`)
// call find_mxfp4(tensors, spec.name). It views the checkpoint's mmap'ed bytes, so they can be
// uploaded without a host copy; nullopt means the checkpoint stores that matrix as a float
// `.weight` (quantize_mxfp4 it, or use it as is). load_weights() has already checked shapes
// against config.json when the same CheckpointTensors went through it (check_weights()).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/mxfp4.h"
#include "model/safetensors.h"

namespace ultraserve {

// "x.gate_proj.weight" -> "x.gate_proj.blocks" and "x.gate_proj.scales".
struct Mxfp4TensorNames {
  std::string blocks, scales;
};
Mxfp4TensorNames mxfp4_tensor_names(const std::string& weight_name);

// The ".weight" name a ".blocks" or ".scales" tensor stands in for; nullopt for other names.
std::optional<std::string> mxfp4_weight_name(const std::string& tensor_name);

// The two U8 tensors storing a [rows, cols] matrix, blocks first (the order they are written).
std::vector<TensorSpec> mxfp4_tensor_specs(const std::string& weight_name, int64_t rows, int64_t cols);

// Whether the checkpoint has the .blocks or the .scales of `weight_name`.
bool has_mxfp4(const CheckpointTensors& tensors, const std::string& weight_name);

// The MXFP4 form of `weight_name`, viewing the checkpoint's bytes (valid while `tensors` lives);
// nullopt when neither tensor exists. Throws ModelError when only one exists, either is not U8
// or not 2-D, their shapes disagree (blocks [rows, cols/2], scales [rows, cols/32], cols a
// multiple of 32), or a scale byte is 255 (E8M0's NaN).
std::optional<Mxfp4View> find_mxfp4(const CheckpointTensors& tensors, const std::string& weight_name);

// The same, copied out of the checkpoint into memory the caller owns.
std::optional<Mxfp4Matrix> load_expert_mxfp4(const CheckpointTensors& tensors, const std::string& weight_name);

}  // namespace ultraserve
