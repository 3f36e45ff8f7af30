// Block-scaled FP8 (model/fp8.h): the E4M3 format against the standard's values and rounding,
// block dequantization with partial blocks, config.json's quantization_config, checkpoints in
// DeepSeek-V3's layout (make-checkpoint --dtype fp8 writes them, the loader reads them and
// refuses broken ones naming the file and tensor), quantize on FP8 experts, and a fixture of
// torch's dequantization and transformers' logits (tools/reference/fp8_reference.py).

#include <cmath>
#include <cstring>
#include <random>

#include "model/checkpoint.h"
#include "model/cpu_model.h"
#include "model/error.h"
#include "model/fp8.h"
#include "model/fp8_tensors.h"
#include "model/mxfp4_tensors.h"
#include "model/quantization_error.h"
#include "model/quantize_checkpoint.h"
#include "model/quantized_writer.h"
#include "model/sampler.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

namespace fs = std::filesystem;
using testing::erase_stored;
using testing::find_stored;
using testing::ScratchDir;
using testing::StoredTensor;

// hidden 192, q_dim 160, kv_dim 80, dense MLP 288, experts 136: every linear weight spans more
// than one 128-block in some dimension and ends in a partial block.
const std::string kPartialBlocks = "moe_fp8_partial_blocks.json";
// hidden 64, experts 32: every matrix is one partial block; the widths suit MXFP4 (quantize).
const std::string kSmall = "moe_topk2_norm.json";

// The value of code c as the standard defines it, computed independently of kE4M3Values.
float standard_e4m3(int c) {
  const int sign = c >> 7, exponent = (c >> 3) & 15, mantissa = c & 7;
  if (exponent == 15 && mantissa == 7) return NAN;
  const float magnitude =
      exponent == 0 ? std::ldexp(float(mantissa), -9) : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
  return sign ? -magnitude : magnitude;
}

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(Fp8Format, DecodesEveryCodeAsTheStandardSays) {
  for (int c = 0; c < 256; ++c) {
    SCOPED_TRACE(c);
    const float expected = standard_e4m3(c);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(e4m3_to_f32(uint8_t(c))));
    } else {
      EXPECT_EQ(e4m3_to_f32(uint8_t(c)), expected);
      EXPECT_EQ(std::signbit(e4m3_to_f32(uint8_t(c))), c >= 0x80);
    }
  }
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // the smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // the smallest normal
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x39), 1.125f);
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xff)));
  int nans = 0;
  for (float v : kE4M3Values) nans += std::isnan(v);
  EXPECT_EQ(nans, 2);  // no infinities: only S.1111.111

  // The safetensors dtype: one byte, and its codes convert like the table.
  EXPECT_EQ(dtype_from_name("F8_E4M3"), DType::F8_E4M3);
  EXPECT_EQ(dtype_name(DType::F8_E4M3), "F8_E4M3");
  EXPECT_EQ(dtype_size(DType::F8_E4M3), 1u);
  const std::byte codes[3] = {std::byte{0x38}, std::byte{0xfe}, std::byte{0x01}};
  float out[3];
  convert_to_f32(DType::F8_E4M3, codes, 3, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -448.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -9));
}

TEST(Fp8Format, EncodeInvertsDecodeForEveryFiniteCode) {
  for (int c = 0; c < 256; ++c) {
    if (std::isnan(e4m3_to_f32(uint8_t(c)))) continue;
    EXPECT_EQ(f32_to_e4m3(e4m3_to_f32(uint8_t(c))), c) << c;
  }
}

// The nearest code by exhaustive search, ties to the even code: the definition, not an algorithm.
uint8_t nearest_code(float x) {
  int best = -1;
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_f32(uint8_t(c));
    if (std::isnan(v) || std::signbit(v) != std::signbit(x)) continue;
    if (best < 0) {
      best = c;
      continue;
    }
    const double d = std::fabs(double(v) - x), bd = std::fabs(double(e4m3_to_f32(uint8_t(best))) - x);
    if (d < bd || (d == bd && c % 2 == 0 && best % 2 == 1)) best = c;
  }
  return uint8_t(best);
}

TEST(Fp8Format, EncodeRoundsToNearestWithTiesToEven) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> log2_magnitude(-13.0f, 8.8f);  // below the subnormals up to ~446
  for (int i = 0; i < 20000; ++i) {
    const float x = std::exp2(log2_magnitude(rng)) * (i % 2 ? -1.0f : 1.0f);
    ASSERT_EQ(f32_to_e4m3(x), nearest_code(x)) << x;
  }
  // Every midpoint between neighbouring codes is a tie, and goes to the even one.
  for (int c = 0; c < 0x7e; ++c) {
    const float mid = (e4m3_to_f32(uint8_t(c)) + e4m3_to_f32(uint8_t(c + 1))) / 2;  // exact in fp32
    EXPECT_EQ(f32_to_e4m3(mid), c % 2 == 0 ? c : c + 1) << mid;
    EXPECT_EQ(f32_to_e4m3(-mid), 0x80 | (c % 2 == 0 ? c : c + 1)) << -mid;
  }
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);     // half the smallest subnormal: to 0
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0001f, -10)), 0x01);  // just past it: up
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);                   // between 1 and 1.125: to 1 (even)
  EXPECT_EQ(f32_to_e4m3(1e-30f), 0x00);
  EXPECT_EQ(f32_to_e4m3(-1e-30f), 0x80);
  // Saturation at +-448, infinities included; NaN stays NaN.
  for (float big : {448.0f, 449.0f, 464.0f, 480.0f, 1e6f, INFINITY}) {
    EXPECT_EQ(f32_to_e4m3(big), 0x7e) << big;
    EXPECT_EQ(f32_to_e4m3(-big), 0xfe) << big;
  }
  EXPECT_TRUE(std::isnan(e4m3_to_f32(f32_to_e4m3(NAN))));
}

