#pragma once
// What every connection shares with the server. Connections hold it by shared_ptr, so the
// io_context outlives every socket, timer and strand created on it even when the backend keeps
// a WsSink or HttpResponder after HttpServer is gone (a destroyed strand or socket must never
// reach back into a destroyed io_context).

#include <memory>
#include <utility>

#include <boost/asio/io_context.hpp>

#include "net/connection_registry.h"
#include "net/net_limits.h"
#include "net/service.h"

namespace ultraserve {

struct NetContext {
  NetContext(NetLimits limits_in, std::shared_ptr<ServiceBackend> backend_in)
      : limits(std::move(limits_in)),
        backend(std::move(backend_in)),
        ioc(static_cast<int>(limits.io_threads == 0 ? 1 : limits.io_threads)),
        registry(limits.max_connections, [b = backend.get()](int n) { b->on_connection_count(n); }) {}

  const NetLimits limits;
  const std::shared_ptr<ServiceBackend> backend;
  boost::asio::io_context ioc;
  ConnectionRegistry registry;
};

}  // namespace ultraserve
