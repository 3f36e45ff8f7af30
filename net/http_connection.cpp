#include "net/http_connection.h"

#include <cstdio>
#include <exception>
#include <sstream>
#include <string_view>
#include <utility>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "net/net_context.h"
#include "net/net_log.h"
#include "net/static_page.h"
#include "net/ws_connection.h"

namespace ultraserve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

// After an error answer the client may still be sending the request we refused; reading it
// away for a moment before closing keeps the kernel from answering with a reset that could
// destroy our response in flight.
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr std::string_view kServerName = "ultraserve";
constexpr std::string_view kAllowedMethods = "GET, HEAD, POST, OPTIONS";

// JSON string contents. Bytes outside printable ASCII become '?' so that whatever a client
// sent can never make an error body invalid JSON.
std::string json_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += '?';
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string error_json(std::string_view code, std::string_view message) {
  return R"({"error":{"code":")" + json_escape(code) + R"(","message":")" + json_escape(message) + "\"}}";
}

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

// A header value from the backend must not smuggle in more header lines.
std::string safe_header_value(std::string value, std::string_view fallback) {
  if (value.empty() || value.find_first_of("\r\n") != std::string::npos) return std::string(fallback);
  return value;
}

http::response<http::string_body> make_response(int status, unsigned version, bool keep_alive,
                                                std::string content_type, std::string body) {
  // 1xx cannot be a final answer; anything outside the registry's range is a backend bug.
  if (status < 200 || status > 599) status = 500;
  if (status == 204 || status == 304) body.clear();  // these must not carry a body
  http::response<http::string_body> res;
  res.version(version);
  res.result(static_cast<unsigned>(status));
  res.set(http::field::server, kServerName);
  if (!body.empty()) res.set(http::field::content_type, safe_header_value(std::move(content_type), "text/plain"));
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

template <class Message>
std::string to_wire(const Message& message) {
  std::ostringstream os;
  os << message;
  return std::move(os).str();
}

// One SSE event. A payload with line breaks becomes several `data:` lines, which an
// EventSource joins back with '\n'; a bare "data: a\nb" would lose "b".
std::string sse_event(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  std::size_t start = 0;
  while (true) {
    const std::size_t end = data.find('\n', start);
    out += "data: ";
    out += data.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    out += '\n';
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  out += '\n';
  return out;
}

std::string http_chunk(std::string_view payload) {
  char size[20];
  std::snprintf(size, sizeof size, "%zx\r\n", payload.size());
  std::string out = size;
  out += payload;
  out += "\r\n";
  return out;
}

bool is_parse_error(const beast::error_code& ec) {
  return ec.category() == beast::error_code(http::error::bad_method).category();
}

}  // namespace

// The backend's handle on one request. Calls come from any thread and are posted onto the
// connection's strand tagged with the request's sequence number, so a responder that outlives
// its request (or its connection) changes nothing.
class HttpConnectionResponder final : public HttpResponder {
 public:
  HttpConnectionResponder(std::shared_ptr<HttpConnection> connection, uint64_t seq)
      : connection_(std::move(connection)), seq_(seq) {}

  // A backend that drops the request unanswered still gets an answer to its client out.
  ~HttpConnectionResponder() override {
    post([](HttpConnection& c, uint64_t seq) { c.on_abandon(seq); });
  }

  void respond(int status, std::string content_type, std::string body) override {
    post([status, ct = std::move(content_type), b = std::move(body)](HttpConnection& c, uint64_t seq) mutable {
      c.on_respond(seq, status, std::move(ct), std::move(b));
    });
  }
  void start_events() override {
    post([](HttpConnection& c, uint64_t seq) { c.on_start_events(seq); });
  }
  void send_event(std::string data) override {
    post([d = std::move(data)](HttpConnection& c, uint64_t seq) { c.on_send_event(seq, d); });
  }
  void finish() override {
    post([](HttpConnection& c, uint64_t seq) { c.on_finish(seq); });
  }
  void on_disconnect(std::function<void()> callback) override {
    // Posted even onto a closed connection: the callback must still fire if the client left.
    net::post(connection_->strand_, [c = connection_, seq = seq_, cb = std::move(callback)]() mutable {
      c->on_register_disconnect(seq, std::move(cb));
    });
  }

 private:
  template <class Fn>
  void post(Fn&& fn) {
    if (connection_->closed_.load(std::memory_order_acquire)) return;
    net::post(connection_->strand_, [c = connection_, seq = seq_, fn = std::forward<Fn>(fn)]() mutable {
      try {
        fn(*c, seq);
      } catch (const std::exception& e) {
        log_net(std::string("http responder: ") + e.what());
      }
    });
  }

  const std::shared_ptr<HttpConnection> connection_;
  const uint64_t seq_;
};

namespace {
std::string remote_of(const tcp::socket& socket) {
  beast::error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  if (ec) return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}
}  // namespace

HttpConnection::HttpConnection(std::shared_ptr<NetContext> ctx, tcp::socket socket, ConnectionSlot slot)
    : ctx_(std::move(ctx)),
      slot_(std::move(slot)),
      stream_(std::move(socket)),
      strand_(stream_.get_executor()),
      remote_(remote_of(stream_.socket())),
      request_timer_(strand_) {}

void HttpConnection::start() {
  slot_.attach(weak_from_this());
  net::dispatch(strand_, [self = shared_from_this()] { self->read_request(); });
}

void HttpConnection::shutdown() {
  net::post(strand_, [self = shared_from_this()] { self->close_now(); });
}

// ---- Reading a request ----

void HttpConnection::read_request() {
  phase_ = Phase::reading;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(
      std::min<std::size_t>(ctx_->limits.max_http_header_bytes, UINT32_MAX)));
  parser_->body_limit(ctx_->limits.max_http_body_bytes);
  request_deadline_ = std::chrono::steady_clock::now() + ctx_->limits.http_request_timeout;
  request_timed_out_ = false;
  stream_.expires_never();
  request_timer_.expires_at(request_deadline_);  // re-arming cancels the last request's wait
  request_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->phase_ != Phase::reading) return;
    self->request_timed_out_ = true;  // the read in progress ends with operation_aborted
    beast::error_code ignored;
    self->stream_.socket().cancel(ignored);
  });
  http::async_read_header(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

void HttpConnection::on_header(beast::error_code ec) {
  if (phase_ != Phase::reading) return;
  if (ec) return on_read_error(ec);
  if (parser_->is_done()) return on_request();
  if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
    // The client waits for this before sending the body (curl does for bodies over 1 KiB).
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    stream_.expires_after(ctx_->limits.write_stall_timeout);
    net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (self->phase_ != Phase::reading) return;
                       if (ec) return self->close_now();
                       self->read_body();
                     });
    return;
  }
  read_body();
}

