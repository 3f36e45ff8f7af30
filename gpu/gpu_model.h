#pragma once
// The model on one GPU: weights, paged KV memory, CUDA streams, and the forward pass.
// Plain C++ so that g++-built code (the worker, tools, tests) can use it; in a build without
// CUDA, load() and random() throw GpuError.
//
// A pass runs any mix of rows: decode tokens, prefill chunks, speculative blocks. Each row is a
// token at a position of some sequence, whose KV blocks (allocated by the caller from a
// KvBlockPool of kv_blocks() blocks) are named by a block table; a hybrid model's sliding-window
// layers use the sequence's ring from that pool instead (PassRequest::rings). Pure decode passes of up to
// the largest graph size replay a CUDA graph captured per batch-size bucket: no launch gaps,
// and no host synchronisation except reading the sampled tokens.
//
// With a DFlash draft (model/dflash.h) the model also owns the draft's weights and its context
// cache, which shares the target's block tables (one draft entry per target position). Every
// run() pass then taps the target layers the draft reads and appends EVERY row to the draft's
// context, on the device, in the same graph: the caller's KV lengths decide which rows count
// (rows past a sequence's length are stale, and the next pass overwrites them before anyone
// reads them). propose() runs the draft over blocks [anchor, MASK x (B-1)].

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "gpu/expert_format.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace ultraserve::gpu {

struct GpuModelOptions {
  int device = 0;
  ExpertFormat experts = ExpertFormat::mxfp4;  // falls back to bf16 where shapes rule MXFP4 out
  int kv_block_size = 16;
  int kv_blocks = 0;             // 0: as many as fit in memory_fraction of what the weights leave free
  double memory_fraction = 0.9;  // of the device's free memory after weights and scratch
  int max_rows = 512;            // token rows one pass may carry
  int max_context = 0;           // longest sequence; 0: config.max_position_embeddings
  int max_sequences = 256;       // block tables one pass may carry
  std::vector<int> graph_batch_sizes = {1, 2, 4, 8, 16, 32, 64, 128};  // empty: no graphs
  int sampleable_vocab = 0;      // argmax over the first ids only; 0: the whole vocabulary
  // Passes of up to this many rows multiply by our GEMV, larger ones by cuBLAS (0..8). Measured on the
  // H200 (scripts/gpu.sh run gemv-sweep, docs/perf.md): cuBLAS wins from 3-4 rows on.
  int gemv_max_rows = 2;
  // FP8 projections (a checkpoint with an FP8 quantization_config) of passes beyond gemv_max_rows
  // rows: on FP8 tensor cores, the activations quantized to FP8 in blocks of 128 (faster, but such
  // a pass then computes with other roundings than a decode step: docs/gpu.md); else the weights
  // dequantized to bf16 for cuBLAS.
  bool fp8_tensor_cores = false;
  // Rows whose context is cut into up to this many splits (of attention_split_positions at least)
  // are merged by a second kernel; longer ones by the last of their own blocks, which saves the
  // second kernel a long walk over the partials. 0: every row of 2+ splits merged in-kernel (a
  // row of one split is always written by its block). Measured on the H200 (scripts/gpu.sh run
  // attention-sweep, docs/perf.md): the combine kernel wins up to 17 splits at least.
  int attention_combine_max_splits = 32;
  // The fewest positions a split of a row's context gets: shorter splits would fill more of the
  // device, but each costs a partial to merge (swept alongside).
  int attention_split_positions = 128;
  // One-row target passes as the gapless decode step (kernels.cuh: decode_step), one persistent
  // kernel for every layer, where the model's shapes allow it (GpuModelInfo::decode_step says).
  // Off by default: it computes the same logits, but on the H200 it is slower than kernel by
  // kernel (3.81 ms against 2.64 at context 128: docs/perf.md, the persistent decode step). Its
  // blocks wait for one another, so it needs every multiprocessor at once: when it is on, keep
  // the device to this one model (another kernel holding multiprocessors would stall it).
  bool persistent_decode = false;
};

struct PassRequest {
  std::vector<int32_t> tokens, positions, table_of;  // one per row
  std::vector<int32_t> kv_end;  // per row: attends to positions [0, kv_end); empty: position + 1 (causal)
  std::vector<std::span<const int32_t>> tables;      // block tables, indexed by table_of
  std::vector<int32_t> rings;  // per table: its sequence's sliding-window ring (KvSequence::ring); hybrid models only
  std::vector<int32_t> output_rows;                  // rows whose next-token logits are wanted
  bool want_logits = false;                          // copy those logits to the host too
};

struct PassResult {
  std::vector<int32_t> argmax;  // per output row
  std::vector<float> logits;    // [output rows, vocab] when want_logits
};

// Device time of one stage of a pass (e.g. "attention"), summed over the layers.
struct StageTime {
  std::string stage;
  double seconds = 0;  // per pass
  int calls = 0;       // launches per pass
};

struct GpuModelInfo {
  std::string device_name;
  ExpertFormat experts = ExpertFormat::bf16;
  size_t weight_bytes = 0, kv_bytes = 0;
  int vocab_size = 0, kv_blocks = 0, kv_block_size = 0, max_rows = 0, max_context = 0;
  // A hybrid model's sliding layers keep one ring per live sequence: kv_rings of them (0: none).
  // A pass may then carry at most max_rows_per_sequence rows of one sequence (0: no limit).
  int kv_rings = 0, max_rows_per_sequence = 0;
  // How one-row target passes run: "persistent" (the gapless decode step) or, when it is off or
  // the shapes rule it out, "kernel by kernel: " and why.
  std::string decode_step;
  // The draft, when one was loaded (draft_layers > 0).
  int draft_layers = 0, draft_taps = 0, draft_block_size = 0, draft_mask_token = -1;
};

class GpuModel {
 public:
  // With `draft_config` (its dflash set; check_draft_fits passed) and `draft_weights`, a DFlash
  // draft too.
  static std::unique_ptr<GpuModel> load(const ModelConfig& config, const ModelWeights& weights,
                                        const GpuModelOptions& options, const ModelConfig* draft_config = nullptr,
                                        const ModelWeights* draft_weights = nullptr);
  // Random weights generated on the device (benchmarks of shapes with no checkpoint), and of a
  // draft of `draft_config`'s shape when given.
  static std::unique_ptr<GpuModel> random(const ModelConfig& config, uint64_t seed, const GpuModelOptions& options,
                                          const ModelConfig* draft_config = nullptr);

  virtual ~GpuModel() = default;
  virtual PassResult run(const PassRequest& request) = 0;
  // The draft's pass. Each block is rows [anchor, MASK x (B-1)] at positions start.. of its
  // sequence (start = the sequence's committed length), all with kv_end = start + B; an output
  // row gets the draft's greedy token for its own position (the anchor's row predicts nothing).
  // The block's keys and values go to the draft cache at those positions, where the next run()
  // overwrites them with the committed tokens'.
  virtual PassResult propose(const PassRequest& request) = 0;
  // Where the time of a pass goes: `request` run `repeats` times without graphs, timed stage by
  // stage with device events (benchmarks and tuning; the KV writes of the pass happen).
  virtual std::vector<StageTime> stage_times(const PassRequest& request, int repeats) = 0;
  virtual const GpuModelInfo& info() const = 0;
  // Bytes of weights and KV a batch-1 decode step at `context` positions must read: the
  // numerator of the roofline (random routing touches top_k experts per MoE layer).
  virtual size_t decode_bytes(int context) const = 0;
};

}  // namespace ultraserve::gpu
