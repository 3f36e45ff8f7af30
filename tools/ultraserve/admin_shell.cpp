#include "tools/ultraserve/admin_shell.h"

#include <cstdio>

#include "actors/admin_commands.h"
#include "actors/settings_table.h"
#include "tools/ultraserve/line_reader.h"

namespace ultraserve {

std::vector<std::string> admin_completions(const std::vector<std::string>& before) {
  std::vector<std::string> out;
  if (before.empty()) {
    for (const auto& c : kAdminCommands) out.emplace_back(c.name);
    out.insert(out.end(), {"quit", "exit"});
  } else if (before.size() == 1 && before[0] == "get") {
    out = setting_keys();
  } else if (before.size() == 1 && before[0] == "set") {
    for (const std::string& key : setting_keys())
      if (get_setting(ServerSettings{}, key)->restart.empty()) out.push_back(key);
  } else if (before.size() == 1 && before[0] == "help") {
    for (const auto& c : kAdminCommands) out.emplace_back(c.name);
  }
  return out;
}

void run_admin_shell(AdminClient& client, const ShellOptions& options) {
  LineReader reader("ultraserve> ", default_history_path(), admin_completions);
  if (reader.interactive()) {
    std::printf("ultraserve admin shell for %s: `help` lists the commands, tab completes them, `quit` leaves\n",
                client.where().c_str());
    const AdminReply hello = client.call({"ping"});
    std::fputs(hello.text.c_str(), stdout);
    std::fflush(stdout);
  }
  while (auto line = reader.read_line(options.wake_fd)) {
    const std::vector<std::string> words = split_words(*line);
    if (words.empty()) continue;
    if (words[0] == "quit" || words[0] == "exit") break;
    const AdminReply reply = client.call(words);
    std::fputs((options.json ? reply.json + "\n" : reply.text).c_str(), stdout);
    std::fflush(stdout);
  }
}

}  // namespace ultraserve
