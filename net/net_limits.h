#pragma once
// Every bound the network layer enforces, in one place. The defaults suit a server facing
// browsers on a LAN; tests shrink them to milliseconds and kilobytes.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ultraserve {

struct NetLimits {
  using Duration = std::chrono::steady_clock::duration;

  // Where to listen. Port 0 asks the OS for a free port; HttpServer::start() returns it.
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  // Threads running the io_context. Each connection is served on its own strand, so one is
  // enough for thousands of token streams; more only help with many busy connections.
  std::size_t io_threads = 1;

  // Open TCP connections (HTTP and WebSocket alike). One more is answered 503 and closed.
  std::size_t max_connections = 10000;

  // HTTP request bounds: a larger body is answered 413, a larger header block 431.
  std::size_t max_http_body_bytes = 1 << 20;
  std::size_t max_http_header_bytes = 16 << 10;
  // Time to receive one request's headers and body; also how long an idle keep-alive
  // connection waits for its next request, and the WebSocket handshake/close timeout.
  Duration http_request_timeout = std::chrono::seconds(30);

  // Largest WebSocket message accepted (Beast's read_message_max). A token protocol needs
  // little; Beast's 16 MB default would let one client pin 16 MB per connection.
  std::size_t max_ws_frame_bytes = 64 << 10;
  // Outbound bytes one connection may hold (WebSocket queue, or an SSE stream's buffered
  // events). WebSocket: over it for `ws_send_overflow_grace` without a break -> close 1008
  // "client too slow". SSE: over it -> the stream is closed at once.
  std::size_t ws_send_queue_bytes = 1 << 20;
  Duration ws_send_overflow_grace = std::chrono::seconds(2);
  // A socket write that does not complete in this time closes the connection: the idle
  // timeout only notices silence from the peer, not a peer that stopped reading.
  Duration write_stall_timeout = std::chrono::seconds(10);
  // No frames from the peer (pings and pongs count) for this long closes a WebSocket.
  // Beast pings at half this time, so a live browser tab answers and stays connected.
  Duration idle_timeout = std::chrono::seconds(300);
  // The WebSocket endpoint; an upgrade request anywhere else is answered 404.
  std::string ws_path = "/v1/stream";

  // HttpServer::stop(): how long open WebSockets get to finish the close handshake
  // (1001 going away) before their sockets are closed.
  Duration shutdown_grace = std::chrono::seconds(1);
};

}  // namespace ultraserve
