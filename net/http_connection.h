#pragma once
// One HTTP/1.1 connection: reads requests (keep-alive, bounded header and body), serves the
// page, upgrades to WebSocket on the streaming path, and hands every other request to the
// backend with an HttpResponder that can answer whole or as a Server-Sent Events stream.
//
// Everything runs on the connection's strand. While the backend answers, a read stays
// pending on the socket so that a client that goes away (EOF or error) is noticed at once and
// the backend hears it through on_disconnect.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "net/connection_registry.h"

namespace ultraserve {

struct NetContext;

class HttpConnection : public Closable, public std::enable_shared_from_this<HttpConnection> {
 public:
  // The socket's executor: a strand of its own, made when it was accepted.
  using Strand = boost::asio::any_io_executor;

  // `socket` must have been accepted onto its own strand; `slot` is its registry entry.
  HttpConnection(std::shared_ptr<NetContext> ctx, boost::asio::ip::tcp::socket socket, ConnectionSlot slot);
  void start();
  void shutdown() override;

 private:
  friend class HttpConnectionResponder;
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;
  enum class Phase { reading, responding, lingering, upgraded, closed };

  // Reading a request.
  void read_request();
  void on_header(boost::beast::error_code ec);
  void read_body();
  void on_body(boost::beast::error_code ec);
  void on_read_error(boost::beast::error_code ec);
  void on_request();

  // Answers the server gives itself.
  void fail_request(unsigned status, const char* code, const std::string& message);
  void serve_page(bool head_only);
  void upgrade(Request request);
  void call_backend(Request request);
  void respond_now(Response response);

  // The backend's answer, through HttpConnectionResponder (posted onto the strand).
  bool answering(uint64_t seq) const;
  void on_respond(uint64_t seq, int status, std::string content_type, std::string body);
  void on_start_events(uint64_t seq);
  void on_send_event(uint64_t seq, const std::string& data);
  void on_finish(uint64_t seq);
  void on_register_disconnect(uint64_t seq, std::function<void()> callback);
  void on_abandon(uint64_t seq);

  // Writing and the end of a response.
  void begin_response();
  void complete_response();
  void enqueue(std::string bytes);
  void write_next();
  void on_write(boost::beast::error_code ec, std::size_t bytes);
  void after_response();

  // Noticing a vanished client while the backend answers.
  void watch_for_disconnect();
  void on_watch(boost::beast::error_code ec, std::size_t bytes);
  void client_gone();

  // Closing.
  void linger_close();
  void drain();
  void close_now();

  const std::shared_ptr<NetContext> ctx_;
  ConnectionSlot slot_;
  boost::beast::tcp_stream stream_;
  const Strand strand_;  // kept apart from stream_, which is moved away on upgrade
  const std::string remote_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::chrono::steady_clock::time_point request_deadline_;
  // The request deadline is a timer of its own, not the stream's expiry: an expiring tcp_stream
  // closes the socket, and a client that stalled half-way through a request must still hear 408.
  boost::asio::steady_timer request_timer_;
  bool request_timed_out_ = false;
  Phase phase_ = Phase::reading;
  std::atomic<bool> closed_{false};  // lets responders on other threads skip posting

  // The response being written.
  uint64_t request_seq_ = 0;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool streaming_ = false;          // an SSE header went out
  bool chunked_ = true;             // false only for an HTTP/1.0 event stream
  bool response_complete_ = false;  // every byte of the response is queued
  bool linger_ = false;             // an error answer: drain the request, then close
  std::function<void()> on_disconnect_;
  bool client_gone_ = false;
  bool disconnect_fired_ = false;

  // Disconnect watch: a read that stays pending while the backend answers.
  bool watching_ = false;
  bool read_after_watch_ = false;

  std::deque<std::string> out_;
  std::size_t out_bytes_ = 0;
  bool writing_ = false;
  std::array<char, 4096> drain_buffer_{};
};

// Answers 503 on a connection over max_connections and closes it, without counting it.
void turn_away_busy(std::shared_ptr<NetContext> ctx, boost::asio::ip::tcp::socket socket);

}  // namespace ultraserve
