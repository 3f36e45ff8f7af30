#pragma once
// The network front door: listens, accepts each connection onto a strand of its own and serves
// HTTP/1.1 and WebSocket on `io_threads` threads. Knows nothing of CAF: everything that needs
// the model goes to the ServiceBackend.
//
//   HttpServer server(limits, backend);
//   uint16_t port = server.start();   // throws std::runtime_error naming host:port
//   ...
//   server.stop();                    // or let the destructor do it
//
// A server runs once: start() after stop() throws. Sinks and responders the backend still holds
// after stop() stay safe to call (they do nothing).

#include <cstdint>
#include <memory>

#include "net/net_limits.h"
#include "net/service.h"

namespace ultraserve {

class HttpServer {
 public:
  HttpServer(NetLimits limits, std::shared_ptr<ServiceBackend> backend);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts the io threads; returns the bound port (the OS's pick when the
  // configured port is 0).
  uint16_t start();

  // Stops accepting, closes every connection (WebSockets with 1001 "going away", given
  // NetLimits::shutdown_grace to finish the close handshake) and joins the io threads.
  // Idempotent; thread-safe; must not be called from an io thread (a backend callback).
  void stop();

  // Open TCP connections (HTTP and WebSocket), as last reported to the backend.
  int open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ultraserve
