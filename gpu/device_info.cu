#include "gpu/device_info.h"

#include <algorithm>
#include <stdexcept>

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

double measure_copy_bandwidth(int device, size_t bytes, int repeats) {
  check(cudaSetDevice(device), "cudaSetDevice");
  void *src = nullptr, *dst = nullptr;
  check(cudaMalloc(&src, bytes), "cudaMalloc");
  check(cudaMalloc(&dst, bytes), "cudaMalloc");
  check(cudaMemset(src, 0x5a, bytes), "cudaMemset");  // never time untouched pages
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "warm-up copy");
  std::vector<float> ms(repeats);
  for (int i = 0; i < repeats; ++i) {
    check(cudaEventRecord(start), "cudaEventRecord");
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    check(cudaEventElapsedTime(&ms[i], start, stop), "cudaEventElapsedTime");
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(src);
  cudaFree(dst);
  std::nth_element(ms.begin(), ms.begin() + repeats / 2, ms.end());
  return 2.0 * static_cast<double>(bytes) / (ms[repeats / 2] * 1e-3);
}

}  // namespace ultraserve::gpu
