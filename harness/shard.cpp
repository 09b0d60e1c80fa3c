#include "harness/shard.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "attention/npy.h"
#include "attention/registry.h"

namespace attnbench {

using nlohmann::json;

std::string Shard::text() const {
  return std::to_string(index) + "/" + std::to_string(count);
}

const char* process_env(const char* name) {
  return std::getenv(name);
}

namespace {

// A decimal integer in [1, kMaxShards], or 0 when `s` is not one.
int shard_number(const std::string& s) {
  if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos) return 0;
  const long v = std::strtol(s.c_str(), nullptr, 10);
  return v >= 1 && v <= kMaxShards ? int(v) : 0;
}

Shard checked_shard(const std::string& index, const std::string& count, const std::string& what) {
  const std::string valid = "; expected i/N with 1 <= i <= N <= " + std::to_string(kMaxShards) +
                            " (shards are numbered from 1), e.g. 2/4, or auto";
  const int n = shard_number(count), i = shard_number(index);
  if (n == 0)
    throw attn::UsageError(what + ": the shard count '" + count + "' is not valid" + valid);
  if (i == 0 || i > n)
    throw attn::UsageError(what + ": the shard index '" + index + "' is not in 1.." +
                           std::to_string(n) + valid);
  return {i, n};
}

Shard shard_from_env(const EnvLookup& env) {
  for (const auto& [idx, cnt] : {std::pair{"ATTNBENCH_SHARD_INDEX", "ATTNBENCH_SHARD_COUNT"},
                                 std::pair{"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"}}) {
    const char* i = env(idx);
    const char* n = env(cnt);
    if (!i && !n) continue;
    if (!i || !n)
      throw attn::UsageError(std::string("--shard auto: ") + (i ? cnt : idx) + " is unset but " +
                             (i ? idx : cnt) + " is set; set both");
    return checked_shard(
        i, n,
        std::string("--shard auto (") + idx + "=" + i + ", " + cnt + "=" + n +
            (std::string(idx) == "SLURM_ARRAY_TASK_ID" ? "; submit the array as --array=1-N)"
                                                       : ")"));
  }
  throw attn::UsageError(
      "--shard auto: neither ATTNBENCH_SHARD_INDEX/ATTNBENCH_SHARD_COUNT nor "
      "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT is set; give --shard i/N");
}

}  // namespace

Shard parse_shard(const std::string& text, const EnvLookup& env) {
  if (text == "auto") return shard_from_env(env);
  const auto slash = text.find('/');
  if (slash == std::string::npos)
    throw attn::UsageError("--shard '" + text +
                           "' is not i/N (e.g. 2/4: shard 2 of 4, numbered from 1) or auto");
  return checked_shard(text.substr(0, slash), text.substr(slash + 1), "--shard '" + text + "'");
}

// ---------------------------------------------------------------------------------------------
// Cost model

namespace {

// Nominal throughputs that turn FLOPs into seconds. They only need to rank cases the way their
// real times rank (which they do within a factor of a few: dense fp32 kernels run at 5-50
// GFLOP/s on the machines attnbench targets, the scalar fp64 reference at ~1), and they are
// constants so that every machine computes the same partition.
constexpr double kForwardFlopsPerSecond = 10e9;
constexpr double kReferenceFlopsPerSecond = 1e9;

double reference_seconds(const SweepConfig& cfg, const Case& c) {
  const attn::Shape& s = c.shape;
  const double rows = double(reference_rows(cfg, s.nq));
  const double keys = s.causal ? (double(s.nk) + 1) / 2 : double(s.nk);
  return 4.0 * double(s.dim) * rows * keys * double(s.heads_total()) / kReferenceFlopsPerSecond;
}

}  // namespace

int64_t estimated_case_cost(const SweepConfig& cfg, const Case& c, int64_t input_sharers) {
  const auto a = attn::make_attention(c.spec);
  const double gib = double(1ull << 30);
  if (cfg.max_memory_gib > 0 &&
      estimated_bytes(c, *a, reference_rows(cfg, c.shape.nq)) > cfg.max_memory_gib * gib)
    return 1;
  // Google Benchmark runs each repetition for at least min_time, and at least one forward;
  // one more for the warm-up and the family's first iteration.
  const double forward = a->flops(c.shape) / kForwardFlopsPerSecond;
  const double timing = double(cfg.reps + 1) * std::max(cfg.min_time, forward);
  const double ref = reference_seconds(cfg, c) / double(std::max<int64_t>(1, input_sharers));
  return std::max<int64_t>(1, std::llround((timing + ref) * 1e6));
}

std::vector<int64_t> case_costs(const SweepConfig& cfg, const std::vector<Case>& cases) {
  std::map<std::string, int64_t> sharers;  // cases per input
  for (const Case& c : cases) ++sharers[c.input_key()];
  std::vector<int64_t> cost;
  for (const Case& c : cases) cost.push_back(estimated_case_cost(cfg, c, sharers[c.input_key()]));
  if (cfg.max_seconds <= 0) return cost;
  // The sweep skips a group's larger n once one of its cases took longer than max_seconds:
  // predicted from the estimates, whatever the order of `cases`.
  const double budget_us = cfg.max_seconds * 1e6;
  std::map<std::string, std::map<int64_t, int64_t>> slowest;  // group -> n -> estimate
  for (size_t i = 0; i < cases.size(); ++i) {
    int64_t& s = slowest[cases[i].group_key()][cases[i].shape.nq];
    s = std::max(s, cost[i]);
  }
  for (size_t i = 0; i < cases.size(); ++i)
    for (const auto& [n, us] : slowest[cases[i].group_key()])
      if (n<cases[i].shape.nq&& double(us)> budget_us) cost[i] = 1;
  return cost;
}

