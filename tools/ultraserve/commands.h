#pragma once
// The subcommands of the `ultraserve` binary. Each takes the arguments after its name and
// returns the process exit code: 0 success, 1 runtime failure (bad model, I/O), 2 usage error.

#include <string>
#include <vector>

namespace ultraserve {

using Args = std::vector<std::string>;

int make_checkpoint_command(const Args& args);
int quantize_command(const Args& args);
int generate_command(const Args& args);
int evaluate_command(const Args& args);
int serve_command(const Args& args);
int admin_command(const Args& args);
int loadgen_command(const Args& args);
int devices_command(const Args& args);

}  // namespace ultraserve
