// MXFP4 experts in checkpoints: the loader takes them (or float experts) and checks them
// strictly; make-checkpoint --experts mxfp4 and quantize write them; a quantized model still
// generates, close to the model it came from.

#include <cmath>
#include <cstring>

#include "model/checkpoint.h"
#include "model/cpu_model.h"
#include "model/error.h"
#include "model/mxfp4_tensors.h"
#include "model/quantize_checkpoint.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::StoredTensor;
using testing::erase_stored;
using testing::find_stored;

const std::string kConfig = "moe_topk2_norm.json";  // hidden 64, expert width 32: MXFP4 fits
const std::string kGate0 = "model.layers.0.mlp.experts.0.gate_proj";

fs::path make(const ScratchDir& dir, const std::string& name, ExpertStorage experts, uint64_t shard_bytes = 4ull << 30) {
  RandomCheckpointOptions o;
  o.config_json = testing::fixture("configs/" + kConfig);
  o.out_dir = dir / name;
  o.seed = 5;
  o.experts = experts;
  o.shard_bytes = shard_bytes;
  write_random_checkpoint(o);
  return o.out_dir;
}

QuantizeReport quantize(const fs::path& from, const fs::path& to, bool force = false) {
  return quantize_checkpoint({from, to, force, 2, {}});
}

TEST(Mxfp4Checkpoint, LoadsMxfp4ExpertsAsTheirDequantizedValues) {
  ScratchDir dir;
  const fs::path dense_path = make(dir, "bf16", ExpertStorage::dense);
  const fs::path mx_path = make(dir, "mxfp4", ExpertStorage::mxfp4);
  const LoadedModel dense = load_model(dense_path);
  const LoadedModel mx = load_model(mx_path);
  EXPECT_EQ(dense.weights.expert_storage, ExpertStorage::dense);
  EXPECT_EQ(mx.weights.expert_storage, ExpertStorage::mxfp4);

  const CheckpointTensors dense_tensors = CheckpointTensors::open(dense_path);
  const CheckpointTensors mx_tensors = CheckpointTensors::open(mx_path);
  EXPECT_FALSE(load_expert_mxfp4(dense_tensors, kGate0 + ".weight"));
  EXPECT_FALSE(mx_tensors.find(kGate0 + ".weight"));
  for (size_t l = 0; l < mx.weights.layers.size(); ++l) {
    for (size_t e = 0; e < mx.weights.layers[l].experts.size(); ++e) {
      const std::string prefix = "model.layers." + std::to_string(l) + ".mlp.experts." + std::to_string(e) + ".";
      const FeedForward& got = mx.weights.layers[l].experts[e];
      const FeedForward& original = dense.weights.layers[l].experts[e];
      for (auto [name, m, o] : {std::tuple{"gate_proj", &got.gate, &original.gate},
                                std::tuple{"up_proj", &got.up, &original.up},
                                std::tuple{"down_proj", &got.down, &original.down}}) {
        SCOPED_TRACE(prefix + name);
        const std::optional<Mxfp4Matrix> stored = load_expert_mxfp4(mx_tensors, prefix + name + ".weight");
        ASSERT_TRUE(stored);
        EXPECT_EQ(m->data, dequantize_mxfp4(*stored));
        // ... which is the quantization of the bf16 checkpoint's values for the same seed.
        EXPECT_EQ(m->data, dequantize_mxfp4(quantize_mxfp4(o->data, o->rows, o->cols)));
      }
    }
  }
  // Everything else is as the float checkpoint has it.
  EXPECT_EQ(mx.weights.layers[1].router.data, dense.weights.layers[1].router.data);
  EXPECT_EQ(mx.weights.layers[2].q_proj.data, dense.weights.layers[2].q_proj.data);
  EXPECT_EQ(mx.weights.embed_tokens.data, dense.weights.embed_tokens.data);
}

TEST(Mxfp4Checkpoint, ExpertsMayHaveTheirOwnFloatDtype) {
  ScratchDir dir;
  RandomCheckpointOptions o;
  o.config_json = testing::fixture("configs/" + kConfig);
  o.out_dir = dir / "m";
  o.expert_dtype = DType::F32;
  write_random_checkpoint(o);
  const CheckpointTensors t = CheckpointTensors::open(o.out_dir);
  EXPECT_EQ(t.find(kGate0 + ".weight")->dtype, DType::F32);
  EXPECT_EQ(t.find("model.layers.0.mlp.gate.weight")->dtype, DType::BF16);
  EXPECT_EQ(load_model(o.out_dir).weights.expert_storage, ExpertStorage::dense);
}

