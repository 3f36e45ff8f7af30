// Faults in the model worker, through the whole server: a step that throws fails the requests it
// held and the same worker goes on; a worker that dies mid-step is replaced by its supervisor (the
// scheduler) and the server goes on serving. Either way every other part stays up, nothing waits
// forever, and the KV blocks come back.

#include <atomic>
#include <chrono>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/server.h"
#include "model/checkpoint.h"
#include "tests/test_clients.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

using namespace std::chrono_literals;
using testing::WsClient;

// A CPU worker that fails on command: at its next step it throws a std::exception (a step
// error, answered as such) or something that is not one (the worker actor dies of it).
class FaultyWorker : public ModelWorker {
 public:
  enum class Fault { none, throw_error, die };
  explicit FaultyWorker(std::unique_ptr<ModelWorker> inner, std::shared_ptr<std::atomic<Fault>> fault)
      : inner_(std::move(inner)), fault_(std::move(fault)) {}
  StepResult execute(const StepPlan& plan) override {
    switch (fault_->exchange(Fault::none)) {
      case Fault::throw_error: throw std::runtime_error("injected step failure");
      case Fault::die: throw 42;  // not a std::exception: the worker actor does not survive it
      case Fault::none: break;
    }
    return inner_->execute(plan);
  }
  WorkerInfo info() const override { return inner_->info(); }

 private:
  std::unique_ptr<ModelWorker> inner_;
  std::shared_ptr<std::atomic<Fault>> fault_;
};

class WorkerFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::make_checkpoint(dir_, "moe_topk2_norm.json", 21);
    LoadedModel m = load_model(model_);
    auto cpu = std::make_unique<CpuWorker>(m.config, std::move(m.weights), sampleable_vocab(m.config, m.tokenizer),
                                           256, 16, 64, 1);
    ServerSettings s;
    s.model = model_;
    s.net.port = 0;
    server_ = std::make_unique<Server>(system_, s, std::make_unique<FaultyWorker>(std::move(cpu), fault_));
  }

  uint16_t port() const { return server_->port(); }
  int kv_blocks_used() {
    simdjson::dom::parser p;
    return static_cast<int>(int64_t(p.parse(testing::http_request(port(), "GET", "/health").body)["kv_blocks_used"]));
  }
  void expect_kv_drains() {
    // Two seconds, stretched by ULTRASERVE_TEST_TIME_SCALE (tests/test_time.h).
    const auto deadline = std::chrono::steady_clock::now() + testing::scaled(2s);
    while (kv_blocks_used() != 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(kv_blocks_used(), 0);
  }
  static std::string generate(const std::string& id, int max_tokens) {
    // Sampled, so that no end-of-text token cuts the stream short of max_tokens.
    return R"({"type":"generate","id":")" + id + R"(","prompt":"fault test","max_tokens":)" +
           std::to_string(max_tokens) + R"(,"temperature":1,"seed":3,"stop":[]})";
  }

  // Starts a long stream, waits for its first token, injects `fault`, and checks that the stream
  // ends with an "internal" error from the worker; then the server serves a new request in full.
  int worker_restarts() {
    simdjson::dom::parser p;
    return static_cast<int>(int64_t(p.parse(testing::http_request(port(), "GET", "/health").body)["worker_restarts"]));
  }

  void fault_mid_stream(FaultyWorker::Fault fault) {
    WsClient ws(port());
    ws.send(generate("long", 200));  // far longer than the test takes to inject the fault
    const auto first = ws.read();
    ASSERT_EQ(first.type, "delta") << first.message;
    fault_->store(fault);
    const auto events = ws.read_until_done("long");
    EXPECT_EQ(events.back().type, "error");
    EXPECT_EQ(events.back().code, "internal");
    EXPECT_NE(events.back().message.find("the model worker"), std::string::npos) << events.back().message;
    expect_kv_drains();

    WsClient next(port());
    next.send(generate("after", 8));
    const auto after = next.read_until_done("after");
    EXPECT_EQ(after.back().type, "done") << after.back().message;
    EXPECT_EQ(after.back().completion_tokens, 8);
    expect_kv_drains();
  }

  testing::ScratchDir dir_;
  std::filesystem::path model_;
  std::shared_ptr<std::atomic<FaultyWorker::Fault>> fault_ =
      std::make_shared<std::atomic<FaultyWorker::Fault>>(FaultyWorker::Fault::none);
  caf::actor_system_config config_;
  caf::actor_system system_{config_};
  std::unique_ptr<Server> server_;
};

TEST_F(WorkerFaultTest, AStepThatThrowsFailsItsRequestsAndTheWorkerGoesOn) {
  fault_mid_stream(FaultyWorker::Fault::throw_error);
  EXPECT_EQ(worker_restarts(), 0);
}

TEST_F(WorkerFaultTest, AWorkerThatDiesIsRestartedAndTheServerGoesOn) {
  fault_mid_stream(FaultyWorker::Fault::die);
  EXPECT_EQ(worker_restarts(), 1);
  // And again: the replacement is supervised the same way.
  fault_mid_stream(FaultyWorker::Fault::die);
  EXPECT_EQ(worker_restarts(), 2);
}

}  // namespace
}  // namespace ultraserve
