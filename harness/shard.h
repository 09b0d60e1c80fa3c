// Sharded sweeps: a deterministic, cost-balanced partition of a config's cases into N parts that
// N independent processes (the tasks of a Slurm array job) run into N directories, and the
// manifest each shard directory carries so that `attnbench merge` can check and unite them
// (docs/DESIGN.md, "Sharded sweeps").
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "harness/sweep.h"

namespace attnbench {

constexpr int kMaxShards = 10000;

struct Shard {
  int index = 0, count = 0;  // shard `index` (1-based) of `count`; count 0 = the whole sweep
  bool active() const { return count > 0; }
  std::string text() const;  // "i/N"
  bool operator==(const Shard&) const = default;
};

// Reads an environment variable (nullptr when unset); tests pass their own.
using EnvLookup = std::function<const char*(const char*)>;
const char* process_env(const char* name);

// "i/N" with 1 <= i <= N <= kMaxShards, or "auto": ATTNBENCH_SHARD_INDEX/ATTNBENCH_SHARD_COUNT
// when set, else SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (an array submitted as
// --array=1-N). UsageError (one line, saying what is valid) on anything else.
Shard parse_shard(const std::string& text, const EnvLookup& env = process_env);

// Estimated cost of a case in microseconds, from the config and the variant's flops() only (so
// that it is the same on every machine): Google Benchmark's repetitions, each at least min_time,
// plus this case's share of the fp64 reference of its inputs, which `input_sharers` cases share.
// A case the sweep will skip for max_memory_gib costs 1.
int64_t estimated_case_cost(const SweepConfig& cfg, const Case& c, int64_t input_sharers);

// estimated_case_cost of each of `cases`, with the sweep's max_seconds rule predicted: a case
// costs 1 when a smaller n of its group is estimated above max_seconds (it will be skipped).
std::vector<int64_t> case_costs(const SweepConfig& cfg, const std::vector<Case>& cases);

// The 1-based shard of each of `cases` (= expand_cases(cfg)) among `count`. The units placed
// are whole scaling groups when max_seconds > 0 (a case's skip depends on the times of the
// group's smaller n, which another shard would not see) and single cases otherwise; largest
// estimated cost first (ties by key) onto the least loaded shard (ties: lowest index).
std::vector<int> assign_shards(const SweepConfig& cfg, const std::vector<Case>& cases, int count);

// Estimated cost (microseconds) of every shard, index 0 = shard 1.
std::vector<int64_t> shard_costs(const SweepConfig& cfg, const std::vector<Case>& cases,
                                 const std::vector<int>& shard_of, int count);

// The cases of `shard`, in the sweep's order.
std::vector<Case> cases_of_shard(const SweepConfig& cfg, const Shard& shard);

// The config as INI text that parse_sweep_config reads back to the same SweepConfig: every key,
// values in full precision. Its hash is the config's identity for merge (comments, key order
// and number spelling of the file do not matter).
std::string canonical_config(const SweepConfig& cfg);
std::string config_fingerprint(const SweepConfig& cfg);  // 16 hex digits (FNV-1a 64)

// DIR/shard.json: written by a sharded sweep before it measures anything, so that even a shard
// killed before its first case is known to merge.
struct ShardManifest {
  Shard shard;
  std::string fingerprint, git_commit, config_path, config;  // config: canonical_config
  std::vector<std::string> keys;                             // the shard's case keys
};
ShardManifest make_manifest(const SweepConfig& cfg, const Shard& shard,
                            const std::vector<Case>& cases, const std::string& config_path,
                            const std::string& git_commit);
void write_manifest(const std::string& dir, const ShardManifest& m);
// The manifest of DIR; std::nullopt-like empty (count 0) when DIR has none. UsageError naming
// the file when it is malformed.
ShardManifest read_manifest(const std::string& dir);

}  // namespace attnbench
