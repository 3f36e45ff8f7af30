#include "model/quantize_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

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

namespace fs = std::filesystem;

void check_out_dir(const QuantizeOptions& o) {
  if (!fs::exists(o.out_dir)) return;
  if (fs::equivalent(o.out_dir, o.model_dir))
    throw ModelError(o.out_dir.string() + ": the output directory is the input checkpoint");
  if (!fs::is_directory(o.out_dir)) throw ModelError(o.out_dir.string() + ": exists and is not a directory");
  if (!o.force && !fs::is_empty(o.out_dir))
    throw ModelError(o.out_dir.string() + ": exists and is not empty (pass --force to write into it)");
}

// Weight files are rewritten, not copied; other weight formats would be stale copies of them.
bool is_weight_file(const fs::path& p) {
  static const char* kSuffixes[] = {".safetensors", ".bin", ".pt", ".pth", ".gguf"};
  const std::string ext = p.extension().string();
  return p.filename() == "model.safetensors.index.json" ||
         std::any_of(std::begin(kSuffixes), std::end(kSuffixes), [&](const char* s) { return ext == s; });
}

std::vector<std::string> copy_other_files(const fs::path& from, const fs::path& to) {
  std::vector<std::string> copied;
  for (const fs::directory_entry& e : fs::directory_iterator(from)) {
    if (!e.is_regular_file() || is_weight_file(e.path())) continue;
    fs::copy_file(e.path(), to / e.path().filename(), fs::copy_options::overwrite_existing);
    copied.push_back(e.path().filename().string());
  }
  std::sort(copied.begin(), copied.end());
  return copied;
}

// Each input file becomes an output file of the same name holding the same tensors in the
// same order, a routed expert's .weight replaced by its .blocks and .scales (and an FP8
// expert's .weight_scale_inv dropped: the MXFP4 form replaces the pair).
std::vector<ShardPlan> plan_shards(const CheckpointTensors& tensors,
                                   const std::unordered_map<std::string, const WeightSpec*>& experts) {
  std::vector<ShardPlan> shards;
  for (const auto& file : tensors.files()) {
    std::vector<const TensorView*> views;
    for (const auto& [name, view] : file->tensors()) views.push_back(&view);
    std::sort(views.begin(), views.end(),
              [](const TensorView* a, const TensorView* b) { return a->bytes.data() < b->bytes.data(); });
    ShardPlan& shard = shards.emplace_back();
    shard.file = fs::path(file->path()).filename().string();
    for (const TensorView* v : views) {
      const std::optional<std::string> scaled = fp8_weight_name(v->name);
      if (experts.contains(v->name)) {
        for (TensorSpec& t : mxfp4_tensor_specs(v->name, v->shape[0], v->shape[1])) shard.tensors.push_back(t);
      } else if (scaled && experts.contains(*scaled)) {
        continue;
      } else {
        shard.tensors.push_back({v->name, v->dtype, v->shape});
      }
    }
  }
  return shards;
}

}  // namespace

QuantizeReport quantize_checkpoint(const QuantizeOptions& o) {
  if (!fs::is_directory(o.model_dir)) throw ModelError(o.model_dir.string() + ": not a model directory");
  const fs::path config_path = o.model_dir / "config.json";
  const ModelConfig config = ModelConfig::load(config_path);
  require_mxfp4_experts(config, config_path.string());
  const CheckpointTensors tensors = CheckpointTensors::open(o.model_dir);
  if (check_weights(tensors, config) == ExpertStorage::mxfp4)
    throw ModelError(tensors.source() + ": the routed experts are already MXFP4");
  check_out_dir(o);

  const std::vector<WeightSpec> specs = expected_weights(config);
  std::unordered_map<std::string, const WeightSpec*> experts;
  for (const WeightSpec& w : specs)
    if (w.routed_expert) experts.emplace(w.name, &w);
  const std::vector<ShardPlan> shards = plan_shards(tensors, experts);

  QuantizeReport report;
  QuantizeProgress progress;
  for (const ShardPlan& s : shards)
    for (const TensorSpec& t : s.tensors) progress.bytes_total += t.nbytes(), ++progress.tensors_total;
  for (const auto& file : tensors.files())
    for (const auto& [name, view] : file->tensors()) report.bytes_in += view.bytes.size();

  ThreadPool pool(o.threads);
  QuantizedTensorFiller mxfp4(
      pool,
      [&](const std::string& name, int, int) {
        // FP8 experts are dequantized first: their MXFP4 form stands for the values they stood for.
        std::vector<float> values = load_matrix(tensors, config, name).data;
        drop_cached_pages(*tensors.find(name));
        return values;
      },
      {},
      [&](const std::string& name, std::span<const float> values, std::span<const float> dequantized) {
        QuantizationError e;
        e.add_matrix(values, dequantized);
        report.layers[experts.at(name)->layer].merge(e);
        report.overall.merge(e);
      });
  auto fill = [&](const TensorSpec& spec, std::span<std::byte> out) {
    // Tensors of the input are copied as they are (FP8 ones outside the experts included).
    if (const TensorView* v = tensors.find(spec.name)) {
      std::memcpy(out.data(), v->bytes.data(), out.size());
      drop_cached_pages(*v);
    } else if (!mxfp4.fill(spec, out)) {
      throw std::logic_error("quantize: no source for tensor '" + spec.name + "'");
    }
    progress.bytes_done += out.size();
    ++progress.tensors_done;
    progress.tensor = &spec.name;
    if (o.progress) o.progress(progress);
  };

  fs::create_directories(o.out_dir);
  report.bytes_out = write_checkpoint_weights(o.out_dir, shards, fill);
  report.copied_files = copy_other_files(o.model_dir, o.out_dir);
  return report;
}

}  // namespace ultraserve
