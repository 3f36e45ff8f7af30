#include "actors/settings_table.h"

#include <limits>
#include <variant>

#include <caf/config_value.hpp>

namespace ultraserve {
namespace {

using Duration = std::chrono::steady_clock::duration;
using FieldRef = std::variant<int*, size_t*, uint16_t*, Duration*, std::string*, bool*>;

struct SettingSpec {
  const char* key;
  const char* restart;  // nullptr: live-tunable
  FieldRef (*field)(ServerSettings&);
};

// Why the taken-at-start settings are so, in the words `set` answers with.
constexpr const char* kListener = "the listener is set up at start";
constexpr const char* kKvCache = "the KV cache is allocated at start";
constexpr const char* kKvLayout = "the KV cache is laid out in blocks of this size at start";
constexpr const char* kNet = "the network layer takes it at start";

const SettingSpec kSettings[] = {
    {"max-batch", nullptr, [](ServerSettings& s) -> FieldRef { return &s.planner.max_batch; }},
    {"max-step-tokens", nullptr, [](ServerSettings& s) -> FieldRef { return &s.planner.max_step_tokens; }},
    {"max-queued", nullptr, [](ServerSettings& s) -> FieldRef { return &s.planner.max_queued; }},
    {"block-size", nullptr, [](ServerSettings& s) -> FieldRef { return &s.planner.block_size; }},
    {"adaptive-block-size", nullptr, [](ServerSettings& s) -> FieldRef { return &s.planner.adaptive_block; }},
    {"max-tokens-limit", nullptr, [](ServerSettings& s) -> FieldRef { return &s.request.max_tokens; }},
    {"default-max-tokens", nullptr, [](ServerSettings& s) -> FieldRef { return &s.request.default_max_tokens; }},
    {"max-prompt-bytes", nullptr, [](ServerSettings& s) -> FieldRef { return &s.request.max_prompt_bytes; }},
    {"max-stop-strings", nullptr, [](ServerSettings& s) -> FieldRef { return &s.request.max_stop_strings; }},
    {"context-length", nullptr, [](ServerSettings& s) -> FieldRef { return &s.session.context_length; }},
    {"request-timeout", nullptr, [](ServerSettings& s) -> FieldRef { return &s.session.request_timeout; }},
    {"max-requests-per-connection", nullptr,
     [](ServerSettings& s) -> FieldRef { return &s.session.max_requests_per_connection; }},
    {"kv-blocks", kKvCache, [](ServerSettings& s) -> FieldRef { return &s.planner.kv_blocks; }},
    {"kv-memory-mb", kKvCache, [](ServerSettings& s) -> FieldRef { return &s.kv_memory_mb; }},
    {"kv-block-size", kKvLayout, [](ServerSettings& s) -> FieldRef { return &s.planner.kv_block_size; }},
    {"threads", "the worker's thread pool is made at start", [](ServerSettings& s) -> FieldRef { return &s.threads; }},
    {"host", kListener, [](ServerSettings& s) -> FieldRef { return &s.net.host; }},
    {"port", kListener, [](ServerSettings& s) -> FieldRef { return &s.net.port; }},
    {"io-threads", kListener, [](ServerSettings& s) -> FieldRef { return &s.net.io_threads; }},
    {"max-connections", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.max_connections; }},
    {"max-frame-bytes", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.max_ws_frame_bytes; }},
    {"max-body-bytes", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.max_http_body_bytes; }},
    {"send-queue-bytes", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.ws_send_queue_bytes; }},
    {"send-overflow-grace", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.ws_send_overflow_grace; }},
    {"write-stall-timeout", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.write_stall_timeout; }},
    {"idle-timeout", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.idle_timeout; }},
    {"http-request-timeout", kNet, [](ServerSettings& s) -> FieldRef { return &s.net.http_request_timeout; }},
    {"shutdown-grace", "the serve command takes it at start",
     [](ServerSettings& s) -> FieldRef { return &s.shutdown_grace; }},
};

const SettingSpec* find(std::string_view key) {
  for (const auto& spec : kSettings)
    if (key == spec.key) return &spec;
  return nullptr;
}

// A duration in the largest unit that shows it exactly, as CAF's config format writes them.
std::string format_duration(Duration d) {
  using namespace std::chrono;
  const auto ns = duration_cast<nanoseconds>(d).count();
  const std::pair<int64_t, const char*> units[] = {{60'000'000'000, "min"}, {1'000'000'000, "s"}, {1'000'000, "ms"},
                                                   {1'000, "us"}};
  for (auto [scale, suffix] : units)
    if (ns != 0 && ns % scale == 0) return std::to_string(ns / scale) + suffix;
  return std::to_string(ns) + "ns";
}

std::string format(const FieldRef& field) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) return *p;
        else if constexpr (std::is_same_v<T, bool>) return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, Duration>) return format_duration(*p);
        else return std::to_string(*p);
      },
      field);
}

