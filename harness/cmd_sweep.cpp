#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "harness/cli.h"
#include "harness/sweep.h"

namespace attnbench {

int cmd_sweep(const Args& args) {
  namespace po = boost::program_options;
  std::string config, out;
  bool resume = false, quiet = false;
  po::options_description opts("attnbench sweep CONFIG [options]");
  opts.add_options()("help,h", "this help")("config", po::value(&config)->required(),
                                            "sweep definition (INI), e.g. configs/default.ini")(
      "out", po::value(&out), "output directory (default results/<config name>/)")(
      "resume", po::bool_switch(&resume), "keep the cases already in OUT/results.json")(
      "quiet", po::bool_switch(&quiet), "no progress line and no per-case table");
  po::positional_options_description pos;
  pos.add("config", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);

  const SweepConfig cfg = load_sweep_config(config);
  SweepOptions opt;
  opt.out_dir = out.empty() ? "results/" + std::filesystem::path(config).stem().string() : out;
  opt.resume = resume;
  opt.progress = !quiet && isatty(STDERR_FILENO);
  opt.config_path = config;
  opt.command = "attnbench sweep";
  for (const auto& a : args) opt.command += " " + a;
  if (!quiet) {
    opt.on_start = [](const RunContext&) { print_row_header(); };
    opt.on_row = [&](const Row& r) {
      if (opt.progress) std::fprintf(stderr, "\r\033[K");
      print_row(r);
    };
  }
  const SweepResult res = run_sweep(cfg, opt);
  if (!quiet) print_scaling(res.scaling);
  std::printf(
      "%zu rows in %s/results.csv and results.json (sgemm ceiling %.1f GFLOP/s, %d "
      "threads)\n",
      res.rows.size(), opt.out_dir.c_str(), res.context.sgemm_ceiling_gflops, res.context.threads);
  return 0;
}

}  // namespace attnbench
