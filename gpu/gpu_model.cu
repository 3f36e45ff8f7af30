// The forward pass on one GPU, layer by layer the same computation as model/cpu_model.cpp:
//   x = embed(tokens)
//   per layer:  xn = rms_norm(x + pending);  q,k,v = split(xn W_qkv);  q,k <- norm + rope;
//               k,v -> paged cache (a sliding layer's: the sequence's ring);
//               x += attention(q, cache) W_o;  xn = rms_norm(x)
//               MoE: route, experts gate/up, experts down -> pending (weighted in the next norm)
//               dense: pending = down(silu(gate) * up)
//   logits = rms_norm(x + pending)[output rows] W_lm;  argmax on the device
// With a DFlash draft, the norms after tapped layers also copy the layer output (x + pending)
// to taps_, and the pass ends by appending every row to the draft's context:
//   c = hidden_norm(taps W_fc);  per draft layer: k, v = c W_k, c W_v -> k norm + rope -> draft cache
// The draft's own pass (propose) is the same layer code over the draft's layers and cache.
// Every buffer is allocated once, for max_rows, so a pass only enqueues kernels: that is what
// lets a decode step be captured once per batch bucket and replayed as a CUDA graph.

#include <cublas_v2.h>

#include <algorithm>
#include <map>
#include <optional>

#include "gpu/cuda_util.cuh"
#include "gpu/device_weights.h"
#include "gpu/gpu_model.h"
#include "gpu/kernels/kernels.cuh"
#include "model/kv_cache.h"

namespace ultraserve::gpu {
namespace {

constexpr int kMaxAttentionSplits = 64;
constexpr size_t kCublasWorkspaceBytes = 32u << 20;

const bf16* as_bf16(const DeviceBuffer<uint16_t>& b) { return reinterpret_cast<const bf16*>(b.get()); }

// Pinned host memory, freed with the object.
template <typename T>
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t count) { ULTRASERVE_CUDA_CHECK(cudaMallocHost(&data_, count * sizeof(T))); }
  ~PinnedBuffer() { cudaFreeHost(data_); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  T* get() const { return data_; }

 private:
  T* data_ = nullptr;
};

// Where each layer of a model keeps its keys and values: full-attention layers in the paged
// blocks, sliding-window layers in the rings (one per live sequence, model/kv_cache.h's capacity).
// A block (ring) holds, layer after layer, [keys: slot][k_dim] then [values: slot][v_dim].
struct KvPlan {
  std::vector<size_t> offset;  // per layer: elements from its block's (ring's) start to its keys
  size_t block_elements = 0, ring_elements = 0;
  int ring_capacity = 0;  // 0: no sliding layers

  KvPlan(const ModelConfig& c, int block_size) {
    if (c.sliding) ring_capacity = c.sliding->window + PagedKvCache::kMaxRollback;
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const bool ring = c.is_sliding_layer(l);
      size_t& end = ring ? ring_elements : block_elements;
      offset.push_back(end);
      end += size_t(ring ? ring_capacity : block_size) * (c.k_dim(l) + c.v_dim(l));
    }
  }
  size_t block_bytes() const { return block_elements * sizeof(uint16_t); }
};

// A draft loaded with the target: its config, weights and context cache.
struct DraftStack {
  ModelConfig config;
  DeviceDraftWeights weights;
  DeviceBuffer<uint16_t> kv;  // kv_blocks + 1 blocks of the draft's layers, indexed by the target's tables
};

// What one pass of layers runs over: the target's, or its draft's.
struct LayerStack {
  const ModelConfig& c;
  const DeviceModelWeights& w;
  const std::vector<KvLayout>& kv;  // per layer
};

enum class Pass { target, draft };

HeadShape head_shape(const ModelConfig& c, int layer) {
  return {c.num_attention_heads, c.kv_heads(layer), c.head_dim, c.value_head_dim()};
}

RopeTable rope_table(const LayerStack& stack, int layer) {
  const bool sliding = stack.c.is_sliding_layer(layer);
  return {(sliding ? stack.w.sliding_inv_freq : stack.w.inv_freq).get(), stack.c.rope(layer).rotary_dim};
}

RouterRule router_rule(const ModelConfig& c, const DeviceLayerWeights& l) {
  RouterRule rule;
  rule.norm_topk = c.norm_topk_prob;
  if (c.router == ModelConfig::Router::sigmoid_grouped) {
    rule.sigmoid_grouped = true;
    rule.bias = l.router_bias.get();
    rule.n_group = c.n_group;
    rule.topk_group = c.topk_group;
    rule.scaling = static_cast<float>(c.routed_scaling_factor);
  }
  return rule;
}

class CudaModel final : public GpuModel {
 public:
  CudaModel(const ModelConfig& config, DeviceModelWeights weights, const GpuModelOptions& options,
            std::optional<DraftStack> draft);
  ~CudaModel() override;

  PassResult run(const PassRequest& request) override { return execute(request, Pass::target); }
  PassResult propose(const PassRequest& request) override;
  std::vector<StageTime> stage_times(const PassRequest& request, int repeats) override;
  const GpuModelInfo& info() const override { return info_; }
  size_t decode_bytes(int context) const override;

 private:
  // Where each part of the per-pass metadata lives in meta_ (int32 offsets).
  int32_t* tokens() const { return meta_.get(); }
  int32_t* positions() const { return meta_.get() + max_rows_; }
  int32_t* table_of() const { return meta_.get() + 2 * max_rows_; }
  int32_t* output_rows() const { return meta_.get() + 3 * max_rows_; }
  int32_t* kv_end() const { return meta_.get() + 4 * max_rows_; }
  int32_t* rings() const { return meta_.get() + 5 * max_rows_; }  // max_sequences + 1 of them
  int32_t* tables() const { return rings() + options_.max_sequences + 1; }
  size_t meta_ints() const {
    return 5 * size_t(max_rows_) + (options_.max_sequences + 1) * (1 + size_t(max_blocks_per_table_));
  }