TEST(Mxfp4Checkpoint, MakeCheckpointWritesWhatQuantizeWrites) {
  ScratchDir dir;
  const fs::path dense = make(dir, "bf16", ExpertStorage::dense);
  const fs::path mx = make(dir, "mxfp4", ExpertStorage::mxfp4);
  quantize(dense, dir / "quantized");
  EXPECT_EQ(testing::read_file(dir / "quantized/model.safetensors"), testing::read_file(mx / "model.safetensors"));
  EXPECT_EQ(testing::read_file(dir / "quantized/config.json"), testing::read_file(dense / "config.json"));
  EXPECT_EQ(testing::read_file(dir / "quantized/tokenizer.json"), testing::read_file(dense / "tokenizer.json"));
}

TEST(Mxfp4Checkpoint, QuantizeKeepsShardsAndCopiesTheOtherFiles) {
  ScratchDir dir;
  const fs::path dense = make(dir, "bf16", ExpertStorage::dense, 64 << 10);
  testing::write_file(dense / "generation_config.json", R"({"eos_token_id": [1, 2]})");
  testing::write_file(dense / "pytorch_model.bin", "stale weights are not copied");
  const QuantizeReport report = quantize(dense, dir / "q");
  EXPECT_EQ(report.copied_files, (std::vector<std::string>{"config.json", "generation_config.json", "tokenizer.json"}));
  EXPECT_FALSE(fs::exists(dir / "q/pytorch_model.bin"));
  EXPECT_TRUE(fs::exists(dir / "q/model.safetensors.index.json"));
  for (const auto& e : fs::directory_iterator(dense))
    if (e.path().extension() == ".safetensors") EXPECT_TRUE(fs::exists(dir / "q" / e.path().filename()));
  EXPECT_LT(report.bytes_out, report.bytes_in);

  const LoadedModel sharded = load_model(dir / "q");
  EXPECT_EQ(sharded.weights.expert_storage, ExpertStorage::mxfp4);
  EXPECT_EQ(sharded.stop_token_ids, (std::vector<int32_t>{1, 2, 256, 258}));
  const LoadedModel single = load_model(make(dir, "mxfp4", ExpertStorage::mxfp4));
  EXPECT_EQ(sharded.weights.layers[2].experts[7].down.data, single.weights.layers[2].experts[7].down.data);
}

TEST(Mxfp4Checkpoint, QuantizeReportsErrorPerLayer) {
  ScratchDir dir;
  const QuantizeReport r = quantize(make(dir, "bf16", ExpertStorage::dense), dir / "q");
  ASSERT_EQ(r.layers.size(), 3u);
  for (const auto& [layer, e] : r.layers) {
    SCOPED_TRACE(layer);
    EXPECT_EQ(e.matrices, 8 * 3);
    EXPECT_EQ(e.values, 8u * 3 * 64 * 32);
    EXPECT_GT(e.relative_rms(), 0.08);  // Gaussian-like weights: ~0.11, as in mxfp4_test
    EXPECT_LT(e.relative_rms(), 0.14);
    EXPECT_GT(e.max_abs_error, 0.0);
  }
  EXPECT_EQ(r.overall.matrices, 72);
  EXPECT_NEAR(r.overall.relative_rms(), r.layers.at(1).relative_rms(), 0.02);
}

// The logits of a quantized model against those of the model it came from.
TEST(Mxfp4Checkpoint, QuantizedModelStaysCloseToTheFloatModel) {
  ScratchDir dir;
  const fs::path dense_path = make(dir, "bf16", ExpertStorage::dense);
  quantize(dense_path, dir / "q");
  ThreadPool pool(2);
  auto logits = [&](const fs::path& path, const std::vector<int32_t>& tokens) {
    LoadedModel m = load_model(path);
    CpuModel model(m.config, std::move(m.weights), pool);
    PagedKvCache cache(m.config, 16, 16);
    KvSequence seq;
    EXPECT_TRUE(cache.reserve(seq, static_cast<int>(tokens.size())));
    SequenceStep step{&seq, tokens, true};
    return model.forward(cache, {&step, 1});
  };
  std::vector<int32_t> tokens;
  for (int i = 0; i < 128; ++i) tokens.push_back((i * 97 + 13) % 259);
  const std::vector<float> a = logits(dense_path, tokens), b = logits(dir / "q", tokens);
  const int vocab = 512;
  ASSERT_EQ(a.size(), tokens.size() * vocab);
  int agree = 0;
  QuantizationError logit_error;  // over all rows: how far the quantized model's logits move
  for (size_t r = 0; r < tokens.size(); ++r) {
    const std::span<const float> x(&a[r * vocab], vocab), y(&b[r * vocab], vocab);
    agree += std::max_element(x.begin(), x.end()) - x.begin() == std::max_element(y.begin(), y.end()) - y.begin();
    logit_error.add_matrix(x, y);
  }
  // Measured: top-1 agreement 89/128 and relative RMS logits error 0.194 (about sqrt(3) x the
  // 0.11 weight error: three MoE layers each add theirs). A random model's logits are close
  // together (no trained margins), so that noise flips some argmaxes.
  std::printf("top-1 agreement %d/%zu, relative RMS logits error %.4f\n", agree, tokens.size(),
              logit_error.relative_rms());
  EXPECT_GE(agree, 70);
  EXPECT_LT(logit_error.relative_rms(), 0.3);
}