TEST(Fp8Format, BlockDequantizationHandlesPartialBlocks) {
  for (const auto& [rows, cols, block] :
       {std::tuple{200, 300, Fp8BlockSize{}}, std::tuple{77, 130, Fp8BlockSize{64, 32}},
        std::tuple{128, 256, Fp8BlockSize{}}, std::tuple{5, 3, Fp8BlockSize{}}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    const auto [scale_rows, scale_cols] = fp8_scale_shape(rows, cols, block);
    EXPECT_EQ(scale_rows, (rows + block.rows - 1) / block.rows);
    EXPECT_EQ(scale_cols, (cols + block.cols - 1) / block.cols);
    std::mt19937 rng(rows);
    Fp8Matrix m{rows, cols, block, std::vector<uint8_t>(size_t(rows) * cols), {}};
    for (uint8_t& c : m.codes) c = uint8_t(rng() % 0x7f) | (rng() % 2 ? 0x80 : 0);  // no NaN codes
    for (int64_t s = 0; s < scale_rows * scale_cols; ++s) m.scale_inv.push_back(0.25f * float(s + 1));
    const std::vector<float> out = dequantize_fp8(m);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j)
        ASSERT_EQ(out[size_t(i) * cols + j], e4m3_to_f32(m.codes[size_t(i) * cols + j]) *
                                                 m.scale_inv[size_t(i / block.rows) * scale_cols + j / block.cols])
            << i << ", " << j;
  }
}

TEST(Fp8Format, QuantizationScalesEachBlockByItsLargestMagnitude) {
  const int rows = 130, cols = 260;
  std::vector<float> values = gaussian(size_t(rows) * cols, 3);
  for (int i = 0; i < rows; ++i)  // blocks of very different magnitudes
    for (int j = 0; j < cols; ++j) values[size_t(i) * cols + j] *= std::ldexp(1.0f, 4 * (i / 128) - 3 * (j / 128));
  for (int i = 0; i < 2; ++i)  // the block [128.., 256..] (2 x 4 values) is all zeros
    for (int j = 256; j < cols; ++j) values[size_t(128 + i) * cols + j] = 0.0f;
  const Fp8Matrix q = quantize_fp8(values, rows, cols);
  ASSERT_EQ(q.scale_inv.size(), 6u);
  const std::vector<float> back = dequantize_fp8(q);
  for (int b = 0; b < 6; ++b) {
    const int br = b / 3, bc = b % 3;
    float amax = 0;
    for (int i = br * 128; i < std::min(rows, br * 128 + 128); ++i)
      for (int j = bc * 128; j < std::min(cols, bc * 128 + 128); ++j)
        amax = std::max(amax, std::fabs(values[size_t(i) * cols + j]));
    EXPECT_EQ(q.scale_inv[b], amax > 0 ? amax / 448.0f : 1.0f) << b;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const float scale = q.scale_inv[size_t((i / cols) / 128) * 3 + (i % cols) / 128];
    // Half a step of the code grid at that scale: 2^-4 of the value for normals, 2^-10 x scale
    // in the subnormal range (plus the rounding of the division and the product).
    const double bound = std::max(std::fabs(values[i]) / 16.0, scale * std::ldexp(1.0, -10)) * (1 + 1e-6);
    ASSERT_LE(std::fabs(double(back[i]) - values[i]), bound) << i;
  }
  for (int j = 256; j < cols; ++j) EXPECT_EQ(q.codes[size_t(129) * cols + j], 0);

  QuantizationError e;
  const std::vector<float> normal = gaussian(1 << 16, 4);
  e.add_matrix(normal, dequantize_fp8(quantize_fp8(normal, 256, 256)));
  std::printf("N(0,1) data: relative RMS error %.4f, max abs error %.4f\n", e.relative_rms(), e.max_abs_error);
  EXPECT_LT(e.relative_rms(), 0.035);  // measured 0.0265 (3 mantissa bits)

  EXPECT_THROW(quantize_fp8(std::vector<float>{1.0f, NAN}, 1, 2), std::domain_error);
  EXPECT_THROW(quantize_fp8(std::vector<float>{INFINITY}, 1, 1), std::domain_error);
  EXPECT_THROW(quantize_fp8(std::vector<float>(6), 2, 2), std::invalid_argument);
  EXPECT_THROW(quantize_fp8(std::vector<float>(4), 2, 2, {0, 128}), std::invalid_argument);
}

