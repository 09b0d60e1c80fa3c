// `attnbench plot DIR [--n N]`: runs harness/plot.py with Debian's Python and matplotlib.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "attention/tensor.h"
#include "harness/cli.h"

extern char** environ;

namespace attnbench {
namespace {

namespace fs = std::filesystem;

// Debian's interpreter: the one python3-matplotlib installs into (another `python3` on PATH
// may lack it). ATTNBENCH_PYTHON overrides it.
std::string python_interpreter() {
  const char* env = std::getenv("ATTNBENCH_PYTHON");
  return env && *env ? env : "/usr/bin/python3";
}

// The script in the source tree the binary was built from, else next to the executable, else
// in the source layout relative to it (build/<preset>/harness/attnbench → harness/plot.py).
fs::path find_script() {
  std::vector<fs::path> candidates;
#ifdef ATTN_SOURCE_DIR
  candidates.push_back(fs::path(ATTN_SOURCE_DIR) / "harness" / "plot.py");
#endif
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path dir = exe.parent_path();
    candidates.push_back(dir / "plot.py");
    candidates.push_back(dir / ".." / ".." / ".." / "harness" / "plot.py");
    candidates.push_back(dir / ".." / "share" / "attnbench" / "plot.py");
  }
  for (const auto& c : candidates)
    if (fs::is_regular_file(c, ec)) return c;
  throw attn::RuntimeError(
      "cannot find harness/plot.py (looked next to the executable and in "
      "the source tree it was built from)");
}

int run_and_wait(const std::vector<std::string>& argv) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid;
  if (int err = posix_spawn(&pid, cargv[0], nullptr, nullptr, cargv.data(), environ))
    throw attn::RuntimeError("cannot start " + argv[0] + ": " + std::strerror(err) +
                             "; run harness/setup.sh (installs python3-matplotlib)");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw attn::RuntimeError("waiting for the plot script failed");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int cmd_plot(const Args& args) {
  namespace po = boost::program_options;
  std::string dir;
  int64_t n = 0;
  po::options_description opts(
      "attnbench plot DIR [--n N]: writes time_vs_n, memory_vs_n, error_vs_n, speed_vs_error "
      "(and posenc_memory when DIR/posenc.json exists, recall_vs_gap and recall_heatmap when "
      "DIR has rows of the recall distribution) as PNG and SVG into DIR");
  opts.add_options()("help,h", "this help")(
      "n", po::value(&n)->default_value(0),
      "sequence length of the speed-vs-error plot (0: the largest n where at least half of "
      "the variants have results)");
  po::options_description hidden;
  hidden.add_options()("dir", po::value(&dir)->required(), "");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("dir", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  if (n < 0) throw attn::UsageError("--n must be a positive sequence length (or 0 for auto)");

  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / "results.json", ec))
    throw attn::RuntimeError(dir + "/results.json not found: run `attnbench sweep CONFIG --out " +
                             dir + "` first");
  const std::string python = python_interpreter();
  if (access(python.c_str(), X_OK) != 0)
    throw attn::RuntimeError(python +
                             " not found: plots need Debian's python3 with matplotlib; run "
                             "harness/setup.sh");
  std::vector<std::string> argv = {python, find_script().string(), dir};
  if (n > 0) argv.insert(argv.end(), {"--n", std::to_string(n)});
  // The script reports its own errors (malformed results, missing matplotlib) on stderr.
  return run_and_wait(argv) == 0 ? 0 : 1;
}

}  // namespace attnbench