std::vector<int> assign_shards(const SweepConfig& cfg, const std::vector<Case>& cases, int count) {
  if (count < 1) throw attn::UsageError("the shard count must be >= 1");
  const std::vector<int64_t> cost = case_costs(cfg, cases);
  struct Unit {
    std::string key;
    int64_t cost = 0;
    std::vector<size_t> cases;
  };
  std::map<std::string, Unit> units;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::string key = cfg.max_seconds > 0 ? c.group_key() : c.key();
    Unit& u = units[key];
    u.key = key;
    u.cost += cost[i];
    u.cases.push_back(i);
  }
  std::vector<const Unit*> order;
  for (const auto& [k, u] : units) order.push_back(&u);
  // Longest processing time first (Graham 1969): within 4/3 of the best makespan. Integer
  // costs and key ties make the order, hence the partition, the same everywhere.
  std::sort(order.begin(), order.end(), [](const Unit* a, const Unit* b) {
    return a->cost != b->cost ? a->cost > b->cost : a->key < b->key;
  });
  std::vector<int64_t> load(size_t(count), 0);
  std::vector<int> shard_of(cases.size(), 0);
  for (const Unit* u : order) {
    const size_t s = size_t(std::min_element(load.begin(), load.end()) - load.begin());
    load[s] += u->cost;
    for (size_t i : u->cases) shard_of[i] = int(s) + 1;
  }
  return shard_of;
}

std::vector<int64_t> shard_costs(const SweepConfig& cfg, const std::vector<Case>& cases,
                                 const std::vector<int>& shard_of, int count) {
  const std::vector<int64_t> cost = case_costs(cfg, cases);
  std::vector<int64_t> total(size_t(count), 0);
  for (size_t i = 0; i < cases.size(); ++i) total[size_t(shard_of[i] - 1)] += cost[i];
  return total;
}

std::vector<Case> cases_of_shard(const SweepConfig& cfg, const Shard& shard) {
  std::vector<Case> all = expand_cases(cfg);
  if (!shard.active()) return all;
  const std::vector<int> shard_of = assign_shards(cfg, all, shard.count);
  std::vector<Case> mine;
  for (size_t i = 0; i < all.size(); ++i)
    if (shard_of[i] == shard.index) mine.push_back(all[i]);
  return mine;
}

// ---------------------------------------------------------------------------------------------
// Config identity

namespace {

std::string exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

std::string canonical_config(const SweepConfig& cfg) {
  std::ostringstream o;
  for (const auto& v : cfg.variants) o << "variant = " << v << "\n";
  o << "seq = ";
  for (size_t i = 0; i < cfg.seqs.size(); ++i) o << (i ? "," : "") << cfg.seqs[i];
  o << "\ndim = " << cfg.dim << "\nheads = " << cfg.heads << "\nbatch = " << cfg.batch << "\n";
  for (bool c : cfg.causal) o << "causal = " << (c ? "true" : "false") << "\n";
  for (const auto& d : cfg.dists) o << "dist = " << d << "\n";
  for (uint64_t s : cfg.seeds) o << "seed = " << s << "\n";
  if (!cfg.posenc.empty()) o << "posenc = " << cfg.posenc << "\n";
  o << "threads = " << cfg.threads << "\nreps = " << cfg.reps
    << "\nmin_time = " << exact(cfg.min_time) << "\nmax_seconds = " << exact(cfg.max_seconds)
    << "\nmax_memory_gib = " << exact(cfg.max_memory_gib) << "\nref_sample = " << cfg.ref_sample
    << "\nref_all_rows_max = " << cfg.ref_all_rows_max << "\n";
  return o.str();
}

std::string config_fingerprint(const SweepConfig& cfg) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64: offset basis and prime
  for (unsigned char ch : canonical_config(cfg)) h = (h ^ ch) * 1099511628211ull;
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Manifest

ShardManifest make_manifest(const SweepConfig& cfg, const Shard& shard,
                            const std::vector<Case>& cases, const std::string& config_path,
                            const std::string& git_commit) {
  ShardManifest m;
  m.shard = shard, m.fingerprint = config_fingerprint(cfg), m.git_commit = git_commit;
  m.config_path = config_path, m.config = canonical_config(cfg);
  for (const Case& c : cases) m.keys.push_back(c.key());
  return m;
}

void write_manifest(const std::string& dir, const ShardManifest& m) {
  const json j = {{"shard", m.shard.text()},    {"index", m.shard.index},
                  {"count", m.shard.count},     {"config_fingerprint", m.fingerprint},
                  {"git_commit", m.git_commit}, {"config_path", m.config_path},
                  {"config", m.config},         {"cases", m.keys}};
  std::filesystem::create_directories(dir);
  attn::write_file_atomic(dir + "/shard.json", j.dump(1) + "\n");
}

ShardManifest read_manifest(const std::string& dir) {
  const std::string path = dir + "/shard.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  std::ifstream f(path);
  if (!f) throw attn::RuntimeError(path + ": cannot read");
  try {
    const json j = json::parse(f);
    ShardManifest m;
    m.shard = checked_shard(std::to_string(j.at("index").get<int64_t>()),
                            std::to_string(j.at("count").get<int64_t>()), path);
    m.fingerprint = j.at("config_fingerprint").get<std::string>();
    m.git_commit = j.at("git_commit").get<std::string>();
    m.config_path = j.at("config_path").get<std::string>();
    m.config = j.at("config").get<std::string>();
    m.keys = j.at("cases").get<std::vector<std::string>>();
    return m;
  } catch (const json::exception& e) {
    throw attn::UsageError(path + " is not a shard manifest (" + e.what() +
                           "); it is written by `attnbench sweep --shard`");
  }
}

}  // namespace attnbench
