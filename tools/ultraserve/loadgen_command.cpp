// ultraserve loadgen: many WebSocket connections, each keeping several requests in flight,
// reporting time to first token, inter-token latency, throughput and errors (table + JSON).
// For soak runs it can mix in the ways real clients leave: a share of requests is cancelled
// after its first token, and a share of connections drops (no close handshake) after theirs.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <simdjson.h>

#include "config/command_options.h"
#include "net/file_descriptors.h"
#include "net/json_writer.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

struct LoadgenOptions : CommandOptions {
  std::string url = "ws://127.0.0.1:8080/v1/stream", prompt = "Translate to French: the house is red.", json;
  int64_t connections = 10, concurrency = 4, requests = 0, max_tokens = 32, io_threads = 1, timeout_s = 600;
  double temperature = 0.0, cancel_fraction = 0.0, disconnect_fraction = 0.0;
  int64_t seed = 1;
  LoadgenOptions()
      : CommandOptions("ultraserve loadgen [--url ws://HOST:PORT/PATH] [--connections N] [--concurrency M] "
                       "[--requests R] [--max-tokens T] [--prompt TEXT] [--json FILE]") {
    options()
        .add(url, "url", "the server's WebSocket endpoint")
        .add(connections, "connections", "WebSocket connections")
        .add(concurrency, "concurrency", "requests in flight per connection")
        .add(requests, "requests", "requests in all (0: 2 x connections x concurrency)")
        .add(max_tokens, "max-tokens", "max_tokens of each request")
        .add(temperature, "temperature", "sampling temperature (0: greedy)")
        .add(prompt, "prompt", "the prompt of every request")
        .add(io_threads, "io-threads", "client network threads")
        .add(timeout_s, "timeout-s", "give up after this long")
        .add(cancel_fraction, "cancel-fraction", "share of requests cancelled after their first token")
        .add(disconnect_fraction, "disconnect-fraction", "share of connections dropped after their first token")
        .add(seed, "seed", "seed of those choices")
        .add(json, "json", "also write the results as JSON here");
  }
};

struct Endpoint {
  std::string host, port, path;
};

Endpoint parse_url(const std::string& url) {
  if (!url.starts_with("ws://")) throw UsageError("--url must start with ws:// (got '" + url + "')");
  std::string rest = url.substr(5);
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  const std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  const size_t colon = authority.rfind(':');
  if (colon == std::string::npos) return {authority, "80", path};
  return {authority.substr(0, colon), authority.substr(colon + 1), path};
}

// Everything measured, merged from all connections at the end.
struct Results {
  std::mutex mutex;
  std::vector<double> ttft_ms, itl_ms;
  std::map<std::string, int64_t> errors;  // by code (connection failures as "connect")
  int64_t completed = 0, tokens = 0;
  int64_t cancelled = 0;  // ended "cancelled" after we cancelled them
  int64_t abandoned = 0;  // in flight on a connection we dropped
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(asio::io_context& ioc, const Endpoint& ep, const LoadgenOptions& o, std::atomic<int64_t>& budget,
             Results& results, uint64_t seed)
      : ws_(asio::make_strand(ioc)), resolver_(ws_.get_executor()), ep_(ep), o_(o), budget_(budget), results_(results),
        random_(seed), drops_(chance(o.disconnect_fraction)) {}

  void start() {
    resolver_.async_resolve(ep_.host, ep_.port, [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type r) {
      if (ec) return self->fail("connect");
      beast::get_lowest_layer(self->ws_).async_connect(r, [self](beast::error_code ec, const tcp::endpoint&) {
        if (ec) return self->fail("connect");
        self->ws_.async_handshake(self->ep_.host, self->ep_.path, [self](beast::error_code ec) {
          if (ec) return self->fail("handshake");
          for (int64_t i = 0; i < self->o_.concurrency; ++i) self->send_next();
          // Connections that were quicker may have taken the whole budget: with nothing in
          // flight no message will come, and a read would wait until --timeout-s.
          if (self->in_flight_.empty()) return self->close();
          self->read();
        });
      });
    });
  }

