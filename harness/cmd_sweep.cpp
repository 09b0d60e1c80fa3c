#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "harness/cli.h"
#include "harness/shard.h"
#include "harness/sweep.h"

namespace attnbench {

namespace {

const char* kConfigKeys =
    R"(config keys (INI, '#' comments; repeatable keys may be given several times):
  variant = SPEC         variant spec, repeatable (attnbench list)
  seq = 512,1024,...     sequence lengths
  dim, heads, batch      D (64), H (8), B (1)
  causal = true|false    causal mask, repeatable: both lines give both kinds of case (false)
  dist = NAME            input distribution, repeatable (gaussian)
  seed = N               input seed, repeatable (0)
  posenc = SPEC          positional encoding added to q and k (none)
  threads = N            OpenMP threads, 0 = all cores (0)
  reps = N               Google Benchmark repetitions (5)
  min_time = S           minimum seconds per repetition (0.05)
  max_seconds = S        once a case takes longer, skip the variant's larger n (0 = no limit)
  max_memory_gib = G     skip cases whose estimated memory exceeds G GiB (0 = available memory)
  ref_sample = N         reference rows sampled when Nq > ref_all_rows_max (256)
  ref_all_rows_max = N   exact reference over every row up to this Nq (4096)
)";

}  // namespace

int cmd_sweep(const Args& args) {
  namespace po = boost::program_options;
  std::string config, out, shard;
  int threads = -1;
  bool resume = false, overwrite = false, quiet = false;
  po::options_description opts("attnbench sweep CONFIG [options]");
  opts.add_options()("help,h", "this help")("config", po::value(&config)->required(),
                                            "sweep definition (INI), e.g. configs/default.ini")(
      "out", po::value(&out),
      "output directory (default results/<config name>/, with --shard i/N "
      "results/<config name>/shards/<i>/)")("resume", po::bool_switch(&resume),
                                            "keep the cases already in OUT/results.json")(
      "overwrite", po::bool_switch(&overwrite),
      "replace results already in OUT (without it or --resume, existing results are refused)")(
      "quiet", po::bool_switch(&quiet), "no progress line and no per-case table")(
      "shard", po::value(&shard),
      "run only shard i/N of the cases (cost-balanced, the same on every machine; combine "
      "the shards with `attnbench merge`), or auto: ATTNBENCH_SHARD_INDEX/_COUNT or "
      "SLURM_ARRAY_TASK_ID/_COUNT")("threads", po::value(&threads),
                                    "OpenMP threads, overriding the config's (0 = all cores)");
  po::positional_options_description pos;
  pos.add("config", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n" << kConfigKeys, 0;
  po::notify(vm);

  const SweepConfig cfg = load_sweep_config(config);
  SweepOptions opt;
  if (vm.count("threads")) check_threads(threads, "--threads"), opt.threads = threads;
  if (vm.count("shard")) {
    const Shard s = parse_shard(shard);
    opt.shard_index = s.index, opt.shard_count = s.count;
  }
  // A shard's default directory is where `attnbench slurm` puts it: results/<config>/shards/<i>.
  const std::string results = "results/" + std::filesystem::path(config).stem().string();
  opt.out_dir = !out.empty()      ? out
                : opt.shard_count ? results + "/shards/" + std::to_string(opt.shard_index)
                                  : results;
  opt.resume = resume;
  opt.overwrite = overwrite;
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
      "%zu rows in %s/results.csv and results.json (%ssgemm ceiling %.1f GFLOP/s, %d "
      "threads)\n",
      res.rows.size(), opt.out_dir.c_str(),
      !opt.shard_count ? ""
                       : ("shard " + Shard{opt.shard_index, opt.shard_count}.text() + ", ").c_str(),
      res.context.sgemm_ceiling_gflops, res.context.threads);
  return 0;
}

}  // namespace attnbench
