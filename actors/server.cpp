#include "actors/server.h"

#include <caf/all.hpp>

#include "actors/actor_service.h"
#include "actors/messages.h"
#include "actors/metrics_actor.h"
#include "actors/model_worker.h"
#include "actors/scheduler_actor.h"
#include "actors/session_registry.h"
#include "actors/worker_actor.h"
#include "model/checkpoint.h"
#include "net/http_server.h"

namespace ultraserve {

Server::Server(caf::actor_system& system, ServerSettings settings) : Server(system, std::move(settings), nullptr) {}

Server::Server(caf::actor_system& system, ServerSettings settings, std::unique_ptr<ModelWorker> worker)
    : system_(system), settings_(std::move(settings)) {
  LoadedModel model = load_model(settings_.model);
  const ModelConfig& config = model.config;
  PlannerLimits& planner = settings_.planner;
  if (settings_.session.context_length == 0) settings_.session.context_length = config.max_position_embeddings;

  context_.metrics = spawn_metrics(system_);
  context_.tokenizer = std::make_shared<const Tokenizer>(model.tokenizer);
  context_.stop_token_ids = model.stop_token_ids;
  context_.model_name = settings_.model.filename().empty() ? settings_.model.parent_path().filename().string()
                                                           : settings_.model.filename().string();
  context_.limits = std::make_shared<SharedClientLimits>(ClientLimits{settings_.request, settings_.session});
  context_.sessions = spawn_session_registry(system_);
  const int vocab = sampleable_vocab(config, model.tokenizer);
  if (!worker) worker = make_worker(settings_, model, vocab);
  const WorkerInfo worker_info = worker->info();
  planner.kv_blocks = worker_info.kv_blocks;  // the scheduler's ledger mirrors the worker's pool
  planner.max_prompt_chunk = worker_info.max_rows_per_sequence;
  // Speculation needs a worker with a draft; its block defaults to the one the draft was trained for.
  if (worker_info.draft.empty()) settings_.draft.clear(), planner.block_size = 0;
  else if (planner.block_size == 0) planner.block_size = worker_info.draft_block_size;
  facts_ = {context_.model_name, config.model_type, config.max_position_embeddings, {worker_info},
            worker_info.kv_block_bytes, std::chrono::steady_clock::now()};
  std::shared_ptr<ModelWorker> shared_worker = std::move(worker);
  context_.scheduler = spawn_scheduler(
      system_, [shared_worker](caf::actor_system& system) { return spawn_worker(system, shared_worker); },
      context_.tokenizer, {planner, context_.metrics});
  service_ = std::make_shared<ActorService>(system_, context_);
  http_ = std::make_unique<HttpServer>(settings_.net, service_);
  try {
    port_ = http_->start();
  } catch (...) {
    stop();
    throw;
  }
}

Server::~Server() { stop(); }

int Server::open_connections() const { return http_ ? http_->open_connections() : 0; }

bool Server::drain(std::chrono::steady_clock::duration grace) {
  if (!context_.scheduler) return true;
  caf::scoped_actor self{system_};
  bool drained = false;
  // The scheduler answers once nothing is queued or running; until then it refuses new work.
  self->request(context_.scheduler, std::chrono::duration_cast<caf::timespan>(grace), drain_atom::value)
      .receive([&](bool) { drained = true; }, [](const caf::error&) {});
  return drained;
}

void Server::stop() {
  if (http_) http_->stop();
  for (caf::actor* a : {&context_.scheduler, &context_.metrics, &context_.sessions})  // the worker ends with the scheduler
    if (*a) {
      caf::anon_send_exit(*a, caf::exit_reason::user_shutdown);
      *a = nullptr;
    }
}

}  // namespace ultraserve
