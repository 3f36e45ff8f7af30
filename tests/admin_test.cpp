// The admin console across processes, as operators use it: `ultraserve serve` in one process,
// `ultraserve admin` in others (one-shot and as a shell), talking through CAF's middleman.
// Only separate processes catch a message type one side forgot to announce.
//
// The model never stops on its own: its end-of-sequence token lies outside the tokens it can
// sample, so a request with a large max_tokens runs until it is cancelled. That makes every
// "while a request is running" step deterministic, with no race against the request's end.

#include <chrono>
#include <thread>

#include <simdjson.h>

#include "tests/child_process.h"
#include "tests/test_clients.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::WsClient;

std::string binary() { return (testing::binary_dir() / "tools/ultraserve").string(); }

struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

CliRun run(const std::string& args) {
  FILE* pipe = popen((binary() + " " + args + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// The number after `prefix` in `text`.
uint16_t port_after(const std::string& text, const std::string& prefix) {
  const size_t at = text.find(prefix);
  if (at == std::string::npos) throw std::runtime_error("no '" + prefix + "' in:\n" + text);
  return static_cast<uint16_t>(std::stoi(text.substr(at + prefix.size())));
}

std::string generate(const std::string& id, int max_tokens) {
  return R"({"type":"generate","id":")" + id + R"(","prompt":"tell me everything","max_tokens":)" +
         std::to_string(max_tokens) + R"(,"temperature":0})";
}
constexpr int kEndless = 50000;  // minutes of generation on this model: ends only when cancelled

class AdminTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir;
    model_ = testing::make_endless_checkpoint(*dir_);
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override { start_server({}); }

  // Environment for every child: nothing may touch the real home directory.
  std::vector<std::string> env() const {
    return {"HOME=" + home_.path().string(), "XDG_CONFIG_HOME=" + (home_ / "config").string(),
            "XDG_STATE_HOME=" + (home_ / "state").string()};
  }

  void start_server(const std::vector<std::string>& extra) {
    std::vector<std::string> argv{binary(), "serve", "--model", model_.string(), "--port", "0", "--admin-port", "0",
                                  "--admin-token-file", token_file(), "--threads", "1", "--kv-blocks", "4000",
                                  "--max-tokens-limit", "60000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ChildProcess>(argv, env());
    const std::string started = server_->read_until("(ultraserve admin --connect");
    http_port_ = port_after(started, "on http://127.0.0.1:");
    admin_port_ = port_after(started, "admin console on 127.0.0.1:");
  }

  std::string token_file() const { return (home_ / "admin-token").string(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(admin_port_); }

  CliRun admin(const std::string& args) {
    return run("admin --connect " + address() + " --token-file " + token_file() + " " + args);
  }

  // `admin COMMAND --json`, parsed; fails the test if the command failed.
  simdjson::dom::element admin_json(const std::string& command) {
    CliRun r = admin(command + " --json");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    json_text_ = r.output;
    return parser_.parse(json_text_);
  }

  int64_t status_field(const char* key) { return int64_t(admin_json("status")[key]); }

  // Polls `check` (each poll is a full admin round trip) until it holds; false after a minute
  // (times ULTRASERVE_TEST_TIME_SCALE).
  template <class F>
  bool eventually(F check) {
    const auto deadline = std::chrono::steady_clock::now() + testing::scaled(60s);
    while (!check()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }

  // The (session id, request id) of the first running request, once there is one.
  std::optional<std::pair<std::string, std::string>> running_request() {
    std::pair<std::string, std::string> found;
    const bool running = eventually([&] {
      for (auto session : admin_json("sessions")["sessions"])
        for (auto request : session["requests"])
          if (std::string_view(request["state"]) == "running") {
            found = {std::to_string(int64_t(session["id"])), std::to_string(int64_t(request["id"]))};
            return true;
          }
      return false;
    });
    if (!running) return std::nullopt;
    return found;
  }

  // Sends an endless request "long" on `ws`; its (session id, request id) once it runs.
  std::optional<std::pair<std::string, std::string>> start_endless_request(WsClient& ws) {
    ws.send(generate("long", kEndless));
    return running_request();
  }

  // A WebSocket client whose reads give up after a minute, so a server that stops answering
  // fails the test instead of hanging it.
  std::unique_ptr<WsClient> connect() {
    auto ws = std::make_unique<WsClient>(http_port_);
    timeval limit{60, 0};
    setsockopt(boost::beast::get_lowest_layer(ws->stream()).socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit,
               sizeof limit);
    return ws;
  }

  static inline testing::ScratchDir* dir_ = nullptr;
  static inline std::filesystem::path model_;
  testing::ScratchDir home_;
  std::unique_ptr<ChildProcess> server_;
  uint16_t http_port_ = 0, admin_port_ = 0;
  simdjson::dom::parser parser_;
  std::string json_text_;
};

TEST_F(AdminTest, ReadOnlyCommandsAnswer) {
  auto status = admin_json("status");
  EXPECT_EQ(std::string_view(status["model"]), "endless");
  EXPECT_EQ(std::string_view(status["state"]), "serving");
  EXPECT_EQ(int64_t(status["running"]), 0);
  EXPECT_GT(int64_t(status["kv_blocks_total"]), 0);
  EXPECT_TRUE(status["draft"].is_null());
  EXPECT_TRUE(status["tau"].is_null());

  auto workers = admin_json("workers")["workers"];
  // The CPU, or on a GPU machine (`--device auto`) the GPU.
  const std::string_view device = workers.at(0)["device"];
  EXPECT_TRUE(device == "cpu" || device.starts_with("cuda:")) << device;
  EXPECT_EQ(std::string_view(workers.at(0)["state"]), "idle");

  auto setting = admin_json("get max-batch");
  EXPECT_EQ(std::string_view(setting["value"]), "64");
  EXPECT_TRUE(bool(setting["live"]));
  EXPECT_FALSE(bool(admin_json("get kv-block-size")["live"]));

  CliRun text = admin("status");
  EXPECT_EQ(text.exit_code, 0);
  for (const char* row : {"uptime", "model", "draft", "devices", "batch", "queue", "kv cache", "tokens/s", "tau"})
    EXPECT_NE(text.output.find(row), std::string::npos) << row << " missing from:\n" << text.output;
  EXPECT_NE(admin("metrics").output.find("ultraserve_requests_total"), std::string::npos);
  CliRun help = admin("help");
  for (const char* command : {"status", "sessions", "cancel", "kick", "drain", "set", "get", "workers", "metrics"})
    EXPECT_NE(help.output.find(command), std::string::npos) << command;
  EXPECT_NE(admin("help drain").output.find("usage: drain"), std::string::npos);
}

TEST_F(AdminTest, WrongTokenGetsNothingButARefusal) {
  testing::write_file(home_ / "wrong", "not-the-token\n");
  std::filesystem::permissions(home_ / "wrong", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  for (const char* command : {"status", "sessions --json", "drain", "set max-batch 1"}) {
    CliRun r = run("admin --connect " + address() + " --token-file " + (home_ / "wrong").string() + " " + command);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("refused: wrong admin token"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("endless"), std::string::npos) << "the refusal leaks: " << r.output;
  }
  EXPECT_EQ(status_field("max_batch"), 64);  // the refused `set` changed nothing
  EXPECT_EQ(std::string_view(admin_json("status")["state"]), "serving");  // nor did the refused drain

  // A token file others may read is refused before anything is sent.
  std::filesystem::permissions(token_file(), std::filesystem::perms::group_read, std::filesystem::perm_options::add);
  CliRun loose = admin("status");
  EXPECT_EQ(loose.exit_code, 1);
  EXPECT_NE(loose.output.find("chmod 600"), std::string::npos) << loose.output;
}

TEST_F(AdminTest, UnknownCommandsAndBadArgumentsSayWhatIsWrong) {
  const std::pair<const char*, const char*> cases[] = {
      {"frobnicate", "unknown command 'frobnicate'"},
      {"cancel", "usage: cancel REQ"},
      {"cancel 1 2", "usage: cancel REQ"},
      {"cancel abc", "cancel takes a request id"},
      {"cancel 424242", "no request 424242 is queued or running"},
      {"kick 424242", "no session 424242 is open"},
      {"kick -1", "kick takes a session id"},
      {"set max-batch", "usage: set KEY VALUE"},
      {"set max-batch zero", "max-batch takes a whole number"},
      {"set max-batch 0", "max-batch must be positive"},
      {"set max-batch 1000", "max-step-tokens must be >= max-batch"},
      {"set request-timeout 5", "request-timeout takes a duration"},
      {"set kv-block-size 32", "kv-block-size cannot change while serving"},
      {"set block-size 4", "block-size needs a draft"},  // this server has none
      {"set block-size 1", "block-size must be 0 (no speculation) or in [2, 64]"},
      {"set adaptive-block-size maybe", "adaptive-block-size takes true or false"},
      {"set bogus 1", "unknown setting 'bogus'"},
      {"get bogus", "unknown setting 'bogus'"},
      {"help bogus", "unknown command 'bogus'"},
  };
  for (auto [command, message] : cases) {
    CliRun r = admin(command);
    EXPECT_EQ(r.exit_code, 1) << command << ": " << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << command << ": " << r.output;
  }
  EXPECT_EQ(run("admin --connect nowhere status").exit_code, 2);
  CliRun unreachable = run("admin --connect 127.0.0.1:1 --token-file " + token_file() + " status");
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_NE(unreachable.output.find("cannot reach the server at 127.0.0.1:1"), std::string::npos) << unreachable.output;
}

TEST_F(AdminTest, CancelEndsARunningRequestAndFreesItsKv) {
  auto ws = connect();
  const auto running = start_endless_request(*ws);
  ASSERT_TRUE(running) << "the request never ran";
  const auto [session, request] = *running;
  EXPECT_GT(status_field("kv_blocks_used"), 0);
  CliRun r = admin("cancel " + request);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cancelled request " + request), std::string::npos) << r.output;
  EXPECT_EQ(ws->read_until_done("long").back().finish_reason, "cancelled");
  EXPECT_EQ(status_field("kv_blocks_used"), 0);  // released in the ledger at once
  EXPECT_EQ(status_field("running"), 0);
}

TEST_F(AdminTest, KickClosesTheConnectionAndCancelsItsRequests) {
  auto ws = connect();
  const auto running = start_endless_request(*ws);
  ASSERT_TRUE(running) << "the request never ran";
  const auto [session, request] = *running;
  CliRun r = admin("kick " + session);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("closed session " + session + " (websocket)"), std::string::npos) << r.output;
  EXPECT_THROW(while (true) ws->read(), boost::system::system_error);
  EXPECT_EQ(ws->stream().reason().code, boost::beast::websocket::close_code::policy_error);
  EXPECT_TRUE(eventually([&] { return status_field("kv_blocks_used") == 0; })) << "the kicked session's KV is freed";
  EXPECT_EQ(admin_json("sessions")["sessions"].get_array().size(), 0u);
}

TEST_F(AdminTest, SetChangesBehaviourWhileServing) {
  ASSERT_EQ(admin("set max-batch 1").exit_code, 0);
  auto ws = connect();
  ws->send(generate("long", kEndless));
  ws->send(generate("short", 8));
  // With room for one sequence, the short request waits behind the endless one...
  ASSERT_TRUE(eventually([&] { return status_field("running") == 1 && status_field("queued") == 1; }))
      << "one should run, one wait";
  // ...until the batch grows.
  CliRun grown = admin("set max-batch 2");
  EXPECT_NE(grown.output.find("max-batch = 2 (was 1)"), std::string::npos) << grown.output;
  auto short_events = ws->read_until_done("short");
  EXPECT_EQ(short_events.back().finish_reason, "length");

  // Request limits apply to the next request, checked together as at start-up.
  EXPECT_NE(admin("set max-tokens-limit 100").output.find("default-max-tokens must be in [1, max-tokens-limit]"),
            std::string::npos);
  ASSERT_EQ(admin("set default-max-tokens 50").exit_code, 0);
  ASSERT_EQ(admin("set max-tokens-limit 100").exit_code, 0);
  ws->send(generate("too-long", 101));
  auto refused = ws->read_until_done("too-long");
  EXPECT_EQ(refused.back().code, "invalid_request");
  EXPECT_EQ(std::string_view(admin_json("get max-tokens-limit")["value"]), "100");

  ws->send(R"({"type":"cancel","id":"long"})");
  EXPECT_EQ(ws->read_until_done("long").back().finish_reason, "cancelled");
}

TEST_F(AdminTest, DrainFinishesInFlightWorkRefusesNewWorkThenExits) {
  server_.reset();
  start_server({"--max-batch", "1"});
  auto ws = connect();
  ws->send(generate("long", kEndless));
  ws->send(generate("queued", 8));
  ASSERT_TRUE(eventually([&] { return status_field("running") == 1 && status_field("queued") == 1; }))
      << "one should run, one wait";
  const auto running = running_request();
  ASSERT_TRUE(running);
  const std::string long_id = running->second;

  auto drain = admin_json("drain");
  EXPECT_EQ(int64_t(drain["in_flight"]), 2);
  EXPECT_EQ(std::string_view(admin_json("status")["state"]), "draining");
  ws->send(generate("late", 8));
  auto late = ws->read_until_done("late");
  EXPECT_EQ(late.back().code, "unavailable");
  EXPECT_EQ(testing::http_request(http_port_, "POST", "/v1/completions", R"({"prompt":"x","max_tokens":2})").status, 503);
  EXPECT_NE(admin("drain").output.find("already draining"), std::string::npos);

  // The server exits only once the queued request has run to its end.
  ASSERT_EQ(admin("cancel " + long_id).exit_code, 0);
  auto queued = ws->read_until_done("queued");
  EXPECT_EQ(queued.back().type, "done");
  EXPECT_EQ(queued.back().finish_reason, "length");
  // Then the connection closes normally, after the last event, and the server exits.
  EXPECT_THROW(while (true) ws->read(), boost::system::system_error);
  EXPECT_EQ(ws->stream().reason().code, boost::beast::websocket::close_code::normal);
  EXPECT_EQ(server_->wait(), 0) << server_->output();
  EXPECT_NE(server_->output().find("drained, shutting down"), std::string::npos) << server_->output();
}

TEST_F(AdminTest, SigtermDrainsInFlightWorkThenExits) {
  // SIGTERM is a drain, like the console's: new requests are refused meanwhile, what runs and
  // what waits go on (the waiting one runs in full after the signal), then the server exits.
  server_.reset();
  start_server({"--max-batch", "1"});
  auto ws = connect();
  ws->send(generate("long", kEndless));
  ws->send(generate("queued", 8));
  ASSERT_TRUE(eventually([&] { return status_field("running") == 1 && status_field("queued") == 1; }));
  const auto running = running_request();
  ASSERT_TRUE(running);
  server_->signal(SIGTERM);
  ASSERT_TRUE(eventually([&] { return std::string_view(admin_json("status")["state"]) == "draining"; }));
  ws->send(generate("late", 8));
  EXPECT_EQ(ws->read_until_done("late").back().code, "unavailable");
  EXPECT_EQ(status_field("queued"), 1) << "the drain keeps what waits";
  // The endless one would outlast any grace period: end it, then the queued one runs to its end.
  ASSERT_EQ(admin("cancel " + running->second).exit_code, 0);
  const auto queued = ws->read_until_done("queued");
  EXPECT_EQ(queued.back().type, "done") << queued.back().message;
  EXPECT_EQ(queued.back().completion_tokens, 8);
  EXPECT_EQ(server_->wait(), 0) << server_->output();
  EXPECT_NE(server_->output().find("ultraserve: drained"), std::string::npos) << server_->output();
}

TEST_F(AdminTest, SigtermGivesUpOnRequestsAfterTheGracePeriod) {
  server_.reset();
  start_server({"--shutdown-grace", "1s"});
  auto ws = connect();
  ws->send(generate("endless", kEndless));
  ASSERT_TRUE(eventually([&] { return status_field("running") == 1; }));
  const auto signalled = std::chrono::steady_clock::now();
  server_->signal(SIGTERM);
  EXPECT_EQ(server_->wait(), 0) << server_->output();
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, 20s);
  EXPECT_NE(server_->output().find("the grace period ended"), std::string::npos) << server_->output();
}

TEST_F(AdminTest, ShellSurvivesTheServerGoingAwayAndSaysSo) {
  ChildProcess shell({binary(), "admin", "--connect", address(), "--token-file", token_file()}, env());
  shell.write("ping\n");
  shell.read_until("pong");
  shell.write("bogus\n");
  shell.read_until("unknown command 'bogus'; `help` lists the commands\n");

  server_->signal(SIGTERM);
  EXPECT_EQ(server_->wait(), 0);
  // The monitor's down message tells the shell at once; no timeout is waited out.
  shell.write("status\n");
  const std::string lost = shell.read_until("the next command tries to reconnect\n");
  EXPECT_NE(lost.find("error: lost the server at " + address()), std::string::npos) << lost;
  shell.write("ping\n");
  shell.read_until("cannot reach the server at " + address());
  shell.write("quit\n");
  EXPECT_EQ(shell.wait(), 0) << shell.output();
}

TEST_F(AdminTest, ShellOnATerminalCompletesAndKeepsHistory) {
  ChildProcess shell({binary(), "admin", "--connect", address(), "--token-file", token_file()}, env(),
                     ChildProcess::Stdio::terminal);
  shell.read_until("pong");
  shell.read_until("ultraserve> ");
  shell.write("sta\t");
  shell.read_until("tus ");  // completed to "status "
  shell.write("\r");
  shell.read_until("tau");
  shell.read_until("ultraserve> ");
  shell.write("set max-bat\t");  // among the live settings only one starts so
  shell.read_until("ch ");
  shell.write("3\r");
  shell.read_until("max-batch = 3 (was 64)");
  shell.read_until("ultraserve> ");
  shell.write("\x1b[A");  // up: the last line again
  shell.read_until("set max-batch 3");
  shell.write("\x15quit\r");  // Ctrl-U clears the recalled line
  EXPECT_EQ(shell.wait(), 0) << shell.output();
  const std::string history = testing::read_file(home_ / "state/ultraserve/admin_history");
  EXPECT_NE(history.find("status"), std::string::npos) << history;
  EXPECT_NE(history.find("max-batch"), std::string::npos) << history;
}

TEST_F(AdminTest, ServeShellRunsOnTheServersOwnTerminal) {
  server_.reset();
  ChildProcess serve({binary(), "serve", "--model", model_.string(), "--port", "0", "--no-admin", "--shell",
                      "--threads", "1", "--kv-memory-mb", "16"},
                     env());
  serve.read_until("ultraserve: serving");
  serve.write("status\n");
  serve.read_until("tau");
  serve.write("set max-queued 7\n");
  serve.read_until("max-queued = 7 (was 1024)");
  serve.write("get max-queued\n");
  serve.read_until("max-queued = 7");
  serve.write("quit\n");
  EXPECT_EQ(serve.wait(), 0) << serve.output();
  EXPECT_NE(serve.output().find("the shell closed, shutting down"), std::string::npos) << serve.output();
  EXPECT_EQ(serve.output().find("admin console on"), std::string::npos) << "--no-admin published it";
}

// A CA and two certificates it signed, made with the openssl tool (EC keys: fast to make).
bool make_certificates(const std::filesystem::path& dir, const std::string& ca, const std::vector<std::string>& names) {
  auto sh = [](const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; };
  if (!sh("command -v openssl")) return false;
  const std::string d = dir.string() + "/", ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  bool ok = sh("openssl req -x509" + ec + " -keyout " + d + ca + ".key -out " + d + ca + ".pem -days 2 -subj /CN=" + ca);
  for (const std::string& n : names)
    ok = ok && sh("openssl req" + ec + " -keyout " + d + n + ".key -out " + d + n + ".csr -subj /CN=" + n) &&
         sh("openssl x509 -req -in " + d + n + ".csr -CA " + d + ca + ".pem -CAkey " + d + ca + ".key -CAcreateserial -out " +
            d + n + ".pem -days 2");
  return ok;
}

TEST_F(AdminTest, ServeShellOnATerminalEndsWhenADrainFinishes) {
  server_.reset();
  ChildProcess serve({binary(), "serve", "--model", model_.string(), "--port", "0", "--admin-port", "0",
                      "--admin-token-file", token_file(), "--shell", "--threads", "1", "--kv-memory-mb", "16"},
                     env(), ChildProcess::Stdio::terminal);
  admin_port_ = port_after(serve.read_until("(ultraserve admin --connect"), "admin console on 127.0.0.1:");
  serve.read_until("ultraserve> ");
  // The shell is waiting for a line when another operator drains the server: it ends, the
  // terminal is given back, and the server exits normally.
  EXPECT_EQ(admin("drain").exit_code, 0);
  EXPECT_EQ(serve.wait(), 0) << serve.output();
  EXPECT_NE(serve.output().find("drained, shutting down"), std::string::npos) << serve.output();
}

TEST_F(AdminTest, TlsNeedsACertificateFromTheConfiguredCa) {
  const std::string d = home_.path().string() + "/";
  if (!make_certificates(home_.path(), "ca", {"server", "client"}) || !make_certificates(home_.path(), "other-ca", {"stranger"}))
    GTEST_SKIP() << "the openssl tool is not installed";
  server_.reset();
  start_server({"--admin-tls-certificate", d + "server.pem", "--admin-tls-key", d + "server.key", "--admin-tls-ca",
                d + "ca.pem"});
  auto tls = [&](const std::string& name, const std::string& ca) {
    return " --tls-certificate " + d + name + ".pem --tls-key " + d + name + ".key --tls-ca " + d + ca + ".pem ";
  };
  CliRun trusted = admin(tls("client", "ca") + "status --json");
  EXPECT_EQ(trusted.exit_code, 0) << trusted.output;
  EXPECT_NE(trusted.output.find("\"model\":\"endless\""), std::string::npos) << trusted.output;

  CliRun plain = admin("status");
  EXPECT_EQ(plain.exit_code, 1) << plain.output;
  EXPECT_NE(plain.output.find("cannot reach the server"), std::string::npos) << plain.output;
  CliRun stranger = admin(tls("stranger", "ca") + "status");
  EXPECT_EQ(stranger.exit_code, 1) << stranger.output;
  EXPECT_EQ(stranger.output.find("endless"), std::string::npos) << stranger.output;
  CliRun half = admin("--tls-ca " + d + "ca.pem status");
  EXPECT_EQ(half.exit_code, 2) << half.output;
  EXPECT_NE(half.output.find("TLS needs all of"), std::string::npos) << half.output;
}

TEST_F(AdminTest, BusyAdminPortStopsStartUpAndNamesIt) {
  // The running server's admin port is taken: a second server asking for it must say so.
  CliRun second = run("serve --model " + model_.string() + " --port 0 --admin-token-file " + token_file() +
                      " --admin-port " + std::to_string(admin_port_));
  EXPECT_EQ(second.exit_code, 1) << second.output;
  EXPECT_NE(second.output.find("cannot publish the admin console on 127.0.0.1:" + std::to_string(admin_port_)),
            std::string::npos)
      << second.output;
}

TEST_F(AdminTest, NonLoopbackAdminAddressNeedsTls) {
  const std::string serve = "serve --model " + model_.string() + " --admin-token-file " + token_file();
  CliRun open = run(serve + " --admin-host 0.0.0.0");
  EXPECT_EQ(open.exit_code, 2) << open.output;
  EXPECT_NE(open.output.find("not a loopback address"), std::string::npos) << open.output;
  CliRun half = run(serve + " --admin-host 0.0.0.0 --admin-tls-certificate c.pem");
  EXPECT_EQ(half.exit_code, 2) << half.output;
  EXPECT_NE(half.output.find("needs all of"), std::string::npos) << half.output;
}

}  // namespace
}  // namespace ultraserve
