#pragma once
// Blocking Beast clients for the integration tests: a WebSocket client that speaks the
// streaming protocol, and a one-shot HTTP request.

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <simdjson.h>

#include <map>
#include <string>
#include <vector>

namespace ultraserve::testing {

namespace beast = boost::beast;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct HttpReply {
  int status = 0;
  std::string content_type, body;
};

inline HttpReply http_request(uint16_t port, const std::string& method, const std::string& target,
                              const std::string& body = "", const std::string& content_type = "application/json") {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  beast::http::request<beast::http::string_body> req{beast::http::string_to_verb(method), target, 11};
  req.set(beast::http::field::host, "127.0.0.1");
  if (!body.empty()) req.set(beast::http::field::content_type, content_type);
  req.body() = body;
  req.prepare_payload();
  beast::http::write(stream, req);
  beast::flat_buffer buffer;
  beast::http::response<beast::http::string_body> res;
  beast::http::read(stream, buffer, res);
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return {static_cast<int>(res.result_int()), std::string(res[beast::http::field::content_type]), res.body()};
}

// One parsed server message.
struct WsEvent {
  std::string type, id, text, finish_reason, code, message;
  std::vector<int32_t> tokens;
  int completion_tokens = 0;
  double acceptance = 0;  // usage.acceptance_length (speculative requests)
};

class WsClient {
 public:
  explicit WsClient(uint16_t port, const std::string& path = "/v1/stream") : ws_(ioc_) {
    auto& socket = beast::get_lowest_layer(ws_);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    ws_.handshake("127.0.0.1:" + std::to_string(port), path);
  }
  ~WsClient() {
    beast::error_code ec;
    ws_.close(beast::websocket::close_code::normal, ec);
  }

  void send(const std::string& text) { ws_.write(asio::buffer(text)); }
  void send_binary(const std::string& bytes) {
    ws_.binary(true);
    ws_.write(asio::buffer(bytes));
    ws_.text(true);
  }
  WsEvent read() {
    beast::flat_buffer buffer;
    ws_.read(buffer);
    return parse(beast::buffers_to_string(buffer.data()));
  }
  // Reads until the request `id` is done or failed; returns all its events.
  std::vector<WsEvent> read_until_done(const std::string& id) {
    std::vector<WsEvent> events;
    for (;;) {
      WsEvent e = read();
      const bool mine = e.id == id;
      if (mine) events.push_back(e);
      if (mine && (e.type == "done" || e.type == "error")) return events;
    }
  }
  // Reads (and drops) what the server still sends until the connection ends; the close code
  // the server gave (0 if the connection was cut without a close frame).
  uint16_t read_until_closed() {
    beast::error_code ec;
    beast::flat_buffer buffer;
    while (!ec) {
      ws_.read(buffer, ec);
      buffer.clear();
    }
    return ws_.reason().code;
  }
  beast::websocket::stream<beast::tcp_stream>& stream() { return ws_; }

  static WsEvent parse(const std::string& text) {
    simdjson::dom::parser parser;
    simdjson::dom::element root = parser.parse(text);
    WsEvent e;
    auto str = [&](const char* key) {
      std::string_view v;
      return root[key].get(v) ? std::string() : std::string(v);
    };
    e.type = str("type");
    e.id = str("id");
    e.text = str("text");
    e.finish_reason = str("finish_reason");
    e.code = str("code");
    e.message = str("message");
    simdjson::dom::array tokens;
    if (!root["tokens"].get(tokens))
      for (auto t : tokens) e.tokens.push_back(static_cast<int32_t>(int64_t(t)));
    int64_t n;
    if (!root["usage"]["completion_tokens"].get(n)) e.completion_tokens = static_cast<int>(n);
    double tau;
    if (!root["usage"]["acceptance_length"].get(tau)) e.acceptance = tau;
    return e;
  }

 private:
  asio::io_context ioc_;
  beast::websocket::stream<beast::tcp_stream> ws_;
};

}  // namespace ultraserve::testing
