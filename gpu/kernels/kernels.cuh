#pragma once
// The kernels of one forward pass, as host-side launchers. Conventions: activations that feed
// a matrix product are bf16 (the weights' type, as in transformers' bf16 inference); the
// residual stream, matrix outputs, attention scores and norms are fp32. Every launcher takes the
// row count it is to process; a pass replayed from a CUDA graph passes its padded bucket size.

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "gpu/device_buffer.h"
#include "gpu/expert_format.h"

namespace ultraserve::gpu {

using bf16 = __nv_bfloat16;

// ---- norm.cu ---------------------------------------------------------------------------------
// x[r] = embed[tokens[r]] (fp32).
void embed_tokens(const bf16* table, const int32_t* tokens, int rows, int hidden, float* x, cudaStream_t s);

// What the residual stream receives before a norm: nothing, one fp32 row per token (attention
// output, dense MLP), or the routing-weighted sum of each token's expert outputs.
struct ResidualDelta {
  const float* dense = nullptr;          // [rows, hidden]
  const float* expert_out = nullptr;     // [rows * top_k, hidden], pair p = row * top_k + j
  const float* expert_weight = nullptr;  // [rows * top_k]
  int top_k = 0;
};
// Where a norm also writes its input, the sum x + delta, as bf16: the output of the layer before
// it, which a DFlash draft reads (row i at out + i * stride).
struct RowCopy {
  bf16* out = nullptr;
  int stride = 0;
};
// For output row i (input row r = row_map ? row_map[i] : i): x[r] += delta (stored back when
// store_residual), out[i] = rms_norm(x[r]) * weight, as bf16; the sum also to `copy` when set.
void add_rms_norm(float* x, ResidualDelta delta, const float* weight, float eps, int hidden, const int32_t* row_map,
                  int out_rows, bool store_residual, bf16* out, cudaStream_t s, RowCopy copy = {});

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, width + i], as bf16.
void silu_mul(const float* gate_up, int rows, int width, bf16* out, cudaStream_t s);

// ---- linear.cu -------------------------------------------------------------------------------
// How a pass multiplies: our GEMV for up to gemv_max_rows rows (it reads the weights once, at
// full bandwidth, but re-reads the rows of x per weight chunk), cuBLAS's tensor cores beyond.
constexpr int kMaxGemvRows = 8;
class Fp8TensorCores;
struct Matmul {
  cublasHandle_t cublas;
  int gemv_max_rows = 2;  // 0..kMaxGemvRows (GpuModelOptions::gemv_max_rows)
  Fp8TensorCores* fp8_tensor_cores = nullptr;  // FP8 passes beyond the GEMV on FP8 tensor cores, when set
};
// y[rows, n] = x[rows, k] * w[n, k]^T with fp32 accumulation.
void linear(const Matmul& m, const bf16* w, int n, int k, const bf16* x, int rows, float* y, cudaStream_t s);

// A block-scaled FP8 weight (model/fp8.h): E4M3 codes [n, k], one fp32 scale per 128 x 128 block.
constexpr int kFp8Block = 128;
struct Fp8Weight {
  const uint8_t* codes;
  const float* scale_inv;  // [ceil(n / 128), ceil(k / 128)]
  int n, k;
};
// y = x * dequantize(w)^T. Up to m.gemv_max_rows rows: a GEMV that decodes the codes in registers
// (it reads 1 byte a weight, the activations stay bf16). Beyond: on FP8 tensor cores when
// m.fp8_tensor_cores is set and takes the shape (the activations quantized to FP8 too), else the
// weight dequantized to bf16 into `scratch` (n * k elements) for cuBLAS.
void linear_fp8(const Matmul& m, const Fp8Weight& w, const bf16* x, int rows, float* y, bf16* scratch, cudaStream_t s);

