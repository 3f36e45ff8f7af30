#include "config/command_options.h"

#include <iostream>

#include <caf/config_option_set.hpp>

namespace ultraserve {

std::vector<std::string> join_option_values(const std::vector<std::string>& args,
                                            const caf::config_option_set& options) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool long_option = a.size() > 2 && a.starts_with("--") && a.find('=') == std::string::npos;
    if (long_option && i + 1 < args.size()) {
      const auto* opt = options.cli_long_name_lookup(caf::string_view(a.data() + 2, a.size() - 2));
      if (opt != nullptr && !opt->is_flag()) {
        out.push_back(a + "=" + args[++i]);
        continue;
      }
    }
    out.push_back(a);
  }
  return out;
}

CommandOptions::CommandOptions(std::string usage) : usage_(std::move(usage)) {}

std::string CommandOptions::load_config_file(const std::string& path) {
  auto parsed = parse_config_file(path.c_str());
  if (!parsed) return path + ": " + render(parsed.error());
  for (const auto& [key, value] : *parsed) {
    const caf::config_option* opt = custom_options_.cli_long_name_lookup(key);
    if (opt == nullptr || opt->category() != "global" || key == "config-file")
      return path + ": unknown option '" + key + "'";
    if (auto error = opt->check(value)) {
      const caf::string_view type = opt->type_name();
      return path + ": '" + key + "' must be " + std::string(type.data(), type.size()) + ", not " + caf::to_string(value);
    }
    opt->store(value);
  }
  return {};
}

CommandOptions::Parsed CommandOptions::parse_args(const std::vector<std::string>& raw_args, std::ostream& err) {
  for (const auto& a : raw_args)
    if (a == "-h" || a == "--help" || a == "-?") {
      err << "usage: " << usage_ << "\n\n";
      break;
    }
  std::vector<std::string> args;
  for (const std::string& a : join_option_values(raw_args, custom_options_)) {
    if (!a.starts_with("--config-file=")) {
      args.push_back(a);
      continue;
    }
    if (std::string problem = load_config_file(a.substr(14)); !problem.empty()) {
      err << "error: " << problem << "\n";
      return Parsed::invalid;
    }
  }
  // The empty INI name keeps CAF from reading caf-application.ini behind our back: the one
  // config file is the one named by --config-file, read above.
  const char* no_ini = "";
  if (auto error = parse(args, no_ini)) {
    std::string what = render(error);
    if (what.find("not_an_option") != std::string::npos) what = "unknown option in " + what;
    err << "error: " << what << "\nusage: " << usage_ << "\n(--help lists the options)\n";
    return Parsed::invalid;
  }
  if (cli_helptext_printed) return Parsed::help_shown;
  if (!remainder.empty()) {
    err << "error: unexpected argument '" << remainder.front() << "'\nusage: " << usage_ << "\n";
    return Parsed::invalid;
  }
  return Parsed::run;
}

int run_command(CommandOptions& options, const std::vector<std::string>& args, const std::function<void()>& body) {
  switch (options.parse_args(args, std::cerr)) {
    case CommandOptions::Parsed::help_shown: return 0;
    case CommandOptions::Parsed::invalid: return 2;
    case CommandOptions::Parsed::run: break;
  }
  try {
    body();
    return 0;
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace ultraserve
