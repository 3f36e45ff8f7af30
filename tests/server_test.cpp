// The whole server, in-process on an ephemeral port, driven by real WebSocket and HTTP clients.

#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/server.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "tests/test_clients.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

using namespace std::chrono_literals;
using testing::WsClient;
using testing::WsEvent;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir;
    model_ = testing::make_checkpoint(*dir_, "moe_topk2_norm.json", 21);
    draft_ = testing::make_checkpoint(*dir_, "dflash_draft_moe_topk2.json", 5);
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override { start(ServerSettings{}); }

  void start(ServerSettings s) {
    server_.reset();
    if (s.model.empty()) s.model = model_;
    s.net.port = 0;
    s.threads = 2;
    s.kv_memory_mb = 16;
    s.devices.device = "cpu";  // the reference below is the CPU model (gpu_model_test covers the GPU)
    server_ = std::make_unique<Server>(system_, s);
  }
  void TearDown() override { server_.reset(); }

  uint16_t port() const { return server_->port(); }

  // Greedy generation of `prompt` by the model alone: what the server must reproduce.
  static std::vector<int32_t> reference(const std::string& prompt, int max_tokens) {
    static std::mutex mutex;  // called from many client threads at once
    std::lock_guard lock(mutex);
    static LoadedModel* loaded = new LoadedModel(load_model(model_));
    static ThreadPool pool(1);
    static CpuModel model(loaded->config, loaded->weights, pool);
    GenerationRequest r;
    r.prompt = loaded->tokenizer.encode(prompt);
    r.max_tokens = max_tokens;
    r.stop_token_ids = loaded->stop_token_ids;
    return generate(model, loaded->tokenizer, r, [](std::string_view) {}).tokens;
  }

  int kv_blocks_used() {
    auto reply = testing::http_request(port(), "GET", "/health");
    simdjson::dom::parser p;
    return static_cast<int>(int64_t(p.parse(reply.body)["kv_blocks_used"]));
  }
  // KV blocks come back within a step; allow the scheduler a moment to run it.
  void expect_kv_drains() {
    // Two seconds, stretched by ULTRASERVE_TEST_TIME_SCALE (tests/test_time.h).
    const auto deadline = std::chrono::steady_clock::now() + testing::scaled(2s);
    while (kv_blocks_used() != 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(kv_blocks_used(), 0);
  }

  static std::string generate_msg(const std::string& id, const std::string& prompt, int max_tokens,
                                  const std::string& extra = "") {
    return R"({"type":"generate","id":")" + id + R"(","prompt":")" + prompt + R"(","max_tokens":)" +
           std::to_string(max_tokens) + R"(,"temperature":0)" + extra + "}";
  }

  static inline testing::ScratchDir* dir_ = nullptr;
  static inline std::filesystem::path model_, draft_;
  caf::actor_system_config config_;
  caf::actor_system system_{config_};
  std::unique_ptr<Server> server_;
};

std::vector<int32_t> tokens_of(const std::vector<WsEvent>& events) {
  std::vector<int32_t> out;
  for (const auto& e : events)
    if (e.type == "delta") out.insert(out.end(), e.tokens.begin(), e.tokens.end());
  return out;
}

TEST_F(ServerTest, StreamsGreedyTokensThatMatchTheModel) {
  WsClient ws(port());
  ws.send(generate_msg("a", "Hello world", 12));
  auto events = ws.read_until_done("a");
  ASSERT_EQ(events.back().type, "done") << events.back().message;
  EXPECT_EQ(tokens_of(events), reference("Hello world", 12));
  EXPECT_EQ(events.back().completion_tokens, static_cast<int>(tokens_of(events).size()));
  EXPECT_TRUE(events.back().finish_reason == "length" || events.back().finish_reason == "stop");
  expect_kv_drains();
}

