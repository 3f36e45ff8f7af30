// The CUDA backend can see and use the GPU. Skips where there is none (CI); the GPU
// machine runs it through scripts/gpu.sh.

#include <gtest/gtest.h>

#include "gpu/device_info.h"

namespace ultraserve {
namespace {

TEST(GpuDevice, ProbesDevicesAndMeasuresBandwidth) {
  const gpu::DeviceProbe probe = gpu::probe_devices();
  if (probe.devices.empty()) GTEST_SKIP() << "no GPU: " << probe.error;
  const auto& d = probe.devices.front();
  EXPECT_GE(d.compute_major, 9) << d.name << ": this build targets sm_90a (Hopper)";
  EXPECT_GT(d.total_bytes, d.free_bytes);
  const double bandwidth = gpu::measure_copy_bandwidth(d.index, size_t{256} << 20, 5);
  std::cout << "[ gpu ] " << d.name << ": copy bandwidth " << bandwidth / 1e9 << " GB/s (read + write)\n";
  EXPECT_GT(bandwidth, 500e9);  // any HBM device; catches a broken timer or a host-side copy
}

}  // namespace
}  // namespace ultraserve