void HttpConnection::read_body() {
  stream_.expires_never();  // still under the request timer
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
}

void HttpConnection::on_body(beast::error_code ec) {
  if (phase_ != Phase::reading) return;
  if (ec) return on_read_error(ec);
  on_request();
}

void HttpConnection::on_read_error(beast::error_code ec) {
  const auto& limits = ctx_->limits;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return close_now();
  if (request_timed_out_) {
    // An idle keep-alive connection just ends; a request that stalled half-way hears why.
    if (!parser_->got_some()) return close_now();
    return fail_request(408, "request_timeout", "the request was not received in time");
  }
  if (ec == http::error::body_limit)
    return fail_request(413, "payload_too_large",
                        "request body exceeds " + std::to_string(limits.max_http_body_bytes) + " bytes");
  if (ec == http::error::header_limit)
    return fail_request(431, "headers_too_large",
                        "request headers exceed " + std::to_string(limits.max_http_header_bytes) + " bytes");
  if (is_parse_error(ec)) return fail_request(400, "bad_request", "malformed HTTP request: " + ec.message());
  close_now();  // the socket failed: nobody to answer
}

void HttpConnection::on_request() {
  Request request = parser_->release();
  version_ = request.version();
  keep_alive_ = request.keep_alive();
  const std::string_view path = path_of(request.target());

  if (beast::websocket::is_upgrade(request)) {
    if (path == ctx_->limits.ws_path) return upgrade(std::move(request));
    begin_response();
    return respond_now(make_response(404, version_, keep_alive_, "application/json",
                                     error_json("not_found", "WebSocket connections go to " + ctx_->limits.ws_path)));
  }

  switch (request.method()) {
    case http::verb::options: {
      begin_response();
      auto res = make_response(204, version_, keep_alive_, "", "");
      res.set(http::field::allow, kAllowedMethods);
      return respond_now(std::move(res));
    }
    case http::verb::get:
    case http::verb::head:
      if (path == "/") return serve_page(request.method() == http::verb::head);
      if (request.method() == http::verb::head) break;
      return call_backend(std::move(request));
    case http::verb::post:
      return call_backend(std::move(request));
    default:
      break;
  }
  begin_response();
  auto res = make_response(405, version_, keep_alive_, "application/json",
                           error_json("method_not_allowed", "allowed methods: " + std::string(kAllowedMethods)));
  res.set(http::field::allow, kAllowedMethods);
  respond_now(std::move(res));
}

