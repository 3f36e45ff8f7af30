#pragma once
// What the CUDA backend can see: the devices and their memory bandwidth. Plain C++ so that
// g++-built code (the CLI, the server) can ask without including CUDA headers.

#include <cstddef>
#include <string>
#include <vector>

namespace ultraserve::gpu {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  size_t total_bytes = 0, free_bytes = 0;
};

struct DeviceProbe {
  bool built_with_cuda = false;
  std::string error;  // why no device is usable (no driver, no GPU, CPU-only build), else empty
  std::vector<DeviceInfo> devices;
};

DeviceProbe probe_devices();

// Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written (the
// convention of the roofline in docs/perf.md): the median of `repeats` timed copies of `bytes`.
double measure_copy_bandwidth(int device, size_t bytes, int repeats = 20);

// Streaming read bandwidth in bytes/s: the median of `repeats` timed passes of a kernel that
// reads `bytes` with 16-byte loads and reduces them (the kind of traffic a decode step makes).
double measure_read_bandwidth(int device, size_t bytes, int repeats = 20);

}  // namespace ultraserve::gpu
