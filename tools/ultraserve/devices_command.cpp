#include <cstdio>

#include "config/command_options.h"
#include "gpu/device_info.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

struct DevicesOptions : CommandOptions {
  bool bandwidth = false;
  DevicesOptions() : CommandOptions("ultraserve devices [--bandwidth]") {
    options().add(bandwidth, "bandwidth", "also measure each device's copy bandwidth");
  }
};

}  // namespace

int devices_command(const Args& args) {
  DevicesOptions o;
  return run_command(o, args, [&] {
    const gpu::DeviceProbe probe = gpu::probe_devices();
    if (probe.devices.empty()) {
      std::printf("no GPU: %s (ultraserve runs on the CPU)\n", probe.error.c_str());
      return;
    }
    for (const auto& d : probe.devices) {
      std::printf("cuda:%d  %s  sm_%d%d  %d SMs  %.1f / %.1f GiB free", d.index, d.name.c_str(), d.compute_major,
                  d.compute_minor, d.multiprocessors, d.free_bytes / double(1 << 30), d.total_bytes / double(1 << 30));
      if (o.bandwidth) std::printf("  copy %.0f GB/s", gpu::measure_copy_bandwidth(d.index, size_t{1} << 30) / 1e9);
      std::printf("\n");
    }
  });
}

}  // namespace ultraserve
