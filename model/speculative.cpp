#include "model/speculative.h"

#include <chrono>
#include <stdexcept>

#include "model/checkpoint.h"

namespace ultraserve {
namespace {

constexpr int kKvBlock = 16;

int blocks_for(int positions) { return (positions + kKvBlock - 1) / kKvBlock; }

}  // namespace

DFlashProposer::DFlashProposer(DFlashDraft& draft, int max_context)
    : draft_(draft), cache_(draft.config(), blocks_for(max_context), kKvBlock) {
  cache_.reserve(seq_, max_context);
}

void DFlashProposer::on_committed(std::span<const float> taps) { draft_.append_context(cache_, seq_, taps); }

std::vector<int32_t> DFlashProposer::propose(int32_t anchor, int count) {
  return draft_.propose(cache_, seq_, anchor, count + 1);
}

std::vector<int32_t> accept_block(std::span<const int32_t> block,
                                  const std::function<Sampler::Verdict(size_t row, int32_t proposal)>& judge,
                                  const std::function<int32_t(size_t row)>& draw) {
  std::vector<int32_t> tokens;
  for (size_t i = 0; i + 1 < block.size(); ++i) {
    const Sampler::Verdict v = judge(i, block[i + 1]);
    tokens.push_back(v.token);
    if (!v.accepted) return tokens;
  }
  tokens.push_back(draw(block.size() - 1));
  return tokens;
}

int SpeculativeStats::tokens_gained() const {
  // The first token comes from the prefill; every later one from a round. The stop token that
  // ends a request is not among the generated tokens, but its round produced it.
  return generated_tokens - 1 + (finish == FinishReason::stop);
}

double SpeculativeStats::mean_acceptance() const {
  return rounds > 0 ? static_cast<double>(tokens_gained()) / rounds : 0.0;
}

SpeculativeStats speculative_generate(CpuModel& target, Proposer& proposer, const Tokenizer& tokenizer,
                                      const GenerationRequest& request, int block_size,
                                      const std::function<void(std::string_view)>& on_text) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& config = target.config();
  const int prompt = static_cast<int>(request.prompt.size());
  if (prompt == 0) throw std::invalid_argument("the prompt is empty (it encodes to no tokens)");
  if (request.max_tokens <= 0) throw std::invalid_argument("max_tokens must be positive");
  if (block_size < 2 || block_size > PagedKvCache::kMaxRollback)
    throw std::invalid_argument("the block size must be in [2, " + std::to_string(PagedKvCache::kMaxRollback) + "]");
  const int context = prompt + request.max_tokens;
  if (context > config.max_position_embeddings)
    throw std::invalid_argument("prompt (" + std::to_string(prompt) + " tokens) + max_tokens (" +
                                std::to_string(request.max_tokens) + ") exceeds the model's context length " +
                                std::to_string(config.max_position_embeddings));

  PagedKvCache cache(config, blocks_for(context), kKvBlock);
  KvSequence seq;
  cache.reserve(seq, context);
  Generation generation(request, tokenizer);
  const size_t vocab = static_cast<size_t>(config.vocab_size), sampleable = sampleable_vocab(config, tokenizer);
  SpeculativeStats stats;
  stats.prompt_tokens = prompt;

  // Records a generated token; true when generation is over.
  auto emit = [&](int32_t token) {
    const Generation::Update update = generation.on_token(token);
    if (!update.text.empty()) on_text(update.text);
    stats.finish = update.finish;
    return update.finish != FinishReason::none;
  };

  const auto t0 = clock::now();
  std::vector<float> taps;
  SequenceStep step{&seq, request.prompt};
  std::vector<float> logits = target.forward(cache, {&step, 1}, &taps);
  proposer.on_committed(taps);
  int32_t anchor = generation.sample(std::span(logits).first(sampleable));
  const auto t1 = clock::now();
  stats.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  for (bool done = emit(anchor); !done;) {
    // The block never runs past the context the request may use.
    const int block = std::min(block_size, context - seq.length);
    std::vector<int32_t> tokens{anchor};
    for (int32_t t : proposer.propose(anchor, block - 1)) tokens.push_back(t);
    tokens.resize(block);  // a proposer may give fewer; the rest verifies nothing
    const int start = seq.length;
    step = {&seq, tokens, true};
    logits = target.forward(cache, {&step, 1}, &taps);
    ++stats.rounds;

    // Row i holds the target's logits for the position after tokens[i].
    auto row = [&](size_t i) { return std::span<const float>(logits).subspan(i * vocab, sampleable); };
    const std::vector<int32_t> yielded = accept_block(
        tokens, [&](size_t i, int32_t proposal) { return generation.verify(row(i), proposal); },
        [&](size_t i) { return generation.sample(row(i)); });
    for (size_t i = 0; i < yielded.size() && !done; ++i) done = emit(yielded[i]);
    const int accepted = static_cast<int>(yielded.size()) - 1;
    const int32_t next = yielded.back();
    // Keep the anchor and the accepted tokens; the rest of the pass is rolled back.
    seq.length = start + 1 + accepted;
    const size_t tap_width = taps.size() / block;
    proposer.on_committed(std::span(taps).first(tap_width * (1 + accepted)));
    anchor = next;
  }
  stats.tokens = generation.tokens();
  stats.generated_tokens = static_cast<int>(stats.tokens.size());
  stats.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return stats;
}

}  // namespace ultraserve
