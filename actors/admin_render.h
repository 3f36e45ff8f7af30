#pragma once
// The admin console's answers, each as text for people and JSON for scripts, from the same
// data. Pure functions: the admin actor gathers the data from the other actors.

#include <chrono>
#include <string>
#include <vector>

#include "actors/admin_commands.h"
#include "actors/admin_protocol.h"
#include "actors/messages.h"
#include "actors/model_worker.h"
#include "actors/server.h"
#include "actors/session_registry.h"
#include "actors/settings_table.h"

namespace ultraserve {

AdminReply render_status(const SchedulerStats& s, const ServerSettings& settings, const ServerFacts& facts,
                         double uptime_s);
AdminReply render_sessions(const SessionList& sessions, const RequestList& requests);
// `rss_bytes`: the server process's resident memory (0: unknown).
AdminReply render_workers(const SchedulerStats& s, const ServerFacts& facts, uint64_t rss_bytes);
AdminReply render_settings(const std::vector<SettingView>& settings);
AdminReply render_setting(const SettingView& setting);
AdminReply render_help();
AdminReply render_command_help(const AdminCommandSpec& command);
// A reply that says what was done: `text` for people, `json` the object for scripts.
AdminReply render_done(const std::string& text, const std::string& json);

}  // namespace ultraserve
