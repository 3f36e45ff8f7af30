// `ultraserve evaluate`: what a model is worth on OUR CPU engine, measured on held-out text.
//   - perplexity of next-token prediction over non-overlapping windows of the text;
//   - with --compare, how closely the model follows a reference checkpoint of the same model
//     (e.g. MXFP4 experts against the BF16 original): top-1 agreement and max relative logits error;
//   - with a draft, DFlash speculation per block size: tau, decode tokens/s next to plain decoding,
//     and how many outputs differ from plain greedy decoding (must be none: speculation is lossless);
//   - a few greedy continuations, so a person can read what the model writes.
// A table on stdout; --json writes every figure.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "config/command_options.h"
#include "model/checkpoint.h"
#include "model/heldout_text.h"
#include "model/sampler.h"
#include "model/speculative.h"
#include "net/json_writer.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

struct EvaluateOptions : CommandOptions {
  std::string model = default_model_dir(), draft, text = "data/train/corpus/heldout.jsonl", compare, json;
  bool no_draft = false;
  int64_t max_tokens = 20000, window = 256, prompts = 20, prompt_tokens = 24, new_tokens = 64, samples = 3,
          threads = 0;
  std::vector<int64_t> blocks{4, 8, 16};

  EvaluateOptions()
      : CommandOptions("ultraserve evaluate --model DIR [--draft DIR | --no-draft] [--text FILE.jsonl] "
                       "[--compare DIR] [--blocks '[4,8,16]'] [--json FILE] [sizes...]") {
    options()
        .add(model, "model", "HF checkpoint directory (its draft/ folder, if there is one, is the draft)")
        .add(draft, "draft", "a DFlash draft for the model (default: DIR/draft when it exists)")
        .add(no_draft, "no-draft", "measure no speculation, even with a draft")
        .add(text, "text",
             "held-out JSONL, one {\"source\": ..., \"text\": ...} a line (default: data/train/corpus/heldout.jsonl)")
        .add(max_tokens, "max-tokens", "most tokens of the text to score (from its first document on)")
        .add(window, "window", "tokens per perplexity window (windows do not overlap)")
        .add(compare, "compare", "a reference checkpoint of the model, for top-1 agreement and logits error")
        .add(prompts, "prompts", "speculation prompts: the starts of N documents spread over those long enough")
        .add(prompt_tokens, "prompt-tokens", "tokens per prompt")
        .add(new_tokens, "new-tokens", "most tokens generated per prompt (greedy)")
        .add(blocks, "blocks", "speculative block sizes to measure, anchor included")
        .add(samples, "samples", "greedy continuations of the first N prompts to print")
        .add(threads, "threads", "CPU threads (0 = one per core)")
        .add(json, "json", "write every figure as JSON here");
  }

  void validate() const {
    if (model.empty()) throw UsageError("--model is required (models/default, the shipped default, is missing)");
    if (max_tokens < 2 || window < 2) throw UsageError("--max-tokens and --window must be at least 2");
    if (prompts < 0 || prompt_tokens < 1 || new_tokens < 1 || samples < 0 || threads < 0)
      throw UsageError("--prompts and --samples must be >= 0, --prompt-tokens and --new-tokens positive");
    for (int64_t b : blocks)
      if (b < 2 || b > 64) throw UsageError("--blocks: each block size must be in [2, 64]");
  }
};

// The documents' tokens in file order with <|endoftext|> between them (how training saw them),
// cut at `limit`; documents past the limit are not even tokenized.
std::vector<int32_t> text_tokens(const std::vector<HeldoutDocument>& documents, const Tokenizer& tokenizer, size_t limit) {
  const std::optional<int32_t> separator = tokenizer.token_to_id("<|endoftext|>");
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < documents.size() && tokens.size() < limit; ++i) {
    if (i > 0 && separator) tokens.push_back(*separator);
    const std::vector<int32_t> ids = tokenizer.encode(documents[i].text);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  tokens.resize(std::min(tokens.size(), limit));
  return tokens;
}