// ---- Answers the server gives itself ----

void HttpConnection::fail_request(unsigned status, const char* code, const std::string& message) {
  begin_response();
  keep_alive_ = false;
  linger_ = true;
  respond_now(make_response(static_cast<int>(status), 11, false, "application/json", error_json(code, message)));
}

void HttpConnection::serve_page(bool head_only) {
  begin_response();
  const std::string_view page = static_page_html();
  Response res;
  res.version(version_);
  res.result(http::status::ok);
  res.set(http::field::server, kServerName);
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.set(http::field::cache_control, "no-cache");
  res.keep_alive(keep_alive_);
  if (head_only) {
    res.content_length(page.size());
    // The serializer would write nothing for an empty body; only the header goes out.
    return respond_now(std::move(res));
  }
  res.body().assign(page.data(), page.size());
  res.prepare_payload();
  respond_now(std::move(res));
}

void HttpConnection::upgrade(Request request) {
  phase_ = Phase::upgraded;
  request_timer_.cancel();
  // Bytes a client pipelined after its upgrade request would be lost here; RFC 6455 clients
  // wait for the 101 before sending frames.
  auto ws = std::make_shared<WsConnection>(ctx_, std::move(stream_), std::move(slot_));
  ws->run(std::move(request));
}

void HttpConnection::call_backend(Request request) {
  begin_response();
  ++request_seq_;
  HttpRequestInfo info{std::string(request.method_string()), std::string(request.target()),
                       std::move(request.body())};
  auto responder = std::make_shared<HttpConnectionResponder>(shared_from_this(), request_seq_);
  watch_for_disconnect();
  try {
    ctx_->backend->handle_http(std::move(info), std::move(responder));
  } catch (const std::exception& e) {
    log_net("handle_http threw: " + std::string(e.what()));
    on_respond(request_seq_, 500, "application/json", error_json("internal_error", "the request failed"));
  } catch (...) {
    log_net("handle_http threw");
    on_respond(request_seq_, 500, "application/json", error_json("internal_error", "the request failed"));
  }
}

void HttpConnection::respond_now(Response response) {
  response_complete_ = true;
  enqueue(to_wire(response));
}

// ---- The backend's answer ----

bool HttpConnection::answering(uint64_t seq) const {
  return seq == request_seq_ && phase_ == Phase::responding && !response_complete_;
}

void HttpConnection::on_respond(uint64_t seq, int status, std::string content_type, std::string body) {
  if (!answering(seq) || streaming_) return;
  respond_now(make_response(status, version_, keep_alive_, std::move(content_type), std::move(body)));
}

