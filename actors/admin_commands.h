#pragma once
// The admin console's commands, in one table: the server's `help` answers from it and the
// shell completes command names from it, so the two cannot disagree.

#include <string_view>

namespace ultraserve {

struct AdminCommandSpec {
  std::string_view name;
  std::string_view args;     // as shown in usage lines: "REQ", "KEY VALUE", "[KEY]"
  std::string_view summary;
};

inline constexpr AdminCommandSpec kAdminCommands[] = {
    {"status", "", "uptime, model, draft, devices, batch, queue, KV use, tokens/s, tau"},
    {"sessions", "", "open connections (and HTTP requests) with their requests"},
    {"cancel", "REQ", "cancel request REQ (a number from `sessions`); its KV blocks are freed at once"},
    {"kick", "SESSION", "close connection SESSION (from `sessions`); its requests are cancelled"},
    {"drain", "", "stop admitting requests, finish the ones in flight, then exit cleanly"},
    {"set", "KEY VALUE", "change a live-tunable setting (`get` lists them), with the start-up validation"},
    {"get", "[KEY]", "show a setting, or all of them and which are live-tunable"},
    {"workers", "", "each device's worker: state, steps, KV blocks and memory"},
    {"metrics", "", "the Prometheus metrics, as GET /metrics serves them"},
    {"ping", "", "check the connection and the token"},
    {"help", "[COMMAND]", "list the commands, or explain one"},
};

inline const AdminCommandSpec* find_admin_command(std::string_view name) {
  for (const auto& c : kAdminCommands)
    if (c.name == name) return &c;
  return nullptr;
}

}  // namespace ultraserve