// -log softmax(row)[target] in double: fp32 sums over a 150k vocabulary lose digits that perplexity needs.
double negative_log_likelihood(std::span<const float> row, int32_t target) {
  const double top = *std::max_element(row.begin(), row.end());
  double sum = 0;
  for (float v : row) sum += std::exp(double(v) - top);
  return std::log(sum) + top - row[target];
}

// max |row - ref| / max |ref|: the error measure of the logits tests.
double relative_error(std::span<const float> row, std::span<const float> ref) {
  double diff = 0, scale = 0;
  for (size_t v = 0; v < ref.size(); ++v)
    diff = std::max(diff, std::fabs(double(row[v]) - ref[v])), scale = std::max(scale, std::fabs(double(ref[v])));
  return diff / scale;
}

// The logits of every token of the window, in one pass from an empty cache.
std::vector<float> window_logits(CpuModel& model, std::span<const int32_t> window) {
  constexpr int kBlock = 16;
  PagedKvCache cache(model.config(), static_cast<int>(window.size() + kBlock - 1) / kBlock, kBlock);
  KvSequence seq;
  cache.reserve(seq, static_cast<int>(window.size()));
  SequenceStep step{&seq, window, true};
  return model.forward(cache, {&step, 1});
}

struct TextScores {
  int64_t windows = 0, tokens = 0, agree = 0;  // agree: positions where both models' argmax match
  double nll = 0, reference_nll = 0, max_relative_error = 0;
  double perplexity() const { return std::exp(nll / tokens); }
  double reference_perplexity() const { return std::exp(reference_nll / tokens); }
  double top1_agreement() const { return double(agree) / tokens; }
};

// Scores `tokens` window by window: row i of a window predicts its token i + 1. Only the ids the
// tokenizer can produce count (padding rows of the embedding are never real tokens).
TextScores score_text(CpuModel& model, CpuModel* reference, const std::vector<int32_t>& tokens, size_t window,
                      size_t vocab) {
  for (const CpuModel* m : {&model, reference})
    if (m && window > size_t(m->config().max_position_embeddings))
      throw std::runtime_error("--window " + std::to_string(window) + " exceeds a model's context length " +
                               std::to_string(m->config().max_position_embeddings));
  TextScores s;
  // The last window may be shorter; it still scores its tokens.
  for (size_t start = 0; start + 1 < tokens.size(); start += window, ++s.windows) {
    const auto w = std::span(tokens).subspan(start, std::min(window, tokens.size() - start));
    const std::vector<float> logits = window_logits(model, w);
    const std::vector<float> ref = reference ? window_logits(*reference, w) : std::vector<float>();
    const size_t width = logits.size() / w.size();
    for (size_t i = 0; i + 1 < w.size(); ++i, ++s.tokens) {
      const auto row = std::span(logits).subspan(i * width, vocab);
      s.nll += negative_log_likelihood(row, w[i + 1]);
      if (!reference) continue;
      const auto ref_row = std::span(ref).subspan(i * width, vocab);
      s.reference_nll += negative_log_likelihood(ref_row, w[i + 1]);
      s.agree += argmax(row) == argmax(ref_row);
      s.max_relative_error = std::max(s.max_relative_error, relative_error(row, ref_row));
    }
  }
  if (s.tokens == 0) throw std::runtime_error("the text has fewer than 2 tokens: nothing to score");
  return s;
}

// Decode steps and their time, summed over prompts (the first token, from the prefill, is not a step).
struct Decoding {
  int64_t tokens = 0;
  double seconds = 0;
  void add(const GenerationStats& s) { tokens += std::max(0, s.generated_tokens - 1), seconds += s.decode_seconds; }
  double per_second() const { return seconds > 0 ? tokens / seconds : 0.0; }
};

struct BlockResult {
  int block;
  Decoding decoding;
  int64_t gained = 0, rounds = 0;  // tokens the verify rounds produced, and the rounds
  int mismatches = 0;              // prompts whose speculative output is not the plain greedy output
  double tau() const { return rounds > 0 ? double(gained) / rounds : 0.0; }
};

struct Sample {
  std::string prompt, continuation;
};

