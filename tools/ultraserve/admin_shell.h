#pragma once
// The admin shell: reads commands (line editing, history and completion on a terminal), sends
// each to the server's admin actor and prints the reply. Shared by `ultraserve admin` and
// `ultraserve serve --shell`.

#include "tools/ultraserve/admin_client.h"

namespace ultraserve {

struct ShellOptions {
  bool json = false;  // print the replies' JSON instead of their text
  int wake_fd = -1;   // when readable, the shell ends (serve --shell: the server is stopping)
};

// Runs until the end of input, `quit` / `exit`, or wake_fd.
void run_admin_shell(AdminClient& client, const ShellOptions& options);

// Completion candidates for the admin commands, given the words before the one being typed.
std::vector<std::string> admin_completions(const std::vector<std::string>& words_before);

}  // namespace ultraserve
