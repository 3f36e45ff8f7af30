#include <cstdio>
#include <iostream>

#include "config/command_options.h"
#include "model/chat_format.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/speculative.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

struct GenerateOptions : CommandOptions {
  std::string model = default_model_dir(), prompt, stop, draft;
  bool chat = false, no_draft = false;
  int64_t max_tokens = 128, top_k = 0, seed = 0, threads = 0, block_size = 0;
  double temperature = 0.0, top_p = 1.0;

  GenerateOptions()
      : CommandOptions("ultraserve generate --model DIR --prompt TEXT [--chat] [--max-tokens N] [--temperature T] "
                       "[--top-k K] [--top-p P] [--seed N] [--stop TEXT] [--threads N] [--draft DIR [--block-size B]]") {
    options()
        .add(model, "model", "HF checkpoint directory (config.json, safetensors, tokenizer.json; default: the shipped models/default)")
        .add(prompt, "prompt", "the prompt text")
        .add(chat, "chat", "wrap the prompt as a ChatML user turn and answer as the assistant")
        .add(max_tokens, "max-tokens", "most tokens to generate")
        .add(temperature, "temperature", "0 = greedy; > 0 samples")
        .add(top_k, "top-k", "sample among the K most likely tokens (0 = all)")
        .add(top_p, "top-p", "sample within the smallest set of tokens holding this probability mass")
        .add(seed, "seed", "random seed for sampling")
        .add(stop, "stop", "stop when this text is generated (not printed)")
        .add(threads, "threads", "CPU threads (0 = one per core)")
        .add(draft, "draft", "a DFlash draft: speculative decoding, lossless (default: DIR/draft if it exists)")
        .add(no_draft, "no-draft", "decode without the draft even when one is given")
        .add(block_size, "block-size", "tokens per speculative block, anchor included (0 = the draft's)");
  }

  void validate() const {
    if (model.empty()) throw UsageError("--model is required (models/default, the shipped default, is missing)");
    if (prompt.empty()) throw UsageError("--prompt is required");
    if (max_tokens <= 0) throw UsageError("--max-tokens must be positive");
    if (!(temperature >= 0)) throw UsageError("--temperature must be >= 0");
    if (top_k < 0) throw UsageError("--top-k must be >= 0");
    if (!(top_p > 0 && top_p <= 1)) throw UsageError("--top-p must be in (0, 1]");
    if (threads < 0) throw UsageError("--threads must be >= 0");
    if (block_size != 0 && (block_size < 2 || block_size > 64)) throw UsageError("--block-size must be in [2, 64]");
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

    auto print = [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
    GenerationStats stats;
    std::string speculation;
    if (const auto draft_dir = choose_draft(o.model, o.draft, o.no_draft)) {
      DFlashDraft draft(load_draft(*draft_dir), model, pool);
      model.set_taps(draft.target_layers());
      const int block = o.block_size ? static_cast<int>(o.block_size) : draft.config().dflash->block_size;
      DFlashProposer proposer(draft, static_cast<int>(request.prompt.size()) + request.max_tokens);
      const SpeculativeStats s = speculative_generate(model, proposer, tokenizer, request, block, print);
      stats = s;
      char line[96];
      std::snprintf(line, sizeof line, "; DFlash block %d: %d rounds, tau %.2f", block, s.rounds, s.mean_acceptance());
      speculation = line;
    } else {
      stats = generate(model, tokenizer, request, print);
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);  // the stats line on stderr must come after the text
    std::fprintf(stderr,
                 "[%d prompt tokens in %.3f s; %d generated, %.1f tokens/s decode; finish: %s; %zu threads%s]\n",
                 stats.prompt_tokens, stats.prefill_seconds, stats.generated_tokens,
                 stats.decode_tokens_per_second(), finish_reason_name(stats.finish), pool.size(), speculation.c_str());
  });
}

}  // namespace ultraserve
