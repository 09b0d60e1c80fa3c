// The regression gate's inputs: the quick config covers every registered variant, causal and
// not; a config can list both causal values; every measured row carries the per-repetition CPU
// times and sgemm controls the gate compares; the test-only slowdown switch rejects bad values.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "attention/registry.h"
#include "harness/sweep.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

attnbench::SweepConfig parse(const std::string& text) {
  std::istringstream in(text);
  return attnbench::parse_sweep_config(in, "t.ini");
}

TEST(GateConfig, BothCausalValuesGiveBothKindsOfCase) {
  const auto cfg = parse("variant = full\nseq = 64,128\ncausal = false\ncausal = true\n");
  EXPECT_EQ(cfg.causal, (std::vector<bool>{false, true}));
  std::set<std::pair<int64_t, bool>> seen;
  for (const auto& c : attnbench::expand_cases(cfg)) seen.insert({c.shape.nq, c.shape.causal});
  EXPECT_EQ(seen, (std::set<std::pair<int64_t, bool>>{
                      {64, false}, {64, true}, {128, false}, {128, true}}));
  EXPECT_THROW(parse("variant = full\nseq = 64\ncausal = true\ncausal = 1\n"), UsageError);
  EXPECT_THROW(parse("variant = full\nseq = 64\ncausal = maybe\n"), UsageError);
}

// The default spec's validate refuses a causal shape (with a message naming causal) that it
// accepts non-causal.
bool refuses_causal(const std::string& name) {
  const std::string e = usage_error(name, Shape{1, 1, 256, 256, 64, true});
  return !e.empty() && e.find("causal") != std::string::npos &&
         usage_error(name, Shape{1, 1, 256, 256, 64, false}).empty();
}

TEST(GateConfig, QuickIniCoversEveryRegisteredVariantCausalAndNot) {
  const auto cfg =
      attnbench::load_sweep_config(std::string(ATTN_SOURCE_DIR) + "/configs/quick.ini");
  std::set<std::pair<std::string, bool>> covered;
  for (const auto& c : attnbench::expand_cases(cfg)) covered.insert({c.variant, c.shape.causal});
  for (const auto& info : variants())
    for (bool causal : {false, true}) {
      // Variants not defined for causal attention (Linformer, Nyström) are excused for causal:
      // the sweep records their causal cases as skipped rows, and compare does not ask for them.
      if (causal && refuses_causal(info.name)) continue;
      EXPECT_TRUE(covered.count({info.name, causal}))
          << info.name << (causal ? " (causal)" : " (non-causal)")
          << " is registered but configs/quick.ini has no case of it";
    }
}

TEST(GateRows, EveryRepetitionCarriesItsCpuTimeAndControl) {
  const fs::path dir = fs::temp_directory_path() / ("attn_gate_rows_" + std::to_string(getpid()));
  fs::remove_all(dir);
  CliResult r = run_cli(
      "run --variant full --variant sliding_window:radius=16 --seq 128 --heads 2 "
      "--reps 3 --min-time 0.005 --threads 1 --out " +
      dir.string());
  ASSERT_EQ(r.code, 0) << r.output;
  const auto j = nlohmann::json::parse(std::ifstream(dir / "results.json"));
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const auto& row : j["rows"]) {
    ASSERT_EQ(row["cpu_ms_reps"].size(), 3u) << row.dump();
    ASSERT_EQ(row["control_ms_reps"].size(), 3u) << row.dump();
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_GT(row["cpu_ms_reps"][i].get<double>(), 0);
      // One thread cannot spend more CPU than wall time (beyond clock granularity).
      EXPECT_LT(row["cpu_ms_reps"][i].get<double>(), 1.5 * row["time_ms_reps"][i].get<double>());
      EXPECT_GT(row["control_ms_reps"][i].get<double>(), 0);
    }
  }
  fs::remove_all(dir);
}

TEST(GateSlowdownSwitch, MalformedValueIsAUsageError) {
  CliResult r = run_shell("ATTNBENCH_TEST_SLOWDOWN=full " + std::string(ATTNBENCH_EXE) +
                          " run --variant full --seq 64 --heads 1 --reps 1 --min-time 0.001");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("ATTNBENCH_TEST_SLOWDOWN"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace attn::test