// MiMo-V2 checkpoints quantize the same way: the routed experts become MXFP4 (exactly the values
// the loader then dequantizes), and everything else (the dense first layer, attention and its
// sinks, the router and its score-correction bias) stays as it was.
TEST(Mxfp4Checkpoint, QuantizeTakesMimoV2Checkpoints) {
  ScratchDir dir;
  const fs::path from = testing::make_checkpoint(dir, "mimo_window4_groups.json", 5);
  quantize(from, dir / "q");
  const LoadedModel a = load_model(from), b = load_model(dir / "q");
  EXPECT_EQ(b.config.model_type, "mimo_v2_flash");
  EXPECT_EQ(b.weights.expert_storage, ExpertStorage::mxfp4);
  ASSERT_EQ(a.weights.layers.size(), b.weights.layers.size());
  int quantized = 0;
  for (size_t l = 0; l < a.weights.layers.size(); ++l) {
    const LayerWeights &x = a.weights.layers[l], &y = b.weights.layers[l];
    EXPECT_EQ(x.sinks, y.sinks) << "layer " << l;
    EXPECT_EQ(x.router_bias, y.router_bias) << "layer " << l;
    EXPECT_EQ(x.q_proj.data, y.q_proj.data) << "layer " << l;
    EXPECT_EQ(x.dense.down.data, y.dense.down.data) << "layer " << l;
    ASSERT_EQ(x.experts.size(), y.experts.size());
    for (size_t e = 0; e < x.experts.size(); ++e, ++quantized) {
      const Matrix& m = x.experts[e].down;
      EXPECT_EQ(y.experts[e].down.data, dequantize_mxfp4(quantize_mxfp4(m.data, m.rows, m.cols)))
          << "layer " << l << " expert " << e;
    }
  }
  EXPECT_EQ(quantized, 5 * 8);  // layers 1-5 are MoE, 8 experts each
}

