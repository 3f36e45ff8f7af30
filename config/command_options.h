#pragma once
// Every ultraserve subcommand declares its options through CAF's configuration system (the
// same one the server's actor system reads), and parses them here. Two things CAF does not
// do are added: `--key value` is accepted as well as `--key=value`, and stray positional
// arguments are an error instead of being silently kept in `remainder`.

#include <functional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/actor_system_config.hpp>
#include <caf/config_option_adder.hpp>

namespace ultraserve {

// Rewrites `--name value` as `--name=value` for every option that takes a value.
std::vector<std::string> join_option_values(const std::vector<std::string>& args,
                                            const caf::config_option_set& options);

class CommandOptions : public caf::actor_system_config {
 public:
  explicit CommandOptions(std::string usage);

  // `--config-file FILE` reads option values from FILE (CAF's config format, one `key = value`
  // per option, see config/ultraserve.conf) before the command line, which overrides it. Unlike
  // CAF's own reading of that file, a value of the wrong type or an unknown key is an error.

  enum class Parsed { run, help_shown, invalid };
  // Parses the arguments that follow the subcommand's name; help and errors go to `err`.
  Parsed parse_args(const std::vector<std::string>& args, std::ostream& err);

 protected:
  caf::config_option_adder options() { return {custom_options_, "global"}; }

 private:
  std::string load_config_file(const std::string& path);  // "" or an error message

  std::string usage_;
};

// Thrown by a command's own validation of option values (CAF checks types, not ranges).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The life of a subcommand: parse the options, run `body`, and map failures to exit codes
// with one clear line on stderr: 2 for usage errors (bad or missing options), 1 for
// everything else (a missing model file, a malformed checkpoint, ...), 0 for success.
int run_command(CommandOptions& options, const std::vector<std::string>& args, const std::function<void()>& body);

}  // namespace ultraserve
