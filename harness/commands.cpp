#include <omp.h>

#include <sstream>

#include "attention/tensor.h"
#include "harness/cli.h"

namespace attnbench {

// Adding a subcommand: write harness/cmd_NAME.cpp and add a line here.
const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"list", "every registered variant with its parameters, defaults and docs", cmd_list},
      {"run", "time variants over sequence lengths; GFLOP/s, memory, error vs fp64", cmd_run},
      {"sweep", "run a sweep config (configs/*.ini) into results.csv/json; resumable", cmd_sweep},
      {"merge", "the shard directories of a sweep --shard i/N as one result", cmd_merge},
      {"slurm", "a Slurm array job of a sweep's shards, then merge and plot", cmd_slurm},
      {"apply", "run one variant on q/k/v .npy files and write the output .npy", cmd_apply},
      {"inputs", "write a distribution's generated q, k, v (and recall answer key) as .npy",
       cmd_inputs},
      {"posenc", "positional encodings: parameter memory, lookup time, .npy tables", cmd_posenc},
      {"plot", "time, memory, error and speed-vs-error plots of a results dir", cmd_plot},
      {"compare", "regression gate: results.json vs a baseline (exit 1 if worse)", cmd_compare},
  };
  return all;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v <= 0)
      throw attn::UsageError(what + ": '" + text +
                             "' is not a comma-separated list of positive integers");
    out.push_back(v);
  }
  if (out.empty()) throw attn::UsageError(what + ": empty list");
  return out;
}

void check_threads(int64_t threads, const std::string& what) {
  if (threads < 0 || threads > kMaxThreads)
    throw attn::UsageError(what + " must be in [0, " + std::to_string(kMaxThreads) +
                           "] (0 = all cores), got " + std::to_string(threads));
}

void set_threads(int threads) {
  check_threads(threads, "--threads");
  if (threads > 0) omp_set_num_threads(threads);
}

}  // namespace attnbench
