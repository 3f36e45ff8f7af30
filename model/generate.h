#pragma once
// The whole generate loop for one request on the CPU model: prefill the prompt, then sample,
// stream and step one token at a time until a stop rule fires.

#include <functional>
#include <string_view>

#include "model/cpu_model.h"
#include "model/generation.h"

namespace ultraserve {

struct GenerationStats {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double prefill_seconds = 0;  // prompt forward pass, up to the first token's logits
  double decode_seconds = 0;   // every later step
  FinishReason finish = FinishReason::none;
  std::vector<int32_t> tokens;
  double decode_tokens_per_second() const;
};

// Throws std::invalid_argument for an empty prompt or one that, with max_tokens, exceeds
// the model's context length.
GenerationStats generate(CpuModel& model, const Tokenizer& tokenizer, const GenerationRequest& request,
                         const std::function<void(std::string_view)>& on_text);

}  // namespace ultraserve