// The GPU engine quantizes the values an FP8 checkpoint loaded as (fused q|k|v, in 128 x 128
// blocks) again: that must give back the stored codes, and the scales up to an fp32 rounding.
TEST(Fp8Format, QuantizingDequantizedBlocksGivesBackTheCodes) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(256 * 384);
  for (float& v : w) v = normal(rng);
  const Fp8Matrix stored = quantize_fp8(w, 256, 384);
  const Fp8Matrix again = quantize_fp8(dequantize_fp8(stored), 256, 384);
  EXPECT_EQ(again.codes, stored.codes);
  ASSERT_EQ(again.scale_inv.size(), stored.scale_inv.size());
  for (size_t b = 0; b < stored.scale_inv.size(); ++b)
    EXPECT_NEAR(again.scale_inv[b], stored.scale_inv[b], 2e-7 * stored.scale_inv[b]) << "block " << b;
}

TEST(Fp8Format, ThreadedQuantizationGivesTheSameBytes) {
  ThreadPool pool(3);
  for (const Fp8BlockSize block : {Fp8BlockSize{}, Fp8BlockSize{16, 48}}) {
    const std::vector<float> values = gaussian(size_t(300) * 200, 5);
    const Fp8Matrix serial = quantize_fp8(values, 300, 200, block),
                    threaded = quantize_fp8(pool, values, 300, 200, block);
    EXPECT_EQ(threaded.codes, serial.codes);
    EXPECT_EQ(threaded.scale_inv, serial.scale_inv);
  }
  std::vector<float> bad = gaussian(size_t(300) * 200, 6);
  bad[299 * 200] = NAN;
  EXPECT_THROW(quantize_fp8(pool, bad, 300, 200, {}), std::domain_error);
}

// --- config.json ---

const std::string kBase =
    R"("model_type":"qwen3","vocab_size":10,"hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2)";

ModelConfig with_quantization(const std::string& quantization_config) {
  return ModelConfig::parse("{" + kBase + R"(,"quantization_config":)" + quantization_config + "}", "dir/config.json");
}

TEST(Fp8Config, ReadsQuantizationConfig) {
  EXPECT_FALSE(ModelConfig::parse("{" + kBase + "}", "x").fp8);
  const ModelConfig deepseek = with_quantization(
      R"({"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":[128,128]})");
  ASSERT_TRUE(deepseek.fp8);
  EXPECT_EQ(deepseek.fp8->block, (Fp8BlockSize{128, 128}));
  EXPECT_TRUE(deepseek.fp8->modules_to_not_convert.empty());
  EXPECT_EQ(with_quantization(R"({"quant_method":"fp8","weight_block_size":[64,32]})").fp8->block,
            (Fp8BlockSize{64, 32}));
  EXPECT_EQ(with_quantization(R"({"quant_method":"fp8"})").fp8->block,
            (Fp8BlockSize{128, 128}));  // transformers' default
  EXPECT_EQ(with_quantization(R"({"quant_method":"fp8","modules_to_not_convert":["lm_head","model.layers.0.mlp"]})")
                .fp8->modules_to_not_convert,
            (std::vector<std::string>{"lm_head", "model.layers.0.mlp"}));
  EXPECT_TRUE(with_quantization(R"({"quant_method":"fp8","modules_to_not_convert":null})").fp8);

  struct Case {
    std::string json, needle;
  };
  for (const Case& c : std::vector<Case>{
           {R"("fp8")", "quantization_config: must be an object"},
           {R"({"fmt":"e4m3"})", "quantization_config: quant_method: missing"},
           {R"({"quant_method":"gptq"})", "quantization_config: quant_method: 'gptq' is not supported (only 'fp8'"},
           {R"({"quant_method":"fp8","fmt":"e5m2"})", "quantization_config: fmt: 'e5m2' is not supported (only 'e4m3'"},
           {R"({"quant_method":"fp8","activation_scheme":"static"})",
            "quantization_config: activation_scheme: 'static' is not supported (only 'dynamic')"},
           {R"({"quant_method":"fp8","weight_block_size":[128]})",
            "quantization_config: weight_block_size: must be [rows, cols]"},
           {R"({"quant_method":"fp8","weight_block_size":[0,128]})",
            "quantization_config: weight_block_size: value 0 outside"},
           {R"({"quant_method":"fp8","modules_to_not_convert":"lm_head"})",
            "quantization_config: modules_to_not_convert: must be a list of strings"},
       }) {
    SCOPED_TRACE(c.json);
    EXPECT_THROW_WITH(with_quantization(c.json), "dir/config.json: ", c.needle);
  }
}

// --- checkpoints ---

fs::path make(const ScratchDir& dir, const std::string& config, DType dtype, uint64_t seed = 11,
              ExpertStorage experts = ExpertStorage::dense) {
  RandomCheckpointOptions o;
  o.config_json = testing::fixture("configs/" + config);
  o.out_dir = dir / (config + "-" + std::string(dtype_name(dtype)) + (experts == ExpertStorage::mxfp4 ? "-mxfp4" : ""));
  o.seed = seed;
  o.dtype = dtype;
  o.experts = experts;
  write_random_checkpoint(o);
  return o.out_dir;
}

