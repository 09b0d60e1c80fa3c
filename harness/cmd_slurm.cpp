// `attnbench slurm CONFIG --shards N ...`: a Slurm array job that runs the shards of a sweep and
// a job that, once every shard succeeded (afterok), merges and plots them. The scripts are
// plain sbatch files a user can read, edit and resubmit (README.md, "Sweeps on a Slurm cluster").
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "attention/npy.h"
#include "attention/tensor.h"
#include "harness/cli.h"
#include "harness/shard.h"
#include "harness/sweep.h"

namespace attnbench {

namespace {

namespace fs = std::filesystem;

// '...' for the shell: every character literal, a ' as '\''.
std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Values that go into #SBATCH lines: only the characters Slurm's own syntax uses, so that a
// value cannot end the line or add a directive.
void check_directive(const std::string& value, const std::string& allowed, const std::string& what,
                     const std::string& example) {
  if (value.empty() || value.size() > 64 || value.find_first_not_of(allowed) != std::string::npos)
    throw attn::UsageError(what + " '" + value + "' is not valid; expected e.g. " + example);
}

struct JobSpec {
  std::string exe, config, config_name, out, partition, time;
  int shards = 1, cpus = 1;
};

std::string sbatch_common(const JobSpec& j) {
  std::string s;
  if (!j.partition.empty()) s += "#SBATCH --partition=" + j.partition + "\n";
  if (!j.time.empty()) s += "#SBATCH --time=" + j.time + "\n";
  return s;
}

std::string array_script(const JobSpec& j, const std::string& generated_by) {
  const std::string n = std::to_string(j.shards), c = std::to_string(j.cpus);
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# attnbench: " << j.config << " as " << n << " shards, one Slurm array task each.\n"
    << "# Written by: " << generated_by << "\n"
    << "# Task i runs shard i/" << n
    << " (a cost-balanced part of the cases, the same on every machine)\n"
    << "# into " << j.out << "/shards/i, on the CPUs Slurm gave it.\n"
    << "# A task that failed, was cancelled or timed out can be rerun alone, continuing the\n"
    << "# cases it finished:\n"
    << "#   sbatch --array=i " << j.out << "/slurm/sweep.sbatch\n"
    << "#SBATCH --job-name=attnbench-" << j.config_name << "\n"
    << "#SBATCH --array=1-" << n << "\n"
    << "#SBATCH --ntasks=1\n"
    << "#SBATCH --cpus-per-task=" << c << "\n"
    << sbatch_common(j) << "#SBATCH --output=" << j.out << "/slurm/shard-%a.log\n"
    << "set -euo pipefail\n"
    << "# One OpenMP thread per CPU of the task, each bound to one core: libgomp takes the\n"
    << "# places from the CPUs the task may run on (Slurm's task/affinity or task/cgroup).\n"
    << "threads=${SLURM_CPUS_PER_TASK:-" << c << "}\n"
    << "export OMP_NUM_THREADS=$threads OMP_PROC_BIND=close OMP_PLACES=cores\n"
    << "exec " << quoted(j.exe) << " sweep " << quoted(j.config) << " \\\n"
    << "  --shard \"$SLURM_ARRAY_TASK_ID/" << n << "\" --threads \"$threads\" \\\n"
    << "  --out " << quoted(j.out) << "/shards/\"$SLURM_ARRAY_TASK_ID\" --resume --quiet\n";
  return s.str();
}

std::string merge_script(const JobSpec& j, const std::string& generated_by) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# attnbench: merges the " << j.shards << " shards of " << j.config << " into\n# " << j.out
    << " and plots them.\n"
    << "# Written by: " << generated_by << "\n"
    << "# Submitted to start once every array task succeeded:\n"
    << "#   sbatch --dependency=afterok:ARRAY_JOB_ID " << j.out << "/slurm/merge.sbatch\n"
    << "# (merge refuses an incomplete set and lists the missing cases).\n"
    << "#SBATCH --job-name=attnbench-" << j.config_name << "-merge\n"
    << "#SBATCH --ntasks=1\n"
    << "#SBATCH --cpus-per-task=1\n"
    << "#SBATCH --kill-on-invalid-dep=yes\n"
    << sbatch_common(j) << "#SBATCH --output=" << j.out << "/slurm/merge.log\n"
    << "set -euo pipefail\n"
    << quoted(j.exe) << " merge " << quoted(j.out) << " " << quoted(j.out + "/shards/") << "{1.."
    << j.shards << "} --overwrite\n"
    << quoted(j.exe) << " plot " << quoted(j.out) << "\n";
  return s.str();
}

// Runs sbatch with `args` and returns the job id it printed (--parsable: "ID[;CLUSTER]").
std::string sbatch(const std::string& args) {
  const std::string cmd = "sbatch --parsable " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw attn::RuntimeError("cannot run sbatch");
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  const std::string id = out.substr(0, out.find_first_not_of("0123456789"));
  if (status != 0 || id.empty())
    throw attn::RuntimeError("sbatch " + args + " failed" + (out.empty() ? "" : ": " + out) +
                             (status == (127 << 8) ? " (is Slurm's sbatch on PATH?)" : ""));
  return id;
}

}  // namespace

