#pragma once
// The client side of the admin protocol: sends a command's words with the token and waits for
// the reply. The admin actor is remote (`ultraserve admin`, through the middleman) or in this
// process (`serve --shell`); either way a lost connection is reported as a reply, and the next
// command connects again, so a shell outlives the server it talks to.

#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <caf/timespan.hpp>

#include "actors/admin_endpoint.h"
#include "actors/admin_protocol.h"

namespace ultraserve {

class AdminClient {
 public:
  using Connector = std::function<caf::expected<caf::actor>()>;

  // `where` names the server in messages ("127.0.0.1:8081", "this server").
  AdminClient(caf::actor_system& system, std::string where, Connector connect, std::string token,
              caf::timespan timeout);

  AdminReply call(const std::vector<std::string>& words);
  const std::string& where() const { return where_; }

 private:
  caf::actor_system& system_;
  std::string where_;
  Connector connect_;
  std::string token_;
  caf::timespan timeout_;
  caf::actor admin_;  // null while not connected
};

// A connector to the admin actor published at host:port (over TLS when `tls` is enabled).
AdminClient::Connector remote_admin(caf::actor_system& system, std::string host, uint16_t port, bool tls);

}  // namespace ultraserve
