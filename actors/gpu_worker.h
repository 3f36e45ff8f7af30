#pragma once
// The ModelWorker of one GPU: a gpu::GpuModel (weights, KV memory, streams, kernels) plus the
// host-side bookkeeping of its sequences (block tables from a KvBlockPool, samplers). Greedy
// requests are sampled on the device; the others get their logits row copied back and sampled
// by the same Sampler as the CPU worker, so a seed means the same tokens on either.

#include <map>
#include <memory>

#include "actors/model_worker.h"
#include "gpu/gpu_model.h"
#include "model/kv_block_pool.h"

namespace ultraserve {

class GpuWorker : public ModelWorker {
 public:
  // Samples among the first `sampleable_vocab` ids (see sampleable_vocab() in model/checkpoint.h).
  GpuWorker(std::unique_ptr<gpu::GpuModel> model, int device, int sampleable_vocab);
  StepResult execute(const StepPlan& plan) override;
  WorkerInfo info() const override;

 private:
  struct Sequence {
    KvSequence kv;
    Sampler sampler;
    bool greedy;
  };
  std::unique_ptr<gpu::GpuModel> model_;
  int device_, sampleable_vocab_;
  KvBlockPool pool_;
  std::map<RequestId, Sequence> sequences_;
};

}  // namespace ultraserve
