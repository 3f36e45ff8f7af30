#include "tools/ultraserve/admin_client.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

namespace ultraserve {

AdminClient::AdminClient(caf::actor_system& system, std::string where, Connector connect, std::string token,
                         caf::timespan timeout)
    : system_(system), where_(std::move(where)), connect_(std::move(connect)), token_(std::move(token)),
      timeout_(timeout) {}

AdminReply AdminClient::call(const std::vector<std::string>& words) {
  if (!admin_) {
    auto connected = connect_();
    if (!connected) return admin_error("cannot reach the server at " + where_ + ": " + system_.render(connected.error()));
    admin_ = std::move(*connected);
  }
  // A plain send, answered by a plain message, rather than a request: CAF drops messages to
  // the proxy of a server whose connection closed, so a request would wait out its timeout,
  // while the monitor's down message says at once that the server is gone. A fresh actor per
  // call keeps a late answer to an earlier call from being taken for this one's.
  AdminReply reply;
  auto lost = [&](const std::string& why) {
    admin_ = nullptr;
    reply = admin_error("lost the server at " + where_ + " (" + why + "); the next command tries to reconnect");
  };
  caf::scoped_actor self{system_};
  self->monitor(admin_);
  self->send(admin_, admin_atom::value, AdminCommand{token_, words});
  self->receive([&](AdminReply& r) { reply = std::move(r); },
                [&](const caf::down_msg& down) { lost(system_.render(down.reason)); },
                [&](const caf::error& err) { lost(system_.render(err)); },
                caf::after(timeout_) >> [&] { lost("no answer within --timeout"); });
  return reply;
}

AdminClient::Connector remote_admin(caf::actor_system& system, std::string host, uint16_t port, bool tls) {
  return [&system, host, port, tls]() -> caf::expected<caf::actor> {
    if (tls) return caf::openssl::remote_actor(system, host, port);
    return system.middleman().remote_actor(host, port);
  };
}

}  // namespace ultraserve
