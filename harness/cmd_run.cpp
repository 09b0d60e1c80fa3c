#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "attention/registry.h"
#include "harness/cli.h"
#include "harness/sweep.h"

namespace attnbench {

// A one-off sweep from command-line options: the same machinery as `attnbench sweep`
// (Google Benchmark timing, measured memory, accuracy), printed as a table.
int cmd_run(const Args& args) {
  namespace po = boost::program_options;
  SweepConfig cfg;
  std::string seqs, dist = "gaussian", out;
  uint64_t seed = 0;
  bool overwrite = false;
  bool causal = false;
  cfg.reps = 5;
  po::options_description opts("attnbench run");
  opts.add_options()("help,h", "this help")("variant", po::value(&cfg.variants)->required(),
                                            "variant spec, repeatable (see attnbench list)")(
      "seq", po::value(&seqs)->required(), "sequence lengths, e.g. 1024,2048")(
      "dim", po::value(&cfg.dim)->default_value(64), "head dim D")(
      "heads", po::value(&cfg.heads)->default_value(8), "heads H")(
      "batch", po::value(&cfg.batch)->default_value(1), "batch B")(
      "causal", po::bool_switch(&causal), "causal mask (j <= i)")(
      "threads", po::value(&cfg.threads)->default_value(0), "OpenMP threads (0 = all cores)")(
      "seed", po::value(&seed)->default_value(0), "input seed")(
      "dist", po::value(&dist)->default_value("gaussian"), "input distribution (attnbench list)")(
      "posenc", po::value(&cfg.posenc), "positional encoding added to q and k")(
      "reps", po::value(&cfg.reps)->default_value(5),
      "Google Benchmark repetitions (median and spread reported)")(
      "min-time", po::value(&cfg.min_time)->default_value(0.05), "minimum seconds per repetition")(
      "crossover-baseline", po::value(&cfg.crossover_baseline)->default_value("full"),
      "the spec crossovers are measured against (one of the --variant specs)")(
      "out", po::value(&out), "also write results.csv/json into this directory")(
      "overwrite", po::bool_switch(&overwrite), "replace results already in --out");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  if (cfg.reps < 1) throw attn::UsageError("--reps must be >= 1");
  if (!(cfg.min_time > 0)) throw attn::UsageError("--min-time must be > 0 seconds");
  cfg.seqs = parse_int_list(seqs, "--seq");
  cfg.dists = {dist};
  cfg.seeds = {seed};
  cfg.causal = {causal};
  if (!vm["crossover-baseline"].defaulted() &&
      std::find(cfg.variants.begin(), cfg.variants.end(), cfg.crossover_baseline) ==
          cfg.variants.end())
    throw attn::UsageError("--crossover-baseline '" + cfg.crossover_baseline +
                           "' is not one of the --variant specs");
  // A quick command refuses what cannot fit (a sweep would skip it with a note instead).
  for (const auto& spec : cfg.variants) {
    auto a = attn::make_attention(spec);
    for (int64_t n : cfg.seqs) {
      attn::Shape s{cfg.batch, cfg.heads, n, n, cfg.dim, causal};
      a->validate(s);
      const double io = 4.0 * s.heads_total() * n * s.dim * sizeof(float);
      attn::check_fits_in_memory(io + a->extra_bytes(s), spec + " at n=" + std::to_string(n));
    }
  }

  SweepOptions opt;
  opt.out_dir = out;
  opt.overwrite = overwrite;
  opt.command = "attnbench run";
  for (const auto& a : args) opt.command += " " + a;
  opt.on_start = [](const RunContext& c) {
    std::printf("oneDNN sgemm ceiling: %.1f GFLOP/s with %d threads (2048^3, median of 7)\n",
                c.sgemm_ceiling_gflops, c.threads);
    print_row_header();
  };
  opt.on_row = print_row;
  const SweepResult res = run_sweep(cfg, opt);
  print_scaling(res.scaling);
  return 0;
}

}  // namespace attnbench
