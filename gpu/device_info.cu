#include "gpu/device_info.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include <cuda_runtime.h>

namespace ultraserve::gpu {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

}  // namespace

DeviceProbe probe_devices() {
  DeviceProbe probe;
  probe.built_with_cuda = true;
  int count = 0;
  if (cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    probe.error = cudaGetErrorString(status);
    return probe;
  }
  if (count == 0) probe.error = "no CUDA device";
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, d), "cudaGetDeviceProperties");
    DeviceInfo info;
    info.index = d;
    info.name = prop.name;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.multiprocessors = prop.multiProcessorCount;
    check(cudaSetDevice(d), "cudaSetDevice");
    check(cudaMemGetInfo(&info.free_bytes, &info.total_bytes), "cudaMemGetInfo");
    probe.devices.push_back(info);
  }
  return probe;
}

namespace {

// Median milliseconds of `repeats` timed runs of `enqueue` (after one untimed warm-up).
template <typename Enqueue>
float median_ms(int repeats, Enqueue enqueue) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  enqueue();
  std::vector<float> ms(repeats);
  for (int i = 0; i < repeats; ++i) {
    check(cudaEventRecord(start), "cudaEventRecord");
    enqueue();
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    check(cudaEventElapsedTime(&ms[i], start, stop), "cudaEventElapsedTime");
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(ms.begin(), ms.begin() + repeats / 2, ms.end());
  return ms[repeats / 2];
}

__global__ void read_kernel(const uint4* data, size_t count, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(data + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // practically never: keeps the loads alive
}

}  // namespace

double measure_copy_bandwidth(int device, size_t bytes, int repeats) {
  check(cudaSetDevice(device), "cudaSetDevice");
  void *src = nullptr, *dst = nullptr;
  check(cudaMalloc(&src, bytes), "cudaMalloc");
  check(cudaMalloc(&dst, bytes), "cudaMalloc");
  check(cudaMemset(src, 0x5a, bytes), "cudaMemset");  // never time untouched pages
  const float ms = median_ms(repeats, [&] { check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "copy"); });
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
}

double measure_read_bandwidth(int device, size_t bytes, int repeats) {
  check(cudaSetDevice(device), "cudaSetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  void* data = nullptr;
  unsigned* sink = nullptr;
  check(cudaMalloc(&data, bytes), "cudaMalloc");
  check(cudaMalloc(&sink, sizeof(unsigned)), "cudaMalloc");
  check(cudaMemset(data, 0x5a, bytes), "cudaMemset");
  const int blocks = prop.multiProcessorCount * 8;
  const float ms = median_ms(repeats, [&] {
    read_kernel<<<blocks, 256>>>(static_cast<const uint4*>(data), bytes / sizeof(uint4), sink);
    check(cudaGetLastError(), "read_kernel");
  });
  cudaFree(data);
  cudaFree(sink);
  return static_cast<double>(bytes) / (ms * 1e-3);
}

}  // namespace ultraserve::gpu