// Every matrix of a model, by checkpoint name, with whether it is a linear layer's.
std::vector<std::tuple<std::string, const Matrix*, bool>> matrices(const ModelConfig& c, const ModelWeights& w) {
  std::vector<std::tuple<std::string, const Matrix*, bool>> out{{"model.embed_tokens.weight", &w.embed_tokens, false},
                                                                {"lm_head.weight", &w.lm_head, false}};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (auto [name, m] :
         {std::pair{"q_proj", &L.q_proj}, {"k_proj", &L.k_proj}, {"v_proj", &L.v_proj}, {"o_proj", &L.o_proj}})
      out.emplace_back(p + "self_attn." + name + ".weight", m, true);
    auto ffn = [&](const std::string& prefix, const FeedForward& f) {
      for (auto [name, m] : {std::pair{"gate_proj", &f.gate}, {"up_proj", &f.up}, {"down_proj", &f.down}})
        out.emplace_back(prefix + name + ".weight", m, true);
    };
    if (!c.is_moe_layer(int(l))) {
      ffn(p + "mlp.", L.dense);
      continue;
    }
    out.emplace_back(p + "mlp.gate.weight", &L.router, false);
    for (size_t e = 0; e < L.experts.size(); ++e) ffn(p + "mlp.experts." + std::to_string(e) + ".", L.experts[e]);
  }
  return out;
}

TEST(Fp8Checkpoint, MakeCheckpointWritesThePublishedLayout) {
  ScratchDir dir;
  const fs::path path = make(dir, kPartialBlocks, DType::F8_E4M3);
  const CheckpointTensors t = CheckpointTensors::open(path);
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  ASSERT_TRUE(t.find(q));
  EXPECT_EQ(t.find(q)->dtype, DType::F8_E4M3);
  EXPECT_EQ(t.find(q)->shape, (std::vector<int64_t>{160, 192}));
  EXPECT_EQ(t.find(q + "_scale_inv")->dtype, DType::F32);
  EXPECT_EQ(t.find(q + "_scale_inv")->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.find("model.layers.0.mlp.gate_proj.weight_scale_inv")->shape,
            (std::vector<int64_t>{3, 2}));  // [288, 192]
  EXPECT_EQ(t.find("model.layers.0.mlp.down_proj.weight_scale_inv")->shape,
            (std::vector<int64_t>{2, 3}));  // [192, 288]
  EXPECT_EQ(t.find("model.layers.1.mlp.experts.3.up_proj.weight")->dtype, DType::F8_E4M3);
  for (const std::string name :
       {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.1.mlp.gate.weight",
        "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_norm.weight"}) {
    EXPECT_EQ(t.find(name)->dtype, DType::BF16) << name;
    EXPECT_FALSE(t.find(name + "_scale_inv")) << name;
  }
  const ModelConfig config = ModelConfig::load(path / "config.json");
  ASSERT_TRUE(config.fp8);
  EXPECT_EQ(config.fp8->block, (Fp8BlockSize{128, 128}));
  EXPECT_NE(testing::read_file(path / "config.json").find(R"("quant_method": "fp8")"), std::string::npos);
  EXPECT_EQ(load_model(path).weights.expert_storage, ExpertStorage::fp8);
  // The same (config, seed) gives the same bytes.
  ScratchDir again;
  EXPECT_EQ(testing::read_file(make(again, kPartialBlocks, DType::F8_E4M3) / "model.safetensors"),
            testing::read_file(path / "model.safetensors"));
}

TEST(Fp8Checkpoint, LoadsTheQuantizedValuesOfTheBf16Checkpoint) {
  for (const std::string& config : {kPartialBlocks, kSmall}) {
    SCOPED_TRACE(config);
    ScratchDir dir;
    const LoadedModel fp8 = load_model(make(dir, config, DType::F8_E4M3));
    const LoadedModel bf16 = load_model(make(dir, config, DType::BF16));
    const auto a = matrices(fp8.config, fp8.weights), b = matrices(bf16.config, bf16.weights);
    ASSERT_EQ(a.size(), b.size());
    int linear = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const auto& [name, m, is_linear] = a[i];
      const Matrix& original = *std::get<1>(b[i]);
      SCOPED_TRACE(name);
      if (is_linear) {
        ++linear;
        EXPECT_EQ(m->data, dequantize_fp8(quantize_fp8(original.data, original.rows, original.cols)));
        EXPECT_NE(m->data, original.data);
      } else {
        EXPECT_EQ(m->data, original.data);
      }
    }
    EXPECT_GT(linear, 20);
    EXPECT_EQ(fp8.weights.layers[0].input_norm, bf16.weights.layers[0].input_norm);
    EXPECT_EQ(fp8.weights.final_norm, bf16.weights.final_norm);
  }
}