  void validate(const PassRequest& request) const;
  int graph_bucket(const PassRequest& request) const;
  struct Shape {
    int bucket, rows, outputs;  // bucket 0: no graph; rows and outputs as launched (padded)
  };
  Shape upload(const PassRequest& request);
  PassResult execute(const PassRequest& request, Pass pass);
  void forward(Pass pass, int rows, int outputs);
  void target_forward(int rows, int outputs);
  void draft_forward(int rows, int outputs);
  void append_draft_context(int rows);
  void layer(const LayerStack& stack, int index, int rows, ResidualDelta& pending, RowCopy previous_output);
  // y[rows, w.rows] = x w^T, whichever format w is in.
  void project(const DeviceLinear& w, const bf16* x, int rows, float* y);
  void lm_head(int outputs);
  LayerStack target_stack() const { return {c_, w_, target_kv_}; }
  LayerStack draft_stack() const { return {draft_->config, draft_->weights.stack, draft_kv_}; }
  // Each layer's KvLayout in `cache` (blocks) and `ring_cache` (rings) as `plan` places them.
  std::vector<KvLayout> kv_layouts(const ModelConfig& c, const KvPlan& plan, uint16_t* cache, uint16_t* ring_cache) const;
  RowCopy tap_of(int layer) const;  // where the norm after `layer` copies its output, if tapped
  void stage(const char* name);  // marks the end of a stage when timing stages
  void replay(Pass pass, int bucket);
  ExpertWeights expert_weights(const DeviceLayerWeights& l) const;

  ModelConfig c_;
  GpuModelOptions options_;
  DeviceModelWeights w_;
  std::optional<DraftStack> draft_;
  std::vector<int> tap_slot_;  // per target layer: its column block in taps_, or -1
  GpuModelInfo info_;
  int multiprocessors_ = 0, max_rows_ = 0, max_blocks_per_table_ = 0, vocab_out_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  Matmul matmul_{};
  DeviceBuffer<uint8_t> cublas_workspace_;

  DeviceBuffer<uint16_t> kv_;     // kv_blocks + 1 blocks: the last one takes the writes of padding rows
  DeviceBuffer<uint16_t> rings_;  // max_sequences + 1 rings (hybrid models): the last one the padding rows'
  std::vector<KvLayout> target_kv_, draft_kv_;
  DeviceBuffer<int32_t> meta_;
  std::unique_ptr<PinnedBuffer<int32_t>> meta_host_, argmax_host_;

  DeviceBuffer<float> x_, qkv_, q_, delta_, router_logits_, expert_weight_, expert_out_, dense_gate_up_,
      attention_partial_, logits_;
  DeviceBuffer<unsigned> attention_arrivals_, router_arrivals_;
  DeviceBuffer<uint16_t> xn_, attn_out_, act_, dense_act_, taps_;
  DeviceBuffer<uint16_t> fp8_dequantized_;  // an FP8 weight as bf16, for passes too large for the FP8 GEMV
  std::unique_ptr<Fp8TensorCores> fp8_tensor_cores_;  // or those passes on FP8 tensor cores
  DeviceBuffer<int32_t> expert_of_pair_, pairs_by_expert_, active_experts_, expert_begin_, argmax_;

  // The gapless decode step for one-row target passes, when step_plan_.runs.
  void plan_persistent_decode();
  void add_decode_step_stages(const PassRequest& request, std::vector<StageTime>& totals);
  DecodeStep step_{};
  DecodeStepPlan step_plan_;
  DeviceBuffer<uint8_t> step_layers_;  // DecodeStepLayer per layer
  DeviceBuffer<unsigned> step_barrier_;

  std::map<std::pair<Pass, int>, cudaGraphExec_t> graphs_;
  std::vector<std::pair<const char*, cudaEvent_t>>* stage_marks_ = nullptr;
};

