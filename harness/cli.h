// The attnbench subcommands. Each parses its own options (Boost.Program_options) and returns
// the process exit code; main() maps exceptions to exit codes (2 usage, 1 runtime).
#pragma once

#include <string>
#include <vector>

namespace attnbench {

using Args = std::vector<std::string>;  // arguments after the subcommand name

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Args& args);
};

// Every subcommand, in the order `attnbench --help` lists them.
const std::vector<Command>& commands();

int cmd_list(const Args& args);
int cmd_run(const Args& args);
int cmd_apply(const Args& args);
int cmd_posenc(const Args& args);
int cmd_plot(const Args& args);
int cmd_compare(const Args& args);
int cmd_sweep(const Args& args);

// Parses "512,1024,2048" (UsageError on anything else).
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what);
// Sets the OpenMP thread count (0 = leave the default); UsageError when negative.
void set_threads(int threads);

}  // namespace attnbench
