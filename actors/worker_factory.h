#pragma once
// Chooses the device a server computes on and builds its worker: the GPU when one is present
// (or asked for), else the CPU. The worker sizes its KV cache; the scheduler mirrors that size.

#include <memory>
#include <string>

#include "actors/model_worker.h"
#include "model/checkpoint.h"

namespace ultraserve {

struct DeviceSettings {
  std::string device = "auto";       // "auto" (first GPU if any, else CPU), "cpu", "cuda" or "cuda:N"
  std::string gpu_experts = "mxfp4";  // routed experts on the GPU: "mxfp4" or "bf16"
  bool gpu_fp8_tensor_cores = false;  // GpuModelOptions::fp8_tensor_cores
  double gpu_memory_fraction = 0.9;   // of the GPU memory left after weights, for the KV cache
};

struct ServerSettings;

// Consumes model.weights. Throws (GpuError, std::invalid_argument) with a clear message when
// the device asked for cannot be used.
std::unique_ptr<ModelWorker> make_worker(const ServerSettings& settings, LoadedModel& model, int sampleable_vocab);

// What a --device value names, by its spelling alone: no CUDA call, so that option checking
// starts no driver threads before `serve` has blocked its stop signals (a driver thread that
// does not block SIGTERM would be killed by it, and the whole server with it). Throws
// std::invalid_argument on a malformed name.
struct DeviceChoice {
  enum Kind { automatic, cpu, cuda } kind = automatic;
  int index = 0;  // cuda only
};
DeviceChoice parse_device(const std::string& device);

// -1 for the CPU, else the CUDA device index; "auto" resolves to device 0 when a CUDA device is
// usable (this probes the driver).
int resolve_device(const DeviceChoice& choice);

}  // namespace ultraserve
