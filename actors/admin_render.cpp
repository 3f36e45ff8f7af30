#include "actors/admin_render.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "net/json_writer.h"

namespace ultraserve {
namespace {

std::string printf_string(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string format_age(double s) {
  if (s < 60) return printf_string("%.1fs", s);
  const auto total = static_cast<int64_t>(s);
  char buf[64];
  if (total < 3600) std::snprintf(buf, sizeof buf, "%lldm %02llds", (long long)(total / 60), (long long)(total % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldh %02lldm %02llds", (long long)(total / 3600), (long long)(total / 60 % 60),
                  (long long)(total % 60));
  return buf;
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  return printf_string(u == 0 ? "%.0f" : "%.1f", v) + " " + units[u];
}

// Columns padded to their widest cell, two spaces apart.
std::string format_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) {
      width.resize(std::max(width.size(), row.size()));
      width[c] = std::max(width[c], row[c].size());
    }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) line += row[c] + std::string(c + 1 < row.size() ? width[c] - row[c].size() + 2 : 0, ' ');
    out += line + "\n";
  }
  return out;
}

int64_t i64(uint64_t v) { return static_cast<int64_t>(v); }

}  // namespace

AdminReply render_done(const std::string& text, const std::string& json) { return {true, text, json}; }

AdminReply render_status(const SchedulerStats& s, const ServerSettings& settings, const ServerFacts& facts,
                         double uptime_s) {
  const double kv_share = s.kv_blocks_total ? 100.0 * s.kv_blocks_used / s.kv_blocks_total : 0;
  std::string devices;
  for (const auto& w : facts.workers) devices += (devices.empty() ? "" : ", ") + w.device;
  const std::string state = s.draining ? "draining (" + std::to_string(s.queued + s.running) + " in flight)" : "serving";
  const std::string draft = facts.workers.empty() ? "" : facts.workers.front().draft;
  const double tau = s.speculative_rounds ? double(s.speculative_tokens) / s.speculative_rounds : 0;
  const std::string text = format_table({
      {"state", state},
      {"uptime", format_age(uptime_s)},
      {"model", facts.model_name + " (" + facts.model_type + ")"},
      {"draft", draft.empty() ? "none" : draft + ", block " + std::to_string(settings.planner.block_size) +
                                             (settings.planner.block_size ? "" : " (speculation off)")},
      {"devices", devices},
      {"batch", std::to_string(s.running) + " running (max-batch " + std::to_string(settings.planner.max_batch) + ")"},
      {"queue", std::to_string(s.queued) + " waiting (max-queued " + std::to_string(settings.planner.max_queued) + ")"},
      {"kv cache", std::to_string(s.kv_blocks_used) + " / " + std::to_string(s.kv_blocks_total) + " blocks (" +
                       printf_string("%.1f", kv_share) + "%)"},
      {"tokens/s", printf_string("%.1f", s.tokens_per_s) + " (last 10s; " + std::to_string(s.generated_tokens) +
                       " generated since start)"},
      {"tau", s.speculative_rounds ? printf_string("%.2f", tau) + " tokens per round (" +
                                          std::to_string(s.speculative_rounds) + " rounds since start)"
                                    : "n/a (no speculative rounds yet)"},
  });
  JsonWriter w;
  w.begin_object()
      .field("state", s.draining ? "draining" : "serving")
      .field("uptime_s", uptime_s)
      .field("model", facts.model_name)
      .field("model_type", facts.model_type)
      .key("draft");
  if (draft.empty()) w.null(); else w.value(draft);
  w.field("block_size", settings.planner.block_size)
      .key("devices").begin_array();
  for (const auto& d : facts.workers) w.value(d.device);
  w.end_array()
      .field("running", i64(s.running))
      .field("max_batch", settings.planner.max_batch)
      .field("queued", i64(s.queued))
      .field("max_queued", i64(settings.planner.max_queued))
      .field("kv_blocks_used", s.kv_blocks_used)
      .field("kv_blocks_total", s.kv_blocks_total)
      .field("tokens_per_s", s.tokens_per_s)
      .field("generated_tokens", i64(s.generated_tokens))
      .field("steps", i64(s.steps))
      .key("tau");
  if (s.speculative_rounds) w.value(tau); else w.null();
  w.end_object();
  return {true, text, w.take()};
}

