#include <cstdio>

#include "config/command_options.h"
#include "model/quantize_checkpoint.h"
#include "tools/ultraserve/commands.h"
#include "tools/ultraserve/progress_bar.h"

namespace ultraserve {
namespace {

struct QuantizeCommandOptions : CommandOptions {
  std::string model, out;
  bool force = false;
  int64_t threads = 0;

  QuantizeCommandOptions()
      : CommandOptions("ultraserve quantize --model DIR --out DIR [--force] [--threads N]") {
    options()
        .add(model, "model", "HF checkpoint directory to read (BF16/F16/F32 or FP8 experts)")
        .add(out, "out", "directory to write the checkpoint with MXFP4 experts into (required)")
        .add(force, "force", "write into --out even if it exists and is not empty")
        .add(threads, "threads", "CPU threads (0 = one per core)");
  }

  QuantizeOptions validated() const {
    if (model.empty()) throw UsageError("--model is required");
    if (out.empty()) throw UsageError("--out is required");
    if (threads < 0) throw UsageError("--threads must be >= 0");
    return {model, out, force, static_cast<size_t>(threads), {}};
  }
};

void print_error_report(const QuantizeReport& r) {
  std::printf("%-8s %9s %15s %14s\n", "layer", "matrices", "rel. RMS error", "max abs error");
  auto row = [](const std::string& name, const QuantizationError& e) {
    std::printf("%-8s %9d %15.4f %14.6f\n", name.c_str(), e.matrices, e.relative_rms(), e.max_abs_error);
  };
  for (const auto& [layer, e] : r.layers) row(std::to_string(layer), e);
  row("overall", r.overall);
}

}  // namespace

int quantize_command(const Args& args) {
  QuantizeCommandOptions o;
  return run_command(o, args, [&] {
    QuantizeOptions q = o.validated();
    ProgressBar bar("quantize");
    q.progress = [&](const QuantizeProgress& p) { bar.update(p.bytes_done, p.bytes_total, *p.tensor); };
    const QuantizeReport report = quantize_checkpoint(q);
    bar.finish();
    print_error_report(report);
    std::string copied;
    for (const std::string& f : report.copied_files) copied += (copied.empty() ? "" : ", ") + f;
    std::fprintf(stderr, "wrote %s: %.1f MiB of weights from %.1f MiB; copied %s\n", o.out.c_str(),
                 double(report.bytes_out) / (1 << 20), double(report.bytes_in) / (1 << 20),
                 copied.empty() ? "no other files" : copied.c_str());
  });
}

}  // namespace ultraserve