TEST_F(ServerTest, SpeculativeServingIsLossless) {
  // With a DFlash draft every decode is a draft/verify round, batched with the prompt chunks of
  // newcomers and the plain last decodes of requests near their max_tokens: greedy output is
  // still the model's own, each done carries its acceptance length, and /metrics has the rounds.
  ServerSettings s;
  s.draft = draft_;
  s.planner.block_size = 4;
  start(s);
  std::vector<std::unique_ptr<WsClient>> clients;  // one each: all in one batch, read in any order
  for (int i = 0; i < 12; ++i) {
    clients.push_back(std::make_unique<WsClient>(port()));
    clients[i]->send(generate_msg("s" + std::to_string(i), "speculate " + std::to_string(i), 10 + i));
  }
  for (int i = 0; i < 12; ++i) {
    const auto events = clients[i]->read_until_done("s" + std::to_string(i));
    ASSERT_EQ(events.back().type, "done") << events.back().message;
    EXPECT_EQ(tokens_of(events), reference("speculate " + std::to_string(i), 10 + i)) << i;
  }
  // A request may ask for plain decoding (block_size 0) in the same batches; it reports no tau.
  WsClient plain(port());
  WsClient spec(port());
  plain.send(generate_msg("p", "speculate 1", 11, R"(,"block_size":0)"));
  spec.send(generate_msg("q", "speculate 2", 12, R"(,"block_size":3)"));
  const auto p_events = plain.read_until_done("p"), q_events = spec.read_until_done("q");
  EXPECT_EQ(tokens_of(p_events), reference("speculate 1", 11));
  EXPECT_EQ(tokens_of(q_events), reference("speculate 2", 12));
  EXPECT_EQ(p_events.back().acceptance, 0) << "a plain request has no acceptance length";
  EXPECT_GE(q_events.back().acceptance, 1);
  const auto metrics = testing::http_request(port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("ultraserve_speculative_acceptance_length_count"), std::string::npos);
  EXPECT_NE(metrics.find("ultraserve_draft_seconds_count"), std::string::npos);
  const auto body = testing::http_request(port(), "POST", "/v1/completions",
                                          R"({"prompt":"speculate","max_tokens":6,"temperature":0})").body;
  EXPECT_NE(body.find("\"acceptance_length\":"), std::string::npos) << body;
  expect_kv_drains();
}

TEST_F(ServerTest, MultiplexesRequestsOnOneConnection) {
  WsClient ws(port());
  for (int i = 0; i < 10; ++i) ws.send(generate_msg("r" + std::to_string(i), "prompt " + std::to_string(i), 6));
  std::map<std::string, std::vector<WsEvent>> by_id;
  int done = 0;
  while (done < 10) {
    WsEvent e = ws.read();
    by_id[e.id].push_back(e);
    if (e.type == "done" || e.type == "error") ++done;
  }
  for (int i = 0; i < 10; ++i) {
    const auto& events = by_id["r" + std::to_string(i)];
    ASSERT_EQ(events.back().type, "done") << events.back().message;
    EXPECT_EQ(tokens_of(events), reference("prompt " + std::to_string(i), 6)) << i;
  }
}

TEST_F(ServerTest, ClientCancelStopsGenerationAndFreesKv) {
  // The cancel must win the race: this prompt's greedy continuation runs the full 100 tokens.
  ASSERT_EQ(reference("tell me everything", 100).size(), 100u);
  WsClient ws(port());
  ws.send(generate_msg("long", "tell me everything", 100));
  ws.send(R"({"type":"cancel","id":"long"})");
  auto events = ws.read_until_done("long");
  EXPECT_EQ(events.back().type, "done");
  EXPECT_EQ(events.back().finish_reason, "cancelled");
  EXPECT_LT(tokens_of(events).size(), 100u);
  expect_kv_drains();
}

TEST_F(ServerTest, DeadlineEndsALongRequestAndFreesKv) {
  // request-timeout counts from submission: a request still running then ends with
  // deadline_exceeded and gives its KV back, while a short stream alongside it finishes in full.
  // The endless model never stops on its own, so the long request cannot win the race.
  constexpr int kEndless = 50000;
  testing::ScratchDir dir;
  ServerSettings s;
  s.model = testing::make_endless_checkpoint(dir);
  s.session.request_timeout = 1s;
  s.request.max_tokens = kEndless;
  s.planner.kv_blocks = 4000;  // room for the long request's whole budget
  start(s);
  WsClient ws(port());
  const auto sent = std::chrono::steady_clock::now();
  ws.send(generate_msg("long", "tell me everything", kEndless));
  ASSERT_EQ(ws.read().type, "delta");  // it runs
  WsClient other(port());
  other.send(generate_msg("short", "meanwhile", 16));
  auto short_events = other.read_until_done("short");
  EXPECT_EQ(short_events.back().type, "done") << short_events.back().message;
  EXPECT_EQ(short_events.back().completion_tokens, 16);
  auto long_events = ws.read_until_done("long");
  EXPECT_EQ(long_events.back().type, "error");
  EXPECT_EQ(long_events.back().code, "deadline_exceeded") << long_events.back().message;
  EXPECT_GE(std::chrono::steady_clock::now() - sent, 1s);
  expect_kv_drains();
}

TEST_F(ServerTest, WebSocketCloseCancelsAndFreesKv) {
  {
    WsClient ws(port());
    for (int i = 0; i < 4; ++i) ws.send(generate_msg("c" + std::to_string(i), "bye", 100));
    ws.read();  // at least one token is flowing
  }
  expect_kv_drains();
}