CudaModel::CudaModel(const ModelConfig& config, DeviceModelWeights weights, const GpuModelOptions& options,
                     std::optional<DraftStack> draft)
    : c_(config), options_(options), w_(std::move(weights)), draft_(std::move(draft)) {
  cudaDeviceProp prop{};
  ULTRASERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.device));
  multiprocessors_ = prop.multiProcessorCount;
  max_rows_ = options.max_rows;
  const int max_context = options.max_context ? options.max_context : c_.max_position_embeddings;
  max_blocks_per_table_ = (max_context + options.kv_block_size - 1) / options.kv_block_size;
  vocab_out_ = options.sampleable_vocab ? options.sampleable_vocab : c_.vocab_size;
  if (max_rows_ <= 0 || options.max_sequences <= 0) throw GpuError("max_rows and max_sequences must be positive");

  ULTRASERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  if (cublasCreate(&cublas_) != CUBLAS_STATUS_SUCCESS) throw GpuError("cublasCreate failed");
  cublas_workspace_ = DeviceBuffer<uint8_t>(kCublasWorkspaceBytes);  // set, so graph capture needs no allocation
  cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.bytes());
  cublasSetStream(cublas_, stream_);
  if (options.gemv_max_rows < 0 || options.gemv_max_rows > kMaxGemvRows)
    throw GpuError("gemv_max_rows must be in 0.." + std::to_string(kMaxGemvRows));
  matmul_ = {cublas_, options.gemv_max_rows};
  if (options.attention_combine_max_splits < 0) throw GpuError("attention_combine_max_splits must be >= 0");
  if (options.attention_split_positions < 1) throw GpuError("attention_split_positions must be >= 1");

  // Scratch serves both stacks: sized for the wider of target and draft.
  auto widest = [&](auto dim) -> size_t { return std::max<size_t>(dim(c_), draft_ ? dim(draft_->config) : 0); };
  const size_t T = max_rows_, H = c_.hidden_size, k = std::max(1, c_.num_experts_per_tok);
  meta_ = DeviceBuffer<int32_t>(meta_ints());
  meta_host_ = std::make_unique<PinnedBuffer<int32_t>>(meta_ints());
  argmax_host_ = std::make_unique<PinnedBuffer<int32_t>>(T);
  x_ = DeviceBuffer<float>(T * H);
  xn_ = DeviceBuffer<uint16_t>(T * H);
  const auto projection_width = [](const ModelConfig& m) {
    int widest_layer = 0;
    for (int l = 0; l < m.num_hidden_layers; ++l) widest_layer = std::max(widest_layer, m.q_dim() + m.k_dim(l) + m.v_dim(l));
    return widest_layer;
  };
  qkv_ = DeviceBuffer<float>(T * widest(projection_width));
  q_ = DeviceBuffer<float>(T * widest([](const ModelConfig& m) { return m.q_dim(); }));
  attn_out_ = DeviceBuffer<uint16_t>(T * widest([](const ModelConfig& m) { return m.attention_out_dim(); }));
  delta_ = DeviceBuffer<float>(T * H);
  tap_slot_.assign(c_.num_hidden_layers, -1);
  if (draft_) {
    const std::vector<int>& taps = draft_->config.dflash->target_layer_ids;
    for (size_t i = 0; i < taps.size(); ++i) tap_slot_.at(taps[i]) = static_cast<int>(i);
    taps_ = DeviceBuffer<uint16_t>(T * taps.size() * H);
  }
  if (c_.num_experts) {
    router_logits_ = DeviceBuffer<float>(T * c_.num_experts);
    expert_of_pair_ = DeviceBuffer<int32_t>(T * k);
    expert_weight_ = DeviceBuffer<float>(T * k);
    pairs_by_expert_ = DeviceBuffer<int32_t>(T * k);
    active_experts_ = DeviceBuffer<int32_t>(1 + c_.num_experts);
    expert_begin_ = DeviceBuffer<int32_t>(1 + c_.num_experts);
    act_ = DeviceBuffer<uint16_t>(T * k * c_.moe_intermediate_size);
    expert_out_ = DeviceBuffer<float>(T * k * H);
  }
  if (const size_t I = widest([](const ModelConfig& m) { return m.intermediate_size; })) {
    dense_gate_up_ = DeviceBuffer<float>(T * 2 * I);
    dense_act_ = DeviceBuffer<uint16_t>(T * I);
  }
  size_t partial = 0;
  int widest_kv_heads = 0;
  for (const ModelConfig* m : {&c_, draft_ ? &draft_->config : &c_})
    for (int l = 0; l < m->num_hidden_layers; ++l) {
      const HeadShape heads = head_shape(*m, l);
      widest_kv_heads = std::max(widest_kv_heads, heads.kv_heads);
      for (int rows = 1; rows <= max_rows_; ++rows)
        partial = std::max(partial, attention_scratch_floats(rows, heads,
                                                             attention_splits(rows, heads.kv_heads, multiprocessors_,
                                                                              kMaxAttentionSplits)));
    }
  attention_partial_ = DeviceBuffer<float>(partial);
  attention_arrivals_ = DeviceBuffer<unsigned>(size_t(max_rows_) * widest_kv_heads);
  ULTRASERVE_CUDA_CHECK(cudaMemset(attention_arrivals_.get(), 0, attention_arrivals_.bytes()));
  router_arrivals_ = DeviceBuffer<unsigned>(1);
  ULTRASERVE_CUDA_CHECK(cudaMemset(router_arrivals_.get(), 0, router_arrivals_.bytes()));
  size_t fp8_elements = 0;
  int fp8_widest = 0;
  for (const DeviceLayerWeights& l : w_.layers)
    for (const DeviceLinear* m : {&l.qkv, &l.o, &l.dense_gate_up, &l.dense_down})
      if (m->is_fp8()) {
        fp8_elements = std::max(fp8_elements, size_t(m->rows) * m->cols);
        fp8_widest = std::max(fp8_widest, m->cols);
      }
  if (max_rows_ > options.gemv_max_rows && fp8_elements) {
    fp8_dequantized_ = DeviceBuffer<uint16_t>(fp8_elements);  // for the shapes tensor cores cannot take
    if (options.fp8_tensor_cores) {
      fp8_tensor_cores_ = std::make_unique<Fp8TensorCores>(max_rows_, fp8_widest, cublas_workspace_.get(),
                                                           cublas_workspace_.bytes());
      matmul_.fp8_tensor_cores = fp8_tensor_cores_.get();
    }
  }
  logits_ = DeviceBuffer<float>(T * c_.vocab_size);
  argmax_ = DeviceBuffer<int32_t>(T);

  // A hybrid model's rings first (one per sequence a pass may carry, and a spare for padding
  // rows); the KV blocks take what is left, each holding its positions for the target and the draft.
  const KvPlan plan(c_, options.kv_block_size);
  const KvPlan draft_plan = draft_ ? KvPlan(draft_->config, options.kv_block_size) : KvPlan(ModelConfig{}, 1);
  const int ring_count = plan.ring_capacity ? options.max_sequences + 1 : 0;
  rings_ = DeviceBuffer<uint16_t>(ring_count * plan.ring_elements);
  const size_t block_bytes = plan.block_bytes() + draft_plan.block_bytes();
  int blocks = options.kv_blocks;
  if (blocks == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    ULTRASERVE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    blocks = block_bytes ? static_cast<int>(std::min<size_t>(free_bytes * options.memory_fraction / block_bytes, 1 << 24))
                         : 1 << 16;  // every layer slides: blocks only count positions
  }
  if (blocks < 1) throw GpuError("no device memory left for the KV cache");
  kv_ = DeviceBuffer<uint16_t>((blocks + 1) * plan.block_elements);
  for (DeviceBuffer<uint16_t>* b : {&kv_, &rings_})
    if (!b->empty()) ULTRASERVE_CUDA_CHECK(cudaMemset(b->get(), 0, b->bytes()));
  if (draft_) {
    draft_->kv = DeviceBuffer<uint16_t>((blocks + 1) * draft_plan.block_elements);
    ULTRASERVE_CUDA_CHECK(cudaMemset(draft_->kv.get(), 0, draft_->kv.bytes()));
  }
  target_kv_ = kv_layouts(c_, plan, kv_.get(), rings_.get());
  if (draft_) draft_kv_ = kv_layouts(draft_->config, draft_plan, draft_->kv.get(), nullptr);

  // The padding rows' block table: every entry is the spare block (upload() names their ring).
  std::vector<int32_t> spare(max_blocks_per_table_, blocks);
  ULTRASERVE_CUDA_CHECK(cudaMemcpy(tables() + size_t(options.max_sequences) * max_blocks_per_table_, spare.data(),
                                   spare.size() * sizeof(int32_t), cudaMemcpyHostToDevice));

  info_.device_name = prop.name;
  info_.experts = w_.experts;
  info_.weight_bytes = w_.bytes + (draft_ ? draft_->weights.bytes() : 0);
  info_.kv_bytes = kv_.bytes() + rings_.bytes() + (draft_ ? draft_->kv.bytes() : 0);
  if (plan.ring_capacity) {
    info_.kv_rings = options.max_sequences;
    info_.max_rows_per_sequence = PagedKvCache::kMaxRollback;
  }
  if (draft_) {
    const ModelConfig::DFlash& d = *draft_->config.dflash;
    info_.draft_layers = draft_->config.num_hidden_layers;
    info_.draft_taps = static_cast<int>(d.target_layer_ids.size());
    info_.draft_block_size = d.block_size;
    info_.draft_mask_token = d.mask_token_id;
  }
  plan_persistent_decode();
  info_.vocab_size = c_.vocab_size;
  info_.kv_blocks = blocks;
  info_.kv_block_size = options.kv_block_size;
  info_.max_rows = max_rows_;
  info_.max_context = max_context;
}

