#include "actors/admin_actor.h"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <fstream>

#include <caf/all.hpp>

#include "actors/admin_commands.h"
#include "actors/admin_protocol.h"
#include "actors/admin_render.h"
#include "actors/messages.h"
#include "actors/metrics_events.h"
#include "actors/session_registry.h"
#include "actors/settings_table.h"
#include "config/admin_token.h"
#include "net/json_writer.h"

namespace ultraserve {
namespace {

// Every answer comes from a local actor; one that takes this long is stuck, and saying so
// beats leaving the operator's shell hanging.
constexpr auto kAskTimeout = std::chrono::seconds(10);

struct AdminState {
  AdminContext ctx;
  bool draining = false;
  static inline const char* name = "admin";
};

using Self = caf::stateful_actor<AdminState>;
using Words = std::vector<std::string>;

uint64_t process_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

std::optional<uint64_t> parse_id(const std::string& text) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::string json_object(const char* key, const std::string& value) {
  JsonWriter w;
  w.begin_object().field(key, value).end_object();
  return w.take();
}

// Asks `dest` and answers the console with `render(reply)`; a failure to answer becomes an
// error reply naming what did not answer.
template <class Reply, class Render, class... Ts>
caf::result<AdminReply> ask(Self* self, const caf::actor& dest, const char* what, Render render, Ts... msg) {
  auto promise = self->make_response_promise<AdminReply>();
  self->request(dest, kAskTimeout, msg...)
      .then([promise, render](Reply& reply) mutable { promise.deliver(render(reply)); },
            [promise, what, self](caf::error& err) mutable {
              promise.deliver(admin_error(std::string(what) + " did not answer: " + self->system().render(err)));
            });
  return promise;
}

caf::result<AdminReply> on_status(Self* self) {
  return ask<SchedulerStats>(self, self->state.ctx.scheduler, "the scheduler", [self](const SchedulerStats& s) {
    const auto& ctx = self->state.ctx;
    const double uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx.facts.started).count();
    return render_status(s, ctx.settings, ctx.facts, uptime);
  }, stats_atom::value);
}

caf::result<AdminReply> on_sessions(Self* self) {
  // Two answers make one reply: the registry's sessions, then the scheduler's requests.
  auto promise = self->make_response_promise<AdminReply>();
  auto fail = [promise, self](caf::error& err) mutable {
    promise.deliver(admin_error("the server did not answer: " + self->system().render(err)));
  };
  self->request(self->state.ctx.sessions, kAskTimeout, list_atom::value).then([=](SessionList& sessions) mutable {
    self->request(self->state.ctx.scheduler, kAskTimeout, requests_atom::value)
        .then([=](const RequestList& requests) mutable { promise.deliver(render_sessions(sessions, requests)); }, fail);
  }, fail);
  return promise;
}

caf::result<AdminReply> on_workers(Self* self) {
  return ask<SchedulerStats>(self, self->state.ctx.scheduler, "the scheduler", [self](const SchedulerStats& s) {
    return render_workers(s, self->state.ctx.facts, process_rss_bytes());
  }, stats_atom::value);
}

caf::result<AdminReply> on_metrics(Self* self) {
  return ask<std::string>(self, self->state.ctx.metrics, "the metrics actor", [](const std::string& text) {
    return render_done(text, json_object("prometheus", text));
  }, render_atom::value);
}

caf::result<AdminReply> on_cancel(Self* self, const std::string& arg) {
  auto id = parse_id(arg);
  if (!id) return admin_error("cancel takes a request id (a number, as `sessions` lists them), not '" + arg + "'");
  return ask<bool>(self, self->state.ctx.scheduler, "the scheduler", [id = *id](bool found) {
    if (!found) return admin_error("no request " + std::to_string(id) + " is queued or running");
    JsonWriter w;
    w.begin_object().field("cancelled", static_cast<int64_t>(id)).end_object();
    return render_done("cancelled request " + std::to_string(id) + "; its KV blocks are released in the next step\n",
                       w.take());
  }, revoke_atom::value, RequestId{*id});
}

caf::result<AdminReply> on_kick(Self* self, const std::string& arg) {
  auto id = parse_id(arg);
  if (!id) return admin_error("kick takes a session id (a number, as `sessions` lists them), not '" + arg + "'");
  return ask<std::string>(self, self->state.ctx.sessions, "the session registry", [id = *id](const std::string& kind) {
    if (kind.empty()) return admin_error("no session " + std::to_string(id) + " is open");
    JsonWriter w;
    w.begin_object().field("kicked", static_cast<int64_t>(id)).field("kind", kind).end_object();
    return render_done("closed session " + std::to_string(id) + " (" + kind + "); its requests are cancelled\n",
                       w.take());
  }, kick_atom::value, *id);
}

caf::result<AdminReply> on_drain(Self* self) {
  auto& st = self->state;
  if (st.draining) return admin_error("already draining: the server exits when its requests finish");
  st.draining = true;
  // The scheduler answers the drain only when its last request has ended; the console hears
  // at once how many are in flight. Then the WebSocket sessions close their connections after
  // the final events they hold, and the owner is told (it waits for those closes, then exits).
  auto fail = [self](const caf::error& err) {
    std::fprintf(stderr, "ultraserve: admin: drain failed: %s\n", self->system().render(err).c_str());
  };
  self->request(st.ctx.scheduler, caf::infinite, drain_atom::value).then([self, fail](bool) {
    self->request(self->state.ctx.sessions, kAskTimeout, goodbye_atom::value).then([self](size_t) {
      if (self->state.ctx.on_drained) self->state.ctx.on_drained();
    }, fail);
  }, fail);
  return ask<SchedulerStats>(self, st.ctx.scheduler, "the scheduler", [](const SchedulerStats& s) {
    const size_t in_flight = s.queued + s.running;
    JsonWriter w;
    w.begin_object().field("draining", true).field("in_flight", static_cast<int64_t>(in_flight)).end_object();
    return render_done("draining: new requests are refused; " + std::to_string(in_flight) +
                           " in flight; the server exits when they finish\n",
                       w.take());
  }, stats_atom::value);
}

caf::result<AdminReply> on_set(Self* self, const std::string& key, const std::string& value) {
  auto& st = self->state;
  ServerSettings changed = st.ctx.settings;
  if (std::string problem = set_setting(changed, key, value); !problem.empty()) return admin_error(problem);
  if (changed.session.context_length == 0) changed.session.context_length = st.ctx.facts.model_context_length;
  const std::string before = get_setting(st.ctx.settings, key)->value;
  const std::string after = get_setting(changed, key)->value;
  st.ctx.settings = changed;
  // Sessions read their limits per request; the planner gets its own in its mailbox, and the
  // reply waits for it so a `status` right after already sees the change.
  st.ctx.limits->set({changed.request, changed.session});
  return ask<bool>(self, st.ctx.scheduler, "the scheduler", [key, before, after](bool) {
    JsonWriter w;
    w.begin_object().field("key", key).field("value", after).field("was", before).end_object();
    return render_done(key + " = " + after + " (was " + before + ")\n", w.take());
  }, limits_atom::value, changed.planner);
}

caf::result<AdminReply> on_get(Self* self, const Words& words) {
  const ServerSettings& s = self->state.ctx.settings;
  if (words.size() == 1) {
    std::vector<SettingView> all;
    for (const auto& key : setting_keys()) all.push_back(*get_setting(s, key));
    return render_settings(all);
  }
  auto view = get_setting(s, words[1]);
  if (!view) return admin_error("unknown setting '" + words[1] + "' (`get` lists them)");
  return render_setting(*view);
}

AdminReply on_help(const Words& words) {
  if (words.size() == 1) return render_help();
  const AdminCommandSpec* c = find_admin_command(words[1]);
  if (!c) return admin_error("unknown command '" + words[1] + "'; `help` lists the commands");
  return render_command_help(*c);
}

caf::result<AdminReply> dispatch(Self* self, const Words& words) {
  if (words.empty()) return admin_error("empty command; `help` lists the commands");
  const std::string& name = words[0];
  const AdminCommandSpec* spec = find_admin_command(name);
  if (!spec) return admin_error("unknown command '" + name + "'; `help` lists the commands");
  // The argument count each command takes, from its usage line: "" none, "[X]" at most one.
  const size_t args = words.size() - 1;
  const bool optional_arg = spec->args.starts_with('[');
  const size_t wanted = spec->args.empty() || optional_arg ? 0 : std::count(spec->args.begin(), spec->args.end(), ' ') + 1;
  if (optional_arg ? args > 1 : args != wanted)
    return admin_error("usage: " + std::string(spec->name) + (spec->args.empty() ? "" : " " + std::string(spec->args)));
  if (name == "status") return on_status(self);
  if (name == "sessions") return on_sessions(self);
  if (name == "workers") return on_workers(self);
  if (name == "metrics") return on_metrics(self);
  if (name == "cancel") return on_cancel(self, words[1]);
  if (name == "kick") return on_kick(self, words[1]);
  if (name == "drain") return on_drain(self);
  if (name == "set") return on_set(self, words[1], words[2]);
  if (name == "get") return on_get(self, words);
  if (name == "ping")
    return render_done("pong: ultraserve serving " + self->state.ctx.facts.model_name + "\n",
                       json_object("model", self->state.ctx.facts.model_name));
  return on_help(words);
}

caf::behavior admin(Self* self, AdminContext ctx) {
  self->state.ctx = std::move(ctx);
  return {
      [self](admin_atom, const AdminCommand& cmd) -> caf::result<AdminReply> {
        if (!tokens_equal(cmd.token, self->state.ctx.token)) {
          std::fprintf(stderr, "ultraserve: admin: refused a command with a wrong token\n");
          return admin_error("refused: wrong admin token");
        }
        return dispatch(self, cmd.words);
      },
  };
}

}  // namespace

caf::actor spawn_admin(caf::actor_system& system, AdminContext context) {
  return system.spawn(admin, std::move(context));
}

AdminContext admin_context_of(const Server& server) {
  AdminContext ctx;
  ctx.scheduler = server.scheduler();
  ctx.metrics = server.metrics();
  ctx.sessions = server.sessions();
  ctx.limits = server.client_limits();
  ctx.settings = server.settings();
  ctx.settings.net.port = server.port();  // the bound port, where the setting may say 0
  ctx.facts = server.facts();
  return ctx;
}

}  // namespace ultraserve
