#pragma once
// One WebSocket connection on the streaming endpoint. Inbound text frames go to the backend's
// WsHandler; outbound events queue here (not as rendered frames) so that deltas of one request
// waiting behind a slow socket merge into one frame, and are rendered only when their write
// starts. One write at a time, all on the connection's strand.
//
// Bounds: queued bytes over NetLimits::ws_send_queue_bytes without a break for
// ws_send_overflow_grace -> close 1008 "client too slow"; a write not done within
// write_stall_timeout -> socket closed; nothing from the peer for idle_timeout (Beast pings at
// half of it) -> socket closed; a message over max_ws_frame_bytes -> Beast sends close 1009;
// invalid UTF-8 in a text message -> Beast sends close 1007. In the last two cases Beast has
// already sent its close frame when our read completes, so no error event can precede it.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "net/connection_registry.h"
#include "net/outbound_event.h"
#include "net/service.h"

namespace ultraserve {

struct NetContext;

class WsConnection : public WsSink, public Closable, public std::enable_shared_from_this<WsConnection> {
 public:
  using Strand = boost::asio::any_io_executor;  // the socket's own strand
  using UpgradeRequest = boost::beast::http::request<boost::beast::http::string_body>;

  // `stream` is the HTTP connection's, already on its strand; `slot` its registry entry.
  WsConnection(std::shared_ptr<NetContext> ctx, boost::beast::tcp_stream stream, ConnectionSlot slot);
  ~WsConnection() override;

  // Answers the upgrade request already read by the HTTP connection, then serves frames.
  void run(UpgradeRequest request);

  // WsSink: thread-safe, never block; no-ops once the connection is closed.
  void send(OutboundEvent event) override;
  void close(bool policy_violation = false) override;

  // Closable (HttpServer::stop): close 1001 "going away", then the socket after shutdown_grace.
  void shutdown() override;

 private:
  enum class State { handshaking, open, closing, closed };

  void on_accept(boost::beast::error_code ec);
  void read_next();
  void on_read(boost::beast::error_code ec, std::size_t bytes);

  void enqueue(OutboundEvent event);
  void write_next();
  void on_write(boost::beast::error_code ec, std::size_t bytes);
  void watch_write_stall();
  void on_stall_timer(boost::beast::error_code ec);
  void update_overflow();
  void on_overflow_timer(boost::beast::error_code ec);

  void request_close(boost::beast::websocket::close_reason reason);  // after the queue drains
  void start_close(boost::beast::websocket::close_reason reason);
  void on_shutdown();
  void teardown(boost::beast::error_code ec);

  const std::shared_ptr<NetContext> ctx_;
  ConnectionSlot slot_;
  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  const Strand strand_;
  const std::string remote_;
  boost::beast::flat_buffer read_buffer_;
  std::shared_ptr<WsHandler> handler_;
  State state_ = State::handshaking;
  std::atomic<bool> closed_{false};  // lets send() on other threads skip posting

  // Outbound. queued_bytes_ counts every event not yet fully written, the one in flight too.
  std::deque<OutboundEvent> queue_;  // not yet started; deltas here may still merge
  std::string frame_;                // the frame being written
  std::size_t frame_estimate_ = 0;   // its share of queued_bytes_
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool close_pending_ = false;  // close() was asked for: close once the queue drains
  boost::beast::websocket::close_reason pending_reason_;

  // The stall and overflow timers are not re-armed or cancelled per frame: each records when
  // its condition began, and a timer that fires checks the condition again and, if it still
  // holds but has not lasted long enough, waits for the rest.
  using Clock = std::chrono::steady_clock;
  boost::asio::steady_timer stall_timer_;
  bool stall_timer_armed_ = false;
  Clock::time_point write_started_;
  boost::asio::steady_timer overflow_timer_;
  bool overflow_timer_armed_ = false;
  bool over_bound_ = false;
  Clock::time_point over_bound_since_;
  boost::asio::steady_timer shutdown_timer_;
};

// Bytes an event is charged against ws_send_queue_bytes: close to its rendered size without
// rendering it, and additive under OutboundEvent::merge.
std::size_t estimated_frame_bytes(const OutboundEvent& event);

}  // namespace ultraserve
