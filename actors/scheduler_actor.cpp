#include "actors/scheduler_actor.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <set>

#include <caf/all.hpp>

#include "actors/messages.h"
#include "actors/metrics_events.h"
#include "actors/rate_meter.h"

namespace ultraserve {
namespace {

using clock = std::chrono::steady_clock;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;

struct ActiveRequest {
  caf::actor session;
  Generation generation;
  int prompt_tokens;
  clock::time_point submitted;
  std::optional<clock::time_point> first_token, last_token;
  int speculative_rounds = 0, speculative_tokens = 0;  // for tau
};

struct SchedulerState {
  std::unique_ptr<BatchPlanner> planner;
  std::map<RequestId, ActiveRequest> active;
  std::map<caf::actor_addr, std::set<RequestId>> by_session;
  WorkerSpawner spawn_worker;
  caf::actor worker, metrics;
  uint64_t worker_restarts = 0, worker_epoch = 0;
  uint64_t speculative_rounds = 0, speculative_tokens = 0;  // the epoch tells a dead worker's answers apart
  std::set<caf::actor_addr> retired_workers;       // dead workers whose exit may still arrive
  std::shared_ptr<const Tokenizer> tokenizer;
  bool step_in_flight = false;
  uint64_t steps = 0;
  // What the admin console reports and steers.
  RateMeter token_rate{clock::now()};
  uint64_t generated_tokens = 0;
  double last_step_s = 0;
  bool draining = false;
  std::vector<caf::response_promise> drain_waiters;  // answered once draining and idle
  static inline const char* name = "scheduler";
};

using Self = caf::stateful_actor<SchedulerState>;

double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

void observe(Self* self, RequestObservation o) {
  if (self->state.metrics) self->send(self->state.metrics, observe_atom::value, std::move(o));
}

// Forgets a request that ended (finished, failed or cancelled); the planner already knows.
ActiveRequest retire(Self* self, RequestId id) {
  auto node = self->state.active.extract(id);
  auto& owned = self->state.by_session[node.mapped().session.address()];
  owned.erase(id);
  if (owned.empty()) {
    self->demonitor(node.mapped().session);
    self->state.by_session.erase(node.mapped().session.address());
  }
  return std::move(node.mapped());
}

void send_done(Self* self, RequestId id, FinishReason reason) {
  ActiveRequest r = retire(self, id);
  const auto now = clock::now();
  DoneEvent done{id, reason, r.prompt_tokens, static_cast<int>(r.generation.tokens().size()),
                 r.first_token ? seconds(*r.first_token - r.submitted) : 0.0, seconds(now - r.submitted),
                 r.speculative_rounds ? double(r.speculative_tokens) / r.speculative_rounds : 0.0};
  observe(self, {finish_reason_name(reason), done.prompt_tokens, done.completion_tokens,
                 r.first_token ? done.time_to_first_token_s : -1.0});
  self->send(r.session, done_atom::value, std::move(done));
}

void send_failed(Self* self, RequestId id, const std::string& code, const std::string& message) {
  ActiveRequest r = retire(self, id);
  observe(self, {code, r.prompt_tokens, static_cast<int>(r.generation.tokens().size()),
                 r.first_token ? seconds(*r.first_token - r.submitted) : -1.0});
  self->send(r.session, failed_atom::value, FailedEvent{id, code, message});
}

void run_next_step(Self* self);
void restart_worker(Self* self, const caf::error& reason);

void on_step_result(Self* self, const StepPlan& plan, const StepResult& result) {
  auto& st = self->state;
  st.step_in_flight = false;
  ++st.steps;
  const auto now = clock::now();
  st.token_rate.add(now, result.sampled.size());
  st.generated_tokens += result.sampled.size();
  st.last_step_s = result.seconds;
  StepObservation obs;
  obs.batch_size = static_cast<int>(plan.entries.size());
  for (const auto& e : plan.entries) obs.tokens += e.speculate >= 2 ? e.speculate : static_cast<int>(e.tokens.size());
  obs.seconds = result.seconds;
  obs.draft_seconds = result.draft_seconds;
  // A speculative entry's tokens come in a run: count its round and the tokens it gave (tau).
  std::map<RequestId, std::pair<int, int>> rounds;  // id -> (block, tokens it gave)
  for (const auto& e : plan.entries)
    if (e.speculate >= 2) rounds[e.id] = {e.speculate, 0};
  for (const SampledToken& s : result.sampled)
    if (auto it = rounds.find(s.id); it != rounds.end()) ++it->second.second;
  st.planner->on_step_cost(result.seconds, obs.tokens);
  for (const auto& [id, round] : rounds) {
    const auto [block, n] = round;
    st.planner->on_round(id, block, n);
    obs.round_tokens.push_back(n);
    ++st.speculative_rounds, st.speculative_tokens += n;
    if (auto it = st.active.find(id); it != st.active.end()) ++it->second.speculative_rounds, it->second.speculative_tokens += n;
  }
  for (const SampledToken& s : result.sampled) {
    auto it = st.active.find(s.id);
    if (it == st.active.end()) continue;  // cancelled while the step ran
    ActiveRequest& r = it->second;
    if (!r.first_token) r.first_token = now;
    else obs.inter_token_s.push_back(seconds(now - *r.last_token));
    r.last_token = now;
    const size_t before = r.generation.tokens().size();
    Generation::Update update = r.generation.on_token(s.token);
    const bool finished = update.finish != FinishReason::none;
    st.planner->on_sampled(s.id, s.token, finished);
    if (r.generation.tokens().size() > before || !update.text.empty()) {
      std::vector<int32_t> tokens;
      if (r.generation.tokens().size() > before) tokens.push_back(s.token);
      self->send(r.session, token_atom::value, TokenEvent{s.id, std::move(update.text), std::move(tokens)});
    }
    if (finished) send_done(self, s.id, update.finish);
  }
  obs.kv_blocks_used = st.planner->kv_blocks_used();
  obs.kv_blocks_total = st.planner->kv_blocks_total();
  obs.queued = st.planner->queued();
  if (st.metrics) self->send(st.metrics, observe_atom::value, std::move(obs));
  run_next_step(self);
}

// A drain ends when nothing is queued, running or waiting for its KV release.
void finish_drain_if_idle(Self* self) {
  auto& st = self->state;
  if (!st.draining || st.step_in_flight || !st.planner->idle()) return;
  for (auto& waiter : st.drain_waiters) waiter.deliver(true);
  st.drain_waiters.clear();
}

// Every request the scheduler holds gets an "internal" error and gives its KV blocks back.
void fail_all(Self* self, const std::string& message) {
  std::vector<RequestId> ids;
  for (const auto& [id, _] : self->state.active) ids.push_back(id);
  for (RequestId id : ids) {
    self->state.planner->cancel(id);
    send_failed(self, id, "internal", message);
  }
}

void run_next_step(Self* self) {
  auto& st = self->state;
  if (st.step_in_flight) return;
  std::optional<StepPlan> plan = st.planner->next_step();
  if (!plan) return finish_drain_if_idle(self);
  st.step_in_flight = true;
  auto shared_plan = std::make_shared<StepPlan>(std::move(*plan));
  self->request(st.worker, caf::infinite, step_atom::value, *shared_plan)
      .then(
          [self, shared_plan, epoch = st.worker_epoch](const StepResult& result) {
            if (epoch == self->state.worker_epoch) on_step_result(self, *shared_plan, result);
          },
          [self, epoch = st.worker_epoch](const caf::error& err) {
            if (epoch != self->state.worker_epoch) return;  // a dead worker's late answer: handled
            if (err == caf::sec::request_receiver_down) return restart_worker(self, err);
            // The step threw: the state of every running sequence is unknown, so each gets a
            // clear error; the worker and the scheduler stay up.
            self->state.step_in_flight = false;
            fail_all(self, "the model worker failed: " + self->system().render(err));
            run_next_step(self);  // releases their KV blocks (and ends a drain)
          });
}

// The worker died (not a step error: something it could not answer), noticed by its exit or by
// the step it left unanswered, whichever comes first. Its supervisor, this scheduler, fails what
// it held and spawns a new worker around the same ModelWorker; answers of the dead one are
// ignored from now on (a new epoch).
void restart_worker(Self* self, const caf::error& reason) {
  auto& st = self->state;
  ++st.worker_epoch;
  ++st.worker_restarts;
  st.step_in_flight = false;
  st.retired_workers.insert(st.worker.address());
  self->unlink_from(st.worker);
  const std::string why = self->system().render(reason);
  fail_all(self, "the model worker died (" + why + "); it was restarted, retry the request");
  st.worker = st.spawn_worker(self->system());
  self->link_to(st.worker);
  std::fprintf(stderr, "ultraserve: the model worker died (%s); restarted it (%llu restarts)\n", why.c_str(),
               static_cast<unsigned long long>(st.worker_restarts));
  run_next_step(self);  // releases the failed requests' KV blocks
}

bool cancel_request(Self* self, RequestId id) {
  if (!self->state.planner->cancel(id)) return false;
  send_done(self, id, FinishReason::cancelled);
  run_next_step(self);  // frees its KV blocks within the next step
  return true;
}

RequestList list_requests(Self* self) {
  RequestList list;
  const auto now = clock::now();
  for (const auto& [id, r] : self->state.active)
    list.requests.push_back({id, r.session.id(), self->state.planner->is_running(id), r.prompt_tokens,
                             static_cast<int>(r.generation.tokens().size()), seconds(now - r.submitted)});
  return list;
}

caf::behavior scheduler(Self* self, WorkerSpawner spawn_worker, std::shared_ptr<const Tokenizer> tokenizer,
                        SchedulerOptions options) {
  auto& st = self->state;
  st.planner = std::make_unique<BatchPlanner>(options.limits);
  st.spawn_worker = std::move(spawn_worker);
  st.worker = st.spawn_worker(self->system());
  self->link_to(st.worker);  // the worker ends with the scheduler
  self->set_exit_handler([self](const caf::exit_msg& msg) {
    if (msg.source == self->state.worker.address()) return restart_worker(self, msg.reason);
    if (self->state.retired_workers.count(msg.source)) return;  // replaced already
    self->quit(msg.reason);  // a shutdown (or a linked actor's failure) ends the scheduler
  });
  st.metrics = std::move(options.metrics);
  st.tokenizer = std::move(tokenizer);
  self->set_down_handler([self](const caf::down_msg& down) {
    auto it = self->state.by_session.find(down.source);
    if (it == self->state.by_session.end()) return;
    const std::set<RequestId> ids = it->second;
    for (RequestId id : ids) {
      self->state.planner->cancel(id);
      send_done(self, id, FinishReason::cancelled);  // delivered to a dead actor: dropped, but counted
    }
    run_next_step(self);
  });
  return {
      [self](submit_atom, SubmitRequest& req) {
        auto& st = self->state;
        const int prompt_tokens = static_cast<int>(req.generation.prompt.size());
        if (st.draining) {
          self->send(req.reply_to, failed_atom::value,
                     FailedEvent{req.id, "unavailable", "the server is draining: it finishes the requests it has "
                                                        "and accepts no new ones; retry on another server"});
          observe(self, {"unavailable", prompt_tokens, 0, -1});
          return;
        }
        switch (st.planner->submit(req.id, req.generation.prompt, req.generation.max_tokens, req.generation.sampling,
                                   req.block_size)) {
          case BatchPlanner::Admission::overloaded:
            self->send(req.reply_to, failed_atom::value,
                       FailedEvent{req.id, "overloaded", "the server's queue is full; retry later"});
            observe(self, {"overloaded", prompt_tokens, 0, -1});
            return;
          case BatchPlanner::Admission::too_large:
            self->send(req.reply_to, failed_atom::value,
                       FailedEvent{req.id, "invalid_request", "prompt + max_tokens exceed the server's KV cache"});
            observe(self, {"invalid_request", prompt_tokens, 0, -1});
            return;
          case BatchPlanner::Admission::queued:
            break;
        }
        if (st.by_session[req.reply_to.address()].empty()) self->monitor(req.reply_to);
        st.by_session[req.reply_to.address()].insert(req.id);
        st.active.emplace(req.id, ActiveRequest{req.reply_to, Generation(req.generation, *st.tokenizer), prompt_tokens,
                                                clock::now(), {}, {}});
        const auto wait = req.deadline - clock::now();
        self->delayed_send(self, std::max(wait, clock::duration::zero()), deadline_atom::value, req.id);
        run_next_step(self);
      },
      [self](cancel_atom, RequestId id) { cancel_request(self, id); },
      [self](deadline_atom, RequestId id) {
        if (!self->state.planner->cancel(id)) return;  // already finished
        send_failed(self, id, "deadline_exceeded", "the request did not finish within its deadline");
        run_next_step(self);
      },
      [self](stats_atom) {
        auto& st = self->state;
        const auto& p = *st.planner;
        return SchedulerStats{.queued = p.queued(),
                              .running = p.running(),
                              .kv_blocks_used = p.kv_blocks_used(),
                              .kv_blocks_total = p.kv_blocks_total(),
                              .steps = st.steps,
                              .generated_tokens = st.generated_tokens,
                              .tokens_per_s = st.token_rate.per_second(clock::now()),
                              .step_in_flight = st.step_in_flight,
                              .last_step_s = st.last_step_s,
                              .draining = st.draining,
                              .worker_restarts = st.worker_restarts,
                              .speculative_rounds = st.speculative_rounds,
                              .speculative_tokens = st.speculative_tokens};
      },
      [self](requests_atom) { return list_requests(self); },
      [self](revoke_atom, RequestId id) { return cancel_request(self, id); },
      [self](limits_atom, const PlannerLimits& limits) {
        // Takes effect at the next step: a smaller batch admits no one until running requests
        // finish below it; running requests are never cut short.
        self->state.planner->set_limits(limits);
        run_next_step(self);
        return true;
      },
      [self](drain_atom) {
        auto waiter = self->make_response_promise();
        self->state.draining = true;
        self->state.drain_waiters.push_back(waiter);
        finish_drain_if_idle(self);
        return waiter;
      },
  };
}

}  // namespace

caf::actor spawn_scheduler(caf::actor_system& system, WorkerSpawner spawn_worker,
                           std::shared_ptr<const Tokenizer> tokenizer, SchedulerOptions options) {
  return system.spawn(scheduler, std::move(spawn_worker), std::move(tokenizer), std::move(options));
}

}  // namespace ultraserve