struct Report {
  TextScores text;
  size_t documents = 0, prompts = 0;
  Decoding plain;
  std::vector<BlockResult> blocks;
  std::vector<Sample> samples;
};

// Plain greedy decoding of every prompt: the baseline speed, the outputs that speculation must
// reproduce exactly, and the samples (the first prompts' continuations, as generate prints them).
std::vector<std::vector<int32_t>> decode_plain(CpuModel& model, const Tokenizer& tokenizer, GenerationRequest request,
                                               const std::vector<std::vector<int32_t>>& prompts, size_t samples,
                                               Report& r) {
  std::vector<std::vector<int32_t>> outputs;
  for (const auto& prompt : prompts) {
    request.prompt = prompt;
    std::string text;
    const GenerationStats s = generate(model, tokenizer, request, [&](std::string_view t) { text += t; });
    r.plain.add(s);
    outputs.push_back(s.tokens);
    if (r.samples.size() < samples) r.samples.push_back({tokenizer.decode(prompt), text});
  }
  return outputs;
}

// Speculative decoding of every prompt with one block size, checked against the plain outputs.
BlockResult speculate(CpuModel& model, DFlashDraft& draft, const Tokenizer& tokenizer, GenerationRequest request,
                      const std::vector<std::vector<int32_t>>& prompts,
                      const std::vector<std::vector<int32_t>>& plain_tokens, int block) {
  BlockResult result{block, {}};
  for (size_t p = 0; p < prompts.size(); ++p) {
    request.prompt = prompts[p];
    DFlashProposer proposer(draft, static_cast<int>(request.prompt.size()) + request.max_tokens);
    const SpeculativeStats s = speculative_generate(model, proposer, tokenizer, request, block, [](auto) {});
    result.decoding.add(s);
    result.gained += s.tokens_gained();
    result.rounds += s.rounds;
    result.mismatches += s.tokens != plain_tokens[p];
  }
  return result;
}

std::string json_string(std::string_view s) { return JsonWriter().value(s).take(); }

void print_report(const EvaluateOptions& o, const std::optional<std::filesystem::path>& draft, const Report& r) {
  std::printf("model %s%s%s\ntext %s: %zu documents, %lld tokens scored in %lld windows of %lld\nperplexity %.3f\n",
              o.model.c_str(), draft ? ", draft " : "", draft ? draft->c_str() : "", o.text.c_str(), r.documents,
              (long long)r.text.tokens, (long long)r.text.windows, (long long)o.window, r.text.perplexity());
  if (!o.compare.empty())
    std::printf("compare %s: perplexity %.3f, top-1 agreement %.4f, max relative logits error %.3g\n",
                o.compare.c_str(), r.text.reference_perplexity(), r.text.top1_agreement(), r.text.max_relative_error);
  if (!r.blocks.empty()) {
    std::printf("\nspeculative decoding: %zu prompts of %lld tokens, up to %lld new, greedy; plain %.1f tokens/s\n"
                "| block | tau | tokens/s | vs plain | mismatches |\n|---|---|---|---|---|\n",
                r.prompts, (long long)o.prompt_tokens, (long long)o.new_tokens, r.plain.per_second());
    for (const BlockResult& b : r.blocks)
      std::printf("| %d | %.2f | %.1f | %.2fx | %d |\n", b.block, b.tau(), b.decoding.per_second(),
                  r.plain.per_second() > 0 ? b.decoding.per_second() / r.plain.per_second() : 0.0, b.mismatches);
  }
  for (size_t i = 0; i < r.samples.size(); ++i)
    std::printf("%ssample %zu: %s -> %s\n", i ? "" : "\n", i + 1, json_string(r.samples[i].prompt).c_str(),
                json_string(r.samples[i].continuation).c_str());
}

