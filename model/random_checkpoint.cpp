#include "model/random_checkpoint.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "model/byte_level.h"
#include "model/checkpoint_writer.h"
#include "model/error.h"
#include "model/fp8_tensors.h"
#include "model/model_config.h"
#include "model/mxfp4_tensors.h"
#include "model/quantized_writer.h"
#include "model/safetensors.h"
#include "model/thread_pool.h"
#include "model/weights.h"

namespace ultraserve {
namespace {

constexpr size_t kChunk = 1 << 16;  // elements per independently seeded chunk

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// An approximately standard normal sample from one 64-bit draw: the sum of four 16-bit
// uniforms (Irwin-Hall), rescaled. Pure integer and float arithmetic, so bit-identical
// everywhere, and one RNG call per weight keeps a 30B-parameter checkpoint fast to make.
float normal_sample(uint64_t bits) {
  float sum = 0.f;
  for (int i = 0; i < 4; ++i) sum += static_cast<float>((bits >> (16 * i)) & 0xffff) * (1.0f / 65536.0f);
  return (sum - 2.0f) * 1.7320508f;
}

void store(DType t, float v, std::byte* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, &v, 4); return;
    case DType::BF16: { uint16_t h = f32_to_bf16(v); std::memcpy(dst, &h, 2); return; }
    case DType::F16: { _Float16 h = static_cast<_Float16>(v); std::memcpy(dst, &h, 2); return; }
    default: throw std::logic_error("random checkpoint: not a float dtype");
  }
}

void fill_tensor(ThreadPool& pool, uint64_t seed, const TensorSpec& spec, std::span<std::byte> out) {
  const size_t count = out.size() / dtype_size(spec.dtype);
  auto ends_with = [&](std::string_view suffix) { return spec.name.ends_with(suffix); };
  // Attention sinks (logits, about as large as a score) and routing biases (small shifts of
  // sigmoid scores) are vectors but not norm weights.
  const bool is_sink = ends_with("self_attn.sinks"), is_bias = ends_with("e_score_correction_bias");
  const bool is_norm = spec.shape.size() == 1 && !is_sink && !is_bias;
  const bool is_embedding = spec.name == "model.embed_tokens.weight";
  const float scale = is_sink ? 1.0f
                      : is_bias ? 0.05f
                      : (is_norm || is_embedding) ? (is_norm ? 0.1f : 1.0f)
                                                  : 1.0f / std::sqrt(static_cast<float>(spec.shape.back()));
  const float offset = is_norm ? 1.0f : 0.0f;
  const uint64_t tensor_seed = seed ^ fnv1a(spec.name);
  const size_t chunks = (count + kChunk - 1) / kChunk;
  const size_t esize = dtype_size(spec.dtype);
  pool.parallel_for(chunks, [&](size_t begin, size_t end) {
    for (size_t c = begin; c < end; ++c) {
      uint64_t state = tensor_seed + c * 0x632be59bd9b4e019ull;
      for (size_t i = c * kChunk; i < std::min(count, (c + 1) * kChunk); ++i)
        store(spec.dtype, offset + scale * normal_sample(splitmix64(state)), out.data() + i * esize);
    }
  });
}

// The smallest honest tokenizer: every byte is a token (GPT-2 byte-level alphabet, no merges)
// plus the ChatML special tokens, in the same tokenizer.json format as Qwen3's.
std::string byte_level_tokenizer_json() {
  std::string vocab, added;
  for (int b = 0; b < 256; ++b)
    vocab += (b ? "," : "") + json_string(byte_level::encode(std::string(1, static_cast<char>(b)))) + ":" +
             std::to_string(b);
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i)
    added += std::string(i ? "," : "") + "{\"id\":" + std::to_string(256 + i) + ",\"content\":" +
             json_string(specials[i]) +
             ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}";
  const std::string byte_level =
      "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":true}";
  return "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[" + added +
         "],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":" + byte_level + ",\"post_processor\":" + byte_level +
         ",\"decoder\":" + byte_level +
         ",\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":\"\","
         "\"end_of_word_suffix\":\"\",\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{" +
         vocab + "},\"merges\":[]}}";
}

DType expert_dtype(const RandomCheckpointOptions& o) {
  return o.experts == ExpertStorage::fp8 ? DType::F8_E4M3 : o.expert_dtype.value_or(o.dtype);
}

// The dtype whose values a tensor of `stored` dtype holds: FP8 matrices quantize the BF16 ones, so
// an FP8 checkpoint is the BF16 checkpoint of the same seed, quantized.
DType value_dtype(DType stored) { return stored == DType::F8_E4M3 ? DType::BF16 : stored; }

