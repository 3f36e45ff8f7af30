#include "net/ws_connection.h"

#include <exception>
#include <utility>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket/error.hpp>

#include "net/net_context.h"
#include "net/net_log.h"

namespace ultraserve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {

constexpr std::size_t kFrameOverheadBytes = 64;  // JSON keys, quotes, type name
constexpr std::size_t kBytesPerToken = 16;       // a token id in a JSON array, generously

// Closes that need no log line: the peer left, or we closed it ourselves.
bool is_ordinary_end(const beast::error_code& ec) {
  return ec == websocket::error::closed || ec == net::error::eof || ec == net::error::operation_aborted ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe || ec == net::error::not_connected;
}

std::string remote_of(const beast::tcp_stream& stream) {
  beast::error_code ec;
  const auto endpoint = stream.socket().remote_endpoint(ec);
  if (ec) return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

OutboundEvent binary_frame_error() {
  OutboundEvent event;
  event.kind = OutboundEvent::Kind::error;
  event.code = "invalid_frame";
  event.message = "binary frames are not accepted; send JSON text";
  return event;
}

}  // namespace

std::size_t estimated_frame_bytes(const OutboundEvent& event) {
  return kFrameOverheadBytes + event.id.size() + event.text.size() + kBytesPerToken * event.tokens.size() +
         event.finish_reason.size() + event.code.size() + event.message.size();
}

WsConnection::WsConnection(std::shared_ptr<NetContext> ctx, beast::tcp_stream stream, ConnectionSlot slot)
    : ctx_(std::move(ctx)),
      slot_(std::move(slot)),
      ws_(std::move(stream)),
      strand_(ws_.get_executor()),
      remote_(remote_of(ws_.next_layer())),
      stall_timer_(strand_),
      overflow_timer_(strand_),
      shutdown_timer_(strand_) {}

WsConnection::~WsConnection() {
  // Only reached with a handler when the io_context stopped before this connection could
  // end on its strand: the backend must still hear that it is gone.
  if (auto handler = std::move(handler_)) {
    try {
      handler->on_closed();
    } catch (...) {
    }
  }
}

void WsConnection::run(UpgradeRequest request) {
  net::dispatch(strand_, [self = shared_from_this(), request = std::move(request)]() mutable {
    self->slot_.attach(self->weak_from_this());
    const NetLimits& limits = self->ctx_->limits;
    auto& ws = self->ws_;
    // Beast's websocket timeouts replace the TCP stream's; both at once would fight.
    beast::get_lowest_layer(ws).expires_never();
    websocket::stream_base::timeout timeouts;
    timeouts.handshake_timeout = limits.http_request_timeout;  // also bounds the close handshake
    timeouts.idle_timeout = limits.idle_timeout;
    timeouts.keep_alive_pings = true;
    ws.set_option(timeouts);
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(beast::http::field::server, "ultraserve"); }));
    websocket::permessage_deflate no_compression;  // token frames are tiny; each deflate stream costs ~136 KiB
    no_compression.server_enable = false;
    no_compression.client_enable = false;
    ws.set_option(no_compression);
    ws.read_message_max(limits.max_ws_frame_bytes);
    ws.auto_fragment(false);
    ws.async_accept(request, [self](beast::error_code ec) { self->on_accept(ec); });
  });
}

// ---- Inbound ----

void WsConnection::on_accept(beast::error_code ec) {
  if (ec) return teardown(ec);  // Beast has answered a bad upgrade with 400 where it could
  if (state_ != State::handshaking) return;
  state_ = State::open;
  try {
    handler_ = ctx_->backend->open_websocket(shared_from_this());
  } catch (const std::exception& e) {
    log_net("ws " + remote_ + ": open_websocket threw: " + e.what());
  } catch (...) {
    log_net("ws " + remote_ + ": open_websocket threw");
  }
  if (!handler_) start_close(websocket::close_reason(websocket::close_code::internal_error, "service unavailable"));
  read_next();  // also while closing: the peer's close frame arrives through it
}

void WsConnection::read_next() {
  ws_.async_read(read_buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_read(ec, n); });
}