TEST_F(ServerTest, HttpDisconnectCancelsAndFreesKv) {
  {
    namespace beast = boost::beast;
    boost::asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.connect({boost::asio::ip::make_address("127.0.0.1"), port()});
    beast::http::request<beast::http::string_body> req{beast::http::verb::post, "/v1/completions", 11};
    req.set(beast::http::field::content_type, "application/json");
    req.body() = R"({"prompt":"stream forever","max_tokens":100,"stream":true,"temperature":0})";
    req.prepare_payload();
    beast::http::write(stream, req);
    beast::flat_buffer buffer;
    beast::http::response_parser<beast::http::string_body> parser;
    beast::http::read_header(stream, buffer, parser);
    EXPECT_EQ(parser.get().result_int(), 200u);
  }  // the socket closes mid-stream
  expect_kv_drains();
}

TEST_F(ServerTest, BadInputGetsAnErrorAndOtherStreamsCarryOn) {
  WsClient bystander(port());
  bystander.send(generate_msg("safe", "keep going", 40));
  WsClient ws(port());
  struct Case { std::string frame; std::string code; };
  const std::vector<Case> cases{
      {"{nope", "invalid_json"},
      {R"({"type":"generate","id":"x","prompt":7})", "invalid_request"},
      {R"({"type":"teleport","id":"x"})", "unknown_type"},
      {R"({"type":"generate","id":"x"})", "invalid_request"},
      {generate_msg("x", "hi", 100000), "invalid_request"},
      {R"({"type":"generate","id":"x","prompt":"hi","temperature":-1})", "invalid_request"},
      {generate_msg("x", std::string(300, 'a'), 100), "prompt_too_long"},
      {R"({"type":"cancel","id":"ghost"})", "unknown_id"},
  };
  for (const auto& c : cases) {
    ws.send(c.frame);
    WsEvent e = ws.read();
    EXPECT_EQ(e.type, "error") << c.frame;
    EXPECT_EQ(e.code, c.code) << c.frame << ": " << e.message;
  }
  ws.send(generate_msg("dup", "hi", 60));
  ws.send(generate_msg("dup", "hi", 60));
  WsEvent e = ws.read();
  while (e.type == "delta") e = ws.read();
  EXPECT_EQ(e.code, "duplicate_id");
  ws.send_binary("\x01\x02");
  e = ws.read();
  while (e.type == "delta") e = ws.read();
  EXPECT_EQ(e.code, "invalid_frame");
  auto events = bystander.read_until_done("safe");
  EXPECT_EQ(events.back().type, "done");
  EXPECT_EQ(tokens_of(events), reference("keep going", 40));
}

TEST_F(ServerTest, TooManyRequestsOnOneConnection) {
  ServerSettings s;
  s.session.max_requests_per_connection = 2;
  start(s);
  WsClient ws(port());
  for (int i = 0; i < 3; ++i) ws.send(generate_msg("t" + std::to_string(i), "x", 50));
  bool refused = false;
  for (int done = 0; done < 3;) {
    WsEvent e = ws.read();
    if (e.type == "error" && e.code == "too_many_requests") refused = true;
    if (e.type == "done" || e.type == "error") ++done;
  }
  EXPECT_TRUE(refused);
}

TEST_F(ServerTest, OversizedFrameClosesOnlyThatConnection) {
  ServerSettings s;
  s.net.max_ws_frame_bytes = 1024;
  start(s);
  WsClient bystander(port());
  WsClient ws(port());
  boost::beast::error_code ec;
  ws.stream().write(boost::asio::buffer(generate_msg("big", std::string(4000, 'z'), 5)), ec);
  boost::beast::flat_buffer buffer;
  for (int i = 0; i < 3 && !ec; ++i) ws.stream().read(buffer, ec);  // an error event, then the close
  EXPECT_TRUE(ec) << "the connection should have been closed";
  bystander.send(generate_msg("ok", "still here", 4));
  EXPECT_EQ(bystander.read_until_done("ok").back().type, "done");
}

TEST_F(ServerTest, InvalidUtf8ClosesOnlyThatConnection) {
  // RFC 6455 requires text frames to be UTF-8: the server must close that connection (1007)
  // without disturbing a stream that is running on another one.
  WsClient bystander(port());
  bystander.send(generate_msg("safe", "keep going", 200));
  const WsEvent first = bystander.read();
  ASSERT_EQ(first.type, "delta");  // it is streaming before the bad frame arrives
  WsClient ws(port());
  ws.send(generate_msg("bad", "caf\xc3\x28 \xff", 5));  // an invalid 2-byte sequence and a stray 0xff
  EXPECT_EQ(ws.read_until_closed(), boost::beast::websocket::close_code::bad_payload);
  auto events = bystander.read_until_done("safe");
  events.insert(events.begin(), first);
  EXPECT_EQ(events.back().type, "done") << events.back().message;
  EXPECT_EQ(tokens_of(events), reference("keep going", 200));
}