// The tensors that store weight `w`: itself in its dtype, a linear weight's FP8 pair, or a routed
// expert's MXFP4 pair. `quantized_from` learns the dtype whose values a quantized matrix stands for.
std::vector<TensorSpec> stored_tensors(const WeightSpec& w, const RandomCheckpointOptions& o, Fp8BlockSize block,
                                       std::unordered_map<std::string, DType>& quantized_from) {
  const DType dtype = w.routed_expert ? expert_dtype(o) : o.dtype;
  if (w.routed_expert && o.experts == ExpertStorage::mxfp4) {
    quantized_from[w.name] = value_dtype(dtype);
    return mxfp4_tensor_specs(w.name, w.shape[0], w.shape[1]);
  }
  if (dtype == DType::F8_E4M3 && w.linear) {
    quantized_from[w.name] = value_dtype(dtype);
    return fp8_tensor_specs(w.name, w.shape[0], w.shape[1], block);
  }
  return {{w.name, value_dtype(dtype), w.shape}};
}

// config.json as given, with the quantization_config an FP8 checkpoint needs when it has none
// (DeepSeek-V3's, field for field). A config that has one already is written as it is, and one
// that asks for what we do not write is refused, so config.json always describes the tensors.
std::string checkpoint_config(std::string text, bool fp8, const std::filesystem::path& source) {
  const ModelConfig given = ModelConfig::parse(text, source.string());
  if (given.fp8 && !fp8)
    throw ModelError(source.string() + ": quantization_config: only an FP8 checkpoint (--dtype fp8) may have one");
  if (given.fp8 && !given.fp8->modules_to_not_convert.empty())
    throw ModelError(source.string() + ": quantization_config: modules_to_not_convert: make-checkpoint stores "
                     "every linear weight as FP8 and cannot leave modules out");
  if (fp8 && !given.fp8)
    text.insert(text.find('{') + 1,
                "\n  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
                "\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]},");
  return text;
}

}  // namespace

uint64_t write_random_checkpoint(const RandomCheckpointOptions& o) {
  const bool fp8 =
      o.dtype == DType::F8_E4M3 || (o.experts != ExpertStorage::mxfp4 && expert_dtype(o) == DType::F8_E4M3);
  const std::string config_text = checkpoint_config(read_text_file(o.config_json), fp8, o.config_json);
  const ModelConfig config = ModelConfig::parse(config_text, o.config_json.string());
  if (o.experts == ExpertStorage::mxfp4) require_mxfp4_experts(config, o.config_json.string());
  const Fp8BlockSize fp8_block = config.fp8 ? config.fp8->block : Fp8BlockSize{};
  std::filesystem::create_directories(o.out_dir);
  write_text_file(o.out_dir / "config.json", config_text);
  if (config.dflash) {
    // A DFlash draft has no tokenizer: it reads and writes the target's token ids.
  } else if (o.tokenizer_json) {
    std::filesystem::copy_file(*o.tokenizer_json, o.out_dir / "tokenizer.json",
                               std::filesystem::copy_options::overwrite_existing);
  } else {
    if (config.vocab_size < 259)
      throw ModelError(o.config_json.string() + ": vocab_size " + std::to_string(config.vocab_size) +
                       " is too small for the built-in byte-level tokenizer (needs 259); pass --tokenizer");
    write_text_file(o.out_dir / "tokenizer.json", byte_level_tokenizer_json());
  }

  // Group tensors into shards of at most shard_bytes (a tensor larger than that gets its own).
  std::vector<ShardPlan> shards(1);
  uint64_t shard_size = 0;
  std::unordered_map<std::string, DType> quantized_from;
  for (const WeightSpec& w : expected_weights(config)) {
    for (TensorSpec& spec : stored_tensors(w, o, fp8_block, quantized_from)) {
      if (shard_size > 0 && shard_size + spec.nbytes() > o.shard_bytes) {
        shards.emplace_back();
        shard_size = 0;
      }
      shard_size += spec.nbytes();
      shards.back().tensors.push_back(std::move(spec));
    }
  }
  for (size_t s = 0; s < shards.size(); ++s)
    shards[s].file = shards.size() == 1 ? "model.safetensors" : shard_file_name(s, shards.size());

  ThreadPool pool;
  // A quantized matrix quantizes the values its float tensor would hold (rounded through that
  // dtype), so an MXFP4 expert is exactly what `ultraserve quantize` makes of that tensor, and
  // an FP8 matrix the quantization of the BF16 checkpoint's.
  QuantizedTensorFiller quantized(
      pool,
      [&](const std::string& name, int rows, int cols) {
        const TensorSpec source{name, quantized_from.at(name), {rows, cols}};
        std::vector<std::byte> bytes(source.nbytes());
        fill_tensor(pool, o.seed, source, bytes);
        std::vector<float> values(size_t(rows) * size_t(cols));
        convert_to_f32(source.dtype, bytes.data(), values.size(), values.data());
        return values;
      },
      fp8_block);
  auto fill = [&](const TensorSpec& spec, std::span<std::byte> out) {
    if (!quantized.fill(spec, out)) fill_tensor(pool, o.seed, spec, out);
  };
  return write_checkpoint_weights(o.out_dir, shards, fill);
}

}  // namespace ultraserve