CudaModel::~CudaModel() {
  for (auto& [bucket, graph] : graphs_) cudaGraphExecDestroy(graph);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

// The gapless decode step, where every layer is one it computes: full attention with bf16
// projections and no sinks, experts behind a softmax router, and no draft tapping layer outputs.
void CudaModel::plan_persistent_decode() {
  const auto kernel_by_kernel = [&](const std::string& why) { info_.decode_step = "kernel by kernel: " + why; };
  if (!options_.persistent_decode) return kernel_by_kernel("persistent_decode is off");
  if (draft_) return kernel_by_kernel("a draft taps the layers");
  if (!c_.num_experts) return kernel_by_kernel("not a mixture-of-experts model");
  std::vector<DecodeStepLayer> layers;
  for (int i = 0; i < c_.num_hidden_layers; ++i) {
    const DeviceLayerWeights& l = w_.layers[i];
    if (!l.moe || c_.is_sliding_layer(i) || l.qkv.is_fp8() || l.o.is_fp8() || !l.sinks.empty() ||
        router_rule(c_, l).sigmoid_grouped)
      return kernel_by_kernel("layer " + std::to_string(i) + " is dense, sliding, FP8, with sinks or sigmoid-routed");
    layers.push_back({l.input_norm.get(), l.post_attention_norm.get(), l.q_norm.get(), l.k_norm.get(), as_bf16(l.qkv.bf16),
                      as_bf16(l.o.bf16), as_bf16(l.router), l.experts_gate_up.get(), l.experts_gate_up_scales.get(),
                      l.experts_down.get(), l.experts_down_scales.get(), target_kv_[i].layer_offset});
  }
  const HeadShape heads = head_shape(c_, 0);
  const int splits = std::min(attention_splits(1, heads.kv_heads, multiprocessors_, kMaxAttentionSplits),
                              std::max(1, multiprocessors_ / heads.kv_heads));
  step_ = {nullptr, c_.num_hidden_layers, c_.hidden_size, c_.num_experts, c_.num_experts_per_tok,
           c_.moe_intermediate_size, w_.experts, heads, static_cast<float>(c_.rms_norm_eps), c_.value_scale,
           router_rule(c_, w_.layers[0]), rope_table(target_stack(), 0), {positions(), table_of(), kv_end(), 1},
           target_kv_[0],
           {attention_partial_.get(), attention_arrivals_.get(), splits, options_.attention_combine_max_splits,
            std::min(options_.attention_split_positions, kDecodeStepTilePositions)},
           x_.get(), qkv_.get(), reinterpret_cast<bf16*>(attn_out_.get()), router_logits_.get(),
           reinterpret_cast<bf16*>(act_.get()), nullptr};
  step_plan_ = plan_decode_step(step_, multiprocessors_);
  if (!step_plan_.runs) return kernel_by_kernel(step_plan_.reason);
  step_layers_ = DeviceBuffer<uint8_t>(layers.size() * sizeof(DecodeStepLayer));
  ULTRASERVE_CUDA_CHECK(cudaMemcpy(step_layers_.get(), layers.data(), step_layers_.bytes(), cudaMemcpyHostToDevice));
  step_barrier_ = DeviceBuffer<unsigned>(2);
  ULTRASERVE_CUDA_CHECK(cudaMemset(step_barrier_.get(), 0, step_barrier_.bytes()));
  step_.layers = reinterpret_cast<const DecodeStepLayer*>(step_layers_.get());
  step_.barrier = step_barrier_.get();
  info_.decode_step = "persistent";
}

ExpertWeights CudaModel::expert_weights(const DeviceLayerWeights& l) const {
  return {w_.experts,          l.experts_gate_up.get(), l.experts_gate_up_scales.get(), l.experts_down.get(),
          l.experts_down_scales.get(), c_.num_experts,  c_.hidden_size,                 c_.moe_intermediate_size};
}

std::vector<KvLayout> CudaModel::kv_layouts(const ModelConfig& c, const KvPlan& plan, uint16_t* cache,
                                            uint16_t* ring_cache) const {
  std::vector<KvLayout> layouts;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const bool ring = c.is_sliding_layer(l);
    layouts.push_back({reinterpret_cast<bf16*>(ring ? ring_cache : cache), ring ? rings() : tables(),
                       ring ? plan.ring_elements : plan.block_elements, plan.offset[l], c.k_dim(l), c.v_dim(l),
                       ring ? plan.ring_capacity : options_.kv_block_size, max_blocks_per_table_,
                       ring ? c.sliding->window : 0});
  }
  return layouts;
}