void WsConnection::on_read(beast::error_code ec, std::size_t) {
  if (ec) return teardown(ec);
  if (state_ == State::closed) return;
  const bool accepting = state_ == State::open && !close_pending_;
  if (!ws_.got_text()) {
    read_buffer_.consume(read_buffer_.size());
    if (accepting) enqueue(binary_frame_error());
    return read_next();
  }
  std::string frame = beast::buffers_to_string(read_buffer_.data());
  read_buffer_.consume(read_buffer_.size());
  if (accepting && handler_) {
    try {
      handler_->on_text(std::move(frame));
    } catch (const std::exception& e) {
      log_net("ws " + remote_ + ": on_text threw: " + e.what());
    } catch (...) {
      log_net("ws " + remote_ + ": on_text threw");
    }
  }
  read_next();
}

// ---- Outbound ----

void WsConnection::send(OutboundEvent event) {
  if (closed_.load(std::memory_order_acquire)) return;
  // A weak reference: an event posted after the connection ended must not keep it alive.
  net::post(strand_, [weak = weak_from_this(), event = std::move(event)]() mutable {
    if (auto self = weak.lock()) self->enqueue(std::move(event));
  });
}

void WsConnection::close(bool policy_violation) {
  if (closed_.load(std::memory_order_acquire)) return;
  auto reason = policy_violation ? websocket::close_reason(websocket::close_code::policy_error, "policy violation")
                                 : websocket::close_reason(websocket::close_code::normal);
  net::post(strand_, [weak = weak_from_this(), reason] {
    if (auto self = weak.lock()) self->request_close(reason);
  });
}

void WsConnection::enqueue(OutboundEvent event) {
  if (state_ != State::open || close_pending_) return;
  if (event.kind == OutboundEvent::Kind::delta) {
    // Merge into the latest waiting event of this request, if that is a delta; anything else
    // in between (an error, a done) keeps its place and the delta queues after it.
    for (auto it = queue_.rbegin(); it != queue_.rend(); ++it) {
      if (it->id != event.id) continue;
      if (it->kind == OutboundEvent::Kind::delta) {
        queued_bytes_ += event.text.size() + kBytesPerToken * event.tokens.size();
        it->merge(event);
        return update_overflow();
      }
      break;
    }
  }
  queued_bytes_ += estimated_frame_bytes(event);
  queue_.push_back(std::move(event));
  update_overflow();
  if (!writing_) write_next();
}

void WsConnection::write_next() {
  while (!queue_.empty()) {
    OutboundEvent event = std::move(queue_.front());
    queue_.pop_front();
    const std::size_t estimate = estimated_frame_bytes(event);
    try {
      frame_ = render_ws_event(event);
    } catch (const std::exception& e) {
      log_net("ws " + remote_ + ": cannot render an event: " + e.what());
      queued_bytes_ -= estimate;
      continue;
    }
    frame_estimate_ = estimate;
    writing_ = true;
    watch_write_stall();
    ws_.text(true);
    ws_.async_write(net::buffer(frame_),
                    [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_write(ec, n); });
    return;
  }
  update_overflow();
  if (close_pending_) start_close(pending_reason_);
}

void WsConnection::on_write(beast::error_code ec, std::size_t) {
  writing_ = false;
  queued_bytes_ -= frame_estimate_;
  frame_estimate_ = 0;
  if (frame_.capacity() > (64u << 10)) std::string().swap(frame_);  // do not keep a burst's memory
  else frame_.clear();
  if (ec) return teardown(ec);
  if (state_ != State::open) return update_overflow();  // closing: Beast's close goes next
  write_next();
}

void WsConnection::watch_write_stall() {
  write_started_ = Clock::now();
  if (stall_timer_armed_) return;  // it will find this write when it fires
  stall_timer_armed_ = true;
  stall_timer_.expires_at(write_started_ + ctx_->limits.write_stall_timeout);
  stall_timer_.async_wait([self = shared_from_this()](beast::error_code ec) { self->on_stall_timer(ec); });
}

void WsConnection::on_stall_timer(beast::error_code ec) {
  stall_timer_armed_ = false;
  if (ec || state_ == State::closed || !writing_) return;
  const auto deadline = write_started_ + ctx_->limits.write_stall_timeout;
  if (Clock::now() >= deadline) {
    log_net("ws " + remote_ + ": a write stalled, closing");
    return teardown(net::error::operation_aborted);  // logged above
  }
  stall_timer_armed_ = true;  // a later write: wait for its deadline
  stall_timer_.expires_at(deadline);
  stall_timer_.async_wait([self = shared_from_this()](beast::error_code ec) { self->on_stall_timer(ec); });
}