// ---- fp8_gemm.cu -----------------------------------------------------------------------------
// Block-scaled FP8 products through cuBLASLt: the activations quantized per row in blocks of 128
// columns (scale amax / 448), against the weights' 128 x 128 blocks. Scratch for max_rows rows of
// up to max_k columns; descriptors and algorithms made once per product shape.
class Fp8TensorCores {
 public:
  Fp8TensorCores(int max_rows, int max_k, void* workspace, size_t workspace_bytes);
  ~Fp8TensorCores();
  Fp8TensorCores(const Fp8TensorCores&) = delete;
  Fp8TensorCores& operator=(const Fp8TensorCores&) = delete;
  // False (nothing done) for a shape it cannot take: k not a multiple of 512, n not of 16, more
  // rows than its scratch, or no cuBLASLt algorithm (there is none for 1 row).
  bool multiply(const Fp8Weight& w, const bf16* x, int rows, float* y, cudaStream_t s);

 private:
  struct Plan;
  Plan& plan(int n, int k, int rows, const float* weight_scales);
  void bind_scales(Plan& p, const float* weight_scales);
  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer<uint8_t> codes_;
  DeviceBuffer<float> scales_;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<std::array<int, 3>, std::unique_ptr<Plan>> plans_;
};

// ---- attention.cu ----------------------------------------------------------------------------
// One layer's keys and values. Full-attention layers keep every position in paged blocks named by
// each sequence's block table; a sliding-window layer (MiMo-V2) keeps one ring per sequence,
// position p in slot p % block_size, and its rows see only the last `window` positions.
// In a block (or ring) a layer holds [keys: slot][k_width] then [values: slot][v_width].
struct KvLayout {
  bf16* cache;
  const int32_t* tables;     // paged: [table][max_blocks_per_table] block ids; ring: [table] ring ids
  size_t block_stride;       // elements from one block (ring) to the next
  size_t layer_offset;       // elements from a block's (ring's) start to this layer's keys
  int k_width, v_width;      // elements per position: kv_heads * head_dim, kv_heads * v_head_dim
  int block_size;            // positions per block, or per ring
  int max_blocks_per_table;  // paged only
  int window;                // 0: paged full attention; > 0: a ring, rows see that many positions
};
struct AttentionRows {
  const int32_t* positions;  // [rows]
  const int32_t* table_of;   // [rows] which block table the row's sequence uses
  const int32_t* kv_end;     // [rows] the row attends to positions [0, kv_end): position + 1 is causal
  int rows;
};
struct HeadShape {
  int q_heads, kv_heads, head_dim;
  int v_head_dim;  // value heads (MiMo-V2: narrower than query/key heads)
};
// RoPE on the first rotary_dim dims of a head (rotate-half within them), inv_freq[rotary_dim / 2].
struct RopeTable {
  const float* inv_freq;
  int rotary_dim;
};
// From the fused projection rows [q heads | k heads | v heads]: q and k get their per-head RMS
// norm (skipped where the weight is null) and RoPE, v is multiplied by value_scale; q goes to
// `q_out` (fp32, may be null when h.q_heads is 0), k and v into the cache at the row's position.
void qk_norm_rope_store(const float* qkv, const float* q_norm, const float* k_norm, float eps, RopeTable rope,
                        float value_scale, HeadShape h, AttentionRows rows, KvLayout kv, float* q_out, cudaStream_t s);
// Attention of each row over its sequence's positions [0, kv_end) (the last kv.window of them in a
// sliding layer), read from the cache: decode, prefill chunks and speculative verification alike
// (causal; a draft's block: not). `splits` cuts each row's context into that many parts run in
// parallel (flash-decoding); scratch holds their partials, and counts each row's arrived parts so
// that the last one merges them. `sinks` (per query head, may be null): a learned logit that joins
// each softmax and attends to nothing.
struct AttentionScratch {
  float* partial;           // [rows][kv_heads][splits][group][v_head_dim + 2]
  unsigned* arrivals;       // [rows][kv_heads], zero before and after every kernel
  int splits;
  int combine_max_splits;   // rows of more splits than this are merged by their last block
  int min_split_positions;  // a split is never shorter (GpuModelOptions::attention_split_positions)
};
// A row alone in its pass, as the persistent decode step attends it: its queries straight from its
// q/k/v projection, the new key and value stored by the split that sees them (attention_split.cuh).
struct QkvRow {
  const float* qkv;  // [rows][q heads | k heads | v heads]
  const float *q_norm, *k_norm;  // null: no q/k norm
  float eps;
  RopeTable rope;
  float value_scale;
};
void paged_attention(const float* q, HeadShape h, AttentionRows rows, KvLayout kv, const float* sinks,
                     AttentionScratch scratch, bf16* out, cudaStream_t s);