RowCopy CudaModel::tap_of(int layer) const {
  if (layer < 0 || tap_slot_[layer] < 0) return {};
  const int H = c_.hidden_size, width = info_.draft_taps * H;
  return {reinterpret_cast<bf16*>(taps_.get()) + size_t(tap_slot_[layer]) * H, width};
}

// One decoder layer of `stack`. Its MLP's output is left in `pending` for the next norm to add;
// that norm also copies the previous layer's output where `previous_output` says.
void CudaModel::layer(const LayerStack& stack, int index, int rows, ResidualDelta& pending, RowCopy previous_output) {
  cudaStream_t s = stream_;
  const ModelConfig& c = stack.c;
  const DeviceLayerWeights& l = stack.w.layers[index];
  const int H = c.hidden_size, E = c.num_experts, k = c.num_experts_per_tok;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const HeadShape heads = head_shape(c, index);
  const AttentionRows attention_rows{positions(), table_of(), kv_end(), rows};
  const AttentionScratch scratch{attention_partial_.get(), attention_arrivals_.get(),
                                 attention_splits(rows, heads.kv_heads, multiprocessors_, kMaxAttentionSplits),
                                 options_.attention_combine_max_splits, options_.attention_split_positions};
  bf16* xn = reinterpret_cast<bf16*>(xn_.get());

  add_rms_norm(x_.get(), pending, l.input_norm.get(), eps, H, nullptr, rows, true, xn, s, previous_output);
  stage("input norm");
  project(l.qkv, xn, rows, qkv_.get());
  stage("qkv projection");
  qk_norm_rope_store(qkv_.get(), l.q_norm.get(), l.k_norm.get(), eps, rope_table(stack, index), c.value_scale, heads,
                     attention_rows, stack.kv[index], q_.get(), s);
  stage("q/k norm + rope + KV store");
  paged_attention(q_.get(), heads, attention_rows, stack.kv[index], l.sinks.get(), scratch,
                  reinterpret_cast<bf16*>(attn_out_.get()), s);
  stage("attention");
  project(l.o, reinterpret_cast<bf16*>(attn_out_.get()), rows, delta_.get());
  stage("o projection");
  const Routing routing{expert_of_pair_.get(), expert_weight_.get(), pairs_by_expert_.get(), active_experts_.get(),
                        expert_begin_.get()};
  if (l.moe && rows <= matmul_.gemv_max_rows && norm_route_fits(rows, H)) {  // decode: one kernel for the three
    norm_route_tokens({x_.get(), delta_.get(), l.post_attention_norm.get(), eps, H, as_bf16(l.router), E, k,
                       router_rule(c, l), router_logits_.get(), xn, router_arrivals_.get()},
                      rows, routing, s);
    stage("post-attention norm + router + routing");
  } else {
    add_rms_norm(x_.get(), {.dense = delta_.get()}, l.post_attention_norm.get(), eps, H, nullptr, rows, true, xn, s);
    stage("post-attention norm");
    if (l.moe) {
      linear(matmul_, as_bf16(l.router), E, H, xn, rows, router_logits_.get(), s);
      stage("router");
      route_tokens(router_logits_.get(), rows, E, k, router_rule(c, l), routing, s);
      stage("routing");
    }
  }
  if (l.moe) {
    const int max_active = std::min(E, rows * k);
    bf16* act = reinterpret_cast<bf16*>(act_.get());
    experts_gate_up(expert_weights(l), xn, k, routing, max_active, act, s);
    stage("experts gate/up");
    experts_down(expert_weights(l), act, routing, max_active, expert_out_.get(), s);
    stage("experts down");
    pending = {.expert_out = expert_out_.get(), .expert_weight = expert_weight_.get(), .top_k = k};
  } else {
    const int I = c.intermediate_size;
    project(l.dense_gate_up, xn, rows, dense_gate_up_.get());
    stage("dense gate/up");
    silu_mul(dense_gate_up_.get(), rows, I, reinterpret_cast<bf16*>(dense_act_.get()), s);
    stage("dense silu");
    project(l.dense_down, reinterpret_cast<bf16*>(dense_act_.get()), rows, delta_.get());
    stage("dense down");
    pending = {.dense = delta_.get()};
  }
}

void CudaModel::project(const DeviceLinear& w, const bf16* x, int rows, float* y) {
  if (w.is_fp8())
    linear_fp8(matmul_, {w.fp8.get(), w.scale_inv.get(), w.rows, w.cols}, x, rows, y,
               reinterpret_cast<bf16*>(fp8_dequantized_.get()), stream_);
  else
    linear(matmul_, as_bf16(w.bf16), w.rows, w.cols, x, rows, y, stream_);
}

// The normed output rows (in xn_) through the target's LM head, and their argmax.
void CudaModel::lm_head(int outputs) {
  linear(matmul_, reinterpret_cast<const bf16*>(w_.output_matrix()), c_.vocab_size, c_.hidden_size,
         reinterpret_cast<bf16*>(xn_.get()), outputs, logits_.get(), stream_);
  stage("LM head");
  argmax_rows(logits_.get(), outputs, c_.vocab_size, vocab_out_, argmax_.get(), stream_);
  stage("argmax");
}