 private:
  struct InFlight {
    clock_type::time_point sent, last;
    bool got_token = false, cancelled = false;
  };

  bool chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(random_) < p; }

  void send_next() {
    if (budget_.fetch_sub(1) <= 0) return;
    const std::string id = std::to_string(next_id_++);
    JsonWriter w;
    w.begin_object().field("type", "generate").field("id", id).field("prompt", o_.prompt)
        .field("max_tokens", static_cast<int64_t>(o_.max_tokens)).field("temperature", o_.temperature).end_object();
    in_flight_[id] = {clock_type::now(), {}, false};
    outbox_.push_back(w.take());
    if (outbox_.size() == 1) write();
  }

  void write() {
    ws_.async_write(asio::buffer(outbox_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->fail("write");
      self->outbox_.pop_front();
      if (!self->outbox_.empty()) self->write();
    });
  }

  void read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->fail("read");
      self->on_message(beast::buffers_to_string(self->buffer_.data()));
      self->buffer_.consume(self->buffer_.size());
      if (!self->in_flight_.empty()) self->read();
      else self->close();
    });
  }

  void on_message(const std::string& text) {
    simdjson::dom::element m;
    if (parser_.parse(text).get(m)) return record_error("bad_json");
    std::string_view type, id;
    if (m["type"].get(type) || m["id"].get(id)) return;
    auto it = in_flight_.find(std::string(id));
    if (it == in_flight_.end()) return;
    const auto now = clock_type::now();
    InFlight& f = it->second;
    if (type == "delta") {
      simdjson::dom::array tokens;
      if (!m["tokens"].get(tokens)) local_tokens_ += static_cast<int64_t>(tokens.size());
      const double ms = std::chrono::duration<double, std::milli>(now - (f.got_token ? f.last : f.sent)).count();
      (f.got_token ? local_itl_ : local_ttft_).push_back(ms);
      const bool first = !f.got_token;
      f.got_token = true;
      f.last = now;
      if (first && drops_) return drop();
      if (first && chance(o_.cancel_fraction)) {
        f.cancelled = true;
        JsonWriter w;
        w.begin_object().field("type", "cancel").field("id", std::string(id)).end_object();
        outbox_.push_back(w.take());
        if (outbox_.size() == 1) write();
      }
      return;
    }
    if (type == "error") {
      std::string_view code;
      record_error(m["code"].get(code) ? "error" : std::string(code));
    } else if (type == "done") {
      std::string_view reason;
      const bool cancelled = f.cancelled && !m["finish_reason"].get(reason) && reason == "cancelled";
      ++(cancelled ? local_cancelled_ : local_completed_);
    }
    in_flight_.erase(it);
    send_next();
  }

  void record_error(const std::string& code) { ++local_errors_[code]; }

  void fail(const std::string& what) {
    record_error(what);
    in_flight_.clear();
    flush_results();
  }

  // Gone without a close handshake, as a client whose process died; what it had in flight is
  // abandoned (the server must notice and free it).
  void drop() {
    local_abandoned_ += static_cast<int64_t>(in_flight_.size());
    in_flight_.clear();
    flush_results();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }

  void close() {
    flush_results();
    ws_.async_close(beast::websocket::close_code::normal, [self = shared_from_this()](beast::error_code) {});
  }

  void flush_results() {
    if (flushed_) return;
    flushed_ = true;
    std::lock_guard lock(results_.mutex);
    results_.ttft_ms.insert(results_.ttft_ms.end(), local_ttft_.begin(), local_ttft_.end());
    results_.itl_ms.insert(results_.itl_ms.end(), local_itl_.begin(), local_itl_.end());
    for (const auto& [code, n] : local_errors_) results_.errors[code] += n;
    results_.completed += local_completed_;
    results_.tokens += local_tokens_;
    results_.cancelled += local_cancelled_;
    results_.abandoned += local_abandoned_;
  }

  beast::websocket::stream<beast::tcp_stream> ws_;
  tcp::resolver resolver_;
  const Endpoint& ep_;
  const LoadgenOptions& o_;
  std::atomic<int64_t>& budget_;
  Results& results_;
  simdjson::dom::parser parser_;
  beast::flat_buffer buffer_;
  std::deque<std::string> outbox_;
  std::map<std::string, InFlight> in_flight_;
  uint64_t next_id_ = 0;
  std::vector<double> local_ttft_, local_itl_;
  std::map<std::string, int64_t> local_errors_;
  int64_t local_completed_ = 0, local_tokens_ = 0, local_cancelled_ = 0, local_abandoned_ = 0;
  bool flushed_ = false;
  std::mt19937_64 random_;
  const bool drops_;  // this connection drops after its first token
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

}  // namespace

