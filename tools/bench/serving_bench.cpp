// The CPU cost of the serving path alone: sessions, scheduler and WebSocket, with the model
// step taken out. The server runs here with a worker that answers every step at once with a
// fixed token; `ultraserve loadgen` drives it from a separate process, so this process's CPU
// time (getrusage) is the server's. Reports microseconds of server CPU per streamed token and
// the connections held, as a table and JSON.

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

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
  WorkerInfo info() const override { return {"instant", 1 << 20, 16}; }

 private:
  int32_t token_;
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

struct BenchOptions : CommandOptions {
  std::string ultraserve = "build/tools/ultraserve", config = "tests/fixtures/configs/moe_topk2_norm.json", json;
  std::vector<int64_t> connections{100, 1000, 10000};
  int64_t concurrency = 1, max_tokens = 64, requests_per_connection = 2;
  BenchOptions()
      : CommandOptions("serving_bench [--connections '[100,1000,10000]'] [--concurrency M] [--max-tokens T] [--json FILE]") {
    options()
        .add(ultraserve, "ultraserve", "the ultraserve binary (runs loadgen)")
        .add(config, "config", "model config (its tokenizer is used; the weights are not)")
        .add(connections, "connections", "connection counts to measure")
        .add(concurrency, "concurrency", "requests in flight per connection")
        .add(requests_per_connection, "requests-per-connection", "requests each connection sends in all")
        .add(max_tokens, "max-tokens", "tokens per request")
        .add(json, "json", "write the results as JSON here");
  }
};

}  // namespace
}  // namespace ultraserve

int main(int argc, char** argv) {
  using namespace ultraserve;
  BenchOptions o;
  return run_command(o, std::vector<std::string>(argv + 1, argv + argc), [&] {
    const auto model = std::filesystem::temp_directory_path() / "ultraserve-serving-bench-model";
    write_random_checkpoint({.config_json = o.config, .out_dir = model, .seed = 1});
    caf::actor_system_config cfg;
    caf::actor_system system{cfg};
    std::printf("| connections | requests | tokens | errors | tokens/s | server CPU us/token | TTFT p50 ms | ITL p50 ms |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    std::string rows;
    for (int64_t conns : o.connections) {
      ServerSettings s;
      s.model = model;
      s.net.port = 0;
      s.net.max_connections = static_cast<size_t>(conns) + 16;
      s.planner.max_batch = 1024;
      s.planner.max_step_tokens = 1 << 16;
      s.planner.max_queued = 1 << 20;
      Server server(system, s, std::make_unique<InstantWorker>('x'));
      const std::string out = (std::filesystem::temp_directory_path() / "ultraserve-loadgen.json").string();
      const int64_t requests = conns * o.requests_per_connection;
      std::ostringstream cmd;
      cmd << o.ultraserve << " loadgen --url ws://127.0.0.1:" << server.port() << "/v1/stream --connections " << conns
          << " --concurrency " << o.concurrency << " --requests " << requests << " --max-tokens " << o.max_tokens
          << " --io-threads 1 --json " << out << " > /dev/null";
      const double cpu0 = cpu_seconds();
      if (std::system(cmd.str().c_str()) != 0) throw std::runtime_error("loadgen failed: " + cmd.str());
      const double cpu = cpu_seconds() - cpu0;
      std::ifstream in(out);
      std::string result((std::istreambuf_iterator<char>(in)), {});
      auto number = [&](const std::string& key) {
        const size_t at = result.find("\"" + key + "\":");
        return at == std::string::npos ? 0.0 : std::atof(result.c_str() + at + key.size() + 3);
      };
      const double tokens = number("tokens"), us_per_token = tokens > 0 ? cpu / tokens * 1e6 : 0;
      std::printf("| %ld | %ld | %.0f | %.0f | %.0f | %.2f | %.1f | %.2f |\n", long(conns), long(requests), tokens,
                  number("errors"), number("tokens_per_second"), us_per_token, number("ttft_ms_p50"), number("itl_ms_p50"));
      while (!result.empty() && (result.back() == '\n' || result.back() == ' ')) result.pop_back();
      char numbers[128];
      std::snprintf(numbers, sizeof numbers, "\"server_cpu_s\": %.4f, \"server_cpu_us_per_token\": %.3f", cpu, us_per_token);
      rows += (rows.empty() ? "" : ", ") + ("{\"connections\": " + std::to_string(conns) +
                                             ", \"loadgen\": " + (result.empty() ? "null" : result) + ", " + numbers + "}");
      server.stop();
    }
    if (!o.json.empty()) std::ofstream(o.json) << "{\"benchmark\": \"serving_path\", \"runs\": [" << rows << "]}\n";
    std::filesystem::remove_all(model);
  });
}