struct ModelRun {
  std::vector<float> prefill;  // [tokens, vocab]
  std::vector<int32_t> greedy;
  std::vector<float> greedy_logits;  // [steps, vocab]
};

ModelRun run_model(const fs::path& path, const std::vector<int32_t>& prompt, int steps) {
  ThreadPool pool(2);
  LoadedModel m = load_model(path);
  CpuModel model(m.config, std::move(m.weights), pool);
  PagedKvCache cache(m.config, 16, 64);
  KvSequence seq;
  EXPECT_TRUE(cache.reserve(seq, int(prompt.size()) + steps));
  ModelRun r;
  SequenceStep step{&seq, prompt, true};
  r.prefill = model.forward(cache, {&step, 1});
  const int vocab = m.config.vocab_size;
  std::span<const float> last(r.prefill.data() + r.prefill.size() - vocab, vocab);
  for (int s = 0; s < steps; ++s) {
    const int32_t token = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
    r.greedy.push_back(token);
    SequenceStep next{&seq, std::span<const int32_t>(&r.greedy.back(), 1), false};
    const std::vector<float> logits = model.forward(cache, {&next, 1});
    r.greedy_logits.insert(r.greedy_logits.end(), logits.begin(), logits.end());
    last = std::span<const float>(r.greedy_logits.data() + size_t(s) * vocab, vocab);
  }
  return r;
}

// The FP8 model against the BF16 model it was quantized from: same config, same seed. Error
// measures per logits row: max |fp8 - bf16| / max |bf16| (testing::row_relative_error).
TEST(Fp8Checkpoint, LogitsStayCloseToTheBf16Checkpoint) {
  // Measured over 64 prompt positions (median / worst row, relative RMS over all, top-1 agreement):
  //   moe_fp8_partial_blocks  0.039 / 0.283, 0.055, 59/64
  //   moe_topk2_norm          0.050 / 0.569, 0.108, 58/64
  //   dense_qwen3             0.021 / 0.049, 0.038, 64/64
  // FP8's 3 mantissa bits put ~2.7% relative RMS error on each weight (Fp8Format test); the dense
  // model's logits move by about that. The MoE models' worst rows are tokens whose top-k experts
  // change: a small change of the router's input switches whole experts, and random weights have
  // no trained margins between experts. (moe_topk2_norm with all 8 experts active, so that there
  // is no choice to flip, measured 0.037 / 0.072, 0.040.) The bounds are about 1.5x the measurements.
  struct Case {
    std::string config;
    double median, worst, rms;
  };
  for (const Case& c : {Case{kPartialBlocks, 0.06, 0.45, 0.08}, Case{kSmall, 0.075, 0.85, 0.16},
                        Case{"dense_qwen3.json", 0.03, 0.075, 0.06}}) {
    SCOPED_TRACE(c.config);
    ScratchDir dir;
    std::vector<int32_t> prompt;
    for (int i = 0; i < 64; ++i) prompt.push_back((i * 97 + 13) % 259);
    const int steps = 8;
    const ModelRun fp8 = run_model(make(dir, c.config, DType::F8_E4M3), prompt, steps);
    const ModelRun bf16 = run_model(make(dir, c.config, DType::BF16), prompt, steps);
    const size_t vocab = fp8.prefill.size() / prompt.size();
    std::vector<double> errors;
    int agree = 0;
    QuantizationError logit_error;
    for (size_t r = 0; r < prompt.size(); ++r) {
      const std::span<const float> x(&bf16.prefill[r * vocab], vocab), y(&fp8.prefill[r * vocab], vocab);
      errors.push_back(testing::row_relative_error(y, x));
      agree += std::max_element(x.begin(), x.end()) - x.begin() == std::max_element(y.begin(), y.end()) - y.begin();
      logit_error.add_matrix(x, y);
    }
    std::sort(errors.begin(), errors.end());
    const double median = errors[errors.size() / 2], worst = errors.back();
    std::printf("%s: row relative error median %.4f, worst %.4f; relative RMS %.4f; top-1 agreement %d/%zu\n",
                c.config.c_str(), median, worst, logit_error.relative_rms(), agree, prompt.size());
    EXPECT_LT(median, c.median);
    EXPECT_LT(worst, c.worst);
    EXPECT_LT(logit_error.relative_rms(), c.rms);
    EXPECT_GE(agree, int(prompt.size()) * 7 / 8);
    // Greedy decoding follows the BF16 model step by step, unless it reaches a near-tie: a step
    // whose BF16 top-2 margin is within reach of the logits' difference (the two runs share the
    // tokens before it, so that step's logits compare like for like).
    size_t same = 0;
    while (same < size_t(steps) && fp8.greedy[same] == bf16.greedy[same]) ++same;
    std::printf("  greedy: %zu of %d steps agree\n", same, steps);
    if (same < size_t(steps)) {
      auto row = [&](const ModelRun& m) {
        return same == 0 ? std::span(m.prefill).last(vocab)
                         : std::span(m.greedy_logits).subspan((same - 1) * vocab, vocab);
      };
      double diff = 0;
      for (size_t i = 0; i < vocab; ++i) diff = std::max(diff, std::fabs(double(row(fp8)[i]) - row(bf16)[i]));
      EXPECT_LT(testing::top2_margin(row(bf16)), 2 * diff) << "greedy step " << same << " diverged without a near-tie";
    }
  }
}

