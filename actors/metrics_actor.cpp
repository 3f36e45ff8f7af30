#include "actors/metrics_actor.h"

#include <caf/all.hpp>

#include "actors/metrics.h"
#include "actors/metrics_events.h"

namespace ultraserve {
namespace {

struct MetricsState {
  MetricsRegistry registry;
  static inline const char* name = "metrics";
};

caf::behavior metrics_actor(caf::stateful_actor<MetricsState>* self) {
  return {
      [self](observe_atom, const StepObservation& o) {
        auto& r = self->state.registry;
        r.histogram("ultraserve_step_seconds").observe(o.seconds);
        r.histogram("ultraserve_batch_size").observe(o.batch_size);
        for (double s : o.inter_token_s) r.histogram("ultraserve_inter_token_latency_seconds").observe(s);
        for (int n : o.round_tokens) r.histogram("ultraserve_speculative_acceptance_length").observe(n);
        if (!o.round_tokens.empty()) {
          r.histogram("ultraserve_draft_seconds").observe(o.draft_seconds);
          r.histogram("ultraserve_verify_seconds").observe(o.seconds - o.draft_seconds);
        }
        r.set("ultraserve_kv_blocks_used", o.kv_blocks_used);
        r.set("ultraserve_kv_blocks_free", o.kv_blocks_total - o.kv_blocks_used);
        r.set("ultraserve_queue_depth", static_cast<double>(o.queued));
      },
      [self](observe_atom, const RequestObservation& o) {
        auto& r = self->state.registry;
        r.count("ultraserve_requests_total", o.outcome);
        r.add("ultraserve_prompt_tokens_total", o.prompt_tokens);
        r.add("ultraserve_generated_tokens_total", o.completion_tokens);
        if (o.time_to_first_token_s >= 0)
          r.histogram("ultraserve_time_to_first_token_seconds").observe(o.time_to_first_token_s);
      },
      [self](observe_atom, const ConnectionObservation& o) {
        self->state.registry.set("ultraserve_open_connections", o.open_connections);
      },
      [self](render_atom) { return self->state.registry.render(); },
  };
}

}  // namespace

caf::actor spawn_metrics(caf::actor_system& system) { return system.spawn(metrics_actor); }

}  // namespace ultraserve