void HttpConnection::on_start_events(uint64_t seq) {
  if (!answering(seq) || streaming_) return;
  streaming_ = true;
  // HTTP/1.0 has no chunked encoding: the stream then ends with the connection.
  chunked_ = version_ >= 11;
  if (!chunked_) keep_alive_ = false;
  http::response<http::empty_body> res{http::status::ok, version_};
  res.set(http::field::server, kServerName);
  res.set(http::field::content_type, "text/event-stream");
  res.set(http::field::cache_control, "no-cache");
  res.set("X-Accel-Buffering", "no");  // tells nginx-style proxies not to hold events back
  res.keep_alive(keep_alive_);
  if (chunked_) res.chunked(true);
  enqueue(to_wire(res.base()));
}

void HttpConnection::on_send_event(uint64_t seq, const std::string& data) {
  if (!answering(seq) || !streaming_) return;
  std::string bytes = chunked_ ? http_chunk(sse_event(data)) : sse_event(data);
  if (out_bytes_ + bytes.size() > ctx_->limits.ws_send_queue_bytes) {
    log_net("SSE " + remote_ + ": client too slow (" + std::to_string(out_bytes_) + " bytes unsent), closing");
    return close_now();
  }
  enqueue(std::move(bytes));
}

void HttpConnection::on_finish(uint64_t seq) {
  if (!answering(seq)) return;
  if (!streaming_) on_start_events(seq);  // finish() alone: an empty event stream
  if (chunked_) {
    response_complete_ = true;
    return enqueue("0\r\n\r\n");
  }
  complete_response();
}

void HttpConnection::on_register_disconnect(uint64_t seq, std::function<void()> callback) {
  if (seq != request_seq_ || disconnect_fired_) return;
  if (client_gone_) {
    // The client left before the backend asked: tell it now.
    on_disconnect_ = std::move(callback);
    return client_gone();
  }
  if (phase_ == Phase::responding && !response_complete_) on_disconnect_ = std::move(callback);
}

void HttpConnection::on_abandon(uint64_t seq) {
  if (!answering(seq)) return;
  if (streaming_) return on_finish(seq);
  log_net("http " + remote_ + ": the backend dropped a request without answering");
  on_respond(seq, 500, "application/json", error_json("internal_error", "the service did not answer"));
}

// ---- Writing ----

void HttpConnection::begin_response() {
  phase_ = Phase::responding;
  request_timer_.cancel();
  streaming_ = false;
  chunked_ = true;
  response_complete_ = false;
  linger_ = false;
  on_disconnect_ = nullptr;
  client_gone_ = false;
  disconnect_fired_ = false;
}

void HttpConnection::complete_response() {
  response_complete_ = true;
  if (!writing_ && out_.empty()) after_response();
}

void HttpConnection::enqueue(std::string bytes) {
  if (phase_ == Phase::closed) return;
  out_bytes_ += bytes.size();
  out_.push_back(std::move(bytes));
  if (!writing_) write_next();
}

void HttpConnection::write_next() {
  writing_ = true;
  // Only the write's timer changes here: a pending disconnect watch keeps its (no) deadline.
  stream_.expires_after(ctx_->limits.write_stall_timeout);
  net::async_write(stream_, net::buffer(out_.front()),
                   [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_write(ec, n); });
}

void HttpConnection::on_write(beast::error_code ec, std::size_t) {
  writing_ = false;
  if (phase_ == Phase::closed) return;
  if (ec) {
    if (ec == beast::error::timeout) log_net("http " + remote_ + ": write stalled, closing");
    return close_now();
  }
  out_bytes_ -= out_.front().size();
  out_.pop_front();
  if (!out_.empty()) return write_next();
  if (response_complete_) after_response();
}

void HttpConnection::after_response() {
  if (linger_) return linger_close();
  if (!keep_alive_) {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    return close_now();
  }
  if (watching_) {
    // The watch read has no deadline; trade it for a request read that has one.
    read_after_watch_ = true;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    return;
  }
  read_request();
}

// ---- Disconnect watch ----

void HttpConnection::watch_for_disconnect() {
  if (watching_ || phase_ != Phase::responding) return;
  // A pipelining client's next request collects in buffer_; beyond this we stop reading
  // (and so stop noticing a disconnect) until the current response is done.
  const std::size_t cap = ctx_->limits.max_http_header_bytes + ctx_->limits.max_http_body_bytes;
  if (buffer_.size() >= cap) return;
  watching_ = true;
  stream_.expires_never();
  stream_.async_read_some(buffer_.prepare(4096),
                          [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_watch(ec, n); });
}

