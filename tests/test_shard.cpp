// Sharded sweeps: --shard parsing, the partition (complete, disjoint, independent of the case
// order, cost-balanced), config identity, per-shard resume, merge (equal to the unsharded sweep;
// every refusal) and the Slurm scripts of `attnbench slurm` (with a stand-in sbatch).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "harness/merge.h"
#include "harness/shard.h"
#include "harness/sweep.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;
using attnbench::Case;
using attnbench::Shard;
using attnbench::SweepConfig;
using nlohmann::json;

SweepConfig parse(const std::string& text) {
  std::istringstream in(text);
  return attnbench::parse_sweep_config(in, "t.ini");
}

SweepConfig shipped(const std::string& name) {
  return attnbench::load_sweep_config(std::string(ATTN_SOURCE_DIR) + "/configs/" + name);
}

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("attn_shard_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string shard_error(const std::string& text,
                        const std::map<std::string, std::string>& env = {}) {
  try {
    attnbench::parse_shard(text, [&](const char* k) -> const char* {
      auto it = env.find(k);
      return it == env.end() ? nullptr : it->second.c_str();
    });
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

Shard shard_of_env(const std::map<std::string, std::string>& env) {
  return attnbench::parse_shard("auto", [&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(ShardSpec, ParsesIndexOfCountAndAuto) {
  EXPECT_EQ(attnbench::parse_shard("2/4"), (Shard{2, 4}));
  EXPECT_EQ(attnbench::parse_shard("1/1"), (Shard{1, 1}));
  EXPECT_EQ(shard_of_env({{"SLURM_ARRAY_TASK_ID", "3"}, {"SLURM_ARRAY_TASK_COUNT", "5"}}),
            (Shard{3, 5}));
  // The generic pair wins over Slurm's (another scheduler inside a Slurm allocation).
  EXPECT_EQ(shard_of_env({{"ATTNBENCH_SHARD_INDEX", "1"},
                          {"ATTNBENCH_SHARD_COUNT", "2"},
                          {"SLURM_ARRAY_TASK_ID", "3"},
                          {"SLURM_ARRAY_TASK_COUNT", "5"}}),
            (Shard{1, 2}));
}

TEST(ShardSpec, BadValuesAreOneLineUsageErrors) {
  for (const std::string bad : {"0/3", "4/3", "a/3", "1/0", "1/", "/3", "3", "-1/3", "1/3x", "",
                                "1/10001", "99999999999999999999/3", " 1/3", "1//3"}) {
    const std::string e = shard_error(bad);
    EXPECT_FALSE(e.empty()) << "'" << bad << "' was accepted";
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_NE(e.find("--shard"), std::string::npos) << e;
  }
  EXPECT_NE(shard_error("0/3").find("numbered from 1"), std::string::npos);
  EXPECT_NE(shard_error("auto").find("SLURM_ARRAY_TASK_ID"), std::string::npos);
  EXPECT_NE(shard_error("auto", {{"SLURM_ARRAY_TASK_ID", "0"}, {"SLURM_ARRAY_TASK_COUNT", "3"}})
                .find("--array=1-N"),
            std::string::npos);
  EXPECT_NE(shard_error("auto", {{"SLURM_ARRAY_TASK_ID", "2"}}).find("SLURM_ARRAY_TASK_COUNT"),
            std::string::npos);
}

// Every case in exactly one shard, whatever the count; the same partition when computed again
// or from the cases in another order (it depends on keys and costs only).
TEST(ShardPartition, CompleteDisjointAndIndependentOfOrder) {
  for (const char* name : {"quick.ini", "default.ini"}) {
    const SweepConfig cfg = shipped(name);
    const std::vector<Case> cases = attnbench::expand_cases(cfg);
    for (int count : {1, 2, 3, 4, 7, int(cases.size()) + 3}) {
      const std::vector<int> a = attnbench::assign_shards(cfg, cases, count);
      ASSERT_EQ(a.size(), cases.size());
      for (int s : a) EXPECT_TRUE(s >= 1 && s <= count) << s;
      EXPECT_EQ(attnbench::assign_shards(cfg, cases, count), a);
      std::vector<Case> reversed(cases.rbegin(), cases.rend());
      const std::vector<int> b = attnbench::assign_shards(cfg, reversed, count);
      for (size_t i = 0; i < cases.size(); ++i)
        EXPECT_EQ(b[cases.size() - 1 - i], a[i]) << name << " " << cases[i].key();
    }
    // cases_of_shard: the same partition, each shard's cases in the sweep's order.
    const std::vector<int> a = attnbench::assign_shards(cfg, cases, 3);
    std::vector<std::string> united;
    for (int s = 1; s <= 3; ++s) {
      std::vector<std::string> want;
      for (size_t i = 0; i < cases.size(); ++i)
        if (a[i] == s) want.push_back(cases[i].key());
      std::vector<std::string> got;
      for (const Case& c : attnbench::cases_of_shard(cfg, {s, 3})) got.push_back(c.key());
      EXPECT_EQ(got, want) << name << " shard " << s;
      united.insert(united.end(), got.begin(), got.end());
    }
    EXPECT_EQ(united.size(), cases.size());
  }
}

double max_over_mean(const std::vector<int64_t>& cost) {
  double sum = 0, mx = 0;
  for (int64_t c : cost) sum += double(c), mx = std::max(mx, double(c));
  return mx / (sum / double(cost.size()));
}

// Balanced by estimated cost, not by count: the shipped sweeps split within a few percent, and
// the largest-n cases of default.ini are spread over the shards.
TEST(ShardPartition, BalancedByEstimatedCost) {
  for (const auto& [name, count, limit] :
       {std::tuple{"default.ini", 4, 1.10}, std::tuple{"quick.ini", 3, 1.10},
        std::tuple{"scaling.ini", 4, 1.30}}) {
    const SweepConfig cfg = shipped(name);
    const std::vector<Case> cases = attnbench::expand_cases(cfg);
    const std::vector<int> a = attnbench::assign_shards(cfg, cases, count);
    const double ratio = max_over_mean(attnbench::shard_costs(cfg, cases, a, count));
    EXPECT_LE(ratio, limit) << name << " over " << count << " shards";
    std::cout << name << " over " << count << " shards: estimated max/mean " << ratio << "\n";
  }
  const SweepConfig cfg = shipped("default.ini");
  const std::vector<Case> cases = attnbench::expand_cases(cfg);
  const std::vector<int> a = attnbench::assign_shards(cfg, cases, 4);
  std::set<int> largest;
  for (size_t i = 0; i < cases.size(); ++i)
    if (cases[i].shape.nq == 16384) largest.insert(a[i]);
  EXPECT_GE(largest.size(), 3u) << "the n = 16384 cases are not spread";
}

// With max_seconds a group's larger n are skipped after a slow smaller n: its cases stay in
// one shard. Without it cases are placed one by one.
TEST(ShardPartition, TimeBudgetKeepsScalingGroupsTogether) {
  SweepConfig cfg = parse(
      "variant = full\nvariant = sliding_window:radius=8\nseq = 64,128,256,512\n"
      "max_seconds = 5\n");
  std::vector<Case> cases = attnbench::expand_cases(cfg);
  std::vector<int> a = attnbench::assign_shards(cfg, cases, 4);
  std::map<std::string, std::set<int>> groups;
  for (size_t i = 0; i < cases.size(); ++i) groups[cases[i].group_key()].insert(a[i]);
  for (const auto& [g, shards] : groups) EXPECT_EQ(shards.size(), 1u) << g;
  cfg.max_seconds = 0;
  a = attnbench::assign_shards(cfg, cases, 4);
  EXPECT_EQ(std::set<int>(a.begin(), a.end()).size(), 4u);
}

TEST(ShardConfig, CanonicalTextRoundTripsAndIsTheIdentity) {
  const SweepConfig c = shipped("default.ini");
  EXPECT_EQ(attnbench::canonical_config(parse(attnbench::canonical_config(c))),
            attnbench::canonical_config(c));
  const std::string a = "variant = full\nseq = 64,128\nmin_time = 0.1\n";
  const std::string b = "# the same sweep\nmin_time = 1e-1\nseq = 64, 128\nvariant = full\n";
  EXPECT_EQ(attnbench::config_fingerprint(parse(a)), attnbench::config_fingerprint(parse(b)));
  EXPECT_NE(attnbench::config_fingerprint(parse(a)),
            attnbench::config_fingerprint(parse(a + "reps = 4\n")));
}

// ---------------------------------------------------------------------------------------------
// Sharded sweeps and merge

const char* kSmall =
    "variant = full\nvariant = sliding_window:radius=8\nvariant = performer:features=16\n"
    "seq = 32,64,128\ndim = 16\nheads = 1\ndist = gaussian\ndist = local\nseed = 0\nseed = 3\n"
    "reps = 2\nmin_time = 0.001\nthreads = 1\nref_all_rows_max = 64\nref_sample = 16\n";

attnbench::SweepResult sweep(const SweepConfig& cfg, const fs::path& out, Shard s = {},
                             bool resume = false) {
  attnbench::SweepOptions opt;
  opt.out_dir = out.string();
  opt.config_path = "small.ini";
  opt.shard_index = s.index, opt.shard_count = s.count;
  opt.resume = resume;
  return attnbench::run_sweep(cfg, opt);
}

std::string merge_error(const std::vector<std::string>& dirs, bool allow_mixed = false) {
  try {
    attnbench::merge_shards(dirs, allow_mixed, "test");
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

void write_json(const fs::path& p, const json& j) {
  std::ofstream(p) << j.dump(1);
}

// One unsharded sweep and its three shards, run once for the merge tests.
class Merge : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = scratch("merge");
    cfg_ = parse(kSmall);
    whole_ = sweep(cfg_, dir_ / "whole");
    for (int i = 1; i <= 3; ++i) sweep(cfg_, shard_dir(i), {i, 3});
  }
  static fs::path shard_dir(int i) { return dir_ / ("s" + std::to_string(i)); }
  static std::vector<std::string> shards() {
    return {shard_dir(1).string(), shard_dir(2).string(), shard_dir(3).string()};
  }
  // A copy of the shards that a test may damage.
  static std::vector<std::string> copies(const std::string& name) {
    std::vector<std::string> out;
    for (int i = 1; i <= 3; ++i) {
      const fs::path d = dir_ / name / std::to_string(i);
      fs::remove_all(d);
      fs::create_directories(d.parent_path());
      fs::copy(shard_dir(i), d, fs::copy_options::recursive);
      out.push_back(d.string());
    }
    return out;
  }
  static fs::path dir_;
  static SweepConfig cfg_;
  static attnbench::SweepResult whole_;
};
fs::path Merge::dir_;
SweepConfig Merge::cfg_;
attnbench::SweepResult Merge::whole_;

TEST_F(Merge, EqualsTheUnshardedSweepInCasesAndAccuracy) {
  size_t total = 0;
  for (int i = 1; i <= 3; ++i) {
    const size_t n = read_json(shard_dir(i) / "results.json")["rows"].size();
    EXPECT_GT(n, 0u) << "shard " << i << " is empty";
    total += n;
  }
  EXPECT_EQ(total, whole_.rows.size());
  // Given in any order.
  const attnbench::MergeResult m =
      attnbench::merge_shards({shards()[2], shards()[0], shards()[1]}, false, "test");
  ASSERT_EQ(m.rows.size(), whole_.rows.size());
  for (size_t i = 0; i < m.rows.size(); ++i) {
    const attnbench::Row &a = m.rows[i], &b = whole_.rows[i];
    EXPECT_EQ(a.key, b.key);  // the unsharded order
    EXPECT_EQ(a.status, b.status) << a.key;
    EXPECT_EQ(a.rel_err, b.rel_err) << a.key;
    EXPECT_EQ(a.max_abs_err, b.max_abs_err) << a.key;
    EXPECT_EQ(a.cosine, b.cosine) << a.key;
    EXPECT_EQ(a.coverage, b.coverage) << a.key;
    EXPECT_EQ(a.ref_rows, b.ref_rows) << a.key;
    EXPECT_EQ(a.reference, b.reference) << a.key;
  }
  ASSERT_EQ(m.scaling.size(), whole_.scaling.size());
  for (size_t i = 0; i < m.scaling.size(); ++i) {
    EXPECT_EQ(m.scaling[i].spec, whole_.scaling[i].spec);
    EXPECT_EQ(m.scaling[i].dist, whole_.scaling[i].dist);
  }
  EXPECT_FALSE(m.mixed_machines);

  const fs::path out = dir_ / "merged";
  attnbench::write_merge(out.string(), m, false);
  const json j = read_json(out / "results.json");
  EXPECT_EQ(j["rows"].size(), whole_.rows.size());
  EXPECT_EQ(j["scaling"].size(), whole_.scaling.size());
  EXPECT_EQ(attnbench::load_rows(out.string()).size(), whole_.rows.size());
  EXPECT_EQ(read_json(out / "shards.json")["shards"].size(), 3u);
  // A second merge into the same directory needs --overwrite, like a sweep.
  EXPECT_THROW(attnbench::write_merge(out.string(), m, false), UsageError);
  EXPECT_NO_THROW(attnbench::write_merge(out.string(), m, true));
}

TEST_F(Merge, RefusesMissingCasesListingThem) {
  // Shard 3 not given: all its cases are missing.
  std::string e = merge_error({shards()[0], shards()[1]});
  EXPECT_NE(e.find("shard 3/3 (not given)"), std::string::npos) << e;
  const json s3 = read_json(shard_dir(3) / "shard.json");
  EXPECT_NE(e.find(s3["cases"][0].get<std::string>()), std::string::npos) << e;
  EXPECT_NE(e.find("--resume"), std::string::npos) << e;
  // One row of shard 2 removed (a task killed after its other cases).
  std::vector<std::string> d = copies("missing");
  json r = read_json(fs::path(d[1]) / "results.json");
  const std::string lost = r["rows"].back()["key"];
  r["rows"].erase(r["rows"].size() - 1);
  write_json(fs::path(d[1]) / "results.json", r);
  e = merge_error(d);
  EXPECT_NE(e.find("1 of " + std::to_string(whole_.rows.size()) + " cases are missing"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find(lost), std::string::npos) << e;
  EXPECT_NE(e.find("shard 2/3 (" + d[1] + "): 1"), std::string::npos) << e;
  // Killed before its first case: a manifest and no results.
  fs::remove(fs::path(d[1]) / "results.json");
  fs::remove(fs::path(d[1]) / "results.csv");
  e = merge_error(d);
  EXPECT_NE(e.find("shard 2/3 (" + d[1] + "): " + std::to_string(r["rows"].size() + 1)),
            std::string::npos)
      << e;
}

TEST_F(Merge, RefusesDuplicatedCasesAndShards) {
  std::string e = merge_error({shards()[0], shards()[1], shards()[1], shards()[2]});
  EXPECT_NE(e.find("shard 2/3 is given twice"), std::string::npos) << e;
  std::vector<std::string> d = copies("dup");
  json a = read_json(fs::path(d[0]) / "results.json");
  json b = read_json(fs::path(d[1]) / "results.json");
  b["rows"].push_back(a["rows"][0]);
  write_json(fs::path(d[1]) / "results.json", b);
  e = merge_error(d);
  EXPECT_NE(e.find("1 cases are in more than one shard: " + a["rows"][0]["key"].get<std::string>()),
            std::string::npos)
      << e;
}

TEST_F(Merge, RefusesOtherConfigsCodeVersionsAndNonShards) {
  std::vector<std::string> d = copies("version");
  json m = read_json(fs::path(d[2]) / "shard.json");
  m["git_commit"] = "0123456789abcdef";
  write_json(fs::path(d[2]) / "shard.json", m);
  std::string e = merge_error(d);
  EXPECT_NE(e.find("different code versions"), std::string::npos) << e;

  d = copies("config");
  const fs::path other = dir_ / "other";
  std::string text = kSmall;
  text.replace(text.find("reps = 2"), 8, "reps = 3");
  sweep(parse(text), other, {2, 3});
  e = merge_error({d[0], other.string(), d[2]});
  EXPECT_NE(e.find("different configs"), std::string::npos) << e;

  e = merge_error({shards()[0], (dir_ / "whole").string()});
  EXPECT_NE(e.find("no shard.json"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_EQ(merge_error(d), "");  // the undamaged copies merge
}

TEST_F(Merge, MixedMachinesOnlyWhenAllowedThenTimesAreCeilingRatios) {
  std::vector<std::string> d = copies("mixed");
  json r = read_json(fs::path(d[1]) / "results.json");
  r["context"]["cpu_model"] = "Another CPU";
  const double ceiling = r["context"]["sgemm_ceiling_gflops"].get<double>();
  r["context"]["sgemm_ceiling_gflops"] = 2 * ceiling;
  write_json(fs::path(d[1]) / "results.json", r);
  const std::string e = merge_error(d);
  EXPECT_NE(e.find("different machines"), std::string::npos) << e;
  EXPECT_NE(e.find("--allow-mixed-machines"), std::string::npos) << e;

  const attnbench::MergeResult m = attnbench::merge_shards(d, true, "test");
  EXPECT_TRUE(m.mixed_machines);
  EXPECT_NE(m.context.cpu_model.find("Another CPU"), std::string::npos);
  EXPECT_TRUE(m.shards["time_note"].get<std::string>().find("sgemm ceiling") != std::string::npos);
  const double ref = read_json(fs::path(d[0]) / "results.json")["context"]["sgemm_ceiling_gflops"];
  size_t checked = 0;
  for (const json& row : r["rows"]) {
    if (row["status"] != "ok") continue;
    for (const attnbench::Row& merged : m.rows)
      if (merged.key == row["key"]) {
        // Twice the ceiling of shard 1's machine: its times count double.
        EXPECT_DOUBLE_EQ(merged.time_ms_median,
                         row["time_ms_median"].get<double>() * 2 * ceiling / ref);
        EXPECT_DOUBLE_EQ(merged.rel_err, row["rel_err"].get<double>());
        ++checked;
      }
  }
  EXPECT_GT(checked, 0u);
}

// A shard resumes only into its own directory; resuming finishes it without re-measuring.
TEST(ShardResume, PerShardDirectory) {
  const fs::path d = scratch("resume");
  const SweepConfig cfg = parse(kSmall);
  sweep(cfg, d / "s1", {1, 3}, true);  // a fresh directory resumes (each Slurm task does)
  json r = read_json(d / "s1" / "results.json");
  const size_t rows = r["rows"].size();
  const json kept = r["rows"][0];
  r["rows"].erase(r["rows"].size() - 1);
  write_json(d / "s1" / "results.json", r);
  try {
    sweep(cfg, d / "s1", {2, 3}, true);
    ADD_FAILURE() << "shard 2/3 resumed into shard 1/3's directory";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("holds shard 1/3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sweep(cfg, d / "s1", {}, true), UsageError);
  const attnbench::SweepResult res = sweep(cfg, d / "s1", {1, 3}, true);
  EXPECT_EQ(res.rows.size(), rows);
  EXPECT_EQ(attnbench::to_json(res.rows[0])["time_ms_reps"], kept["time_ms_reps"]);
}

// ---------------------------------------------------------------------------------------------
// CLI

TEST(ShardCli, BadShardAndIncompleteMergeExitTwoWithOneLine) {
  const fs::path d = scratch("cli");
  std::ofstream(d / "small.ini") << kSmall;
  for (const std::string bad : {"0/3", "4/3", "x", "auto"}) {
    const CliResult r = run_shell(
        "env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u ATTNBENCH_SHARD_INDEX -u "
        "ATTNBENCH_SHARD_COUNT " +
        std::string(ATTNBENCH_EXE) + " sweep " + (d / "small.ini").string() + " --shard '" + bad +
        "' --out " + (d / "o").string() + " --quiet");
    EXPECT_EQ(r.code, 2) << bad << ": " << r.output;
    EXPECT_NE(r.output.find("--shard"), std::string::npos) << bad << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  ASSERT_EQ(run_cli("sweep " + (d / "small.ini").string() + " --shard 1/2 --out " +
                    (d / "s1").string() + " --quiet")
                .code,
            0);
  const CliResult m = run_cli("merge " + (d / "m").string() + " " + (d / "s1").string());
  EXPECT_EQ(m.code, 2) << m.output;
  EXPECT_NE(m.output.find("shard 2/2 (not given)"), std::string::npos) << m.output;
  EXPECT_EQ(std::count(m.output.begin(), m.output.end(), '\n'), 1) << m.output;
  EXPECT_FALSE(fs::exists(d / "m" / "results.json"));
}

TEST(SlurmCli, WritesReadableScriptsAndSubmitsWithAfterok) {
  const fs::path d = scratch("slurm");
  std::ofstream(d / "small.ini") << kSmall;
  const fs::path out = d / "res";
  CliResult r = run_cli("slurm " + (d / "small.ini").string() +
                        " --shards 3 --cpus-per-task 2 "
                        "--partition debug --time 0:30:00 --out " +
                        out.string());
  ASSERT_EQ(r.code, 0) << r.output;
  std::ifstream f(out / "slurm" / "sweep.sbatch");
  const std::string sweep((std::istreambuf_iterator<char>(f)), {});
  for (const char* want :
       {"#SBATCH --array=1-3\n", "#SBATCH --cpus-per-task=2\n", "#SBATCH --partition=debug\n",
        "#SBATCH --time=0:30:00\n", "OMP_PROC_BIND=close", "--shard \"$SLURM_ARRAY_TASK_ID/3\"",
        "--threads \"$threads\"", "--resume"})
    EXPECT_NE(sweep.find(want), std::string::npos) << want << "\n" << sweep;
  std::ifstream g(out / "slurm" / "merge.sbatch");
  const std::string merge((std::istreambuf_iterator<char>(g)), {});
  for (const std::string& want :
       {"merge '" + out.string() + "' '" + out.string() + "/shards/'{1..3}",
        " plot '" + out.string() + "'", std::string("--kill-on-invalid-dep=yes")})
    EXPECT_NE(merge.find(want), std::string::npos) << want << "\n" << merge;
  EXPECT_EQ(run_shell("bash -n " + (out / "slurm" / "sweep.sbatch").string() + " && bash -n " +
                      (out / "slurm" / "merge.sbatch").string())
                .code,
            0);

  // A stand-in sbatch that records its arguments and answers like --parsable does.
  fs::create_directories(d / "bin");
  std::ofstream(d / "bin" / "sbatch")
      << "#!/bin/sh\necho \"$@\" >> " << (d / "calls").string() << "\nn=$(wc -l < "
      << (d / "calls").string() << ")\necho \"$((41 + n));cluster\"\n";
  fs::permissions(d / "bin" / "sbatch", fs::perms::owner_all);
  r = run_shell("PATH=" + (d / "bin").string() + ":$PATH " + ATTNBENCH_EXE + " slurm " +
                (d / "small.ini").string() + " --shards 3 --submit --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("array job 42"), std::string::npos) << r.output;
  std::ifstream c(d / "calls");
  std::string first, second;
  std::getline(c, first), std::getline(c, second);
  EXPECT_NE(first.find("sweep.sbatch"), std::string::npos) << first;
  EXPECT_NE(second.find("--dependency=afterok:42"), std::string::npos) << second;
  EXPECT_NE(second.find("merge.sbatch"), std::string::npos) << second;

  for (const std::string bad : {"--shards 0", "--shards 3 --time 'x;y'",
                                "--shards 3 "
                                "--partition 'a b'",
                                "--shards 3 --cpus-per-task 0"}) {
    r = run_cli("slurm " + (d / "small.ini").string() + " " + bad + " --out " + out.string());
    EXPECT_EQ(r.code, 2) << bad << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}

}  // namespace
}  // namespace attn::test
