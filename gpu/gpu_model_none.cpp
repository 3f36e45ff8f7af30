// A build without CUDA: the GPU model cannot be made, and says why.

#include "gpu/gpu_error.h"
#include "gpu/gpu_model.h"

namespace ultraserve::gpu {

std::unique_ptr<GpuModel> GpuModel::load(const ModelConfig&, const ModelWeights&, const GpuModelOptions&,
                                         const ModelConfig*, const ModelWeights*) {
  throw GpuError("this build of ultraserve has no CUDA backend (nvcc was not found at build time)");
}

std::unique_ptr<GpuModel> GpuModel::random(const ModelConfig& c, uint64_t, const GpuModelOptions& o, const ModelConfig*) {
  return load(c, {}, o);
}

}  // namespace ultraserve::gpu