TEST(Fp8Checkpoint, AcceptsFp8OutsideTheLinearLayers) {
  // Published checkpoints keep the LM head float, but one stored FP8 with its scales loads too.
  ScratchDir dir;
  const fs::path path = make(dir, kPartialBlocks, DType::F8_E4M3);
  const std::vector<float> lm_head = load_model(path).weights.lm_head.data;
  const Fp8Matrix q = quantize_fp8(lm_head, 512, 192);
  testing::rewrite_weights(path, [&](std::vector<StoredTensor>& t) {
    StoredTensor& head = find_stored(t, "lm_head.weight");
    head.spec.dtype = DType::F8_E4M3;
    head.bytes.assign(reinterpret_cast<const std::byte*>(q.codes.data()),
                      reinterpret_cast<const std::byte*>(q.codes.data() + q.codes.size()));
    t.push_back({{"lm_head.weight_scale_inv", DType::F32, {4, 2}},
                 {reinterpret_cast<const std::byte*>(q.scale_inv.data()),
                  reinterpret_cast<const std::byte*>(q.scale_inv.data() + q.scale_inv.size())}});
  });
  EXPECT_EQ(load_model(path).weights.lm_head.data, dequantize_fp8(q));
}

TEST(Fp8Checkpoint, AcceptsBf16BlockScales) {
  ScratchDir dir;
  const fs::path path = make(dir, kPartialBlocks, DType::F8_E4M3);
  const std::string o = "model.layers.1.self_attn.o_proj.weight";
  std::vector<float> scales;
  std::vector<uint8_t> codes;
  testing::rewrite_weights(path, [&](std::vector<StoredTensor>& t) {
    StoredTensor& s = find_stored(t, o + "_scale_inv");
    scales.resize(s.bytes.size() / 4);
    std::memcpy(scales.data(), s.bytes.data(), s.bytes.size());
    s.spec.dtype = DType::BF16;
    for (size_t i = 0; i < scales.size(); ++i) {
      const uint16_t h = f32_to_bf16(scales[i]);
      scales[i] = bf16_to_f32(h);
      std::memcpy(s.bytes.data() + 2 * i, &h, 2);
    }
    const StoredTensor& w = find_stored(t, o);
    codes.assign(reinterpret_cast<const uint8_t*>(w.bytes.data()),
                 reinterpret_cast<const uint8_t*>(w.bytes.data()) + w.bytes.size());
  });
  const LoadedModel m = load_model(path);
  EXPECT_EQ(m.weights.layers[1].o_proj.data, dequantize_fp8(Fp8Matrix{192, 160, {}, codes, scales}));
}

TEST(Fp8Checkpoint, RefusesBrokenFp8Tensors) {
  ScratchDir dir;
  const std::string q = "model.layers.0.self_attn.q_proj.weight", scale = q + "_scale_inv";
  int n = 0;
  auto broken = [&](const std::function<void(std::vector<StoredTensor>&)>& edit) {
    RandomCheckpointOptions o;
    o.config_json = testing::fixture("configs/" + kPartialBlocks);
    o.out_dir = dir / std::to_string(++n);
    o.dtype = DType::F8_E4M3;
    write_random_checkpoint(o);
    testing::rewrite_weights(o.out_dir, edit);
    return o.out_dir;
  };
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) { erase_stored(t, scale); })), "model.safetensors",
                    "tensor '" + q + "' is F8_E4M3 but its block scales '" + scale + "' are missing");
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      find_stored(t, scale).spec.shape = {1, 1};
                    })),
                    "model.safetensors",
                    "tensor '" + scale + "' has shape [1, 1] but '" + q +
                        "' [160, 192] with weight_block_size [128, 128] implies [2, 2]");
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) { find_stored(t, scale).spec.dtype = DType::F16; })),
                    "tensor '" + scale + "' has dtype F16, expected F32 or BF16");
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      const float nan = NAN;
                      std::memcpy(find_stored(t, scale).bytes.data() + 4, &nan, 4);
                    })),
                    "tensor '" + scale + "' holds scale nan at block 1");
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      const float negative = -1.0f;
                      std::memcpy(find_stored(t, scale).bytes.data(), &negative, 4);
                    })),
                    "tensor '" + scale + "' holds scale -1.000000 at block 0");
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      find_stored(t, q).spec.shape = {192, 160};
                      find_stored(t, scale).spec.shape = {2, 2};
                    })),
                    "tensor '" + q + "' has shape [192, 160] but config.json implies [160, 192]");
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      find_stored(t, q).spec.shape = {160, 2, 96};
                    })),
                    "tensor '" + q + "' has shape [160, 2, 96], expected 2-D (FP8)");
  // A scale beside a float weight, or without its weight, is a checkpoint that is not what it says.
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      t.push_back({{"model.embed_tokens.weight_scale_inv", DType::F32, {4, 2}}, {}});
                    })),
                    "tensor 'model.embed_tokens.weight_scale_inv' is present but 'model.embed_tokens.weight' is BF16, "
                    "not F8_E4M3");
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) { erase_stored(t, q); })),
                    "tensor '" + scale + "' is present but its weight '" + q + "' is missing");
  // Norms are vectors: FP8 is for matrices only.
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      find_stored(t, "model.layers.0.input_layernorm.weight").spec.dtype = DType::F8_E4M3;
                    })),
                    "tensor 'model.layers.0.input_layernorm.weight' has dtype F8_E4M3, expected BF16, F16 or F32");
  // Experts are all FP8 or none.
  EXPECT_THROW_WITH(load_model(broken([&](auto& t) {
                      const std::string up = "model.layers.1.mlp.experts.2.up_proj.weight";
                      erase_stored(t, up + "_scale_inv");
                      find_stored(t, up).spec.dtype = DType::BF16;
                    })),
                    "routed experts mix storages", "'model.layers.1.mlp.experts.0.gate_proj.weight' is FP8",
                    "'model.layers.1.mlp.experts.2.up_proj.weight' is a float .weight");
  // FP8 tensors need config.json to say how they are scaled.
  const fs::path no_config = broken([](auto&) {});
  std::filesystem::copy_file(testing::fixture("configs/" + kPartialBlocks), no_config / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_THROW_WITH(load_model(no_config), "model.safetensors",
                    "tensor 'model.layers.0.self_attn.q_proj.weight' is F8_E4M3 but config.json has no "
                    "quantization_config");
}

