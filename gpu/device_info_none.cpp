// The CPU-only build: no CUDA toolkit was found at configure time.
#include <stdexcept>

#include "gpu/device_info.h"

namespace ultraserve::gpu {

DeviceProbe probe_devices() { return {false, "this build has no CUDA backend (nvcc was not found)", {}}; }

double measure_copy_bandwidth(int, size_t, int) { throw std::runtime_error("this build has no CUDA backend"); }
double measure_read_bandwidth(int, size_t, int) { throw std::runtime_error("this build has no CUDA backend"); }

}  // namespace ultraserve::gpu
