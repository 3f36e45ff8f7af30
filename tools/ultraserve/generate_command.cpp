#include <cstdio>
#include <iostream>

#include "config/command_options.h"
#include "model/chat_format.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

struct GenerateOptions : CommandOptions {
  std::string model, prompt, stop;
  bool chat = false;
  int64_t max_tokens = 128, top_k = 0, seed = 0, threads = 0;
  double temperature = 0.0, top_p = 1.0;

  GenerateOptions()
      : CommandOptions("ultraserve generate --model DIR --prompt TEXT [--chat] [--max-tokens N] [--temperature T] "
                       "[--top-k K] [--top-p P] [--seed N] [--stop TEXT] [--threads N]") {
    options()
        .add(model, "model", "HF checkpoint directory (config.json, safetensors, tokenizer.json)")
        .add(prompt, "prompt", "the prompt text")
        .add(chat, "chat", "wrap the prompt as a ChatML user turn and answer as the assistant")
        .add(max_tokens, "max-tokens", "most tokens to generate")
        .add(temperature, "temperature", "0 = greedy; > 0 samples")
        .add(top_k, "top-k", "sample among the K most likely tokens (0 = all)")
        .add(top_p, "top-p", "sample within the smallest set of tokens holding this probability mass")
        .add(seed, "seed", "random seed for sampling")
        .add(stop, "stop", "stop when this text is generated (not printed)")
        .add(threads, "threads", "CPU threads (0 = one per core)");
  }

  void validate() const {
    if (model.empty()) throw UsageError("--model is required");
    if (prompt.empty()) throw UsageError("--prompt is required");
    if (max_tokens <= 0) throw UsageError("--max-tokens must be positive");
    if (!(temperature >= 0)) throw UsageError("--temperature must be >= 0");
    if (top_k < 0) throw UsageError("--top-k must be >= 0");
    if (!(top_p > 0 && top_p <= 1)) throw UsageError("--top-p must be in (0, 1]");
    if (threads < 0) throw UsageError("--threads must be >= 0");
  }
};

}  // namespace

int generate_command(const Args& args) {
  GenerateOptions o;
  return run_command(o, args, [&] {
    o.validate();
    LoadedModel loaded = load_model(o.model);
    ThreadPool pool(static_cast<size_t>(o.threads));
    const Tokenizer& tokenizer = loaded.tokenizer;
    CpuModel model(std::move(loaded.config), std::move(loaded.weights), pool);

    GenerationRequest request;
    const ChatMessage turn{"user", o.prompt};
    request.prompt = tokenizer.encode(o.chat ? format_chatml({&turn, 1}) : o.prompt);
    request.max_tokens = static_cast<int>(o.max_tokens);
    request.sampling = {static_cast<float>(o.temperature), static_cast<int>(o.top_k), static_cast<float>(o.top_p),
                        static_cast<uint64_t>(o.seed)};
    if (!o.stop.empty()) request.stop.push_back(o.stop);
    request.stop_token_ids = loaded.stop_token_ids;

    GenerationStats stats = generate(model, tokenizer, request, [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);  // the stats line on stderr must come after the text
    std::fprintf(stderr,
                 "[%d prompt tokens in %.3f s; %d generated, %.1f tokens/s decode; finish: %s; %zu threads]\n",
                 stats.prompt_tokens, stats.prefill_seconds, stats.generated_tokens,
                 stats.decode_tokens_per_second(), finish_reason_name(stats.finish), pool.size());
  });
}

}  // namespace ultraserve
