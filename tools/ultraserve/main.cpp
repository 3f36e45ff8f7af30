// ultraserve: one binary, one subcommand per job.

#include <cstring>
#include <iostream>

#include "tools/ultraserve/commands.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const ultraserve::Args&);
};

constexpr Command kCommands[] = {
    {"serve", "serve a model over WebSocket and an OpenAI-compatible HTTP API", ultraserve::serve_command},
    {"admin", "the operator's console for a running server (status, drain, set, ...)", ultraserve::admin_command},
    {"loadgen", "drive a server with many streaming WebSocket clients", ultraserve::loadgen_command},
    {"generate", "generate text from a prompt, streamed to stdout", ultraserve::generate_command},
    {"evaluate", "measure a model on held-out text: perplexity, agreement, speculation", ultraserve::evaluate_command},
    {"make-checkpoint", "write a random-weight HF checkpoint for a config.json", ultraserve::make_checkpoint_command},
    {"quantize", "rewrite a checkpoint with its routed experts as MXFP4", ultraserve::quantize_command},
    {"devices", "list the CUDA devices this build can use", ultraserve::devices_command},
};

void print_usage(std::ostream& out) {
  out << "usage: ultraserve <command> [options]   (ultraserve <command> --help for its options)\n\ncommands:\n";
  for (const auto& c : kCommands) out << "  " << c.name << std::string(18 - std::strlen(c.name), ' ') << c.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    print_usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands)
    if (std::strcmp(argv[1], c.name) == 0) return c.run(ultraserve::Args(argv + 2, argv + argc));
  std::cerr << "error: unknown command '" << argv[1] << "'\n";
  print_usage(std::cerr);
  return 2;
}