int cmd_slurm(const Args& args) {
  namespace po = boost::program_options;
  std::string config, out;
  JobSpec j;
  bool submit = false;
  po::options_description opts(
      "attnbench slurm CONFIG --shards N [options]: writes OUT/slurm/sweep.sbatch (an array job, "
      "one shard per task) and OUT/slurm/merge.sbatch (merge and plot, after every task "
      "succeeded)");
  opts.add_options()("help,h", "this help")("shards", po::value(&j.shards)->required(),
                                            "number of shards (array tasks)")(
      "out", po::value(&out), "results directory (default results/<config name>)")(
      "partition", po::value(&j.partition), "Slurm partition (default: the cluster's)")(
      "time", po::value(&j.time), "time limit per task, Slurm syntax (e.g. 2:00:00, 1-12:00:00)")(
      "cpus-per-task", po::value(&j.cpus),
      "CPUs per task = OpenMP threads per shard (default: the config's threads, 1 if 0)")(
      "submit", po::bool_switch(&submit), "submit both jobs with sbatch");
  po::options_description hidden;
  hidden.add_options()("config", po::value(&config)->required(), "");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("config", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);

  const SweepConfig cfg = load_sweep_config(config);
  try {  // a broken config fails here, not in every array task
    validate_config(cfg);
  } catch (const attn::UsageError& e) {
    throw attn::UsageError("config " + config + ": " + e.what());
  }
  if (j.shards < 1 || j.shards > kMaxShards)
    throw attn::UsageError("--shards must be in [1, " + std::to_string(kMaxShards) + "], got " +
                           std::to_string(j.shards));
  if (!vm.count("cpus-per-task")) j.cpus = cfg.threads > 0 ? cfg.threads : 1;
  if (j.cpus < 1 || j.cpus > kMaxThreads)
    throw attn::UsageError("--cpus-per-task must be in [1, " + std::to_string(kMaxThreads) +
                           "], got " + std::to_string(j.cpus));
  if (vm.count("partition"))
    check_directive(j.partition,
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-,",
                    "--partition", "debug or cpu,long");
  if (vm.count("time")) check_directive(j.time, "0123456789:-", "--time", "2:00:00 or 1-12:00:00");
  j.config_name = fs::path(config).stem().string();
  check_directive(j.config_name,
                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
                  "the config's name", "quick (from configs/quick.ini)");
  j.config = fs::absolute(config).lexically_normal().string();
  j.out = fs::absolute(out.empty() ? "results/" + j.config_name : out).lexically_normal().string();
  if (j.out.size() > 1 && j.out.back() == '/') j.out.pop_back();
  if (j.out.find_first_of(" \t\n\r%") != std::string::npos)
    throw attn::UsageError("--out " + j.out +
                           ": must not contain white space or '%' (it goes into #SBATCH lines)");
  std::error_code ec;
  j.exe = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) throw attn::RuntimeError("cannot find this executable (/proc/self/exe)");

  std::string generated_by = "attnbench slurm";
  for (const auto& a : args) generated_by += " " + a;
  std::replace(generated_by.begin(), generated_by.end(), '\n', ' ');  // it goes into a comment
  std::replace(generated_by.begin(), generated_by.end(), '\r', ' ');
  fs::create_directories(j.out + "/slurm");
  const std::string sweep_path = j.out + "/slurm/sweep.sbatch",
                    merge_path = j.out + "/slurm/merge.sbatch";
  attn::write_file_atomic(sweep_path, array_script(j, generated_by));
  attn::write_file_atomic(merge_path, merge_script(j, generated_by));
  const size_t cases = expand_cases(cfg).size();
  std::printf("wrote %s (%d array tasks over %zu cases, %d CPUs each) and %s\n", sweep_path.c_str(),
              j.shards, cases, j.cpus, merge_path.c_str());
  if (!submit) {
    std::printf("submit: id=$(sbatch --parsable %s) && sbatch --dependency=afterok:$id %s\n",
                quoted(sweep_path).c_str(), quoted(merge_path).c_str());
    return 0;
  }
  const std::string array_id = sbatch(quoted(sweep_path));
  const std::string merge_id =
      sbatch("--dependency=afterok:" + array_id + " " + quoted(merge_path));
  std::printf("submitted array job %s (%d shards) and merge job %s (afterok:%s); results in %s\n",
              array_id.c_str(), j.shards, merge_id.c_str(), array_id.c_str(), j.out.c_str());
  return 0;
}

}  // namespace attnbench