void CudaModel::forward(Pass pass, int rows, int outputs) {
  if (pass == Pass::target)
    target_forward(rows, outputs);
  else
    draft_forward(rows, outputs);
}

void CudaModel::target_forward(int rows, int outputs) {
  cudaStream_t s = stream_;
  const int H = c_.hidden_size, L = c_.num_hidden_layers;
  const float eps = static_cast<float>(c_.rms_norm_eps);
  bf16* xn = reinterpret_cast<bf16*>(xn_.get());
  embed_tokens(as_bf16(w_.embed), tokens(), rows, H, x_.get(), s);
  stage("embed");
  const LayerStack stack = target_stack();
  ResidualDelta pending;  // what the last MLP owes the residual stream
  if (rows == 1 && step_plan_.runs) {
    decode_step(step_, step_plan_, s);  // every layer; x holds the last one's output
    stage("decode step (persistent)");
  } else {
    for (int l = 0; l < L; ++l) layer(stack, l, rows, pending, tap_of(l - 1));
  }
  if (const RowCopy last = tap_of(L - 1); last.out) {  // the last layer's output is wanted for every row
    add_rms_norm(x_.get(), pending, w_.final_norm.get(), eps, H, nullptr, rows, true, xn, s, last);
    pending = {};
    stage("tap of the last layer");
  }
  add_rms_norm(x_.get(), pending, w_.final_norm.get(), eps, H, output_rows(), outputs, false, xn, s);
  stage("final norm");
  lm_head(outputs);
  if (draft_) append_draft_context(rows);
}

// Every row's tapped hidden states become its draft context entry: fused, normed, and projected
// to each draft layer's keys (normed, rotated) and values, stored at the row's position.
void CudaModel::append_draft_context(int rows) {
  cudaStream_t s = stream_;
  const ModelConfig& d = draft_->config;
  const DeviceDraftWeights& w = draft_->weights;
  const int H = d.hidden_size;
  const float eps = static_cast<float>(d.rms_norm_eps);
  bf16* xn = reinterpret_cast<bf16*>(xn_.get());
  linear(matmul_, as_bf16(w.fc), H, info_.draft_taps * H, reinterpret_cast<bf16*>(taps_.get()), rows, delta_.get(), s);
  add_rms_norm(delta_.get(), {}, w.hidden_norm.get(), eps, H, nullptr, rows, false, xn, s);
  const LayerStack stack = draft_stack();
  const AttentionRows attention_rows{positions(), table_of(), kv_end(), rows};
  for (int l = 0; l < d.num_hidden_layers; ++l) {
    HeadShape kv_heads_only = head_shape(d, l);  // rows of [k | v], no queries
    kv_heads_only.q_heads = 0;
    const bf16* kv_rows = as_bf16(w.stack.layers[l].qkv.bf16) + size_t(d.q_dim()) * H;  // past the q rows (bf16: a draft is)
    linear(matmul_, kv_rows, d.k_dim(l) + d.v_dim(l), H, xn, rows, qkv_.get(), s);
    qk_norm_rope_store(qkv_.get(), nullptr, w.stack.layers[l].k_norm.get(), eps, rope_table(stack, l), d.value_scale,
                       kv_heads_only, attention_rows, stack.kv[l], nullptr, s);
  }
  stage("draft context");
}

void CudaModel::draft_forward(int rows, int outputs) {
  const ModelConfig& d = draft_->config;
  embed_tokens(as_bf16(w_.embed), tokens(), rows, d.hidden_size, x_.get(), stream_);
  const LayerStack stack = draft_stack();
  ResidualDelta pending;
  for (int l = 0; l < d.num_hidden_layers; ++l) layer(stack, l, rows, pending, {});
  add_rms_norm(x_.get(), pending, draft_->weights.stack.final_norm.get(), static_cast<float>(d.rms_norm_eps),
               d.hidden_size, output_rows(), outputs, false, reinterpret_cast<bf16*>(xn_.get()), stream_);
  lm_head(outputs);
}

void CudaModel::validate(const PassRequest& r) const {
  const size_t rows = r.tokens.size();
  if (rows == 0 || rows > size_t(max_rows_)) throw GpuError("pass: row count outside 1..max_rows");
  if (r.positions.size() != rows || r.table_of.size() != rows || (!r.kv_end.empty() && r.kv_end.size() != rows))
    throw GpuError("pass: tokens/positions/table_of/kv_end differ in size");
  if (r.tables.size() > size_t(options_.max_sequences)) throw GpuError("pass: more block tables than max_sequences");
  if (r.output_rows.empty() || r.output_rows.size() > rows) throw GpuError("pass: output row count outside 1..rows");
  for (size_t i = 0; i < rows; ++i) {
    if (r.tokens[i] < 0 || r.tokens[i] >= c_.vocab_size) throw GpuError("pass: token id outside the vocabulary");
    if (r.table_of[i] < 0 || size_t(r.table_of[i]) >= r.tables.size()) throw GpuError("pass: bad table index");
    const size_t covered = r.tables[r.table_of[i]].size() * options_.kv_block_size;
    if (r.positions[i] < 0 || size_t(r.positions[i]) >= covered || r.positions[i] >= info_.max_context)
      throw GpuError("pass: position outside the sequence's KV blocks or max_context");
    if (!r.kv_end.empty() && (r.kv_end[i] <= r.positions[i] || size_t(r.kv_end[i]) > covered))
      throw GpuError("pass: kv_end must be past the row's position and within its KV blocks");
  }
  for (const auto& t : r.tables)
    if (t.size() > size_t(max_blocks_per_table_)) throw GpuError("pass: block table longer than max_context allows");
  if (!r.rings.empty() && r.rings.size() != r.tables.size()) throw GpuError("pass: rings and block tables differ in count");
  if (info_.kv_rings) {  // a hybrid model: every sequence brings its ring, and few enough rows to fit it
    if (r.rings.size() != r.tables.size()) throw GpuError("pass: a hybrid model needs one ring per block table");
    for (int32_t ring : r.rings)
      if (ring < 0 || ring >= info_.kv_rings) throw GpuError("pass: ring outside 0..kv_rings");
    std::vector<int> rows_of(r.tables.size());
    for (int32_t t : r.table_of)
      if (++rows_of[t] > info_.max_rows_per_sequence)
        throw GpuError("pass: more rows of one sequence than its sliding-window ring can take");
  }
  for (int32_t o : r.output_rows)
    if (o < 0 || size_t(o) >= rows) throw GpuError("pass: output row outside the pass");
}

