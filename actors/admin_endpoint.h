#pragma once
// Where the admin console listens: the admin actor of a running server, published through
// CAF's middleman (the same distributed-actor engine multi-node serving will use).
//
// The middleman's BASP protocol has neither encryption nor authentication. The admin actor
// checks a token on every command, and the endpoint binds only loopback addresses unless TLS
// (libcaf_openssl, mutual: both sides present a certificate signed by the given CA) is
// configured, so the token never crosses a network in the clear.

#include <cstdint>
#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/server.h"

namespace ultraserve {

// The files of a TLS identity; all three or none.
struct AdminTls {
  std::string certificate;  // PEM chain this side presents
  std::string key;          // its PEM private key (unencrypted: protect it with file permissions)
  std::string ca;           // PEM CA the peer's certificate must be signed by
  bool enabled() const { return !certificate.empty() || !key.empty() || !ca.empty(); }
};

struct AdminSettings {
  bool publish = true;             // false (--no-admin): no listener; `serve --shell` still works
  std::string host = "127.0.0.1";
  uint16_t port = 8081;            // 0: any free port
  std::string token_file;          // "": default_admin_token_path()
  AdminTls tls;
};

// Why `settings` cannot be used ("" if they can): a non-loopback host without TLS, or half a
// TLS configuration. Checked before the model is loaded, so a mistake costs no time.
std::string check_admin_settings(const AdminSettings& settings);
bool is_loopback_host(const std::string& host);

// Prepares `config` (before its actor_system exists) for the admin protocol: the message
// types, the middleman, and the OpenSSL module with `tls`'s files when it is enabled.
void configure_admin_transport(caf::actor_system_config& config, const AdminTls& tls);

class AdminEndpoint {
 public:
  // Spawns the admin actor for `server` and, when settings.publish, publishes it on
  // settings.host:settings.port. Throws std::runtime_error naming the address when it cannot.
  AdminEndpoint(caf::actor_system& system, const Server& server, const AdminSettings& settings, std::string token,
                std::function<void()> on_drained);
  ~AdminEndpoint();
  AdminEndpoint(const AdminEndpoint&) = delete;
  AdminEndpoint& operator=(const AdminEndpoint&) = delete;

  uint16_t port() const { return port_; }  // 0 when not published
  const caf::actor& actor() const { return actor_; }
  const std::string& token() const { return token_; }

 private:
  caf::actor_system& system_;
  caf::actor actor_;
  std::string token_;
  uint16_t port_ = 0;
  bool tls_ = false;
};

}  // namespace ultraserve
