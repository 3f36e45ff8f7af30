// The network layer against a fake backend and real Beast clients, all on 127.0.0.1 with an
// ephemeral port. Limits are shrunk through NetLimits so that every timeout fires within
// milliseconds. Client calls run on the client's own io_context with a TCP deadline, so a
// server bug fails a test instead of hanging it.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>
#include <simdjson.h>

#include "net/http_server.h"
#include "net/net_limits.h"
#include "net/outbound_event.h"
#include "net/service.h"
#include "tests/test_time.h"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;


namespace ultraserve {
namespace {

// Waiting limits only, so ULTRASERVE_TEST_TIME_SCALE stretches them under the sanitizers.
const auto kClientDeadline = testing::scaled(5s);  // no single client operation may take longer
const auto kEventDeadline = testing::scaled(5s);   // nor may any awaited server-side event

// ---------------------------------------------------------------------------------------------
// Awaiting server-side events.

class Signal {
 public:
  void notify() {
    {
      std::lock_guard lock(mutex_);
      ++count_;
    }
    cv_.notify_all();
  }
  bool wait_for(int n = 1, std::chrono::steady_clock::duration limit = kEventDeadline) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return count_ >= n; });
  }
  int count() const {
    std::lock_guard lock(mutex_);
    return count_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The fake backend.
//
// WebSocket text frames are commands:
//   "echo:X"        -> delta {id "e", text X, tokens [1]}
//   "burst:N"       -> from another thread, N deltas {id "b", text burst_text(i), tokens [i]}
//                      as fast as it can, then done; notifies burst_done
//   "flood:BYTES"   -> from another thread, 16 KiB deltas {id "f"} up to BYTES; notifies flood_done
//   "bye" / "bye_policy" -> delta "bye", then close() / close(policy_violation)
//   "ping"          -> pong
// HTTP: GET /hello, POST /echo, GET /events (three events), GET /events/forever (one event,
// never finishes, counts disconnects), GET /events/flood (100 x 16 KiB events in one go, counts
// disconnects), GET /drop (drops the responder), anything else 404.

std::string burst_text(int i) {
  std::string text = std::to_string(i) + ":";
  text.resize(100, 'x');
  return text + ";";
}

class FakeBackend;

class FakeWsHandler : public WsHandler {
 public:
  FakeWsHandler(FakeBackend& backend, std::shared_ptr<WsSink> sink) : backend_(backend), sink_(std::move(sink)) {}
  void on_text(std::string frame) override;
  void on_closed() override;

 private:
  FakeBackend& backend_;
  std::shared_ptr<WsSink> sink_;  // dropped in on_closed, as an actor would
};

class FakeBackend : public ServiceBackend {
 public:
  ~FakeBackend() override { join_producers(); }

  std::shared_ptr<WsHandler> open_websocket(std::shared_ptr<WsSink> sink) override {
    {
      std::lock_guard lock(mutex_);
      last_sink_ = sink;
    }
    ws_opened.notify();
    return std::make_shared<FakeWsHandler>(*this, std::move(sink));
  }

  void handle_http(HttpRequestInfo request, std::shared_ptr<HttpResponder> responder) override {
    const auto& t = request.target;
    if (request.method == "GET" && t == "/hello") return responder->respond(200, "text/plain", "hello");
    if (request.method == "POST" && t == "/echo") return responder->respond(200, "application/json", request.body);
    if (request.method == "GET" && t == "/events") {
      responder->start_events();
      responder->send_event("one");
      responder->send_event("two\nlines");
      responder->send_event("three");
      return responder->finish();
    }
    if (request.method == "GET" && t == "/events/forever") {
      responder->on_disconnect([this] { disconnects.notify(); });
      responder->start_events();
      responder->send_event("first");
      std::lock_guard lock(mutex_);
      held_responders_.push_back(std::move(responder));
      return;
    }
    if (request.method == "GET" && t == "/events/flood") {  // 1.6 MB of events at once
      responder->on_disconnect([this] { disconnects.notify(); });
      responder->start_events();
      for (int i = 0; i < 100; ++i) responder->send_event(std::string(16384, 'z'));
      return responder->finish();
    }
    if (t == "/drop") return;  // the responder dies unanswered
    responder->respond(404, "application/json", R"({"error":"not found"})");
  }

  void on_connection_count(int open) override {
    {
      std::lock_guard lock(mutex_);
      connections_ = open;
    }
    connections_cv_.notify_all();
  }

  bool wait_for_connections(int n) {
    std::unique_lock lock(mutex_);
    return connections_cv_.wait_for(lock, kEventDeadline, [&] { return connections_ == n; });
  }

  void produce(std::function<void()> work) {
    std::lock_guard lock(mutex_);
    producers_.emplace_back(std::move(work));
  }

  void join_producers() {
    std::vector<std::thread> producers;
    {
      std::lock_guard lock(mutex_);
      producers.swap(producers_);
    }
    for (auto& p : producers) p.join();
  }

  // A sink kept past its connection's end (a slow actor). Weak here so the test decides.
  std::shared_ptr<WsSink> last_sink() {
    std::lock_guard lock(mutex_);
    return last_sink_.lock();
  }

  void release_responders() {
    std::lock_guard lock(mutex_);
    held_responders_.clear();
  }

  Signal ws_opened, ws_closed, burst_done, flood_done, disconnects;

 private:
  std::mutex mutex_;
  std::condition_variable connections_cv_;
  int connections_ = 0;
  std::vector<std::thread> producers_;
  std::weak_ptr<WsSink> last_sink_;
  std::vector<std::shared_ptr<HttpResponder>> held_responders_;
};

OutboundEvent delta(std::string id, std::string text, std::vector<int32_t> tokens) {
  OutboundEvent e;
  e.kind = OutboundEvent::Kind::delta;
  e.id = std::move(id);
  e.text = std::move(text);
  e.tokens = std::move(tokens);
  return e;
}

void FakeWsHandler::on_text(std::string frame) {
  auto arg = [&](std::string_view prefix) -> std::optional<std::string> {
    if (frame.rfind(prefix, 0) != 0) return std::nullopt;
    return frame.substr(prefix.size());
  };
  if (auto text = arg("echo:")) return sink_->send(delta("e", *text, {1}));
  if (auto n = arg("burst:")) {
    const int count = std::stoi(*n);
    return backend_.produce([sink = sink_, count, &backend = backend_] {
      for (int i = 0; i < count; ++i) sink->send(delta("b", burst_text(i), {i}));
      OutboundEvent done;
      done.kind = OutboundEvent::Kind::done;
      done.id = "b";
      done.finish_reason = "length";
      done.completion_tokens = count;
      sink->send(done);
      backend.burst_done.notify();
    });
  }
  if (auto bytes = arg("flood:")) {
    const std::size_t total = std::stoul(*bytes);
    return backend_.produce([sink = sink_, total, &backend = backend_] {
      for (std::size_t sent = 0, i = 0; sent < total; sent += 16384, ++i)
        sink->send(delta("f", std::string(16384, static_cast<char>('a' + i % 26)), {}));
      backend.flood_done.notify();
    });
  }
  if (frame == "bye" || frame == "bye_policy") {
    sink_->send(delta("e", "bye", {}));
    return sink_->close(frame == "bye_policy");
  }
  if (frame == "ping") {
    OutboundEvent pong;
    pong.kind = OutboundEvent::Kind::pong;
    return sink_->send(pong);
  }
}

void FakeWsHandler::on_closed() {
  sink_.reset();
  backend_.ws_closed.notify();
}

// ---------------------------------------------------------------------------------------------
// Clients. Each call starts one async operation under a TCP deadline and runs the client's
// io_context until it completes.

template <class Start>
beast::error_code run_op(net::io_context& ioc, Start&& start) {
  beast::error_code result = net::error::would_block;
  start([&](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

tcp::socket connect_socket(net::io_context& ioc, uint16_t port, int receive_buffer = 0) {
  tcp::socket socket(ioc);
  socket.open(tcp::v4());
  // Set before connecting so that the window the client advertises stays small: the server's
  // writes then block quickly when the client does not read.
  if (receive_buffer > 0) socket.set_option(net::socket_base::receive_buffer_size(receive_buffer));
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  return socket;
}

struct Event {
  std::string type, id, text, code, message, finish_reason;
  bool id_null = false;
  std::vector<int64_t> tokens;
};

Event parse_event(const std::string& json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(simdjson::padded_string(json)).get(doc) != simdjson::SUCCESS)
    throw std::runtime_error("not JSON: " + json.substr(0, 200));
  auto text_of = [&](const char* key) {
    std::string_view value;
    return doc[key].get(value) == simdjson::SUCCESS ? std::string(value) : std::string();
  };
  Event e;
  e.type = text_of("type");
  e.id = text_of("id");
  e.id_null = doc["id"].is_null();
  e.text = text_of("text");
  e.code = text_of("code");
  e.message = text_of("message");
  e.finish_reason = text_of("finish_reason");
  simdjson::dom::array tokens;
  if (doc["tokens"].get(tokens) == simdjson::SUCCESS)
    for (auto t : tokens) e.tokens.push_back(int64_t(t));
  return e;
}

class WsClient {
 public:
  explicit WsClient(uint16_t port, int receive_buffer = 0, std::string path = "/v1/stream")
      : ws_(beast::tcp_stream(connect_socket(ioc_, port, receive_buffer))) {
    ws_.read_message_max(64 << 20);
    handshake_error = run([&](auto handler) { ws_.async_handshake("127.0.0.1", path, handler); });
  }

  beast::error_code write_text(const std::string& text) {
    ws_.text(true);
    return run([&](auto handler) { ws_.async_write(net::buffer(text), handler); });
  }
  beast::error_code write_binary(const std::string& bytes) {
    ws_.binary(true);
    return run([&](auto handler) { ws_.async_write(net::buffer(bytes), handler); });
  }
  // One message; `ec` says why there is none.
  std::string read(beast::error_code& ec) {
    buffer_.clear();
    ec = run([&](auto handler) { ws_.async_read(buffer_, handler); });
    return beast::buffers_to_string(buffer_.data());
  }
  Event read_event() {
    beast::error_code ec;
    std::string frame = read(ec);
    if (ec) throw std::runtime_error("read failed: " + ec.message());
    return parse_event(frame);
  }
  beast::error_code close() {
    return run([&](auto handler) { ws_.async_close(websocket::close_code::normal, handler); });
  }
  websocket::close_reason reason() const { return ws_.reason(); }

  beast::error_code handshake_error;

 private:
  template <class Start>
  beast::error_code run(Start&& start) {
    beast::get_lowest_layer(ws_).expires_after(kClientDeadline);
    return run_op(ioc_, std::forward<Start>(start));
  }

  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
};

class HttpClient {
 public:
  explicit HttpClient(uint16_t port) : stream_(connect_socket(ioc_, port)) {}

  http::response<http::string_body> request(http::verb method, const std::string& target, std::string body = "",
                                            bool keep_alive = true) {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.keep_alive(keep_alive);
    if (!body.empty() || method == http::verb::post) {
      req.body() = std::move(body);
      req.prepare_payload();
    }
    if (auto ec = write(req)) throw std::runtime_error("write failed: " + ec.message());
    return read_response();
  }

  template <class Message>
  beast::error_code write(Message& message) {
    return run([&](auto handler) { http::async_write(stream_, message, handler); });
  }
  beast::error_code write_raw(const std::string& bytes) {
    return run([&](auto handler) { net::async_write(stream_, net::buffer(bytes), handler); });
  }
  http::response<http::string_body> read_response() {
    http::response<http::string_body> res;
    if (auto ec = run([&](auto handler) { http::async_read(stream_, buffer_, res, handler); }))
      throw std::runtime_error("read failed: " + ec.message());
    return res;
  }
  template <class Parser>
  beast::error_code read_header(Parser& parser) {
    return run([&](auto handler) { http::async_read_header(stream_, buffer_, parser, handler); });
  }
  template <class Parser>
  beast::error_code read_some(Parser& parser) {
    return run([&](auto handler) { http::async_read_some(stream_, buffer_, parser, handler); });
  }
  template <class Parser>
  beast::error_code read(Parser& parser) {
    return run([&](auto handler) { http::async_read(stream_, buffer_, parser, handler); });
  }
  // Whether the server has closed the connection (a read ends with EOF rather than a deadline).
  bool closed_by_server() {
    char byte;
    beast::error_code ec = run([&](auto handler) { stream_.async_read_some(net::buffer(&byte, 1), handler); });
    return ec == net::error::eof || ec == net::error::connection_reset;
  }
  void close() { stream_.close(); }

 private:
  template <class Start>
  beast::error_code run(Start&& start) {
    stream_.expires_after(kClientDeadline);
    return run_op(ioc_, std::forward<Start>(start));
  }

  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

// ---------------------------------------------------------------------------------------------

class NetTest : public ::testing::Test {
 protected:
  static NetLimits test_limits() {
    NetLimits limits;
    limits.port = 0;
    limits.io_threads = 2;  // exercises the per-connection strands
    limits.http_request_timeout = 5s;
    limits.write_stall_timeout = 5s;
    limits.shutdown_grace = 300ms;
    return limits;
  }

  void start(NetLimits limits = test_limits()) {
    backend = std::make_shared<FakeBackend>();
    server = std::make_unique<HttpServer>(limits, backend);
    port = server->start();
  }

  void TearDown() override {
    if (server) server->stop();
    server.reset();
    if (backend) {
      backend->release_responders();
      backend->join_producers();
    }
  }

  std::shared_ptr<FakeBackend> backend;
  std::unique_ptr<HttpServer> server;
  uint16_t port = 0;
};

// ---- WebSocket ----

TEST_F(NetTest, WebSocketEchoAndConnectionCount) {
  start();
  {
    WsClient client(port);
    ASSERT_FALSE(client.handshake_error) << client.handshake_error.message();
    EXPECT_TRUE(backend->wait_for_connections(1));
    ASSERT_FALSE(client.write_text("echo:hello"));
    Event e = client.read_event();
    EXPECT_EQ(e.type, "delta");
    EXPECT_EQ(e.id, "e");
    EXPECT_EQ(e.text, "hello");
    EXPECT_EQ(e.tokens, std::vector<int64_t>{1});
    ASSERT_FALSE(client.write_text("ping"));
    EXPECT_EQ(client.read_event().type, "pong");
    EXPECT_FALSE(client.close());
  }
  EXPECT_TRUE(backend->ws_closed.wait_for(1));
  EXPECT_TRUE(backend->wait_for_connections(0));
  EXPECT_EQ(server->open_connections(), 0);
}

TEST_F(NetTest, DeltasMergeWhileTheClientDoesNotRead) {
  NetLimits limits = test_limits();
  limits.ws_send_queue_bytes = 64 << 20;  // this test is about merging, not the overflow close
  start(limits);
  constexpr int kDeltas = 20000;  // ~2 MB: more than the socket buffers hold
  WsClient client(port, /*receive_buffer=*/8192);
  ASSERT_FALSE(client.handshake_error);
  ASSERT_FALSE(client.write_text("burst:" + std::to_string(kDeltas)));
  // The client reads nothing until the producer has sent every delta.
  ASSERT_TRUE(backend->burst_done.wait_for(1));

  std::string text;
  std::vector<int64_t> tokens;
  int frames = 0;
  for (;;) {
    Event e = client.read_event();
    if (e.type == "done") break;
    ASSERT_EQ(e.type, "delta");
    ASSERT_EQ(e.id, "b");
    text += e.text;
    tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
    ++frames;
  }
  std::string expected_text;
  std::vector<int64_t> expected_tokens;
  for (int i = 0; i < kDeltas; ++i) {
    expected_text += burst_text(i);
    expected_tokens.push_back(i);
  }
  EXPECT_EQ(text, expected_text);  // nothing lost, nothing reordered
  EXPECT_EQ(tokens, expected_tokens);
  EXPECT_LT(frames, kDeltas / 10) << "deltas were not merged: " << frames << " frames";
}

TEST_F(NetTest, SlowReaderIsClosedWithPolicyErrorAfterTheGracePeriod) {
  NetLimits limits = test_limits();
  limits.ws_send_queue_bytes = 64 << 10;
  limits.ws_send_overflow_grace = 50ms;
  start(limits);
  WsClient client(port, /*receive_buffer=*/8192);
  ASSERT_FALSE(client.handshake_error);
  ASSERT_FALSE(client.write_text("flood:4000000"));
  ASSERT_TRUE(backend->flood_done.wait_for(1));
  // The condition under test is time: the queue must stay over its bound for the grace period
  // while the client reads nothing. No server event marks that moment, so the client waits
  // ten grace periods before it starts reading.
  std::this_thread::sleep_for(10 * limits.ws_send_overflow_grace);

  std::string received;
  beast::error_code ec;
  for (;;) {
    std::string frame = client.read(ec);
    if (ec) break;
    Event e = parse_event(frame);
    ASSERT_EQ(e.type, "delta");
    received += e.text;
  }
  EXPECT_EQ(ec, websocket::error::closed) << ec.message();
  EXPECT_EQ(client.reason().code, websocket::close_code::policy_error);
  EXPECT_EQ(client.reason().reason, "client too slow");
  // What arrived is the start of the stream, in order: 16 KiB of 'a', then 'b', ... How much
  // depends on what had merged into the frame already being written when the grace ran out
  // (a frame in flight is delivered whole; the events still queued are dropped).
  EXPECT_LE(received.size(), 245u * 16384);
  for (std::size_t i = 0; i < received.size(); i += 16384)
    ASSERT_EQ(received[i], static_cast<char>('a' + (i / 16384) % 26)) << "at byte " << i;
  EXPECT_TRUE(backend->ws_closed.wait_for(1));
}

TEST_F(NetTest, StalledWriteClosesTheConnection) {
  NetLimits limits = test_limits();
  limits.ws_send_queue_bytes = 64 << 20;  // no overflow close: only the stall timer can act
  limits.write_stall_timeout = 200ms;
  start(limits);
  WsClient client(port, /*receive_buffer=*/8192);
  ASSERT_FALSE(client.handshake_error);
  ASSERT_FALSE(client.write_text("flood:4000000"));  // far more than the socket buffers hold
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(backend->ws_closed.wait_for(1));  // the client never reads
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
}

TEST_F(NetTest, BinaryFrameGetsAnErrorEventAndTheConnectionLives) {
  start();
  WsClient client(port);
  ASSERT_FALSE(client.handshake_error);
  ASSERT_FALSE(client.write_binary(std::string("\x01\x02\x03", 3)));
  Event e = client.read_event();
  EXPECT_EQ(e.type, "error");
  EXPECT_EQ(e.code, "invalid_frame");
  EXPECT_EQ(e.message, "binary frames are not accepted; send JSON text");
  ASSERT_FALSE(client.write_text("echo:still here"));
  EXPECT_EQ(client.read_event().text, "still here");
}

TEST_F(NetTest, OversizeMessageClosesWith1009) {
  NetLimits limits = test_limits();
  limits.max_ws_frame_bytes = 1024;
  start(limits);
  WsClient client(port);
  ASSERT_FALSE(client.handshake_error);
  ASSERT_FALSE(client.write_text("echo:" + std::string(1020, 'a')));  // 1025 bytes
  beast::error_code ec;
  client.read(ec);
  EXPECT_EQ(ec, websocket::error::closed) << ec.message();
  EXPECT_EQ(client.reason().code, websocket::close_code::too_big);
  EXPECT_TRUE(backend->ws_closed.wait_for(1));
}

TEST_F(NetTest, InvalidUtf8ClosesWith1007) {
  start();
  WsClient client(port);
  ASSERT_FALSE(client.handshake_error);
  ASSERT_FALSE(client.write_text("echo:\xff\xfe"));
  beast::error_code ec;
  client.read(ec);
  EXPECT_EQ(ec, websocket::error::closed) << ec.message();
  EXPECT_EQ(client.reason().code, websocket::close_code::bad_payload);
  EXPECT_TRUE(backend->ws_closed.wait_for(1));
}

TEST_F(NetTest, SilentClientHitsTheIdleTimeout) {
  NetLimits limits = test_limits();
  limits.idle_timeout = 200ms;
  start(limits);
  WsClient client(port);
  ASSERT_FALSE(client.handshake_error);
  const auto opened = std::chrono::steady_clock::now();
  // The client neither sends nor reads, so Beast's ping goes unanswered.
  ASSERT_TRUE(backend->ws_closed.wait_for(1));
  EXPECT_GE(std::chrono::steady_clock::now() - opened, 150ms);
  beast::error_code ec;
  while (!ec) client.read(ec);  // a ping may be waiting, then the connection is gone
  EXPECT_NE(ec, beast::error::timeout) << "the client's own deadline fired: the server did not close";
}

TEST_F(NetTest, BackendCloseFlushesFirst) {
  start();
  {
    WsClient client(port);
    ASSERT_FALSE(client.write_text("bye"));
    EXPECT_EQ(client.read_event().text, "bye");
    beast::error_code ec;
    client.read(ec);
    EXPECT_EQ(ec, websocket::error::closed);
    EXPECT_EQ(client.reason().code, websocket::close_code::normal);
  }
  {
    WsClient client(port);
    ASSERT_FALSE(client.write_text("bye_policy"));
    EXPECT_EQ(client.read_event().text, "bye");
    beast::error_code ec;
    client.read(ec);
    EXPECT_EQ(ec, websocket::error::closed);
    EXPECT_EQ(client.reason().code, websocket::close_code::policy_error);
  }
  EXPECT_TRUE(backend->ws_closed.wait_for(2));
}

TEST_F(NetTest, UpgradeOnAnotherPathIs404) {
  start();
  HttpClient client(port);
  ASSERT_FALSE(client.write_raw(
      "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
  EXPECT_EQ(client.read_response().result_int(), 404);
}

// ---- HTTP ----

TEST_F(NetTest, ServesThePage) {
  start();
  HttpClient client(port);
  auto res = client.request(http::verb::get, "/");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res[http::field::content_type], "text/html; charset=utf-8");
  for (const char* id : {"prompt", "send", "stop", "output", "stats"})
    EXPECT_NE(res.body().find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  EXPECT_NE(res.body().find("/v1/stream"), std::string::npos);

  http::request<http::empty_body> head{http::verb::head, "/", 11};
  head.set(http::field::host, "x");
  ASSERT_FALSE(client.write(head));
  http::response_parser<http::empty_body> parser;
  parser.skip(true);  // a HEAD response has no body
  ASSERT_FALSE(client.read_header(parser));
  EXPECT_EQ(parser.get().result_int(), 200);
  EXPECT_EQ(parser.get()[http::field::content_length], std::to_string(res.body().size()));
}

TEST_F(NetTest, GetAndPostWithKeepAlive) {
  start();
  HttpClient client(port);
  auto first = client.request(http::verb::get, "/hello");
  EXPECT_EQ(first.result_int(), 200);
  EXPECT_EQ(first.body(), "hello");
  EXPECT_TRUE(first.keep_alive());
  auto second = client.request(http::verb::post, "/echo", R"({"x":1})");  // same connection
  EXPECT_EQ(second.result_int(), 200);
  EXPECT_EQ(second.body(), R"({"x":1})");
  EXPECT_EQ(second[http::field::content_type], "application/json");
  auto missing = client.request(http::verb::get, "/nope");
  EXPECT_EQ(missing.result_int(), 404);

  auto last = client.request(http::verb::get, "/hello", "", /*keep_alive=*/false);
  EXPECT_EQ(last.body(), "hello");
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NetTest, MethodsThatAreNotServed) {
  start();
  HttpClient client(port);
  auto put = client.request(http::verb::put, "/hello", "x");
  EXPECT_EQ(put.result_int(), 405);
  EXPECT_EQ(put[http::field::allow], "GET, HEAD, POST, OPTIONS");
  EXPECT_NE(put.body().find("method_not_allowed"), std::string::npos);
  auto options = client.request(http::verb::options, "/v1/stream");
  EXPECT_EQ(options.result_int(), 204);
  EXPECT_EQ(options[http::field::allow], "GET, HEAD, POST, OPTIONS");
  EXPECT_EQ(client.request(http::verb::get, "/hello").body(), "hello");  // still usable
}

TEST_F(NetTest, OversizeBodyIs413) {
  NetLimits limits = test_limits();
  limits.max_http_body_bytes = 1024;
  start(limits);
  HttpClient client(port);
  auto res = client.request(http::verb::post, "/echo", std::string(2000, 'x'));
  EXPECT_EQ(res.result_int(), 413);
  EXPECT_NE(res.body().find("payload_too_large"), std::string::npos);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NetTest, SlowRequestGets408AtTheRequestTimeout) {
  // A client that starts a request and never finishes it (slowloris) holds a connection only
  // until http-request-timeout.
  NetLimits limits = test_limits();
  limits.http_request_timeout = 300ms;
  start(limits);
  HttpClient client(port);
  const auto sent = std::chrono::steady_clock::now();
  ASSERT_FALSE(client.write_raw("GET /hello HTTP/1.1\r\nHost: x\r\n"));  // headers never end
  auto res = client.read_response();
  EXPECT_EQ(res.result_int(), 408);
  EXPECT_NE(res.body().find("request_timeout"), std::string::npos);
  EXPECT_GE(std::chrono::steady_clock::now() - sent, 300ms);
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NetTest, OversizeHeadersAre431AndGarbageIs400) {
  NetLimits limits = test_limits();
  limits.max_http_header_bytes = 2048;
  start(limits);
  {
    HttpClient client(port);
    ASSERT_FALSE(client.write_raw("GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'y') + "\r\n\r\n"));
    auto res = client.read_response();
    EXPECT_EQ(res.result_int(), 431);
    EXPECT_NE(res.body().find("headers_too_large"), std::string::npos);
  }
  {
    HttpClient client(port);
    ASSERT_FALSE(client.write_raw("THIS IS NOT HTTP\r\n\r\n"));
    auto res = client.read_response();
    EXPECT_EQ(res.result_int(), 400);
    EXPECT_NE(res.body().find("bad_request"), std::string::npos);
  }
  HttpClient client(port);  // the server is unharmed
  EXPECT_EQ(client.request(http::verb::get, "/hello").body(), "hello");
}

TEST_F(NetTest, ExpectContinueGetsAnInterimResponse) {
  start();
  HttpClient client(port);
  ASSERT_FALSE(client.write_raw(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  http::response_parser<http::empty_body> interim;
  ASSERT_FALSE(client.read_header(interim));
  EXPECT_EQ(interim.get().result_int(), 100);
  ASSERT_FALSE(client.write_raw("hello"));
  auto res = client.read_response();
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "hello");
}

TEST_F(NetTest, DroppedResponderAnswers500) {
  start();
  HttpClient client(port);
  EXPECT_EQ(client.request(http::verb::get, "/drop").result_int(), 500);
  EXPECT_EQ(client.request(http::verb::get, "/hello").body(), "hello");
}

// ---- Server-Sent Events ----

TEST_F(NetTest, EventStream) {
  start();
  HttpClient client(port);
  auto res = client.request(http::verb::get, "/events");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res[http::field::content_type], "text/event-stream");
  EXPECT_EQ(res[http::field::cache_control], "no-cache");
  EXPECT_TRUE(res.chunked());
  EXPECT_EQ(res.body(), "data: one\n\ndata: two\ndata: lines\n\ndata: three\n\n");
  EXPECT_EQ(client.request(http::verb::get, "/hello").body(), "hello");  // keep-alive after a stream
}

TEST_F(NetTest, ClientLeavingAnEventStreamFiresOnDisconnectOnce) {
  start();
  {
    HttpClient client(port);
    http::request<http::empty_body> req{http::verb::get, "/events/forever", 11};
    req.set(http::field::host, "x");
    ASSERT_FALSE(client.write(req));
    http::response_parser<http::string_body> parser;
    ASSERT_FALSE(client.read_header(parser));
    EXPECT_EQ(parser.get()[http::field::content_type], "text/event-stream");
    while (parser.get().body().find("data: first\n\n") == std::string::npos) ASSERT_FALSE(client.read_some(parser));
    EXPECT_EQ(backend->disconnects.count(), 0);
    client.close();
  }
  ASSERT_TRUE(backend->disconnects.wait_for(1));
  EXPECT_TRUE(backend->wait_for_connections(0));
  server->stop();
  EXPECT_EQ(backend->disconnects.count(), 1);
}

TEST_F(NetTest, EventStreamOverItsQueueBoundIsClosed) {
  NetLimits limits = test_limits();
  limits.ws_send_queue_bytes = 64 << 10;
  start(limits);
  HttpClient client(port);
  http::request<http::empty_body> req{http::verb::get, "/events/flood", 11};
  req.set(http::field::host, "x");
  ASSERT_FALSE(client.write(req));
  ASSERT_TRUE(backend->disconnects.wait_for(1));  // the client has read nothing
  EXPECT_TRUE(backend->wait_for_connections(0));
}

// ---- Limits and lifecycle ----

TEST_F(NetTest, OverMaxConnectionsIs503) {
  NetLimits limits = test_limits();
  limits.max_connections = 2;
  start(limits);
  auto first = std::make_unique<WsClient>(port);
  WsClient second(port);
  ASSERT_FALSE(first->handshake_error);
  ASSERT_FALSE(second.handshake_error);
  ASSERT_TRUE(backend->wait_for_connections(2));
  {
    HttpClient third(port);
    auto res = third.request(http::verb::get, "/hello");
    EXPECT_EQ(res.result_int(), 503);
    EXPECT_NE(res.body().find("server_busy"), std::string::npos);
  }
  first->close();
  first.reset();
  ASSERT_TRUE(backend->wait_for_connections(1));
  HttpClient fourth(port);
  EXPECT_EQ(fourth.request(http::verb::get, "/hello").result_int(), 200);
}

TEST_F(NetTest, StopWithOpenConnectionsIsPrompt) {
  start();
  WsClient ws(port);
  ASSERT_FALSE(ws.handshake_error);
  ASSERT_FALSE(ws.write_text("echo:x"));
  EXPECT_EQ(ws.read_event().text, "x");
  HttpClient idle(port);
  EXPECT_EQ(idle.request(http::verb::get, "/hello").body(), "hello");
  HttpClient stream(port);
  http::request<http::empty_body> req{http::verb::get, "/events/forever", 11};
  req.set(http::field::host, "x");
  ASSERT_FALSE(stream.write(req));
  http::response_parser<http::string_body> parser;
  ASSERT_FALSE(stream.read_header(parser));
  ASSERT_TRUE(backend->wait_for_connections(3));
  std::shared_ptr<WsSink> kept = backend->last_sink();  // an actor that has not let go
  ASSERT_TRUE(kept);

  const auto t0 = std::chrono::steady_clock::now();
  server->stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 2s) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";

  EXPECT_TRUE(backend->ws_closed.wait_for(1, 0s));
  EXPECT_TRUE(backend->disconnects.wait_for(1, 0s));
  EXPECT_TRUE(backend->wait_for_connections(0));
  beast::error_code ec;
  while (!ec) ws.read(ec);
  EXPECT_EQ(ws.reason().code, websocket::close_code::going_away);
  EXPECT_TRUE(idle.closed_by_server());

  kept->send(delta("e", "late", {}));  // after stop: does nothing, crashes nothing
  kept->close(true);
  server.reset();
  kept->send(delta("e", "later", {}));
  kept.reset();
}

TEST_F(NetTest, BusyPortFailsWithTheAddressInTheMessage) {
  start();
  NetLimits limits = test_limits();
  limits.port = port;
  HttpServer second(limits, backend);
  try {
    second.start();
    FAIL() << "start() on a busy port succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ultraserve