// How many parts to cut contexts into for `rows` rows: enough blocks to fill the device.
int attention_splits(int rows, int kv_heads, int multiprocessors, int max_splits);
// Floats of AttentionScratch::partial that `rows` rows with `splits` splits need.
size_t attention_scratch_floats(int rows, HeadShape h, int splits);

// ---- moe.cu ----------------------------------------------------------------------------------
struct Routing {
  int32_t* expert_of_pair;  // [rows * top_k]
  float* weight_of_pair;    // [rows * top_k]
  int32_t* pairs_by_expert; // [rows * top_k] pair indices grouped by expert
  int32_t* active;          // [1 + num_experts]: count of used experts, then their ids
  int32_t* expert_begin;    // [num_experts + 1] offsets into pairs_by_expert
};
// How a token's experts are chosen from its router logits (model/routing.h has the CPU's):
//   softmax top-k (Qwen3-MoE), renormalised when norm_topk;
//   sigmoid_grouped (MiMo-V2): sigmoid scores; the choice adds `bias` and is limited to the
//     topk_group best of n_group groups (a group scores its best two); the weights are the chosen
//     plain scores, renormalised when norm_topk, times `scaling`.
struct RouterRule {
  bool sigmoid_grouped = false;
  bool norm_topk = false;
  const float* bias = nullptr;  // [num_experts], sigmoid_grouped only
  int n_group = 1, topk_group = 1;
  float scaling = 1.0f;
};
// The routing rule over the router logits, and the grouping of (token, expert) pairs by expert.
// One block: the routing of a step is small.
void route_tokens(const float* router_logits, int rows, int num_experts, int top_k, const RouterRule& rule, Routing r,
                  cudaStream_t s);
// The post-attention residual add + RMS norm (x += delta; xn = rms_norm(x) * norm_weight), the
// router's logits (bf16 router [num_experts][hidden], the GEMV's sums) and route_tokens, as one
// kernel: for passes of up to kMaxGemvRows rows that norm_route_fits. `arrivals`: one counter,
// zero before and after.
struct NormRoute {
  float* x;                 // [rows][hidden], the residual, updated
  const float* delta;       // [rows][hidden], added to it
  const float* norm_weight; // [hidden]
  float eps;
  int hidden;
  const bf16* router;
  int num_experts, top_k;
  RouterRule rule;
  float* logits;            // [rows][num_experts], written
  bf16* xn;                 // [rows][hidden], written
  unsigned* arrivals;
};
constexpr size_t kNormRouteSharedBytes = 32 * 1024;  // the normalized rows in shared memory (with the routing's own, under 48 KB)
bool norm_route_fits(int rows, int hidden);
void norm_route_tokens(const NormRoute& a, int rows, Routing r, cudaStream_t s);

// ExpertFormat: gpu/expert_format.h
struct ExpertWeights {  // every expert of one layer, expert-major
  ExpertFormat format;
  // bf16: [E][2 * width][hidden], gate rows then up rows, and [E][hidden][width]; mxfp4: the same
  // matrices as tiles (gpu/expert_tiles.h: gate/up as gate_up_pairs), codes and scales
  const uint8_t* gate_up;
  const uint8_t* gate_up_scales;  // mxfp4 only
  const uint8_t* down;
  const uint8_t* down_scales;     // mxfp4 only
  int num_experts, hidden, width;
};
// act[p] = silu(gate_e(x[row(p)])) * up_e(x[row(p)]) for each pair p routed to expert e (bf16,
// the input type of the next product, as in transformers' bf16 inference).
void experts_gate_up(const ExpertWeights& w, const bf16* x, int top_k, Routing r, int max_active, bf16* act,
                     cudaStream_t s);
// out[p] = down_e(act[p]) (unweighted; add_rms_norm applies the routing weights).
void experts_down(const ExpertWeights& w, const bf16* act, Routing r, int max_active, float* out, cudaStream_t s);

