#include "actors/request_builder.h"

namespace ultraserve {

std::variant<SubmitRequest, RequestError> build_submission(const SessionContext& ctx, const SessionLimits& limits,
                                                           const GenerateFields& fields, caf::actor reply_to) {
  GenerationRequest g;
  g.prompt = ctx.tokenizer->encode(fields.chat ? format_chatml(fields.messages) : fields.prompt);
  if (g.prompt.empty()) return RequestError{"invalid_request", "the prompt is empty", {}};
  const int total = static_cast<int>(g.prompt.size()) + fields.max_tokens;
  if (total > limits.context_length)
    return RequestError{"prompt_too_long",
                        "prompt (" + std::to_string(g.prompt.size()) + " tokens) + max_tokens (" +
                            std::to_string(fields.max_tokens) + ") exceed the context length " +
                            std::to_string(limits.context_length),
                        {}};
  g.sampling = fields.sampling;
  g.max_tokens = fields.max_tokens;
  g.stop = fields.stop;
  g.stop_token_ids = ctx.stop_token_ids;
  const RequestId id = ctx.next_request_id->fetch_add(1);
  return SubmitRequest{id, std::move(g), std::chrono::steady_clock::now() + limits.request_timeout,
                       std::move(reply_to), fields.block_size};
}

}  // namespace ultraserve
