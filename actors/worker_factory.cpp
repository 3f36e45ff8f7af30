#include "actors/worker_factory.h"

#include <stdexcept>

#include "actors/gpu_worker.h"
#include "actors/server.h"
#include "gpu/device_info.h"

namespace ultraserve {

DeviceChoice parse_device(const std::string& device) {
  if (device == "auto") return {DeviceChoice::automatic};
  if (device == "cpu") return {DeviceChoice::cpu};
  if (device == "cuda") return {DeviceChoice::cuda, 0};
  if (device.starts_with("cuda:")) {
    const std::string index = device.substr(5);
    if (!index.empty() && index.size() < 4 && index.find_first_not_of("0123456789") == std::string::npos)
      return {DeviceChoice::cuda, std::stoi(index)};
  }
  throw std::invalid_argument("--device must be auto, cpu, cuda or cuda:N (got \"" + device + "\")");
}

int resolve_device(const DeviceChoice& choice) {
  switch (choice.kind) {
    case DeviceChoice::cpu: return -1;
    case DeviceChoice::cuda: return choice.index;
    case DeviceChoice::automatic: break;
  }
  return gpu::probe_devices().devices.empty() ? -1 : 0;
}

namespace {

gpu::ExpertFormat expert_format(const std::string& name) {
  if (name == "mxfp4") return gpu::ExpertFormat::mxfp4;
  if (name == "bf16") return gpu::ExpertFormat::bf16;
  throw std::invalid_argument("--gpu-experts must be mxfp4 or bf16 (got \"" + name + "\")");
}

}  // namespace

std::unique_ptr<ModelWorker> make_worker(const ServerSettings& s, LoadedModel& model, int sampleable_vocab) {
  const ModelConfig& config = model.config;
  const PlannerLimits& planner = s.planner;
  const int device = resolve_device(parse_device(s.devices.device));
  std::optional<LoadedDraft> draft;
  if (!s.draft.empty() && !s.no_draft) {
    draft = load_draft(s.draft);
    check_draft_fits(draft->config, config, (s.draft / "config.json").string());
  }
  if (device < 0) {
    const size_t block_bytes =
        size_t(config.paged_kv_values_per_position()) * planner.kv_block_size * sizeof(float);
    const int blocks = planner.kv_blocks
                           ? planner.kv_blocks
                           : static_cast<int>(std::max<size_t>(1, (s.kv_memory_mb << 20) / block_bytes));
    return std::make_unique<CpuWorker>(config, std::move(model.weights), sampleable_vocab, blocks,
                                       planner.kv_block_size, planner.max_batch, s.threads, std::move(draft));
  }
  gpu::GpuModelOptions o;
  o.device = device;
  o.experts = expert_format(s.devices.gpu_experts);
  o.fp8_tensor_cores = s.devices.gpu_fp8_tensor_cores;
  o.kv_block_size = planner.kv_block_size;
  o.kv_blocks = planner.kv_blocks;
  o.memory_fraction = s.devices.gpu_memory_fraction;
  o.max_rows = planner.max_step_tokens;
  o.max_sequences = planner.max_batch;
  o.max_context = s.session.context_length ? s.session.context_length : config.max_position_embeddings;
  o.sampleable_vocab = sampleable_vocab;
  auto gpu_model = gpu::GpuModel::load(config, model.weights, o, draft ? &draft->config : nullptr,
                                       draft ? &draft->weights : nullptr);
  model.weights = {};  // the host copy is no longer needed
  return std::make_unique<GpuWorker>(std::move(gpu_model), device, sampleable_vocab);
}

}  // namespace ultraserve