AdminReply render_sessions(const SessionList& sessions, const RequestList& requests) {
  // Requests by session; a request whose session is not registered (it ended meanwhile) is
  // still listed, under its session id, so nothing in flight is hidden.
  std::map<uint64_t, std::vector<const RequestSummary*>> by_session;
  for (const auto& r : requests.requests) by_session[r.session].push_back(&r);
  std::vector<SessionSummary> all = sessions.sessions;
  for (const auto& [id, _] : by_session)
    if (std::none_of(all.begin(), all.end(), [&](const SessionSummary& s) { return s.id == id; }))
      all.push_back({id, "ended", 0});

  std::vector<std::vector<std::string>> rows{{"SESSION", "KIND", "AGE", "REQUEST", "STATE", "PROMPT", "GENERATED", "AGE"}};
  JsonWriter w;
  w.begin_object().key("sessions").begin_array();
  for (const auto& s : all) {
    const auto& reqs = by_session[s.id];
    w.begin_object().field("id", i64(s.id)).field("kind", s.kind).field("age_s", s.age_s).key("requests").begin_array();
    std::vector<std::string> session_cells{std::to_string(s.id), s.kind, format_age(s.age_s)};
    if (reqs.empty()) rows.push_back(session_cells);
    for (const RequestSummary* r : reqs) {
      const char* state = r->running ? "running" : "queued";
      auto row = session_cells;
      row.insert(row.end(), {std::to_string(r->id), state, std::to_string(r->prompt_tokens),
                             std::to_string(r->generated_tokens), format_age(r->age_s)});
      rows.push_back(std::move(row));
      session_cells = {"", "", ""};  // the session's cells only on its first row
      w.begin_object().field("id", i64(r->id)).field("state", state).field("prompt_tokens", r->prompt_tokens)
          .field("generated_tokens", r->generated_tokens).field("age_s", r->age_s).end_object();
    }
    w.end_array().end_object();
  }
  w.end_array().end_object();
  const std::string text = all.empty() ? "no open sessions\n" : format_table(rows);
  return {true, text, w.take()};
}

AdminReply render_workers(const SchedulerStats& s, const ServerFacts& facts, uint64_t rss_bytes) {
  std::vector<std::vector<std::string>> rows{{"WORKER", "DEVICE", "STATE", "STEPS", "LAST STEP", "KV BLOCKS", "KV MEMORY", "WEIGHTS"}};
  JsonWriter w;
  w.begin_object().key("workers").begin_array();
  for (size_t i = 0; i < facts.workers.size(); ++i) {
    const WorkerInfo& info = facts.workers[i];
    const uint64_t kv_bytes = uint64_t(info.kv_blocks) * facts.kv_block_bytes;
    const char* state = s.step_in_flight ? "busy" : "idle";
    rows.push_back({std::to_string(i), info.device, state, std::to_string(s.steps), printf_string("%.2f ms", s.last_step_s * 1e3),
                    std::to_string(s.kv_blocks_used) + " / " + std::to_string(info.kv_blocks) + " x " +
                        std::to_string(info.kv_block_size),
                    format_bytes(kv_bytes), info.weight_bytes ? format_bytes(info.weight_bytes) : "host"});
    w.begin_object().field("id", static_cast<int64_t>(i)).field("device", info.device).field("state", state)
        .field("steps", i64(s.steps)).field("last_step_s", s.last_step_s).field("kv_blocks_used", s.kv_blocks_used)
        .field("kv_blocks", info.kv_blocks).field("kv_block_size", info.kv_block_size)
        .field("kv_bytes", i64(kv_bytes)).field("weight_bytes", i64(info.weight_bytes))
        .field("restarts", i64(s.worker_restarts)).end_object();
  }
  w.end_array().field("process_rss_bytes", i64(rss_bytes)).end_object();
  std::string text = format_table(rows);
  if (rss_bytes) text += "server process memory (RSS): " + format_bytes(rss_bytes) + "\n";
  return {true, text, w.take()};
}

AdminReply render_settings(const std::vector<SettingView>& settings) {
  std::vector<std::vector<std::string>> rows{{"SETTING", "VALUE", "CHANGE"}};
  JsonWriter w;
  w.begin_object().key("settings").begin_array();
  for (const auto& s : settings) {
    rows.push_back({s.key, s.value, s.restart.empty() ? "live (set)" : "restart"});
    w.begin_object().field("key", s.key).field("value", s.value).field("live", s.restart.empty()).end_object();
  }
  w.end_array().end_object();
  return {true, format_table(rows), w.take()};
}

AdminReply render_setting(const SettingView& s) {
  JsonWriter w;
  w.begin_object().field("key", s.key).field("value", s.value).field("live", s.restart.empty());
  if (!s.restart.empty()) w.field("restart", s.restart);
  w.end_object();
  const std::string note = s.restart.empty() ? "live-tunable" : "needs a restart: " + s.restart;
  return {true, s.key + " = " + s.value + "   (" + note + ")\n", w.take()};
}

AdminReply render_help() {
  std::vector<std::vector<std::string>> rows;
  JsonWriter w;
  w.begin_object().key("commands").begin_array();
  for (const auto& c : kAdminCommands) {
    const std::string usage = std::string(c.name) + (c.args.empty() ? "" : " " + std::string(c.args));
    rows.push_back({usage, std::string(c.summary)});
    w.begin_object().field("name", c.name).field("args", c.args).field("summary", c.summary).end_object();
  }
  w.end_array().end_object();
  return {true, format_table(rows), w.take()};
}

AdminReply render_command_help(const AdminCommandSpec& c) {
  const std::string usage = std::string(c.name) + (c.args.empty() ? "" : " " + std::string(c.args));
  JsonWriter w;
  w.begin_object().field("name", c.name).field("args", c.args).field("summary", c.summary).end_object();
  return {true, "usage: " + usage + "\n  " + std::string(c.summary) + "\n", w.take()};
}

AdminReply admin_error(const std::string& message) {
  JsonWriter w;
  w.begin_object().field("error", message).end_object();
  return {false, "error: " + message + "\n", w.take()};
}

}  // namespace ultraserve
