#pragma once
// The server's settings by name, as `ultraserve serve` names its options, for the admin
// console's `get` and `set`, and the rules a combination of them must satisfy, which start-up
// and `set` share so a live change is checked exactly as a start-up value would be.
//
// Live-tunable settings are those read afresh per step or per request (batch shape, queue,
// request limits). The others are taken once at start (the KV cache's size and block layout,
// the listener, the network bounds); `get` shows them and `set` says why they cannot change.

#include <string>
#include <string_view>
#include <vector>

#include "actors/server.h"

namespace ultraserve {

struct SettingView {
  std::string key;
  std::string value;    // as the command line would take it: "64", "600s", "127.0.0.1"
  std::string restart;  // why it cannot change while serving; empty: live-tunable
};

// The first rule `s` breaks, naming settings as `prefix` + key ("--max-batch must be positive"
// for the command line, "max-batch must be positive" for the console); "" if it breaks none.
std::string check_settings(const ServerSettings& s, const std::string& prefix);

// Every key, in the order `get` lists them.
const std::vector<std::string>& setting_keys();

// The setting `key` of `s`, or nothing for an unknown key.
std::optional<SettingView> get_setting(const ServerSettings& s, std::string_view key);

// Sets `key` to `text` (parsed as the command line would: "8", "30s", "250ms") in `s` when the
// key is live-tunable, the text parses and the result passes check_settings. Returns "" on
// success (then `s` holds the change), else why not (and `s` is unchanged).
std::string set_setting(ServerSettings& s, std::string_view key, std::string_view text);

}  // namespace ultraserve
