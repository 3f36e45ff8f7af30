#pragma once
// A child process for the multi-process tests: the real `ultraserve` binary with a pipe to
// its stdin and one from its stdout and stderr together, or with a terminal (a pty) for all
// three, where line editing is on. Reads wait for what the test expects
// to see (a line, a prompt's answer) with a generous upper bound, never for a fixed time, so
// a slow machine makes a test slower but not wrong. The bounds are stretched by
// ULTRASERVE_TEST_TIME_SCALE (tests/test_time.h).

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_time.h"

namespace ultraserve::testing {

class ChildProcess {
 public:
  using Seconds = std::chrono::seconds;

  enum class Stdio { pipes, terminal };

  // Runs argv[0] with the arguments; `env` adds or replaces variables ("NAME=value").
  explicit ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                        Stdio stdio = Stdio::pipes) {
    ::signal(SIGPIPE, SIG_IGN);  // writing to a child that exited must not kill the test
    if (stdio == Stdio::terminal) {
      int terminal = -1;
      pid_ = forkpty(&terminal, nullptr, nullptr, nullptr);
      if (pid_ == 0) exec(argv, env);
      if (pid_ < 0) throw std::runtime_error("forkpty failed");
      stdout_ = terminal;
      stdin_ = dup(terminal);
      return;
    }
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      dup2(in[0], STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      dup2(out[1], STDERR_FILENO);
      for (int fd : {in[0], in[1], out[0], out[1]}) close(fd);
      exec(argv, env);
    }
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }

  ~ChildProcess() {
    if (pid_ > 0 && !exit_code_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close_stdin();
    if (stdout_ >= 0) close(stdout_);
  }

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  void write(const std::string& text) {
    if (::write(stdin_, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
      throw std::runtime_error("cannot write to the child's stdin");
  }
  void close_stdin() {
    if (stdin_ >= 0) close(stdin_);
    stdin_ = -1;
  }

  // Reads until `needle` appears after what earlier calls consumed; returns the text up to and
  // including it. Throws (with the output so far) when the child ends first or `limit` passes.
  std::string read_until(const std::string& needle, Seconds limit = Seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + scaled(limit);
    while (true) {
      if (size_t at = output_.find(needle, consumed_); at != std::string::npos) {
        std::string text = output_.substr(consumed_, at + needle.size() - consumed_);
        consumed_ = at + needle.size();
        return text;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !read_some(static_cast<int>(left.count())))
        throw std::runtime_error("'" + needle + "' did not appear; the child wrote:\n" + output_);
    }
  }

  // Everything the child wrote so far (reading what is ready without waiting).
  const std::string& output() {
    while (read_some(0)) {
    }
    return output_;
  }

  void signal(int sig) { kill(pid_, sig); }

  // The exit code (128 + signal if killed); kills the child if it has not exited within `limit`.
  int wait(Seconds limit = Seconds(60)) {
    if (exit_code_) return *exit_code_;
    const auto deadline = std::chrono::steady_clock::now() + scaled(limit);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      read_some(0);  // keep the pipe drained so the child never blocks writing
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return *exit_code_;
  }

 private:
  [[noreturn]] static void exec(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }

  // One read of what the child wrote, waiting up to `timeout_ms`; false at the end of output
  // or when nothing came in time.
  bool read_some(int timeout_ms) {
    if (stdout_ < 0) return false;
    pollfd fd{stdout_, POLLIN, 0};
    if (poll(&fd, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    const ssize_t n = read(stdout_, buf, sizeof buf);
    if (n <= 0) return false;
    output_.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1;
  std::string output_;
  size_t consumed_ = 0;
  std::optional<int> exit_code_;
};

}  // namespace ultraserve::testing
