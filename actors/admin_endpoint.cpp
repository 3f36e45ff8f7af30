#include "actors/admin_endpoint.h"

#include <arpa/inet.h>

#include <stdexcept>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/admin_actor.h"
#include "actors/admin_protocol.h"

namespace ultraserve {

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

std::string check_admin_settings(const AdminSettings& s) {
  if (!s.publish) return {};
  const AdminTls& tls = s.tls;
  if (tls.enabled() && (tls.certificate.empty() || tls.key.empty() || tls.ca.empty()))
    return "admin TLS needs all of --admin-tls-certificate, --admin-tls-key and --admin-tls-ca";
  if (!tls.enabled() && !is_loopback_host(s.host))
    return "--admin-host " + (s.host.empty() ? std::string("''") : s.host) +
           " is not a loopback address, and the admin console's transport (CAF's BASP) is neither encrypted nor "
           "authenticated: configure TLS (--admin-tls-certificate, --admin-tls-key, --admin-tls-ca) or keep "
           "127.0.0.1 and reach it through an SSH tunnel";
  return {};
}

void configure_admin_transport(caf::actor_system_config& config, const AdminTls& tls) {
  add_admin_types(config);
  config.load<caf::io::middleman>();
  if (!tls.enabled()) return;
  config.openssl_certificate = tls.certificate;
  config.openssl_key = tls.key;
  config.openssl_cafile = tls.ca;
  config.load<caf::openssl::manager>();
}

AdminEndpoint::AdminEndpoint(caf::actor_system& system, const Server& server, const AdminSettings& settings,
                             std::string token, std::function<void()> on_drained)
    : system_(system), token_(std::move(token)) {
  AdminContext ctx = admin_context_of(server);
  ctx.token = token_;
  ctx.on_drained = std::move(on_drained);
  actor_ = spawn_admin(system_, std::move(ctx));
  if (!settings.publish) return;
  const char* host = settings.host.c_str();
  auto bound = settings.tls.enabled() ? caf::openssl::publish(actor_, settings.port, host, true)
                                      : system_.middleman().publish(actor_, settings.port, host, true);
  if (!bound) {
    caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
    throw std::runtime_error("cannot publish the admin console on " + settings.host + ":" +
                             std::to_string(settings.port) + ": " + system_.render(bound.error()));
  }
  port_ = *bound;
  tls_ = settings.tls.enabled();
}

AdminEndpoint::~AdminEndpoint() {
  if (port_ != 0) {
    // (caf::openssl::unpublish does not compile against 0.17.6: its manager takes the same
    // message as the plain middleman's, sent here directly.)
    if (tls_) caf::anon_send(system_.openssl_manager().actor_handle(), caf::unpublish_atom::value, actor_.address(), port_);
    else system_.middleman().unpublish(actor_, port_);
  }
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

}  // namespace ultraserve