int loadgen_command(const Args& args) {
  LoadgenOptions o;
  return run_command(o, args, [&] {
    if (o.connections <= 0 || o.concurrency <= 0 || o.max_tokens <= 0 || o.io_threads <= 0 || o.requests < 0)
      throw UsageError("--connections, --concurrency, --max-tokens and --io-threads must be positive");
    for (double f : {o.cancel_fraction, o.disconnect_fraction})
      if (!(f >= 0 && f <= 1)) throw UsageError("--cancel-fraction and --disconnect-fraction must be in [0, 1]");
    const Endpoint ep = parse_url(o.url);
    ensure_file_descriptors(static_cast<size_t>(o.connections));  // a socket each, like the server's
    const int64_t total = o.requests > 0 ? o.requests : 2 * o.connections * o.concurrency;
    std::atomic<int64_t> budget{total};
    Results results;
    asio::io_context ioc;
    const auto start = clock_type::now();
    for (int64_t c = 0; c < o.connections; ++c)
      std::make_shared<Connection>(ioc, ep, o, budget, results, static_cast<uint64_t>(o.seed) * 1000003 + c)->start();
    std::vector<std::thread> threads;
    for (int64_t t = 0; t < o.io_threads; ++t) threads.emplace_back([&] { ioc.run_for(std::chrono::seconds(o.timeout_s)); });
    for (auto& t : threads) t.join();
    const double wall = std::chrono::duration<double>(clock_type::now() - start).count();

    int64_t errors = 0;
    for (const auto& [_, n] : results.errors) errors += n;
    const double p50 = percentile(results.ttft_ms, 0.5), p90 = percentile(results.ttft_ms, 0.9),
                 p99 = percentile(results.ttft_ms, 0.99), i50 = percentile(results.itl_ms, 0.5),
                 i90 = percentile(results.itl_ms, 0.9), i99 = percentile(results.itl_ms, 0.99);
    std::printf("| connections | requests | completed | cancelled | abandoned | errors | tokens | tokens/s | "
                "TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    std::printf("| %ld | %ld | %ld | %ld | %ld | %ld | %ld | %.0f | %.1f / %.1f / %.1f | %.2f / %.2f / %.2f |\n",
                long(o.connections), long(total), long(results.completed), long(results.cancelled),
                long(results.abandoned), long(errors), long(results.tokens), results.tokens / wall, p50, p90, p99, i50,
                i90, i99);
    for (const auto& [code, n] : results.errors) std::printf("errors %s: %ld\n", code.c_str(), long(n));
    if (!o.json.empty()) {
      JsonWriter w;
      w.begin_object().field("benchmark", "loadgen").field("url", o.url).field("connections", o.connections)
          .field("concurrency", o.concurrency).field("requests", total).field("completed", results.completed)
          .field("cancelled", results.cancelled).field("abandoned", results.abandoned).field("errors", errors).field("tokens", results.tokens).field("seconds", wall)
          .field("tokens_per_second", results.tokens / wall).field("ttft_ms_p50", p50).field("ttft_ms_p90", p90)
          .field("ttft_ms_p99", p99).field("itl_ms_p50", i50).field("itl_ms_p90", i90).field("itl_ms_p99", i99)
          .end_object();
      std::ofstream(o.json) << w.str() << "\n";
    }
    // A dropped connection takes its unsent share of the budget with it: those never ran.
    if (o.disconnect_fraction == 0 && results.completed + results.cancelled + errors < total)
      throw std::runtime_error("timed out with requests still running");
  });
}

}  // namespace ultraserve
