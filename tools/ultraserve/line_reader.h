#pragma once
// Lines from the terminal for the admin shell: with line editing, history (kept in a file
// across sessions) and tab completion when stdin is a terminal (libedit, BSD licence), and
// plain lines without a prompt when it is not (a pipe or a file: scripts and tests).
//
// A read can be interrupted from another thread by making `wake_fd` readable: `serve --shell`
// ends the shell that way when the server stops, and the terminal is restored first.
// libedit's state is global: one LineReader per process.

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ultraserve {

class LineReader {
 public:
  // Candidates for the word being typed, given the complete words before it on the line.
  using Completer = std::function<std::vector<std::string>(const std::vector<std::string>& words_before)>;

  // `history_file` may be empty (no history kept); it is read and written only when interactive.
  LineReader(std::string prompt, std::filesystem::path history_file, Completer completer);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line; nothing at the end of input or once `wake_fd` (if >= 0) is readable.
  std::optional<std::string> read_line(int wake_fd = -1);

  bool interactive() const { return interactive_; }

 private:
  std::optional<std::string> read_edited(int wake_fd);
  std::optional<std::string> read_plain(int wake_fd);

  std::string prompt_;
  std::filesystem::path history_file_;
  bool interactive_;
  std::string pending_;  // plain mode: bytes read past the last line
  bool eof_ = false;
};

// The default history file: $XDG_STATE_HOME/ultraserve/admin_history, or
// ~/.local/state/ultraserve/admin_history.
std::filesystem::path default_history_path();

// Splits a command line into words at spaces and tabs.
std::vector<std::string> split_words(const std::string& line);

}  // namespace ultraserve
