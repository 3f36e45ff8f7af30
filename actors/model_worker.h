#pragma once
// The device side of a step: a worker owns the weights, the KV memory and the samplers of its
// sequences, and executes StepPlans. One implementation per backend (CPU today, CUDA next);
// the worker actor and the scheduler see only this interface.

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "actors/step.h"
#include "model/cpu_model.h"
#include "model/dflash.h"
#include "model/kv_cache.h"

namespace ultraserve {

struct WorkerInfo {
  std::string device;  // "cpu", "cuda:0", ...
  int kv_blocks = 0;
  int kv_block_size = 0;
  size_t kv_block_bytes = 0;  // device memory per KV block
  size_t weight_bytes = 0;    // device memory the weights take
  std::string draft;          // the DFlash draft it speculates with ("" for none)
  int draft_block_size = 0;   // the block the draft was trained for
  int max_rows_per_sequence = 0;  // a step's tokens of one sequence it can take (0: any; see PlannerLimits)
};

// WorkerInfo::draft for a DFlash draft of `layers` layers reading `taps` target layers.
std::string describe_draft(int layers, size_t taps);

class ModelWorker {
 public:
  virtual ~ModelWorker() = default;
  virtual StepResult execute(const StepPlan& plan) = 0;
  virtual WorkerInfo info() const = 0;
};

class CpuWorker : public ModelWorker {
 public:
  // Samples among the first `sampleable_vocab` ids (see sampleable_vocab() in model/checkpoint.h).
  // With a DFlash `draft`, decode entries may be speculative (StepEntry::speculate).
  // max_sequences: sequences running at once: the KV rings a hybrid model makes up front (model/kv_cache.h).
  CpuWorker(ModelConfig config, ModelWeights weights, int sampleable_vocab, int kv_blocks, int kv_block_size,
            int max_sequences, size_t threads, std::optional<LoadedDraft> draft = std::nullopt);
  StepResult execute(const StepPlan& plan) override;
  WorkerInfo info() const override;

 private:
  struct Sequence {
    KvSequence kv;
    Sampler sampler;
    KvSequence draft_kv;  // the draft's context: one entry per committed token
  };
  // Verifies the block of a speculative entry against its logits rows; returns the tokens it
  // yields and rolls the sequence's KV back to what was kept.
  void verify(const StepEntry& e, std::span<const int32_t> block, std::span<const float> logits, Sequence& s,
              StepResult& result);

  size_t sampleable_vocab_;
  ThreadPool pool_;
  CpuModel model_;
  PagedKvCache cache_;
  std::unique_ptr<DFlashDraft> draft_;
  std::unique_ptr<PagedKvCache> draft_cache_;  // as many blocks as cache_: positions match
  std::map<RequestId, Sequence> sequences_;
};

}  // namespace ultraserve
