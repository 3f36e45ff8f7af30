#pragma once
// Owning device memory and CUDA error checks, usable from g++-built code (runtime API only).

#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "gpu/gpu_error.h"

namespace ultraserve::gpu {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw GpuError(std::string(what) + ": " + cudaGetErrorString(status));
}
#define ULTRASERVE_CUDA_CHECK(call) ::ultraserve::gpu::check_cuda((call), #call)

// Device memory for `count` elements of T, freed with the object. Move-only.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count) ULTRASERVE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T)));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(count_, o.count_);
    return *this;
  }
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);
  }
  T* get() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }
  bool empty() const { return count_ == 0; }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace ultraserve::gpu