void WsConnection::update_overflow() {
  const bool over = queued_bytes_ > ctx_->limits.ws_send_queue_bytes;
  if (over == over_bound_) return;
  over_bound_ = over;
  if (!over) return;  // a timer still armed will find the queue back under its bound
  over_bound_since_ = Clock::now();
  if (overflow_timer_armed_ || state_ != State::open) return;
  overflow_timer_armed_ = true;
  overflow_timer_.expires_at(over_bound_since_ + ctx_->limits.ws_send_overflow_grace);
  overflow_timer_.async_wait([self = shared_from_this()](beast::error_code ec) { self->on_overflow_timer(ec); });
}

void WsConnection::on_overflow_timer(beast::error_code ec) {
  overflow_timer_armed_ = false;
  if (ec || state_ != State::open || !over_bound_) return;
  const auto deadline = over_bound_since_ + ctx_->limits.ws_send_overflow_grace;
  if (Clock::now() < deadline) {
    // The queue dipped under its bound and went over again since this timer was set.
    overflow_timer_armed_ = true;
    overflow_timer_.expires_at(deadline);
    overflow_timer_.async_wait([self = shared_from_this()](beast::error_code ec) { self->on_overflow_timer(ec); });
    return;
  }
  log_net("ws " + remote_ + ": client too slow (" + std::to_string(queued_bytes_) +
          " bytes queued past the grace period), closing 1008");
  // What waits would only reach the client after the close it has earned; drop it.
  queue_.clear();
  queued_bytes_ = frame_estimate_;
  close_pending_ = false;
  start_close(websocket::close_reason(websocket::close_code::policy_error, "client too slow"));
}

// ---- Closing ----

void WsConnection::request_close(websocket::close_reason reason) {
  if (state_ != State::open || close_pending_) return;
  close_pending_ = true;
  pending_reason_ = reason;
  if (!writing_ && queue_.empty()) start_close(reason);
}

void WsConnection::start_close(websocket::close_reason reason) {
  if (state_ != State::open) return;
  state_ = State::closing;
  overflow_timer_.cancel();
  // Beast lets a close start while a write is in flight: it sends the close frame after it.
  // A write that never finishes is ended by the stall timer; a peer that never answers the
  // close by Beast's handshake timeout.
  ws_.async_close(reason, [self = shared_from_this()](beast::error_code ec) {
    self->teardown(ec ? ec : beast::error_code(websocket::error::closed));
  });
}

void WsConnection::shutdown() {
  net::post(strand_, [self = shared_from_this()] { self->on_shutdown(); });
}

void WsConnection::on_shutdown() {
  if (state_ == State::closed) return;
  if (state_ == State::handshaking) return teardown(net::error::operation_aborted);
  if (state_ == State::open) {
    queue_.clear();
    queued_bytes_ = frame_estimate_;
    close_pending_ = false;
    start_close(websocket::close_reason(websocket::close_code::going_away, "server shutting down"));
  }
  shutdown_timer_.expires_after(ctx_->limits.shutdown_grace);
  shutdown_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec) self->teardown(net::error::operation_aborted);
  });
}

void WsConnection::teardown(beast::error_code ec) {
  if (state_ == State::closed) return;
  if (!is_ordinary_end(ec)) log_net("ws " + remote_ + ": closed: " + ec.message());
  state_ = State::closed;
  closed_.store(true, std::memory_order_release);
  overflow_timer_.cancel();
  stall_timer_.cancel();
  shutdown_timer_.cancel();
  queue_.clear();
  // Switching Beast's timeouts off cancels its idle/ping timer, which would otherwise keep
  // the io_context busy (and stop() waiting) for up to half the idle timeout.
  ws_.set_option(websocket::stream_base::timeout{websocket::stream_base::none(), websocket::stream_base::none(), false});
  beast::get_lowest_layer(ws_).close();
  if (auto handler = std::move(handler_)) {
    handler_.reset();
    try {
      handler->on_closed();
    } catch (const std::exception& e) {
      log_net("ws " + remote_ + ": on_closed threw: " + e.what());
    } catch (...) {
      log_net("ws " + remote_ + ": on_closed threw");
    }
  }
  slot_.release();
}

}  // namespace ultraserve