void write_json(const EvaluateOptions& o, const std::optional<std::filesystem::path>& draft, const Report& r) {
  JsonWriter w;
  w.begin_object().field("model", o.model).key("draft");
  draft ? w.value(draft->string()) : w.null();
  w.field("text", o.text).field("documents", int64_t(r.documents)).field("window", o.window)
      .field("windows", r.text.windows).field("tokens", r.text.tokens).field("perplexity", r.text.perplexity());
  if (!o.compare.empty())
    w.key("compare").begin_object().field("model", o.compare).field("perplexity", r.text.reference_perplexity())
        .field("top1_agreement", r.text.top1_agreement()).field("max_relative_logits_error", r.text.max_relative_error)
        .end_object();
  if (!r.blocks.empty()) {
    w.key("speculative").begin_object().field("prompts", int64_t(r.prompts)).field("prompt_tokens", o.prompt_tokens)
        .field("new_tokens", o.new_tokens).field("plain_tokens_per_s", r.plain.per_second());
    w.key("blocks").begin_array();
    for (const BlockResult& b : r.blocks)
      w.begin_object().field("block", b.block).field("tau", b.tau())
          .field("tokens_per_s", b.decoding.per_second()).field("mismatches", b.mismatches).end_object();
    w.end_array().end_object();
  }
  w.key("samples").begin_array();
  for (const Sample& s : r.samples)
    w.begin_object().field("prompt", s.prompt).field("continuation", s.continuation).end_object();
  w.end_array().end_object();
  std::ofstream out(o.json);
  if (!(out << w.str() << "\n")) throw std::runtime_error(o.json + ": cannot write");
}

}  // namespace

int evaluate_command(const Args& args) {
  EvaluateOptions o;
  return run_command(o, args, [&] {
    o.validate();
    const std::vector<HeldoutDocument> documents = read_documents(o.text);
    ThreadPool pool(static_cast<size_t>(o.threads));
    LoadedModel loaded = load_model(o.model);
    const Tokenizer& tokenizer = loaded.tokenizer;
    const size_t vocab = static_cast<size_t>(sampleable_vocab(loaded.config, tokenizer));
    CpuModel model(std::move(loaded.config), std::move(loaded.weights), pool);
    std::unique_ptr<CpuModel> reference;
    if (!o.compare.empty()) {
      LoadedModel other = load_model(o.compare);
      if (other.config.vocab_size != model.config().vocab_size)
        throw std::runtime_error(o.compare + ": another vocabulary than " + o.model + "'s: nothing to compare");
      reference = std::make_unique<CpuModel>(std::move(other.config), std::move(other.weights), pool);
    }
    // Loaded before the long perplexity pass, so a bad draft fails at once.
    const std::optional<std::filesystem::path> draft_dir = choose_draft(o.model, o.draft, o.no_draft);
    std::unique_ptr<DFlashDraft> draft;
    if (draft_dir) {
      draft = std::make_unique<DFlashDraft>(load_draft(*draft_dir), model, pool);
      model.set_taps(draft->target_layers());
    }

    Report r;
    r.documents = documents.size();
    r.text = score_text(model, reference.get(), text_tokens(documents, tokenizer, size_t(o.max_tokens)),
                        size_t(o.window), vocab);

    // Without a draft, prompts are only needed for the samples.
    std::vector<std::vector<int32_t>> prompts;
    for (HeldoutPrompt& p : heldout_prompts(documents, tokenizer, size_t(draft ? o.prompts : std::min(o.prompts, o.samples)),
                                            size_t(o.prompt_tokens), PromptPlace::start))
      prompts.push_back(std::move(p.ids));
    if (draft && prompts.empty())
      throw std::runtime_error(o.text + ": no document has the " + std::to_string(o.prompt_tokens) +
                               " tokens a speculation prompt needs");
    r.prompts = prompts.size();
    GenerationRequest request;
    request.max_tokens = static_cast<int>(o.new_tokens);
    request.stop_token_ids = loaded.stop_token_ids;
    const auto plain = decode_plain(model, tokenizer, request, prompts, size_t(o.samples), r);
    if (draft)
      for (int64_t block : o.blocks)
        r.blocks.push_back(speculate(model, *draft, tokenizer, request, prompts, plain, static_cast<int>(block)));

    print_report(o, draft_dir, r);
    if (!o.json.empty()) write_json(o, draft_dir, r);
  });
}

}  // namespace ultraserve
