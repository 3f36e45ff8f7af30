#pragma once
// A whole ultraserve server in one object: the model, the actors (metrics, worker, scheduler;
// sessions come and go with connections) and the HTTP/WebSocket front end. `ultraserve serve`
// runs one; the integration tests run one in-process on an ephemeral port.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>

#include "actors/batch_planner.h"
#include "actors/model_worker.h"
#include "actors/session_context.h"
#include "actors/worker_factory.h"
#include "net/net_limits.h"

namespace ultraserve {

struct ServerSettings {
  std::filesystem::path model;
  std::filesystem::path draft;  // a DFlash draft for the model ("": none)
  bool no_draft = false;        // serve without it even when configured
  size_t threads = 0;          // CPU worker threads (0: one per core)
  size_t kv_memory_mb = 1024;  // CPU KV cache size when kv_blocks is 0 (a GPU fills its memory fraction)
  DeviceSettings devices;
  NetLimits net;
  PlannerLimits planner;       // kv_blocks 0: sized by the worker (kv_memory_mb, or GPU memory)
  RequestLimits request;
  SessionLimits session;       // context_length 0: the model's
  std::chrono::steady_clock::duration shutdown_grace = std::chrono::seconds(30);  // SIGTERM: time to finish
};

// What a running server is and has, fixed at start: the admin console reports it.
struct ServerFacts {
  std::string model_name;
  std::string model_type;               // config.json's model_type
  int model_context_length = 0;         // max_position_embeddings
  std::vector<WorkerInfo> workers;      // one per device
  size_t kv_block_bytes = 0;            // KV cache bytes per block
  std::chrono::steady_clock::time_point started;
};

class HttpServer;
class ActorService;

class Server {
 public:
  // Loads the model and starts everything; throws (ModelError, std::runtime_error) with a
  // clear message if the model or the port is unusable.
  Server(caf::actor_system& system, ServerSettings settings);
  // With a given worker instead of the model's CPU worker (the model's config and tokenizer are
  // still loaded): benchmarks use it to measure the serving path alone.
  Server(caf::actor_system& system, ServerSettings settings, std::unique_ptr<ModelWorker> worker);
  ~Server();

  uint16_t port() const { return port_; }
  const ServerSettings& settings() const { return settings_; }
  caf::actor scheduler() const { return context_.scheduler; }
  caf::actor metrics() const { return context_.metrics; }
  caf::actor sessions() const { return context_.sessions; }
  const std::shared_ptr<SharedClientLimits>& client_limits() const { return context_.limits; }
  const ServerFacts& facts() const { return facts_; }
  int open_connections() const;  // HTTP and WebSocket
  // Refuses new requests and waits for the ones in flight (queued ones included) to finish, at
  // most `grace`; true when they all did. What SIGTERM does before stop().
  bool drain(std::chrono::steady_clock::duration grace);
  // Stops accepting, closes connections and stops the actors. Idempotent.
  void stop();

 private:
  caf::actor_system& system_;
  ServerSettings settings_;
  SessionContext context_;
  ServerFacts facts_;
  std::shared_ptr<ActorService> service_;
  std::unique_ptr<HttpServer> http_;
  uint16_t port_ = 0;
};

}  // namespace ultraserve