TEST_F(ServerTest, OpenAiCompletionsWholeAndStreamed) {
  auto whole = testing::http_request(port(), "POST", "/v1/completions",
                                     R"({"model":"m","prompt":"Hello world","max_tokens":12,"temperature":0})");
  EXPECT_EQ(whole.status, 200) << whole.body;
  EXPECT_NE(whole.body.find(R"("object":"text_completion")"), std::string::npos) << whole.body;
  EXPECT_NE(whole.body.find(R"("completion_tokens":)"), std::string::npos);

  auto streamed = testing::http_request(port(), "POST", "/v1/completions",
                                        R"({"prompt":"Hello world","max_tokens":12,"temperature":0,"stream":true})");
  EXPECT_EQ(streamed.status, 200);
  EXPECT_NE(streamed.content_type.find("text/event-stream"), std::string::npos);
  EXPECT_TRUE(streamed.body.ends_with("data: [DONE]\n\n")) << streamed.body;

  auto chat = testing::http_request(port(), "POST", "/v1/chat/completions",
                                    R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":5})");
  EXPECT_EQ(chat.status, 200) << chat.body;
  EXPECT_NE(chat.body.find(R"("role":"assistant")"), std::string::npos);
}

TEST_F(ServerTest, HttpErrorsAndInfoEndpoints) {
  EXPECT_EQ(testing::http_request(port(), "POST", "/v1/completions", "{bad").status, 400);
  EXPECT_EQ(testing::http_request(port(), "POST", "/v1/completions", R"({"prompt":"x","max_tokens":-3})").status, 400);
  EXPECT_EQ(testing::http_request(port(), "GET", "/v1/completions").status, 405);
  EXPECT_EQ(testing::http_request(port(), "GET", "/nowhere").status, 404);
  auto models = testing::http_request(port(), "GET", "/v1/models");
  EXPECT_EQ(models.status, 200);
  EXPECT_NE(models.body.find("moe_topk2_norm"), std::string::npos) << models.body;
  testing::http_request(port(), "POST", "/v1/completions", R"({"prompt":"count me","max_tokens":3})");
  auto metrics = testing::http_request(port(), "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  for (const char* name : {"ultraserve_requests_total{outcome=", "ultraserve_time_to_first_token_seconds_bucket",
                           "ultraserve_inter_token_latency_seconds_count", "ultraserve_batch_size_bucket",
                           "ultraserve_kv_blocks_used", "ultraserve_kv_blocks_free", "ultraserve_queue_depth",
                           "ultraserve_open_connections"})
    EXPECT_NE(metrics.body.find(name), std::string::npos) << name;
  auto page = testing::http_request(port(), "GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("/v1/stream"), std::string::npos);
}

TEST_F(ServerTest, OverloadAnswersAtOnce) {
  ServerSettings s;
  s.planner.max_queued = 1;
  s.planner.max_batch = 1;
  s.planner.max_step_tokens = 64;
  start(s);
  WsClient ws(port());
  for (int i = 0; i < 6; ++i) ws.send(generate_msg("o" + std::to_string(i), "x", 30));
  int overloaded = 0;
  for (int done = 0; done < 6;) {
    WsEvent e = ws.read();
    if (e.type == "error" && e.code == "overloaded") ++overloaded;
    if (e.type == "done" || e.type == "error") ++done;
  }
  EXPECT_GT(overloaded, 0);
}

TEST_F(ServerTest, ThousandStreamsOverFiftyConnections) {
  constexpr int kConnections = 50, kPerConnection = 20, kTokens = 8;
  auto prompt = [](int c, int r) { return "stream " + std::to_string(c) + " " + std::to_string(r); };
  std::vector<std::future<std::string>> results;
  for (int c = 0; c < kConnections; ++c)
    results.push_back(std::async(std::launch::async, [&, c]() -> std::string {
      WsClient ws(port());
      for (int r = 0; r < kPerConnection; ++r) ws.send(generate_msg(std::to_string(r), prompt(c, r), kTokens));
      std::map<std::string, std::vector<WsEvent>> by_id;
      for (int done = 0; done < kPerConnection;) {
        WsEvent e = ws.read();
        by_id[e.id].push_back(e);
        if (e.type == "done" || e.type == "error") ++done;
      }
      for (int r = 0; r < kPerConnection; ++r) {
        const auto& events = by_id[std::to_string(r)];
        if (events.back().type != "done") return "request failed: " + events.back().message;
        if (tokens_of(events) != reference(prompt(c, r), kTokens)) return "tokens differ for " + prompt(c, r);
      }
      return "";
    }));
  for (auto& f : results) EXPECT_EQ(f.get(), "");
  expect_kv_drains();
}

}  // namespace
}  // namespace ultraserve
