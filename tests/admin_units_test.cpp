// The admin console's pure parts: the settings table (shared with `serve`'s start-up checks),
// the token file's rules, and the tokens/s meter.

#include <sys/stat.h>

#include "actors/admin_endpoint.h"
#include "actors/rate_meter.h"
#include "actors/settings_table.h"
#include "config/admin_token.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

using namespace std::chrono_literals;

TEST(SettingsTable, GetsEverySettingAndSetsOnlyLiveOnes) {
  ServerSettings s;
  for (const std::string& key : setting_keys()) EXPECT_TRUE(get_setting(s, key).has_value()) << key;
  EXPECT_EQ(get_setting(s, "max-batch")->value, "64");
  EXPECT_EQ(get_setting(s, "request-timeout")->value, "10min");
  EXPECT_EQ(get_setting(s, "host")->value, "127.0.0.1");
  EXPECT_TRUE(get_setting(s, "max-batch")->restart.empty());
  EXPECT_FALSE(get_setting(s, "kv-blocks")->restart.empty());
  EXPECT_FALSE(get_setting(s, "nope").has_value());

  EXPECT_EQ(set_setting(s, "max-batch", "8"), "");
  EXPECT_EQ(s.planner.max_batch, 8);
  EXPECT_EQ(set_setting(s, "request-timeout", "250ms"), "");
  EXPECT_EQ(s.session.request_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(get_setting(s, "request-timeout")->value, "250ms");
  EXPECT_EQ(set_setting(s, "max-queued", "3"), "");
  EXPECT_EQ(s.planner.max_queued, 3u);
}

TEST(SettingsTable, RefusalsLeaveTheSettingsUnchanged) {
  ServerSettings s;
  for (auto [key, value, message] : std::initializer_list<std::tuple<const char*, const char*, const char*>>{
           {"max-batch", "0", "max-batch must be positive"},
           {"max-batch", "-3", "max-batch must be positive"},
           {"max-batch", "600", "max-step-tokens must be >= max-batch"},
           {"max-batch", "8x", "max-batch takes a whole number"},
           {"max-queued", "-1", "max-queued takes a whole number from 0"},
           {"default-max-tokens", "5000", "default-max-tokens must be in [1, max-tokens-limit]"},
           {"request-timeout", "0s", "request-timeout must be positive"},
           {"request-timeout", "soon", "takes a duration"},
           {"kv-block-size", "32", "cannot change while serving"},
           {"port", "9000", "restart with --port"},
           {"nope", "1", "unknown setting 'nope'"},
       }) {
    const ServerSettings before = s;
    const std::string problem = set_setting(s, key, value);
    EXPECT_NE(problem.find(message), std::string::npos) << key << "=" << value << ": " << problem;
    EXPECT_EQ(get_setting(s, key).value_or(SettingView{}).value, get_setting(before, key).value_or(SettingView{}).value);
  }
}

TEST(SettingsTable, StartUpChecksNameTheOptions) {
  ServerSettings s;
  EXPECT_EQ(check_settings(s, "--"), "");
  s.planner.max_step_tokens = 10;
  EXPECT_EQ(check_settings(s, "--"), "--max-step-tokens must be >= --max-batch (every running sequence decodes each step)");
  s = {};
  s.net.idle_timeout = {};
  EXPECT_EQ(check_settings(s, "--"), "--idle-timeout must be positive");
}

TEST(AdminToken, IsMadeOwnerOnlyAndReadBack) {
  testing::ScratchDir dir;
  const auto path = dir / "sub/dir/admin-token";
  const std::string token = load_or_create_admin_token(path);
  EXPECT_EQ(token.size(), 64u);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(load_or_create_admin_token(path), token);  // the second start reads the first one's
  EXPECT_EQ(read_admin_token(path), token);
  EXPECT_NE(make_admin_token(), token);

  chmod(path.c_str(), 0640);
  EXPECT_THROW_WITH(read_admin_token(path), "readable by its owner only", "chmod 600");
  EXPECT_THROW_WITH(load_or_create_admin_token(path), "readable by its owner only");
  EXPECT_THROW_WITH(read_admin_token(dir / "absent"), "absent", "cannot read the admin token");
  testing::write_file(dir / "empty", "");
  chmod((dir / "empty").c_str(), 0600);
  EXPECT_THROW_WITH(read_admin_token(dir / "empty"), "is empty");
}

TEST(AdminToken, ComparesWholeTokens) {
  EXPECT_TRUE(tokens_equal("abc", "abc"));
  EXPECT_FALSE(tokens_equal("abc", "abd"));
  EXPECT_FALSE(tokens_equal("abc", "ab"));
  EXPECT_FALSE(tokens_equal("ab", "abc"));
  EXPECT_FALSE(tokens_equal("", "a"));
}

TEST(AdminEndpoint, BindsBeyondLoopbackOnlyWithTls) {
  for (const char* host : {"127.0.0.1", "127.8.9.10", "::1", "localhost"}) EXPECT_TRUE(is_loopback_host(host)) << host;
  for (const char* host : {"0.0.0.0", "", "10.0.0.1", "::", "example.com", "128.0.0.1"})
    EXPECT_FALSE(is_loopback_host(host)) << host;

  AdminSettings s;
  EXPECT_EQ(check_admin_settings(s), "");
  s.host = "0.0.0.0";
  EXPECT_NE(check_admin_settings(s).find("not a loopback address"), std::string::npos);
  s.tls = {"cert.pem", "key.pem", "ca.pem"};
  EXPECT_EQ(check_admin_settings(s), "");
  s.tls.ca.clear();
  EXPECT_NE(check_admin_settings(s).find("needs all of"), std::string::npos);
  s = {};
  s.host = "0.0.0.0";
  s.publish = false;  // nothing listens: nothing to refuse
  EXPECT_EQ(check_admin_settings(s), "");
}

TEST(RateMeter, CountsTheLastWindowOnly) {
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  RateMeter m(t0, 10s);
  EXPECT_EQ(m.per_second(t0), 0.0);
  m.add(t0 + 1s, 20);
  EXPECT_DOUBLE_EQ(m.per_second(t0 + 2s), 10.0);  // younger than the window: over its age
  m.add(t0 + 12s, 50);
  EXPECT_DOUBLE_EQ(m.per_second(t0 + 12s), 5.0);  // the first 20 fell out of the window
  EXPECT_DOUBLE_EQ(m.per_second(t0 + 30s), 0.0);
}

}  // namespace
}  // namespace ultraserve
