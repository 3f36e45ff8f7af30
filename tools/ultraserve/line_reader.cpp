#include "tools/ultraserve/line_reader.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

// libedit's readline-compatible interface; its callback form lets a read wait on a second fd.
#include <editline/readline.h>

namespace ultraserve {
namespace {

// libedit calls plain C functions: the state they need lives here (one reader per process).
LineReader::Completer g_completer;
std::vector<std::string> g_matches;
std::optional<std::string> g_line;
bool g_line_done = false;

void on_line(char* line) {
  g_line = line ? std::optional<std::string>(line) : std::nullopt;
  std::free(line);
  g_line_done = true;
  rl_callback_handler_remove();
}

char* next_match(const char*, int state) {
  static size_t i;
  if (state == 0) i = 0;
  return i < g_matches.size() ? strdup(g_matches[i++].c_str()) : nullptr;
}

char** complete(const char* text, int start, int) {
  rl_attempted_completion_over = 1;  // never fall back to file names
  g_matches.clear();
  if (!g_completer) return nullptr;
  const std::string typed(text);
  for (std::string& c : g_completer(split_words(std::string(rl_line_buffer, start))))
    if (c.compare(0, typed.size(), typed) == 0) g_matches.push_back(std::move(c));
  return rl_completion_matches(text, next_match);
}

// Which of `fds` are readable, waiting as long as it takes; retries on signals.
void wait_readable(pollfd* fds, nfds_t n) {
  while (poll(fds, n, -1) < 0 && errno == EINTR) {
  }
}

}  // namespace

std::filesystem::path default_history_path() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg)
    return std::filesystem::path(xdg) / "ultraserve/admin_history";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : ".") / ".local/state/ultraserve/admin_history";
}

std::vector<std::string> split_words(const std::string& line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (true) {
    i = line.find_first_not_of(" \t\r\n", i);
    if (i == std::string::npos) return words;
    const size_t end = line.find_first_of(" \t\r\n", i);
    words.push_back(line.substr(i, end - i));
    if (end == std::string::npos) return words;
    i = end;
  }
}

LineReader::LineReader(std::string prompt, std::filesystem::path history_file, Completer completer)
    : prompt_(std::move(prompt)), history_file_(std::move(history_file)), interactive_(isatty(STDIN_FILENO)) {
  if (!interactive_) return;
  g_completer = std::move(completer);
  rl_readline_name = "ultraserve";  // the section of ~/.editrc that applies
  rl_attempted_completion_function = complete;
  rl_completion_append_character = ' ';
  using_history();
  stifle_history(1000);
  if (!history_file_.empty()) read_history(history_file_.c_str());
}

LineReader::~LineReader() {
  if (!interactive_ || history_file_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(history_file_.parent_path(), ec);
  write_history(history_file_.c_str());
}

std::optional<std::string> LineReader::read_line(int wake_fd) {
  return interactive_ ? read_edited(wake_fd) : read_plain(wake_fd);
}

std::optional<std::string> LineReader::read_edited(int wake_fd) {
  g_line_done = false;
  g_line.reset();
  rl_callback_handler_install(prompt_.c_str(), on_line);
  while (!g_line_done) {
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    wait_readable(fds, wake_fd >= 0 ? 2 : 1);
    if (wake_fd >= 0 && fds[1].revents) {
      rl_callback_handler_remove();
      rl_deprep_terminal();  // leave the terminal as we found it
      std::fputc('\n', stdout);
      return std::nullopt;
    }
    if (fds[0].revents) rl_callback_read_char();
  }
  if (g_line && !split_words(*g_line).empty()) add_history(g_line->c_str());
  return g_line;
}

std::optional<std::string> LineReader::read_plain(int wake_fd) {
  while (true) {
    if (size_t nl = pending_.find('\n'); nl != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      return line;
    }
    if (eof_) {
      if (pending_.empty()) return std::nullopt;
      return std::exchange(pending_, {});  // a last line without a newline
    }
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    wait_readable(fds, wake_fd >= 0 ? 2 : 1);
    if (wake_fd >= 0 && fds[1].revents) return std::nullopt;
    char buf[4096];
    const ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) eof_ = true;
    else pending_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace ultraserve