// Parses `text` into the field; "" or why it does not fit.
std::string parse_into(const FieldRef& field, std::string_view key, std::string_view text) {
  auto value = caf::config_value::parse(caf::string_view(text.data(), text.size()));
  return std::visit(
      [&](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          *p = std::string(text);
          return {};
        } else if constexpr (std::is_same_v<T, bool>) {
          if (text != "true" && text != "false") return std::string(key) + " takes true or false, not '" + std::string(text) + "'";
          *p = text == "true";
          return {};
        } else if constexpr (std::is_same_v<T, Duration>) {
          const caf::timespan* d = value ? caf::get_if<caf::timespan>(&*value) : nullptr;
          if (!d) return std::string(key) + " takes a duration such as 30s, 250ms or 5min, not '" + std::string(text) + "'";
          *p = std::chrono::duration_cast<Duration>(*d);
          return {};
        } else {
          const int64_t* n = value ? caf::get_if<int64_t>(&*value) : nullptr;
          if (!n || *n < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
              (*n > 0 && static_cast<uint64_t>(*n) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
            return std::string(key) + " takes a whole number from " + std::to_string(std::numeric_limits<T>::min()) +
                   " to " + std::to_string(std::numeric_limits<T>::max()) + ", not '" + std::string(text) + "'";
          *p = static_cast<T>(*n);
          return {};
        }
      },
      field);
}

}  // namespace

std::string check_settings(const ServerSettings& s, const std::string& p) {
  auto positive = [&](bool ok, const char* key) { return ok ? std::string() : p + key + " must be positive"; };
  for (std::string problem : {
           positive(s.net.io_threads > 0, "io-threads"),
           s.kv_memory_mb > 0 || s.planner.kv_blocks > 0 ? "" : p + "kv-memory-mb or " + p + "kv-blocks must be positive",
           s.planner.kv_blocks >= 0 ? "" : p + "kv-blocks must be >= 0",
           positive(s.planner.kv_block_size > 0, "kv-block-size"),
           positive(s.planner.max_batch > 0, "max-batch"),
           s.planner.max_step_tokens >= s.planner.max_batch
               ? ""
               : p + "max-step-tokens must be >= " + p + "max-batch (every running sequence decodes each step)",
           positive(s.planner.max_queued > 0, "max-queued"),
           s.planner.block_size == 0 || (s.planner.block_size >= 2 && s.planner.block_size <= 64)
               ? ""
               : p + "block-size must be 0 (no speculation) or in [2, 64]",
           s.planner.block_size == 0 || !s.draft.empty() ? "" : p + "block-size needs a draft (--draft DIR)",
           positive(s.net.max_connections > 0, "max-connections"),
           positive(s.request.max_tokens > 0, "max-tokens-limit"),
           s.request.default_max_tokens > 0 && s.request.default_max_tokens <= s.request.max_tokens
               ? ""
               : p + "default-max-tokens must be in [1, " + p + "max-tokens-limit]",
           positive(s.request.max_prompt_bytes > 0, "max-prompt-bytes"),
           positive(s.session.max_requests_per_connection > 0, "max-requests-per-connection"),
           s.session.context_length >= 0 ? "" : p + "context-length must be >= 0",
           s.net.max_ws_frame_bytes > 0 && s.net.max_http_body_bytes > 0 && s.net.ws_send_queue_bytes > 0
               ? ""
               : p + "max-frame-bytes, " + p + "max-body-bytes and " + p + "send-queue-bytes must be positive",
       })
    if (!problem.empty()) return problem;
  for (auto [d, key] : {std::pair{s.session.request_timeout, "request-timeout"},
                        {s.net.ws_send_overflow_grace, "send-overflow-grace"},
                        {s.net.write_stall_timeout, "write-stall-timeout"},
                        {s.net.idle_timeout, "idle-timeout"},
                        {s.net.http_request_timeout, "http-request-timeout"},
                        {s.shutdown_grace, "shutdown-grace"}})
    if (d <= Duration::zero()) return p + key + " must be positive";
  return {};
}

const std::vector<std::string>& setting_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    for (const auto& spec : kSettings) k.push_back(spec.key);
    return k;
  }();
  return keys;
}

std::optional<SettingView> get_setting(const ServerSettings& s, std::string_view key) {
  const SettingSpec* spec = find(key);
  if (!spec) return std::nullopt;
  ServerSettings copy = s;  // the table's accessors take a mutable settings object
  return SettingView{spec->key, format(spec->field(copy)), spec->restart ? spec->restart : ""};
}

std::string set_setting(ServerSettings& s, std::string_view key, std::string_view text) {
  const SettingSpec* spec = find(key);
  if (!spec) return "unknown setting '" + std::string(key) + "' (`get` lists them)";
  if (spec->restart)
    return std::string(key) + " cannot change while serving (" + spec->restart + "): restart with --" +
           std::string(key);
  ServerSettings changed = s;
  if (std::string problem = parse_into(spec->field(changed), key, text); !problem.empty()) return problem;
  if (std::string problem = check_settings(changed, ""); !problem.empty()) return problem;
  s = std::move(changed);
  return {};
}

}  // namespace ultraserve