// ---- decode_step.cu --------------------------------------------------------------------------
// The gapless decode step: every layer of a one-row pass in one persistent kernel, a block per
// multiprocessor and grid-wide barriers between the stages (norm + q/k/v, attention, [merge],
// o, norm + router, routing + gate/up, down). Each block streams its share of the next stage's
// weights into shared memory while the stages before it run, so the weights are in flight across
// the barriers instead of each kernel's start. For Qwen3-MoE layers: full attention with
// bf16 projections, softmax routing, MXFP4 experts, head dims and groups that
// decode_step_plan lists. x: the embedded row in, the last layer's output (residual) out.
struct DecodeStepLayer {  // one layer's weights
  const float *input_norm, *post_attention_norm, *q_norm, *k_norm;  // q/k norm: null without
  const bf16 *qkv, *o, *router;
  const uint8_t *gate_up, *gate_up_scales, *down, *down_scales;  // scales: mxfp4 only
  size_t kv_layer_offset;  // KvLayout::layer_offset
};
struct DecodeStep {
  const DecodeStepLayer* layers;  // device memory, num_layers of them
  int num_layers;
  int hidden, num_experts, top_k, width;  // width: an expert's intermediate size
  ExpertFormat experts;
  HeadShape heads;  // head_dim == v_head_dim
  float eps, value_scale;
  RouterRule rule;  // softmax routing (not sigmoid_grouped)
  RopeTable rope;   // rotary_dim == head_dim
  AttentionRows rows;  // one row
  KvLayout kv;         // paged, layer_offset taken from each layer
  AttentionScratch scratch;
  float* x;              // [hidden]
  float* qkv;            // [q_dim + 2 kv_dim]
  bf16* attention_out;   // [q_dim]
  float* logits;         // [num_experts]
  bf16* act;             // [top_k][width]
  unsigned* barrier;     // zero at the start of the step (decode_step zeroes it)
  // Tuning (GpuModel::stage_times): block 0's clock (ns) at the start of each layer, then at the end
  // of each stage's own work and of its barrier, kDecodeStepTraceSlots a layer; null: not kept.
  unsigned long long* trace = nullptr;
};
// Then, inside stages: 15 the q/k/v rows landed, 16 the norm done, 17 the expert copies issued,
// 18 the gate/up rows landed, 19 the down rows landed, 20 the routing picked.
constexpr int kDecodeStepTraceSlots = 21;
// The persistent step's attention tile (positions), also the fewest positions it gives a split:
// at short contexts more blocks, one tile each (measured: 3.96 ms at context 128 against 4.17 with
// splits of 128).
constexpr int kDecodeStepTilePositions = 64;
// The stages in the order of the trace's slots 1, 3, ..., 13 (slot 2 s + 2: the barrier after it).
constexpr const char* kDecodeStepStages[] = {"norm + q/k/v",      "attention",          "merge of the splits",
                                             "o projection",      "norm + router",      "routing + experts gate/up",
                                             "experts down"};
// The launch: a block per multiprocessor, and the shared memory each needs. `reason` says why
// not when the shapes are not built or a block's shares do not fit its shared memory.
struct DecodeStepPlan {
  bool runs = false;
  std::string reason;
  int blocks = 0;
  size_t shared_bytes = 0;
  size_t back_offset = 0, vector_offset = 0;  // the shared-memory regions (decode_step.cu)
};
DecodeStepPlan plan_decode_step(const DecodeStep& step, int multiprocessors);
void decode_step(const DecodeStep& step, const DecodeStepPlan& plan, cudaStream_t s);

// ---- sampling.cu -----------------------------------------------------------------------------
// tokens[r] = argmax over the first `vocab` entries of logits[r] (lowest id on ties).
void argmax_rows(const float* logits, int rows, int stride, int vocab, int32_t* tokens, cudaStream_t s);

// ---- random_fill.cu --------------------------------------------------------------------------
// Seeded, reproducible random weights made on the device (benchmark shapes need no file).
void fill_uniform_bf16(bf16* out, size_t count, float scale, uint64_t seed, cudaStream_t s);
// Random bytes, each ANDed with `mask` (E4M3 codes: a mask that keeps them off the NaN code).
void fill_random_bytes(uint8_t* out, size_t count, uint64_t seed, cudaStream_t s, uint8_t mask = 0xff);

}  // namespace ultraserve::gpu
