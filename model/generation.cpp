#include "model/generation.h"

#include <algorithm>

namespace ultraserve {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none: return "none";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
  }
  return "?";
}

Generation::Generation(const GenerationRequest& request, const Tokenizer& tokenizer)
    : sampler_(request.sampling),
      detokenizer_(tokenizer),
      stops_(request.stop),
      stop_token_ids_(request.stop_token_ids),
      max_tokens_(request.max_tokens) {}

Generation::Update Generation::finish(FinishReason reason, std::string text) {
  finish_ = reason;
  if (reason == FinishReason::length) {
    // Nothing more will come: release what the detokenizer and the stop matcher held back.
    auto r = stops_.push(detokenizer_.flush());
    text += r.text;
    if (r.stopped) finish_ = FinishReason::stop;
    else text += stops_.flush();
  }
  return {std::move(text), finish_};
}

Generation::Update Generation::on_token(int32_t token) {
  if (finish_ != FinishReason::none) return {{}, finish_};
  if (std::find(stop_token_ids_.begin(), stop_token_ids_.end(), token) != stop_token_ids_.end()) {
    auto r = stops_.push(detokenizer_.flush());
    return finish(FinishReason::stop, r.text + (r.stopped ? "" : stops_.flush()));
  }
  tokens_.push_back(token);
  auto r = stops_.push(detokenizer_.push(token));
  if (r.stopped) return finish(FinishReason::stop, std::move(r.text));
  if (static_cast<int>(tokens_.size()) >= max_tokens_) return finish(FinishReason::length, std::move(r.text));
  return {std::move(r.text), FinishReason::none};
}

}  // namespace ultraserve