// A pure decode step (every row an output, in order) of a size some graph covers: the smallest
// such bucket; else 0.
int CudaModel::graph_bucket(const PassRequest& r) const {
  const int rows = static_cast<int>(r.tokens.size());
  if (r.output_rows.size() != r.tokens.size()) return 0;
  for (int i = 0; i < rows; ++i)
    if (r.output_rows[i] != i) return 0;
  int best = 0;
  for (int b : options_.graph_batch_sizes)
    if (b >= rows && b <= max_rows_ && (best == 0 || b < best)) best = b;
  return best;
}

void CudaModel::replay(Pass pass, int bucket) {
  auto it = graphs_.find({pass, bucket});
  if (it == graphs_.end()) {
    cudaGraph_t graph;
    ULTRASERVE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      forward(pass, bucket, bucket);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      throw;
    }
    ULTRASERVE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec;
    ULTRASERVE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    cudaGraphDestroy(graph);
    it = graphs_.emplace(std::pair{pass, bucket}, exec).first;
  }
  ULTRASERVE_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
}

CudaModel::Shape CudaModel::upload(const PassRequest& r) {
  validate(r);
  ULTRASERVE_CUDA_CHECK(cudaSetDevice(options_.device));
  const int rows = static_cast<int>(r.tokens.size());
  const int bucket = graph_bucket(r);
  const Shape shape{bucket, bucket ? bucket : rows, bucket ? bucket : static_cast<int>(r.output_rows.size())};

  // Metadata, padded: spare rows decode token 0 at position 0 into the spare block.
  int32_t* m = meta_host_->get();
  for (int i = 0; i < shape.rows; ++i) {
    const bool real = i < rows;
    m[i] = real ? r.tokens[i] : 0;
    m[max_rows_ + i] = real ? r.positions[i] : 0;
    m[2 * max_rows_ + i] = real ? r.table_of[i] : options_.max_sequences;
    m[4 * max_rows_ + i] = !real ? 1 : r.kv_end.empty() ? r.positions[i] + 1 : r.kv_end[i];
  }
  for (int i = 0; i < shape.outputs; ++i) m[3 * max_rows_ + i] = i < int(r.output_rows.size()) ? r.output_rows[i] : i;
  int32_t* ring = m + (rings() - meta_.get());
  std::copy(r.rings.begin(), r.rings.end(), ring);
  ring[options_.max_sequences] = options_.max_sequences;  // the padding rows' table's: the spare ring
  int32_t* t = m + (tables() - meta_.get());
  for (size_t s = 0; s < r.tables.size(); ++s)
    std::copy(r.tables[s].begin(), r.tables[s].end(), t + s * max_blocks_per_table_);
  const size_t used = (tables() - meta_.get()) + r.tables.size() * max_blocks_per_table_;
  ULTRASERVE_CUDA_CHECK(cudaMemcpyAsync(meta_.get(), m, used * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  return shape;
}

PassResult CudaModel::propose(const PassRequest& r) {
  if (!draft_) throw GpuError("propose: this model was loaded without a draft");
  return execute(r, Pass::draft);
}

PassResult CudaModel::execute(const PassRequest& r, Pass pass) {
  const Shape shape = upload(r);
  if (shape.bucket)
    replay(pass, shape.bucket);
  else
    forward(pass, shape.rows, shape.outputs);

  PassResult result;
  const size_t wanted = r.output_rows.size();
  ULTRASERVE_CUDA_CHECK(cudaMemcpyAsync(argmax_host_->get(), argmax_.get(), wanted * sizeof(int32_t),
                                        cudaMemcpyDeviceToHost, stream_));
  if (r.want_logits) {
    result.logits.resize(wanted * c_.vocab_size);
    ULTRASERVE_CUDA_CHECK(cudaMemcpyAsync(result.logits.data(), logits_.get(), result.logits.size() * sizeof(float),
                                          cudaMemcpyDeviceToHost, stream_));
  }
  ULTRASERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  result.argmax.assign(argmax_host_->get(), argmax_host_->get() + wanted);
  return result;
}

void CudaModel::stage(const char* name) {
  if (!stage_marks_) return;
  cudaEvent_t e;
  ULTRASERVE_CUDA_CHECK(cudaEventCreate(&e));
  ULTRASERVE_CUDA_CHECK(cudaEventRecord(e, stream_));
  stage_marks_->push_back({name, e});
}

// The persistent step's own stages, from block 0's clock (its barriers: the wait for the slowest
// block), summed over the layers; they replace the step's one row.
void CudaModel::add_decode_step_stages(const PassRequest& r, std::vector<StageTime>& totals) {
  const int L = c_.num_hidden_layers;
  DeviceBuffer<unsigned long long> trace(size_t(L) * kDecodeStepTraceSlots);
  step_.trace = trace.get();
  const Shape shape = upload(r);
  forward(Pass::target, shape.rows, shape.outputs);
  step_.trace = nullptr;
  ULTRASERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // (the stream does not block with the legacy one)
  std::vector<unsigned long long> t(trace.size());
  ULTRASERVE_CUDA_CHECK(cudaMemcpy(t.data(), trace.get(), trace.bytes(), cudaMemcpyDeviceToHost));
  std::erase_if(totals, [](const StageTime& s) { return s.stage == "decode step (persistent)"; });
  const auto at = [&](int layer, int slot) { return double(t[size_t(layer) * kDecodeStepTraceSlots + slot]); };
  StageTime barriers{"persistent: the barriers after the stages", 0, 0};
  for (int stage = 0; stage < 7; ++stage) {
    StageTime s{std::string("persistent: ") + kDecodeStepStages[stage], 0, L};
    for (int l = 0; l < L; ++l) {
      s.seconds += (at(l, 2 * stage + 1) - at(l, 2 * stage)) * 1e-9;
      barriers.seconds += (at(l, 2 * stage + 2) - at(l, 2 * stage + 1)) * 1e-9;
      barriers.calls += at(l, 2 * stage + 2) > at(l, 2 * stage + 1);
    }
    totals.push_back(s);
  }
  totals.push_back(barriers);
  const auto part = [&](const char* name, int from, int to) {  // a stretch inside the stages
    StageTime s{std::string("persistent, inside: ") + name, 0, L};
    for (int l = 0; l < L; ++l) s.seconds += (at(l, to) - at(l, from)) * 1e-9;
    totals.push_back(s);
  };
  part("waiting for the q/k/v rows", 0, 15);
  part("the input norm", 15, 16);
  part("routing", 10, 20);
  part("issuing the expert copies", 20, 17);
  part("waiting for the gate/up rows", 17, 18);
  part("waiting for the down rows", 12, 19);
}

// The pass launched kernel by kernel (no graph), an event after each stage; the time between
// consecutive events is the stage's. Programmatic launch overlap blurs the edges slightly.
std::vector<StageTime> CudaModel::stage_times(const PassRequest& r, int repeats) {
  std::vector<StageTime> totals;
  for (int i = 0; i < repeats; ++i) {
    const Shape shape = upload(r);
    std::vector<std::pair<const char*, cudaEvent_t>> marks;
    stage_marks_ = &marks;
    stage("start");
    forward(Pass::target, shape.rows, shape.outputs);
    stage_marks_ = nullptr;
    ULTRASERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t m = 1; m < marks.size(); ++m) {
      float ms = 0;
      ULTRASERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, marks[m - 1].second, marks[m].second));
      auto it = std::find_if(totals.begin(), totals.end(), [&](const StageTime& t) { return t.stage == marks[m].first; });
      if (it == totals.end()) it = totals.insert(totals.end(), {marks[m].first, 0.0, 0});
      it->seconds += ms * 1e-3 / repeats;
      it->calls += i == 0;
    }
    for (auto& [name, e] : marks) cudaEventDestroy(e);
  }
  if (r.tokens.size() == 1 && step_plan_.runs) add_decode_step_stages(r, totals);
  return totals;
}

