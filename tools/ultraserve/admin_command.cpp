// `ultraserve admin`: the operator's console for a running server, interactive or one-shot.

#include <charconv>
#include <cstdio>

#include <caf/actor_system.hpp>
#include <caf/config_option_set.hpp>

#include "actors/admin_endpoint.h"
#include "config/admin_token.h"
#include "config/command_options.h"
#include "tools/ultraserve/admin_client.h"
#include "tools/ultraserve/admin_shell.h"
#include "tools/ultraserve/commands.h"

namespace ultraserve {
namespace {

struct AdminOptions : CommandOptions {
  std::string connect = "127.0.0.1:8081";
  std::string token_file;
  bool json = false;
  caf::timespan timeout = std::chrono::seconds(30);
  AdminTls tls;

  AdminOptions()
      : CommandOptions("ultraserve admin [--connect HOST:PORT] [--token-file F] [--json] [COMMAND [ARGS...]]\n"
                       "  without a command: an interactive shell (`help` lists the commands)") {
    options()
        .add(connect, "connect", "the server's admin address (its --admin-host:--admin-port)")
        .add(token_file, "token-file", "the admin token (default: the one `ultraserve serve` makes for this user)")
        .add(json, "json", "print replies as JSON")
        .add(timeout, "timeout", "how long to wait for a reply (e.g. 30s)")
        .add(tls.certificate, "tls-certificate", "PEM certificate this client presents (TLS servers)")
        .add(tls.key, "tls-key", "PEM private key of --tls-certificate")
        .add(tls.ca, "tls-ca", "PEM CA that signed the server's certificate");
  }

  // Options go to CAF's parser; every other argument is a word of the command. `--key value`
  // takes the value along, so `--connect h:1 status` is an option and one word.
  std::pair<std::vector<std::string>, std::vector<std::string>> split(const std::vector<std::string>& args) const {
    std::vector<std::string> opts, words;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (!a.starts_with("--") && a != "-h" && a != "-?") {
        words.push_back(a);
        continue;
      }
      opts.push_back(a);
      const auto* opt = custom_options_.cli_long_name_lookup(caf::string_view(a.data() + 2, a.size() - 2));
      if (a.find('=') == std::string::npos && opt != nullptr && !opt->is_flag() && i + 1 < args.size())
        opts.push_back(args[++i]);
    }
    return {opts, words};
  }

  std::pair<std::string, uint16_t> host_and_port() const {
    const size_t colon = connect.rfind(':');
    uint16_t port = 0;
    const char* end = connect.data() + connect.size();
    if (colon == std::string::npos || colon == 0 ||
        std::from_chars(connect.data() + colon + 1, end, port).ptr != end || port == 0)
      throw UsageError("--connect takes HOST:PORT, not '" + connect + "'");
    return {connect.substr(0, colon), port};
  }
};

}  // namespace

int admin_command(const Args& args) {
  AdminOptions o;
  auto [option_args, words] = o.split(args);
  int exit_code = 0;
  const int rc = run_command(o, option_args, [&] {
    const auto [host, port] = o.host_and_port();
    if (o.tls.enabled() && (o.tls.certificate.empty() || o.tls.key.empty() || o.tls.ca.empty()))
      throw UsageError("TLS needs all of --tls-certificate, --tls-key and --tls-ca");
    const std::string token =
        read_admin_token(o.token_file.empty() ? default_admin_token_path() : std::filesystem::path(o.token_file));
    configure_admin_transport(o, o.tls);
    caf::actor_system system{o};
    AdminClient client(system, o.connect, remote_admin(system, host, port, o.tls.enabled()), token, o.timeout);
    if (words.empty()) return run_admin_shell(client, {o.json, -1});
    const AdminReply reply = client.call(words);
    std::fputs((o.json ? reply.json + "\n" : reply.text).c_str(), reply.ok || o.json ? stdout : stderr);
    exit_code = reply.ok ? 0 : 1;
  });
  return rc != 0 ? rc : exit_code;
}

}  // namespace ultraserve
