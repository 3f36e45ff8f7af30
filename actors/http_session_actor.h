#pragma once
// One actor per OpenAI-compatible request (/v1/completions, /v1/chat/completions): submits the
// generation and answers with one JSON body, or with Server-Sent Events ending in
// `data: [DONE]` when the client asked for stream: true. If the client disconnects the actor
// quits, and the scheduler (which monitors it) cancels the generation.

#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/session_context.h"
#include "net/request_parsing.h"
#include "net/service.h"

namespace ultraserve {

// `limits`: the snapshot the fields were validated with.
void spawn_http_session(caf::actor_system& system, const SessionContext& context, const SessionLimits& limits,
                        OpenAiEndpoint endpoint, GenerateFields fields, std::shared_ptr<HttpResponder> responder);

// HTTP status for a FailedEvent / RequestError code.
int http_status_for(const std::string& code);

}  // namespace ultraserve
