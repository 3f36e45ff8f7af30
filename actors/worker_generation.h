#pragma once
// Generations driven straight through a ModelWorker, one StepPlan after another, the way the
// scheduler drives it but without the actors: every sequence prefills (in chunks where the worker
// limits a sequence's rows per step), then each step carries one decode entry per unfinished
// sequence (speculative ones, with a draft). For benchmarks (what a serving step costs, on any
// device) and for tests of the workers' rounds.

#include <cstdint>
#include <span>
#include <vector>

#include "actors/model_worker.h"

namespace ultraserve {

struct WorkerGenerationOptions {
  int new_tokens = 32;
  int block = 0;                 // >= 2: speculative rounds of this block size; else plain decoding
  bool alternate_plain = false;  // with a block: every second sequence decodes plainly, in the same steps
  SamplingParams sampling = {};  // of every sequence (seed + its index)
};

struct WorkerGeneration {
  std::vector<std::vector<int32_t>> tokens;  // per prompt: exactly new_tokens generated tokens
  int rounds = 0;                            // speculative entries run
  int round_tokens = 0;                      // tokens those entries yielded
  double prefill_seconds = 0, decode_seconds = 0;
  double draft_seconds = 0;   // of decode_seconds: the draft's proposals
  int decode_steps = 0;
  double tau() const { return rounds ? double(round_tokens) / rounds : 0.0; }
  // Generated tokens per second of decoding (the prefill's token excluded).
  double decode_tokens_per_second() const;
};

// Ids from `first_id` on: requests are admitted, run and released within the call.
WorkerGeneration generate_on_worker(ModelWorker& worker, std::span<const std::vector<int32_t>> prompts,
                                    const WorkerGenerationOptions& options, RequestId first_id = 1);

}  // namespace ultraserve