TEST(Fp8Checkpoint, MakeCheckpointRefusesConfigsItCannotHonour) {
  ScratchDir dir;
  std::string config = testing::read_file(testing::fixture("configs/" + kSmall));
  config.insert(1, R"("quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 32]},)");
  testing::write_file(dir / "fp8.json", config);
  RandomCheckpointOptions o;
  o.config_json = dir / "fp8.json";
  o.out_dir = dir / "bf16";
  EXPECT_THROW_WITH(write_random_checkpoint(o), "fp8.json: quantization_config: only an FP8 checkpoint");
  // With --dtype fp8 the config's own quantization_config (and block size) is used as it is.
  o.dtype = DType::F8_E4M3;
  o.out_dir = dir / "fp8";
  write_random_checkpoint(o);
  EXPECT_EQ(testing::read_file(o.out_dir / "config.json"), config);
  EXPECT_EQ(CheckpointTensors::open(o.out_dir).find("model.layers.0.mlp.experts.0.down_proj.weight_scale_inv")->shape,
            (std::vector<int64_t>{1, 1}));  // [64, 32] in blocks of [64, 32]
  EXPECT_EQ(CheckpointTensors::open(o.out_dir).find("model.layers.0.self_attn.q_proj.weight_scale_inv")->shape,
            (std::vector<int64_t>{1, 2}));  // [64, 64]
  load_model(o.out_dir);

  std::string skip = testing::read_file(testing::fixture("configs/" + kSmall));
  skip.insert(1, R"("quantization_config": {"quant_method": "fp8", "modules_to_not_convert": ["lm_head"]},)");
  testing::write_file(dir / "skip.json", skip);
  o.config_json = dir / "skip.json";
  EXPECT_THROW_WITH(write_random_checkpoint(o), "skip.json: quantization_config: modules_to_not_convert");
}

TEST(Fp8Checkpoint, ExpertsCanBeFp8AloneOrMxfp4BesideFp8) {
  ScratchDir dir;
  RandomCheckpointOptions o;
  o.config_json = testing::fixture("configs/" + kSmall);
  o.out_dir = dir / "experts-fp8";
  o.seed = 11;
  o.expert_dtype = DType::F8_E4M3;
  write_random_checkpoint(o);
  const CheckpointTensors t = CheckpointTensors::open(o.out_dir);
  EXPECT_EQ(t.find("model.layers.0.self_attn.q_proj.weight")->dtype, DType::BF16);
  EXPECT_EQ(t.find("model.layers.0.mlp.experts.0.gate_proj.weight")->dtype, DType::F8_E4M3);
  EXPECT_TRUE(ModelConfig::load(o.out_dir / "config.json").fp8);

  // --dtype fp8 --experts mxfp4: attention FP8, experts MXFP4 of the BF16 values.
  const LoadedModel mixed = load_model(make(dir, kSmall, DType::F8_E4M3, 11, ExpertStorage::mxfp4));
  const LoadedModel bf16 = load_model(make(dir, kSmall, DType::BF16));
  EXPECT_EQ(mixed.weights.expert_storage, ExpertStorage::mxfp4);
  const Matrix& e = bf16.weights.layers[2].experts[5].down;
  EXPECT_EQ(mixed.weights.layers[2].experts[5].down.data, dequantize_mxfp4(quantize_mxfp4(e.data, e.rows, e.cols)));
  const Matrix& k = bf16.weights.layers[1].k_proj;
  EXPECT_EQ(mixed.weights.layers[1].k_proj.data, dequantize_fp8(quantize_fp8(k.data, k.rows, k.cols)));
}

