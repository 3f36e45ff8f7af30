#pragma once
// The seam between the network layer (net/: Boost.Beast, Asio threads) and the actor layer
// (actors/: CAF). net/ knows nothing of CAF: it calls a ServiceBackend for everything that
// needs the model, and the backend answers through the sinks below. Every sink method is
// thread-safe and never blocks: implementations post onto their connection's strand.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "net/outbound_event.h"

namespace ultraserve {

// A WebSocket connection, as the session that serves it sees it.
class WsSink {
 public:
  virtual ~WsSink() = default;
  // Queues an event. Pending deltas of one request id merge into one frame. A client that keeps
  // the queue over its byte bound for too long is closed with a policy-violation close code.
  virtual void send(OutboundEvent event) = 0;
  // Closes the connection (close code 1000 unless `policy_violation`) after what is queued.
  virtual void close(bool policy_violation = false) = 0;
};

// The session side of a WebSocket connection: it receives the client's text frames.
class WsHandler {
 public:
  virtual ~WsHandler() = default;
  virtual void on_text(std::string frame) = 0;
  // The connection is gone (client close, error, timeout); called exactly once, last.
  virtual void on_closed() = 0;
};

// One HTTP response, either whole or as a Server-Sent Events stream.
class HttpResponder {
 public:
  virtual ~HttpResponder() = default;
  virtual void respond(int status, std::string content_type, std::string body) = 0;
  // Starts a `text/event-stream` response; then any number of send_event() calls and one finish().
  virtual void start_events() = 0;
  virtual void send_event(std::string data) = 0;  // written as "data: <data>\n\n"
  virtual void finish() = 0;
  // Called (on a network thread) if the client disconnects before the response is complete.
  virtual void on_disconnect(std::function<void()> callback) = 0;
};

struct HttpRequestInfo {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query
  std::string body;
};

class ServiceBackend {
 public:
  virtual ~ServiceBackend() = default;
  // A client completed a WebSocket handshake on the streaming endpoint.
  virtual std::shared_ptr<WsHandler> open_websocket(std::shared_ptr<WsSink> sink) = 0;
  // Any HTTP request that is not a WebSocket upgrade and not the static page.
  virtual void handle_http(HttpRequestInfo request, std::shared_ptr<HttpResponder> responder) = 0;
  // Connection counts for /metrics.
  virtual void on_connection_count(int open_connections) = 0;
};

}  // namespace ultraserve
