#pragma once
// From validated client fields to a scheduler submission: formats chat messages as ChatML,
// tokenizes, and checks the prompt against the context length. Shared by the WebSocket and
// the HTTP sessions so that both apply the same rules. `limits` is the snapshot the caller
// validated the fields with, so one request sees one set of limits throughout.

#include <optional>
#include <variant>

#include "actors/messages.h"
#include "actors/session_context.h"

namespace ultraserve {

std::variant<SubmitRequest, RequestError> build_submission(const SessionContext& ctx, const SessionLimits& limits,
                                                           const GenerateFields& fields, caf::actor reply_to);

}  // namespace ultraserve
