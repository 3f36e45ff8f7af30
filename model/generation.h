#pragma once
// One request's decoding state, independent of how its steps are scheduled: the sampler,
// the streaming detokenizer and the stop rules (stop tokens, stop strings, max tokens).
// The generate command drives one of these; the server's scheduler drives many at once.

#include <cstdint>
#include <string>
#include <vector>

#include "model/sampler.h"
#include "model/stop_strings.h"
#include "model/tokenizer.h"
#include "model/utf8_stream.h"

namespace ultraserve {

enum class FinishReason { none, stop, length, cancelled };
const char* finish_reason_name(FinishReason r);

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_tokens = 256;
  std::vector<std::string> stop;          // stop strings (not emitted)
  std::vector<int32_t> stop_token_ids;    // e.g. <|im_end|>, <|endoftext|> (not emitted)
};

class Generation {
 public:
  Generation(const GenerationRequest& request, const Tokenizer& tokenizer);

  struct Update {
    std::string text;  // newly completed text (may be empty)
    FinishReason finish = FinishReason::none;
  };

  int32_t sample(std::span<const float> logits) { return sampler_.sample(logits); }
  Sampler::Verdict verify(std::span<const float> logits, int32_t proposal) { return sampler_.verify(logits, proposal); }
  // Records the next generated token and applies the stop rules.
  Update on_token(int32_t token);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  FinishReason finish_reason() const { return finish_; }

 private:
  Update finish(FinishReason reason, std::string text);

  Sampler sampler_;
  StreamingDetokenizer detokenizer_;
  StopStringMatcher stops_;
  std::vector<int32_t> stop_token_ids_;
  int max_tokens_;
  std::vector<int32_t> tokens_;
  FinishReason finish_ = FinishReason::none;
};

}  // namespace ultraserve
