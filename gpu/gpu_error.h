#pragma once
// The one exception the CUDA backend throws: a failed CUDA call or an unusable device. Plain
// C++ (no CUDA headers) so that g++-built callers can catch it.

#include <stdexcept>

namespace ultraserve::gpu {

struct GpuError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace ultraserve::gpu