void HttpConnection::on_watch(beast::error_code ec, std::size_t bytes) {
  watching_ = false;
  if (phase_ == Phase::closed || phase_ == Phase::upgraded) return;
  if (!ec) buffer_.commit(bytes);
  if (read_after_watch_) {
    read_after_watch_ = false;
    if (!ec || ec == net::error::operation_aborted) return read_request();
    return close_now();  // the client closed right after its response: done
  }
  if (ec) return close_now();  // EOF or error while answering: the client is gone
  watch_for_disconnect();
}

void HttpConnection::client_gone() {
  client_gone_ = true;
  if (!on_disconnect_ || disconnect_fired_) return;
  disconnect_fired_ = true;
  auto callback = std::move(on_disconnect_);
  on_disconnect_ = nullptr;
  try {
    callback();
  } catch (const std::exception& e) {
    log_net(std::string("on_disconnect callback threw: ") + e.what());
  } catch (...) {
    log_net("on_disconnect callback threw");
  }
}

// ---- Closing ----

void HttpConnection::linger_close() {
  phase_ = Phase::lingering;
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream_.expires_after(kLingerTimeout);
  drain();
}

void HttpConnection::drain() {
  stream_.async_read_some(net::buffer(drain_buffer_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
    if (self->phase_ != Phase::lingering) return;
    if (ec) return self->close_now();
    self->drain();
  });
}

void HttpConnection::close_now() {
  if (phase_ == Phase::closed || phase_ == Phase::upgraded) return;
  const bool unanswered = phase_ == Phase::responding && !response_complete_;
  phase_ = Phase::closed;
  closed_.store(true, std::memory_order_release);
  request_timer_.cancel();
  stream_.close();
  out_.clear();
  out_bytes_ = 0;
  if (unanswered) client_gone();
  on_disconnect_ = nullptr;  // may hold the responder: break the cycle
  slot_.release();
}

// ---- Turning away a connection over the limit ----

namespace {

class BusyRejection : public Closable, public std::enable_shared_from_this<BusyRejection> {
 public:
  BusyRejection(std::shared_ptr<NetContext> ctx, tcp::socket socket, ConnectionSlot slot)
      : ctx_(std::move(ctx)), slot_(std::move(slot)), stream_(std::move(socket)), strand_(stream_.get_executor()) {}

  void start() {
    slot_.attach(weak_from_this());
    auto res = make_response(503, 11, false, "application/json",
                             error_json("server_busy", "too many open connections; try again later"));
    res.set(http::field::retry_after, "1");
    response_ = to_wire(res);
    net::dispatch(strand_, [self = shared_from_this()] {
      self->stream_.expires_after(kLingerTimeout);
      net::async_write(self->stream_, net::buffer(self->response_), [self](beast::error_code ec, std::size_t) {
        if (ec) return self->close();
        beast::error_code ignored;
        self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        self->stream_.expires_after(kLingerTimeout);
        self->drain();
      });
    });
  }

  void shutdown() override {
    net::post(strand_, [self = shared_from_this()] { self->close(); });
  }

 private:
  void drain() {
    stream_.async_read_some(net::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      self->drain();
    });
  }
  void close() {
    stream_.close();
    slot_.release();
  }

  const std::shared_ptr<NetContext> ctx_;
  ConnectionSlot slot_;
  beast::tcp_stream stream_;
  const HttpConnection::Strand strand_;
  std::string response_;
  std::array<char, 1024> scratch_{};
};

}  // namespace

void turn_away_busy(std::shared_ptr<NetContext> ctx, tcp::socket socket) {
  ConnectionSlot slot = ctx->registry.admit_uncounted();
  if (!slot) return;  // shutting down: the socket closes as it goes out of scope
  std::make_shared<BusyRejection>(std::move(ctx), std::move(socket), std::move(slot))->start();
}

}  // namespace ultraserve
