#pragma once
// What the scheduler and the network layer report to the metrics actor.

#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

namespace ultraserve {

using observe_atom = caf::atom_constant<caf::atom("observe")>;
using render_atom = caf::atom_constant<caf::atom("render")>;

struct StepObservation {
  int batch_size = 0;         // sequences in the step
  int tokens = 0;             // tokens fed through the model
  double seconds = 0;
  int kv_blocks_used = 0, kv_blocks_total = 0;
  size_t queued = 0;
  std::vector<double> inter_token_s;  // for each decode token: time since the request's previous token
  double draft_seconds = 0;           // of `seconds`, the DFlash draft's proposals
  std::vector<int> round_tokens;      // for each speculative round: tokens it gave (its acceptance length)
};

struct RequestObservation {
  std::string outcome;        // finish reason ("stop", "length", "cancelled") or error code
  int prompt_tokens = 0, completion_tokens = 0;
  double time_to_first_token_s = -1;  // < 0: no token was produced
};

struct ConnectionObservation {
  int open_connections = 0;
};

}  // namespace ultraserve

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::StepObservation)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::RequestObservation)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ultraserve::ConnectionObservation)