TEST(Mxfp4Checkpoint, RefusesBrokenMxfp4Tensors) {
  ScratchDir dir;
  const std::string blocks = kGate0 + ".blocks", scales = kGate0 + ".scales";
  auto broken = [&](const std::string& name, const std::function<void(std::vector<StoredTensor>&)>& edit) {
    const fs::path path = make(dir, name, ExpertStorage::mxfp4);
    testing::rewrite_weights(path, edit);
    return path;
  };
  EXPECT_THROW_WITH(load_model(broken("no_scales", [&](auto& t) { erase_stored(t, scales); })), "model.safetensors",
                    "'" + blocks + "' is present but its MXFP4 partner '" + scales + "' is missing");
  EXPECT_THROW_WITH(load_model(broken("no_blocks", [&](auto& t) { erase_stored(t, blocks); })),
                    "'" + scales + "' is present but its MXFP4 partner '" + blocks + "' is missing");
  EXPECT_THROW_WITH(load_model(broken("no_pair", [&](auto& t) { erase_stored(t, blocks), erase_stored(t, scales); })),
                    "'" + kGate0 + ".weight' or MXFP4 .blocks + .scales is missing");
  EXPECT_THROW_WITH(
      load_model(broken("bf16_blocks", [&](auto& t) { find_stored(t, blocks).spec.dtype = DType::BF16; })),
                    "'" + blocks + "' has dtype BF16, expected U8");
  EXPECT_THROW_WITH(load_model(broken("f32_scales", [&](auto& t) { find_stored(t, scales).spec.dtype = DType::F32; })),
                    "'" + scales + "' has dtype F32, expected U8");
  EXPECT_THROW_WITH(load_model(broken("3d", [&](auto& t) { find_stored(t, blocks).spec.shape = {32, 2, 16}; })),
                    "'" + blocks + "' has shape [32, 2, 16], expected 2-D");
  EXPECT_THROW_WITH(load_model(broken("scales_shape", [&](auto& t) { find_stored(t, scales).spec.shape = {32, 1}; })),
                    "'" + scales + "' has shape [32, 1] but '" + blocks + "' [32, 32] implies [32, 2]");
  EXPECT_THROW_WITH(load_model(broken("partial_block", [&](auto& t) { find_stored(t, blocks).spec.shape = {32, 24}; })),
                    "'" + blocks + "' has shape [32, 24]: rows of 48 values are not whole MXFP4 blocks of 32");
  EXPECT_THROW_WITH(load_model(broken("other_matrix",
                                      [&](auto& t) {
                                        find_stored(t, blocks).spec.shape = {64, 16};
                                        find_stored(t, scales).spec.shape = {64, 1};
                                      })),
                    "'" + blocks + "' is MXFP4 of a [64, 32] matrix but config.json implies [32, 64]");
  EXPECT_THROW_WITH(load_model(broken("nan_scale", [&](auto& t) { find_stored(t, scales).bytes[3] = std::byte{255}; })),
                    "'" + scales + "' holds scale byte 255 (E8M0 NaN) at block 3");
  EXPECT_THROW_WITH(load_model(broken("both", [&](auto& t) {
                      t.push_back({{kGate0 + ".weight", DType::BF16, {32, 64}}, {}});
                    })),
                    "'" + kGate0 + ".weight' and its MXFP4 form '" + blocks + "' are both present");
  // A checkpoint whose experts are half MXFP4, half float is refused: one storage for all.
  EXPECT_THROW_WITH(load_model(broken("mixed", [&](auto& t) {
                      const std::string up = "model.layers.2.mlp.experts.5.up_proj";
                      erase_stored(t, up + ".blocks"), erase_stored(t, up + ".scales");
                      t.push_back({{up + ".weight", DType::BF16, {32, 64}}, {}});
                    })),
                    "routed experts mix storages", "'" + kGate0 + ".weight' is MXFP4",
                    "'model.layers.2.mlp.experts.5.up_proj.weight' is a float .weight");
}

TEST(Mxfp4Checkpoint, QuantizeRefusesWhatItCannotDo) {
  ScratchDir dir;
  const fs::path dense = make(dir, "bf16", ExpertStorage::dense);
  testing::write_file(dir / "taken", "");
  fs::create_directories(dir / "busy");
  testing::write_file(dir / "busy/notes.txt", "keep me");
  EXPECT_THROW_WITH(quantize(dense, dir / "busy"), "busy", "not empty", "--force");
  EXPECT_THROW_WITH(quantize(dense, dense, true), "is the input checkpoint");
  EXPECT_THROW_WITH(quantize(dense, dir / "taken"), "taken", "not a directory");
  quantize(dense, dir / "busy", true);
  EXPECT_EQ(testing::read_file(dir / "busy/notes.txt"), "keep me");
  EXPECT_EQ(load_model(dir / "busy").weights.expert_storage, ExpertStorage::mxfp4);
  EXPECT_THROW_WITH(quantize(dir / "busy", dir / "again"), "already MXFP4");
  EXPECT_FALSE(fs::exists(dir / "again"));
  EXPECT_THROW_WITH(quantize(dir / "absent", dir / "out"), "absent", "not a model directory");

  // Widths MXFP4 cannot cut into blocks of 32, and dense models, are refused before writing.
  const fs::path odd = testing::make_checkpoint(dir, "moe_top4_unnormed_tied.json");
  EXPECT_THROW_WITH(quantize(odd, dir / "odd"), "config.json", "hidden_size (96) and moe_intermediate_size (48)",
                    "multiples of 32");
  const fs::path plain = testing::make_checkpoint(dir, "dense_qwen3.json");
  EXPECT_THROW_WITH(quantize(plain, dir / "plain"), "no routed experts");
  EXPECT_FALSE(fs::exists(dir / "odd"));
  RandomCheckpointOptions o;
  o.config_json = testing::fixture("configs/moe_sparse_step2_top1.json");
  o.out_dir = dir / "odd_random";
  o.experts = ExpertStorage::mxfp4;
  EXPECT_THROW_WITH(write_random_checkpoint(o), "moe_sparse_step2_top1.json", "multiples of 32");
}

}  // namespace
}  // namespace ultraserve