size_t CudaModel::decode_bytes(int context) const {
  const size_t bf = 2, H = c_.hidden_size;
  size_t bytes = H * bf + size_t(c_.vocab_size) * H * bf;  // embedding row, LM head
  const size_t expert_bytes =
      w_.experts == ExpertFormat::mxfp4 ? 3 * H * c_.moe_intermediate_size * 17 / 32  // 4-bit values + 1 scale per 32
                                        : 3 * H * c_.moe_intermediate_size * bf;
  for (int layer = 0; layer < c_.num_hidden_layers; ++layer) {
    const DeviceLayerWeights& l = w_.layers[layer];
    const size_t positions = c_.is_sliding_layer(layer) ? std::min(context, c_.sliding->window) : context;
    bytes += l.qkv.bytes() + l.o.bytes() + positions * (c_.k_dim(layer) + c_.v_dim(layer)) * bf;
    bytes += l.moe ? l.router.bytes() + size_t(c_.num_experts_per_tok) * expert_bytes
                   : l.dense_gate_up.bytes() + l.dense_down.bytes();
  }
  return bytes;
}

GpuModelOptions checked(GpuModelOptions o) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) throw GpuError("no CUDA device");
  if (o.device < 0 || o.device >= count) throw GpuError("no CUDA device " + std::to_string(o.device));
  ULTRASERVE_CUDA_CHECK(cudaSetDevice(o.device));
  return o;
}

}  // namespace

std::unique_ptr<GpuModel> GpuModel::load(const ModelConfig& config, const ModelWeights& weights,
                                         const GpuModelOptions& options, const ModelConfig* draft_config,
                                         const ModelWeights* draft_weights) {
  const GpuModelOptions o = checked(options);
  std::optional<DraftStack> draft;
  if (draft_config) {
    if (!draft_config->dflash || !draft_weights) throw GpuError("load: a draft needs its DFlash config and weights");
    draft = DraftStack{*draft_config, upload_draft_weights(*draft_config, *draft_weights), {}};
  }
  return std::make_unique<CudaModel>(config, upload_weights(config, weights, o.experts), o, std::move(draft));
}

std::unique_ptr<GpuModel> GpuModel::random(const ModelConfig& config, uint64_t seed, const GpuModelOptions& options,
                                           const ModelConfig* draft_config) {
  const GpuModelOptions o = checked(options);
  std::optional<DraftStack> draft;
  if (draft_config) {
    if (!draft_config->dflash) throw GpuError("random: the draft config has no dflash_config");
    draft = DraftStack{*draft_config, random_draft_weights(*draft_config, seed + 1), {}};
  }
  return std::make_unique<CudaModel>(config, random_device_weights(config, o.experts, seed), o, std::move(draft));
}

}  // namespace ultraserve::gpu
