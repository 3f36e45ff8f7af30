#include "model/generate.h"

#include "model/checkpoint.h"

#include <chrono>
#include <stdexcept>

namespace ultraserve {

double GenerationStats::decode_tokens_per_second() const {
  // The first generated token comes from the prefill; the rest from decode steps.
  return decode_seconds > 0 ? (generated_tokens - 1) / decode_seconds : 0.0;
}

GenerationStats generate(CpuModel& model, const Tokenizer& tokenizer, const GenerationRequest& request,
                         const std::function<void(std::string_view)>& on_text) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& config = model.config();
  const int prompt = static_cast<int>(request.prompt.size());
  if (prompt == 0) throw std::invalid_argument("the prompt is empty (it encodes to no tokens)");
  if (request.max_tokens <= 0) throw std::invalid_argument("max_tokens must be positive");
  const int context = prompt + request.max_tokens;
  if (context > config.max_position_embeddings)
    throw std::invalid_argument("prompt (" + std::to_string(prompt) + " tokens) + max_tokens (" +
                                std::to_string(request.max_tokens) + ") exceeds the model's context length " +
                                std::to_string(config.max_position_embeddings));

  constexpr int kBlock = 16;
  PagedKvCache cache(config, (context + kBlock - 1) / kBlock, kBlock);
  KvSequence seq;
  cache.reserve(seq, context);
  Generation generation(request, tokenizer);

  const size_t vocab = static_cast<size_t>(sampleable_vocab(config, tokenizer));
  GenerationStats stats;
  stats.prompt_tokens = prompt;
  auto t0 = clock::now();
  SequenceStep step{&seq, request.prompt};
  std::vector<float> logits = model.forward(cache, {&step, 1});
  auto t1 = clock::now();
  stats.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  for (;;) {
    int32_t token = generation.sample(std::span(logits).first(vocab));
    auto update = generation.on_token(token);
    if (!update.text.empty()) on_text(update.text);
    if (update.finish != FinishReason::none) {
      stats.finish = update.finish;
      break;
    }
    step = {&seq, {&token, 1}};
    logits = model.forward(cache, {&step, 1});
  }
  stats.tokens = generation.tokens();
  stats.generated_tokens = static_cast<int>(stats.tokens.size());
  stats.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return stats;
}

}  // namespace ultraserve
