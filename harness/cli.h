// The attnbench subcommands. Each parses its own options (Boost.Program_options) and returns
// the process exit code; main() maps exceptions to exit codes (2 usage, 1 runtime).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace boost::program_options {
class error;
}

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
int cmd_inputs(const Args& args);
int cmd_posenc(const Args& args);
int cmd_plot(const Args& args);
int cmd_compare(const Args& args);
int cmd_sweep(const Args& args);
int cmd_merge(const Args& args);
int cmd_slurm(const Args& args);

// Parses "512,1024,2048" (UsageError on anything else).
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what);
// A one-line message for a Boost.Program_options error. Never call what() on those errors
// directly: for some user values it never returns (harness/option_error.cpp).
std::string describe_option_error(const boost::program_options::error& e);
// Far more threads than cores is never a useful measurement, and libgomp overflows its stack
// creating a team of ~100000 (a crash, not an error). 1024 is 4x the core count of the largest
// single machines attnbench targets and still starts cleanly on a 2-core machine.
constexpr int64_t kMaxThreads = 1024;
// UsageError unless 0 <= threads <= kMaxThreads (0 = all cores); `what` names the setting. The one
// thread-count check of the CLI options, sweep configs and resumed result rows.
void check_threads(int64_t threads, const std::string& what);
// Sets the OpenMP thread count (0 = leave the default) after check_threads.
void set_threads(int threads);

}  // namespace attnbench