// `ultraserve quantize` on an FP8 checkpoint: experts become MXFP4 of their dequantized values;
// everything else, FP8 attention included, is copied byte for byte.
TEST(Fp8Checkpoint, QuantizeTurnsFp8ExpertsIntoMxfp4) {
  ScratchDir dir;
  const fs::path fp8_path = make(dir, kSmall, DType::F8_E4M3);
  const QuantizeReport report = quantize_checkpoint({fp8_path, dir / "q", false, 2, {}});
  EXPECT_EQ(report.overall.matrices, 3 * 8 * 3);
  EXPECT_GT(report.overall.relative_rms(), 0.08);  // MXFP4 against the FP8 values: ~0.11
  EXPECT_LT(report.overall.relative_rms(), 0.14);

  const CheckpointTensors out = CheckpointTensors::open(dir / "q");
  const std::string expert = "model.layers.1.mlp.experts.4.up_proj";
  EXPECT_FALSE(out.find(expert + ".weight"));
  EXPECT_FALSE(out.find(expert + ".weight_scale_inv"));
  EXPECT_TRUE(out.find(expert + ".blocks"));
  const CheckpointTensors in = CheckpointTensors::open(fp8_path);
  for (const std::string name : {"model.layers.1.self_attn.v_proj.weight",
                                 "model.layers.1.self_attn.v_proj.weight_scale_inv", "model.embed_tokens.weight"}) {
    ASSERT_TRUE(out.find(name)) << name;
    EXPECT_EQ(out.find(name)->dtype, in.find(name)->dtype);
    EXPECT_TRUE(std::equal(out.find(name)->bytes.begin(), out.find(name)->bytes.end(), in.find(name)->bytes.begin(),
                           in.find(name)->bytes.end()))
        << name;
  }
  EXPECT_EQ(testing::read_file(dir / "q/config.json"), testing::read_file(fp8_path / "config.json"));

  const LoadedModel fp8 = load_model(fp8_path), mx = load_model(dir / "q");
  EXPECT_EQ(mx.weights.expert_storage, ExpertStorage::mxfp4);
  const Matrix& up = fp8.weights.layers[1].experts[4].up;
  EXPECT_EQ(mx.weights.layers[1].experts[4].up.data, dequantize_mxfp4(quantize_mxfp4(up.data, up.rows, up.cols)));
  EXPECT_EQ(mx.weights.layers[1].v_proj.data, fp8.weights.layers[1].v_proj.data);
}

// --- against torch and transformers (fixture made by tools/reference/fp8_reference.py) ---

// The checkpoint the fixture was made from: `ultraserve make-checkpoint --config
// tests/fixtures/configs/moe_fp8_partial_blocks.json --seed 11 --dtype fp8`.
TEST(Fp8Reference, MatchesTorchDequantizationAndTransformersLogits) {
  const fs::path fixture_path = testing::fixture("reference/fp8_moe_partial_blocks.safetensors");
  if (!fs::exists(fixture_path))
    GTEST_SKIP() << fixture_path << " is absent: make it with tools/reference/fp8_reference.py on a machine with "
                 << "torch and transformers (see docs/testing.md)";
  const auto fixture = SafetensorsFile::open(fixture_path);
  ScratchDir dir;
  const fs::path path = make(dir, kPartialBlocks, DType::F8_E4M3, 11);
  const LoadedModel m = load_model(path);
  auto floats = [](const TensorView& v) {
    std::vector<float> out(size_t(v.numel()));
    convert_to_f32(v.dtype, v.bytes.data(), out.size(), out.data());
    return out;
  };
  int compared = 0;
  for (const auto& [name, m_ptr, linear] : matrices(m.config, m.weights)) {
    const auto it = fixture->tensors().find(name);
    if (it == fixture->tensors().end()) continue;
    SCOPED_TRACE(name);
    // One fp32 product per element in both, so the values are equal, not merely close.
    EXPECT_EQ(m_ptr->data, floats(it->second));
    ++compared;
  }
  EXPECT_GE(compared, 3);

  const TensorView& ids_view = fixture->tensors().at("ids");
  std::vector<int32_t> ids(size_t(ids_view.numel()));
  std::memcpy(ids.data(), ids_view.bytes.data(), ids_view.bytes.size());
  const std::vector<float> reference = floats(fixture->tensors().at("logits"));
  const ModelRun ours = run_model(path, ids, 0);
  ASSERT_EQ(ours.prefill.size(), reference.size());
  const int vocab = m.config.vocab_size;
  double worst = 0;
  for (size_t r = 0; r < ids.size(); ++r)
    worst = std::max(worst, testing::row_relative_error(std::span(&ours.prefill[r * vocab], vocab),
                                                        std::span(&reference[r * vocab], vocab)));
  std::printf("worst row relative error against transformers: %.3g\n", worst);
  EXPECT_LE(worst, 1e-4);  // the bound of reference_model_test: both compute in fp32
}

}  // namespace
}  // namespace ultraserve
