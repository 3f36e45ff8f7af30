#include "net/http_server.h"

#include "net/file_descriptors.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "net/http_connection.h"
#include "net/net_context.h"
#include "net/net_log.h"

namespace ultraserve {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

namespace {

// How long accept() waits before trying again after an error such as EMFILE (out of file
// descriptors), so that the acceptor does not spin.
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);

std::string host_port(const std::string& host, uint16_t port) {
  const bool ipv6 = host.find(':') != std::string::npos;
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

struct HttpServer::Impl {
  Impl(NetLimits limits, std::shared_ptr<ServiceBackend> backend)
      : ctx(std::make_shared<NetContext>(std::move(limits), std::move(backend))),
        acceptor(net::make_strand(ctx->ioc)),
        retry_timer(acceptor.get_executor()) {}

  uint16_t listen();
  void accept_next();
  void on_accept(error_code ec, tcp::socket socket);
  void run_io_thread();

  std::shared_ptr<NetContext> ctx;  // declared first: the acceptor and timer die before the io_context
  tcp::acceptor acceptor;
  net::steady_timer retry_timer;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::atomic<bool> stopping{false};
  error_code last_accept_error;

  std::mutex lifecycle;  // start() and stop()
  bool started = false;
  bool stopped = false;
  std::vector<std::thread> threads;
  std::mutex threads_mutex;
  std::condition_variable threads_done;
  std::size_t threads_running = 0;
};

uint16_t HttpServer::Impl::listen() {
  const NetLimits& limits = ctx->limits;
  const std::string where = host_port(limits.host, limits.port);
  error_code ec;
  auto fail = [&](const std::string& what) {
    error_code ignored;
    acceptor.close(ignored);
    throw std::runtime_error("HttpServer: cannot listen on " + where + ": " + what);
  };

  tcp::endpoint endpoint;
  const auto address = net::ip::make_address(limits.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, limits.port);
  } else {
    tcp::resolver resolver(ctx->ioc);
    const auto results = resolver.resolve(limits.host, std::to_string(limits.port), ec);
    if (ec || results.empty()) fail("cannot resolve the host: " + (ec ? ec.message() : std::string("no address")));
    endpoint = results.begin()->endpoint();
  }

  acceptor.open(endpoint.protocol(), ec);
  if (ec) fail(ec.message());
  acceptor.set_option(net::socket_base::reuse_address(true), ec);  // rebinding past TIME_WAIT
  acceptor.bind(endpoint, ec);
  if (ec) fail(ec.message());
  acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) fail(ec.message());
  const uint16_t port = acceptor.local_endpoint(ec).port();
  if (ec) fail(ec.message());
  return port;
}

void HttpServer::Impl::accept_next() {
  // Each connection gets a strand of its own: its handlers never run concurrently, whatever
  // the number of io threads.
  acceptor.async_accept(net::make_strand(ctx->ioc),
                        [this](error_code ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
}

void HttpServer::Impl::on_accept(error_code ec, tcp::socket socket) {
  if (ec) {
    if (ec == net::error::operation_aborted || stopping.load() || !acceptor.is_open()) return;
    if (ec != last_accept_error) log_net("accept failed: " + ec.message() + " (retrying)");
    last_accept_error = ec;
    retry_timer.expires_after(kAcceptRetryDelay);
    retry_timer.async_wait([this](error_code ec) {
      if (!ec && !stopping.load()) accept_next();
    });
    return;
  }
  last_accept_error = {};
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);  // a token is a few bytes: send it now
  if (ConnectionSlot slot = ctx->registry.admit()) {
    std::make_shared<HttpConnection>(ctx, std::move(socket), std::move(slot))->start();
  } else if (!stopping.load()) {
    turn_away_busy(ctx, std::move(socket));
  }
  accept_next();
}

void HttpServer::Impl::run_io_thread() {
  // A handler that throws unwinds out of run(); the io_context may be run again at once, and
  // the other connections are unaffected.
  for (;;) {
    try {
      ctx->ioc.run();
      break;
    } catch (const std::exception& e) {
      log_net(std::string("io thread caught: ") + e.what());
    } catch (...) {
      log_net("io thread caught an unknown exception");
    }
  }
  {
    std::lock_guard lock(threads_mutex);
    --threads_running;
  }
  threads_done.notify_all();
}

HttpServer::HttpServer(NetLimits limits, std::shared_ptr<ServiceBackend> backend)
    : impl_(std::make_unique<Impl>(std::move(limits), std::move(backend))) {}

HttpServer::~HttpServer() { stop(); }

uint16_t HttpServer::start() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle);
  if (s.started || s.stopped) throw std::logic_error("HttpServer::start: a server starts once");
  ensure_file_descriptors(s.ctx->limits.max_connections);
  const uint16_t port = s.listen();
  s.started = true;
  s.work.emplace(s.ctx->ioc.get_executor());
  net::dispatch(s.acceptor.get_executor(), [&s] { s.accept_next(); });
  const std::size_t n = std::max<std::size_t>(1, s.ctx->limits.io_threads);
  s.threads_running = n;
  for (std::size_t i = 0; i < n; ++i) s.threads.emplace_back([&s] { s.run_io_thread(); });
  return port;
}

void HttpServer::stop() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle);
  if (s.stopped) return;
  s.stopped = true;
  if (!s.started) return;

  s.stopping.store(true);
  net::post(s.acceptor.get_executor(), [&s] {
    error_code ignored;
    s.acceptor.close(ignored);
    s.retry_timer.cancel();
  });
  s.ctx->registry.shutdown_all();
  s.work.reset();  // the threads return once the last connection has closed

  {
    std::unique_lock threads_lock(s.threads_mutex);
    const auto limit = s.ctx->limits.shutdown_grace + std::chrono::seconds(2);
    if (!s.threads_done.wait_for(threads_lock, limit, [&s] { return s.threads_running == 0; })) {
      log_net("stop: connections still open after the shutdown grace; stopping the io threads");
      s.ctx->ioc.stop();
    }
  }
  for (auto& thread : s.threads) thread.join();
  s.threads.clear();
}

int HttpServer::open_connections() const { return impl_->ctx->registry.open_connections(); }

}  // namespace ultraserve
