// The CPU cost of the serving path alone: sessions, scheduler and WebSocket, with the model
// step taken out. The server runs here with a worker that answers every step at once with a
// fixed token; `ultraserve loadgen` drives it from a separate process, so this process's CPU
// time (getrusage) is the server's. Reports microseconds of server CPU per streamed token and
// the connections held (the most open at once, sampled), as a table and JSON.
// With --real-model the server runs the config's random checkpoint on the real CPU worker
// instead: the same table then gives the aggregate tokens/s of the whole server.

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <caf/actor_system.hpp>

#include "actors/model_worker.h"
#include "actors/server.h"
#include "config/command_options.h"
#include "model/random_checkpoint.h"

namespace ultraserve {
namespace {

// Answers every step instantly with the same token: what is left is the serving path.
class InstantWorker : public ModelWorker {
 public:
  explicit InstantWorker(int32_t token) : token_(token) {}
  StepResult execute(const StepPlan& plan) override {
    StepResult r;
    for (const StepEntry& e : plan.entries)
      if (e.sample) r.sampled.push_back({e.id, token_});
    return r;
  }
  // It holds no KV: a pool this large never limits admission.
  WorkerInfo info() const override {
    WorkerInfo info;
    info.device = "instant";
    info.kv_blocks = 1 << 20;
    info.kv_block_size = 16;
    return info;
  }

 private:
  int32_t token_;
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

struct BenchOptions : CommandOptions {
  std::string ultraserve = "build/tools/ultraserve", config = "tests/fixtures/configs/moe_topk2_norm.json", tokenizer,
              json;
  std::vector<int64_t> connections{100, 1000, 10000};
  int64_t concurrency = 1, max_tokens = 64, requests_per_connection = 2;
  bool real_model = false;
  BenchOptions()
      : CommandOptions("serving_bench [--connections '[100,1000,10000]'] [--concurrency M] [--max-tokens T] "
                       "[--real-model [--config FILE] [--tokenizer FILE]] [--json FILE]") {
    options()
        .add(ultraserve, "ultraserve", "the ultraserve binary (runs loadgen)")
        .add(config, "config", "model config (its tokenizer is used; the weights only with --real-model)")
        .add(tokenizer, "tokenizer", "tokenizer.json for the checkpoint (default: a byte-level one)")
        .add(real_model, "real-model", "serve the random checkpoint with the real CPU worker, not the instant one")
        .add(connections, "connections", "connection counts to measure")
        .add(concurrency, "concurrency", "requests in flight per connection")
        .add(requests_per_connection, "requests-per-connection", "requests each connection sends in all")
        .add(max_tokens, "max-tokens", "tokens per request")
        .add(json, "json", "write the results as JSON here");
  }
};

// The most connections the server held open at once while it lives, sampled every millisecond.
class PeakConnections {
 public:
  explicit PeakConnections(const Server& server)
      : thread_([this, &server] {
          while (!stop_) {
            peak_ = std::max(peak_.load(), server.open_connections());
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        }) {}
  ~PeakConnections() {
    stop_ = true;
    thread_.join();
  }
  int peak() const { return peak_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> peak_{0};
  std::thread thread_;
};

// One loadgen run against a fresh server: its JSON, with the server's CPU time and peak
// connections added; prints the table row.
std::string measure(caf::actor_system& system, const BenchOptions& o, const std::filesystem::path& model,
                    int64_t conns) {
  ServerSettings s;
  s.model = model;
  s.net.port = 0;
  s.net.max_connections = static_cast<size_t>(conns) + 16;
  s.planner.max_batch = 1024;
  s.planner.max_step_tokens = 1 << 16;
  s.planner.max_queued = 1 << 20;
  s.devices.device = "cpu";
  std::unique_ptr<Server> server = o.real_model ? std::make_unique<Server>(system, s)
                                                : std::make_unique<Server>(system, s, std::make_unique<InstantWorker>('x'));
  const std::string out = (std::filesystem::temp_directory_path() / "ultraserve-loadgen.json").string();
  const int64_t requests = conns * o.requests_per_connection;
  std::ostringstream cmd;
  cmd << o.ultraserve << " loadgen --url ws://127.0.0.1:" << server->port() << "/v1/stream --connections " << conns
      << " --concurrency " << o.concurrency << " --requests " << requests << " --max-tokens " << o.max_tokens
      << " --io-threads 1 --json " << out << " > /dev/null";
  const double cpu0 = cpu_seconds();
  int peak = 0;
  {
    PeakConnections sampler(*server);
    if (std::system(cmd.str().c_str()) != 0) throw std::runtime_error("loadgen failed: " + cmd.str());
    peak = sampler.peak();
  }
  const double cpu = cpu_seconds() - cpu0;  // includes the sampler's few wake-ups per millisecond
  server->stop();
  std::ifstream in(out);
  std::string result((std::istreambuf_iterator<char>(in)), {});
  auto number = [&](const std::string& key) {
    const size_t at = result.find("\"" + key + "\":");
    return at == std::string::npos ? 0.0 : std::atof(result.c_str() + at + key.size() + 3);
  };
  const double tokens = number("tokens"), us_per_token = tokens > 0 ? cpu / tokens * 1e6 : 0;
  std::printf("| %ld | %d | %ld | %.0f | %.0f | %.0f | %.2f | %.1f | %.2f |\n", long(conns), peak, long(requests), tokens,
              number("errors"), number("tokens_per_second"), us_per_token, number("ttft_ms_p50"), number("itl_ms_p50"));
  std::fflush(stdout);
  while (!result.empty() && (result.back() == '\n' || result.back() == ' ')) result.pop_back();
  char numbers[160];
  std::snprintf(numbers, sizeof numbers,
                "\"peak_open_connections\": %d, \"server_cpu_s\": %.4f, \"server_cpu_us_per_token\": %.3f", peak, cpu,
                us_per_token);
  return "{\"connections\": " + std::to_string(conns) + ", \"loadgen\": " + (result.empty() ? "null" : result) + ", " +
         numbers + "}";
}

}  // namespace
}  // namespace ultraserve

int main(int argc, char** argv) {
  using namespace ultraserve;
  BenchOptions o;
  return run_command(o, std::vector<std::string>(argv + 1, argv + argc), [&] {
    const auto model = std::filesystem::temp_directory_path() / "ultraserve-serving-bench-model";
    RandomCheckpointOptions checkpoint;
    checkpoint.config_json = o.config;
    checkpoint.out_dir = model;
    checkpoint.seed = 1;
    if (!o.tokenizer.empty()) checkpoint.tokenizer_json = o.tokenizer;
    write_random_checkpoint(checkpoint);
    caf::actor_system_config cfg;
    caf::actor_system system{cfg};
    std::printf("worker: %s\n", o.real_model ? ("CPU, model " + o.config).c_str() : "instant (serving path only)");
    std::printf("| connections | peak open | requests | tokens | errors | tokens/s | server CPU us/token | TTFT p50 ms | ITL p50 ms |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    std::string rows;
    for (int64_t conns : o.connections) rows += (rows.empty() ? "" : ", ") + measure(system, o, model, conns);
    if (!o.json.empty())
      std::ofstream(o.json) << "{\"benchmark\": \"serving_path\", \"worker\": \""
                            << (o.real_model ? "cpu" : "instant") << "\", \"runs\": [" << rows << "]}\n";
    std::filesystem::remove_all(model);
  });
}
