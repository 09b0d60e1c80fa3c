// Sweeps: a config (INI, Boost.Program_options) expanded into cases, measured one by one with
// the result files rewritten after every case so that an interrupted sweep can resume.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/tensor.h"
#include "harness/results.h"

namespace attnbench {

struct SweepConfig {
  std::vector<std::string> variants;  // spec strings
  std::vector<int64_t> seqs;
  int64_t dim = 64, heads = 8, batch = 1;
  std::vector<bool> causal = {false};  // repeatable key: both values make both kinds of case
  std::vector<std::string> dists = {"gaussian"};
  std::vector<uint64_t> seeds = {0};
  std::string posenc;  // "" = none
  int threads = 0;     // 0 = all cores
  int reps = 5;
  double min_time = 0.05;     // seconds per repetition
  double max_seconds = 0;     // per case; 0 = no limit
  double max_memory_gib = 0;  // estimated per case; 0 = what the machine has available
  int64_t ref_sample = 256;   // reference rows when Nq > ref_all_rows_max
  int64_t ref_all_rows_max = 4096;
  // The spec every other variant's crossover is measured against (one of `variants` when
  // given; the default "full" is used when present).
  std::string crossover_baseline = "full";
};

// Parses INI text; UsageError (one line, naming the config) on unknown keys, bad numbers,
// empty lists, repeated single keys or out-of-range values. Specs are checked by validate_config.
SweepConfig parse_sweep_config(std::istream& in, const std::string& name);
SweepConfig load_sweep_config(const std::string& path);  // UsageError if unreadable
// Cases the config expands to; UsageError when more than 100000 (a config can ask for
// millions in a few lines). check_cases also refuses a variant, dist or seed listed twice.
int64_t case_count(const SweepConfig& cfg);
void check_cases(const SweepConfig& cfg);
// Checks every variant spec (and shape), distribution and positional encoding up front.
void validate_config(const SweepConfig& cfg);

struct Case {
  std::string spec, variant;
  attn::Shape shape;
  std::string dist;
  uint64_t seed = 0;
  std::string posenc;
  std::string key() const;
  std::string input_key() const;  // the same for every variant on the same inputs
  std::string group_key() const;  // one Google Benchmark family: the key without n and seed
};
// Order: distribution, causal (as listed), variant, n ascending, seed.
std::vector<Case> expand_cases(const SweepConfig& cfg);

// Query rows the fp64 reference computes for nq rows: all up to ref_all_rows_max, else a sample.
int64_t reference_rows(const SweepConfig& cfg, int64_t nq);
// Memory a case needs beyond what is already allocated: q, k, v, out, the variant's extra,
// and the reference rows in fp64.
double estimated_bytes(const Case& c, const attn::Attention& a, int64_t ref_rows);

struct SweepOptions {
  std::string out_dir;  // "" = write no files
  bool resume = false;
  bool overwrite = false;  // replace results already in out_dir (else: UsageError unless resume)
  bool progress = false;   // progress line on stderr
  int threads = -1;        // OpenMP threads overriding the config's (-1 = the config's)
  int shard_index = 0, shard_count = 0;  // run only shard index/count (harness/shard.h); 0 = all
  std::string config_path, command;
  std::function<void(const RunContext&)> on_start;  // after the sgemm ceiling is measured
  std::function<void(const Row&)> on_row;           // called as each row is final
};

struct SweepResult {
  RunContext context;
  std::vector<Row> rows;
  std::vector<Scaling> scaling;
  size_t references_computed = 0;  // fp64 references: one per distinct input measured
};

SweepResult run_sweep(const SweepConfig& cfg, const SweepOptions& opt);

// Scaling entries (groups measured over >= 3 distinct n) from rows; `gb` maps group keys to
// Google Benchmark's fit where one was made in this process; crossovers are against the
// spec `baseline` on the same shape and inputs.
struct GbFit {
  std::string big_o;
  double rms = 0;
};
std::vector<Scaling> compute_scaling(const std::vector<Row>& rows,
                                     const std::vector<std::pair<std::string, GbFit>>& gb,
                                     const std::string& baseline = "full");
std::string scaling_group_key(const Row& r);

}  // namespace attnbench
