#pragma once
// What a WebSocket session sends to its client, before rendering. The connection's send queue
// holds these (not rendered frames) so that pending deltas of one request can be merged into
// one frame when the client reads slower than tokens arrive.

#include <cstdint>
#include <string>
#include <vector>

namespace ultraserve {

struct OutboundEvent {
  enum class Kind { delta, done, error, pong };
  Kind kind = Kind::delta;
  std::string id;                 // the client's request id (empty for connection-level errors)
  // delta
  std::string text;
  std::vector<int32_t> tokens;
  // done
  std::string finish_reason;
  int prompt_tokens = 0, completion_tokens = 0;
  double time_to_first_token_s = 0, total_s = 0;
  double acceptance = 0;  // tau of a speculative request, else 0
  // error
  std::string code, message;

  // Appends a later delta of the same request (same id, both deltas).
  void merge(const OutboundEvent& later) {
    text += later.text;
    tokens.insert(tokens.end(), later.tokens.begin(), later.tokens.end());
  }
};

// The JSON text frame for an event (docs/protocol.md).
std::string render_ws_event(const OutboundEvent& event);

}  // namespace ultraserve
