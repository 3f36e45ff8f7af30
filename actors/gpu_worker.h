#pragma once
// The ModelWorker of one GPU: a gpu::GpuModel (weights, KV memory, streams, kernels; with a
// DFlash draft, the draft too) plus the host-side bookkeeping of its sequences (block tables
// from a KvBlockPool, samplers). Greedy requests are sampled on the device; the others get
// their logits rows copied back and sampled by the same Sampler as the CPU worker, so a seed
// means the same tokens on either.
//
// A speculative round costs two passes: the draft proposes every speculative entry's block in
// one pass, then the target verifies all blocks (and runs the step's other rows) in one more.
// The draft's context needs no bookkeeping here: the target pass appends every row to it on the
// device, and a sequence's KV length says which of those entries are committed.

#include <map>
#include <memory>

#include "actors/model_worker.h"
#include "gpu/gpu_model.h"
#include "model/kv_block_pool.h"

namespace ultraserve {

class GpuWorker : public ModelWorker {
 public:
  // Samples among the first `sampleable_vocab` ids (see sampleable_vocab() in model/checkpoint.h).
  // A model loaded with a draft serves speculative entries (StepEntry::speculate).
  GpuWorker(std::unique_ptr<gpu::GpuModel> model, int device, int sampleable_vocab);
  StepResult execute(const StepPlan& plan) override;
  WorkerInfo info() const override;

 private:
  struct Sequence {
    KvSequence kv;
    Sampler sampler;
    bool greedy;
  };
  // The blocks [anchor, proposals...] of the plan's speculative entries (empty for the others).
  std::vector<std::vector<int32_t>> propose(const StepPlan& plan, StepResult& result);
  // The token a sequence takes from output row `row` of a pass: the device's argmax when greedy.
  int32_t sample(Sequence& s, const gpu::PassResult& out, size_t row);

  // The block pool, with the model's fixed number of sliding-window rings (hybrid models).
  struct DevicePool : KvBlockPool {
    using KvBlockPool::KvBlockPool;
    void grow_rings(int total) override;
  };

  std::unique_ptr<gpu::GpuModel> model_;
  int device_, sampleable_vocab_;
  DevicePool pool_;
  std::map<RequestId, Sequence> sequences_;
};

}  // namespace ultraserve
