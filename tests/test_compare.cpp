// The Mann-Whitney U test against published/scipy values, and `attnbench compare`'s verdicts
// and exit codes (0 no regression, 1 regression, 2 usage error or malformed file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attention/registry.h"
#include "harness/stats.h"

#include "test_util.h"

namespace attnbench {
namespace {

using attn::test::CliResult;
using attn::test::run_cli;

namespace fs = std::filesystem;
using nlohmann::json;

TEST(MannWhitney, ExactWithoutTies) {
  // Complete separation, 3 vs 3: only 1 of C(6,3) = 20 arrangements is as extreme.
  MannWhitney r = mann_whitney_greater({4, 5, 6}, {1, 2, 3});
  EXPECT_TRUE(r.exact);
  EXPECT_DOUBLE_EQ(r.u, 9);
  EXPECT_NEAR(r.p, 0.05, 1e-12);
  EXPECT_NEAR(mann_whitney_greater({1, 2, 3}, {4, 5, 6}).p, 1.0, 1e-12);
  // scipy.stats.mannwhitneyu docs example (males vs females), method="exact": U = 17,
  // one-sided p = 7/126.
  r = mann_whitney_greater({19, 22, 16, 29, 24}, {20, 11, 17, 12});
  EXPECT_DOUBLE_EQ(r.u, 17);
  EXPECT_NEAR(r.p, 7.0 / 126, 1e-12);
}

TEST(MannWhitney, ExactWithTiesIsThePermutationDistribution) {
  // scipy.stats.permutation_test over all C(11,5) = 462 splits with the U statistic:
  // p = 40/462 (the normal approximation would say 0.081).
  MannWhitney r = mann_whitney_greater({2, 3, 3, 4, 6, 6}, {1, 2, 2, 3, 5});
  EXPECT_TRUE(r.exact);
  EXPECT_DOUBLE_EQ(r.u, 23);
  EXPECT_NEAR(r.p, 40.0 / 462, 1e-12);
}

TEST(MannWhitney, NormalApproximationWithTieAndContinuityCorrection) {
  std::vector<double> a, b;
  for (int i = 1; i <= 15; ++i) a.push_back(i);
  for (int i = 1; i <= 13; ++i) b.push_back(i + 3.5);
  b.push_back(2), b.push_back(2);
  // scipy 1.10 mannwhitneyu(b, a, alternative="greater", method="asymptotic").
  MannWhitney r = mann_whitney_greater(b, a);
  EXPECT_FALSE(r.exact);
  EXPECT_DOUBLE_EQ(r.u, 132);
  EXPECT_NEAR(r.p, 0.2152213948632264, 1e-9);
  EXPECT_EQ(mann_whitney_greater({}, {1, 2}).p, 1);
  EXPECT_EQ(mann_whitney_greater(std::vector<double>(12, 1.0), std::vector<double>(12, 1.0)).p, 1);
}

TEST(MannWhitney, SmallestPossiblePAndMedian) {
  EXPECT_DOUBLE_EQ(mann_whitney_min_p(3, 3), 1.0 / 20);
  EXPECT_DOUBLE_EQ(mann_whitney_min_p(5, 5), 1.0 / 252);
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 3, 2}), 2.5);
}

// ---------------------------------------------------------------- compare end to end

// One directory per test: CTest runs the tests of this file in parallel processes.
fs::path scratch() {
  fs::path d =
      fs::temp_directory_path() / (std::string("attn_compare_") +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::create_directories(d);
  return d;
}

json row(const std::string& spec, double rel_err, std::vector<double> reps) {
  return {{"key", spec + "|B=1|H=2|N=512|D=64|causal=0|dist=gaussian|seed=0|posenc="},
          {"variant", spec},
          {"spec", spec},
          {"status", "ok"},
          {"n", 512},
          {"rel_err", rel_err},
          {"time_ms_reps", reps},
          {"time_ms_median", reps[reps.size() / 2]}};
}

json run(double ceiling, std::vector<json> rows) {
  return {
      {"context", {{"cpu_model", "test CPU"}, {"threads", 2}, {"sgemm_ceiling_gflops", ceiling}}},
      {"rows", rows},
      {"scaling", json::array()}};
}

const std::vector<double> kSteady = {10.0, 10.2, 9.9, 10.1, 10.05, 9.95, 10.15};

std::vector<double> scaled(const std::vector<double>& v, double f) {
  std::vector<double> out;
  for (double x : v) out.push_back(x * f);
  return out;
}

json baseline() {
  return run(200, {row("full", 1e-7, kSteady), row("performer", 0.08, scaled(kSteady, 0.3))});
}

std::string save(const std::string& name, const json& j) {
  const fs::path p = scratch() / name;
  std::ofstream(p) << j.dump(1);
  return p.string();
}

CliResult compare(const json& base, const json& now, const std::string& options = "") {
  return run_cli("compare " + save("base.json", base) + " " + save("new.json", now) + " " +
                 options);
}

TEST(Compare, IdenticalRunsPass) {
  CliResult r = compare(baseline(), baseline());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("no regression"), std::string::npos) << r.output;
}

TEST(Compare, ASweepDirectoryStandsForItsResultsJson) {
  const std::string dir = (scratch() / "sweep").string();
  fs::create_directories(dir);
  std::ofstream(dir + "/results.json") << baseline().dump();
  CliResult r = run_cli("compare " + dir + " " + save("new.json", baseline()));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("sweep/results.json"), std::string::npos) << r.output;
}

TEST(Compare, AccuracyRegressionBeyondToleranceFails) {
  json now = baseline();
  now["rows"][1]["rel_err"] = 0.08 * 1.2;
  CliResult r = compare(baseline(), now);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("ACCURACY"), std::string::npos) << r.output;
  EXPECT_EQ(compare(baseline(), now, "--error-tolerance 0.25").code, 0);
  now["rows"][1]["rel_err"] = 0.08 * 1.04;  // within the default 5%
  EXPECT_EQ(compare(baseline(), now).code, 0);
  // full's 1e-7: errors are deterministic, so even an exact variant's tiny error is held to
  // 5 % of itself (an absolute epsilon of 1e-6 once let a tripling through).
  now["rows"][0]["rel_err"] = 1.04e-7;
  EXPECT_EQ(compare(baseline(), now).code, 0);
  now["rows"][0]["rel_err"] = 1.5e-7;
  EXPECT_EQ(compare(baseline(), now).code, 1);
  now["rows"][0]["rel_err"] = 1e-3;
  EXPECT_EQ(compare(baseline(), now).code, 1);
  now["rows"][0]["rel_err"] = nullptr;  // NaN written as null
  EXPECT_EQ(compare(baseline(), now).code, 1);
}

TEST(Compare, TriplingOfFullsErrorIsCaught) {
  json base = run(200, {row("full", 4e-7, kSteady)});
  json now = run(200, {row("full", 1.2e-6, kSteady)});
  CliResult r = compare(base, now);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("ACCURACY"), std::string::npos) << r.output;
}

// Rows as the sweep writes them now: process CPU ms per forward and the sgemm control's CPU ms
// per GFLOP after each repetition.
json cpu_row(double rel_err, const std::vector<double>& cpu, const std::vector<double>& control,
             const std::vector<double>& wall) {
  json r = row("full", rel_err, wall);
  r["cpu_ms_reps"] = cpu, r["control_ms_reps"] = control;
  return r;
}

TEST(Compare, CpuTimeIsDividedByItsNeighbouringControl) {
  const std::vector<double> control(kSteady.size(), 5.0);
  json base = run(200, {cpu_row(1e-7, kSteady, control, kSteady)});
  // A loaded machine: everything, the control included, costs 1.8x the CPU time, and the
  // wall time triples. The gate divides the load out and ignores wall time.
  json now =
      run(100, {cpu_row(1e-7, scaled(kSteady, 1.8), scaled(control, 1.8), scaled(kSteady, 3.0))});
  CliResult r = compare(base, now);
  EXPECT_EQ(r.code, 0) << r.output;
  // The forward alone costs 1.5x the CPU time beside an unchanged control: a regression.
  now = run(200, {cpu_row(1e-7, scaled(kSteady, 1.5), control, kSteady)});
  r = compare(base, now);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("SLOWER"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1.500"), std::string::npos) << r.output;
  // A baseline without CPU times falls back to wall time in units of the ceiling.
  json old = run(200, {row("full", 1e-7, kSteady)});
  EXPECT_EQ(compare(old, run(200, {cpu_row(1e-7, kSteady, control, scaled(kSteady, 2))})).code, 1);
}

// Six variants' rows whose CPU times are those of kSteady scaled per variant.
json drift_run(const std::vector<double>& factor) {
  const std::vector<double> control(kSteady.size(), 5.0);
  std::vector<json> rows;
  for (size_t i = 0; i < factor.size(); ++i) {
    json r = cpu_row(1e-7, scaled(kSteady, factor[i]), control, kSteady);
    r["variant"] = "v" + std::to_string(i);
    r["key"] = "v" + std::to_string(i) + "|B=1";
    rows.push_back(r);
  }
  return run(200, rows);
}

TEST(Compare, LoadThatSlowsEveryVariantIsDividedOutButOneVariantsSlowdownIsNot) {
  const json base = drift_run({1, 1, 1, 1, 1, 1});
  // Load the control did not see: every case 1.2-1.45x. Relative to the other variants' median
  // nothing changed, and the median is inside the global tolerance.
  CliResult r = compare(base, drift_run({1.2, 1.3, 1.45, 1.35, 1.25, 1.4}));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(
      compare(base, drift_run({1.2, 1.3, 1.45, 1.35, 1.25, 1.4}), "--no-drift-correction").code, 1);
  // One variant 1.5x while the others hold: caught.
  r = compare(base, drift_run({1, 1.02, 0.98, 1.5, 1.01, 1}));
  EXPECT_EQ(r.code, 1) << r.output;
  size_t slower = 0;
  for (size_t at = r.output.find("SLOWER"); at != std::string::npos;
       at = r.output.find("SLOWER", at + 1))
    ++slower;
  EXPECT_EQ(slower, 1u) << r.output;
  const size_t line = r.output.rfind('\n', r.output.find("SLOWER"));
  EXPECT_EQ(r.output.compare(line + 1, 6, "v3|B=1"), 0) << r.output;
  // Every variant 1.6x (a regression they all share, e.g. in a common kernel): the global check.
  r = compare(base, drift_run({1.6, 1.6, 1.6, 1.6, 1.6, 1.6}));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("EVERY CASE SLOWER"), std::string::npos) << r.output;
}

TEST(Compare, EveryRegisteredVariantNeedsBaselineCasesCausalAndNot) {
  CliResult r = compare(baseline(), baseline(), "--require-every-variant");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("UNCOVERED: registered variant lsh (non-causal)"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("UNCOVERED: registered variant full (causal)"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("full (non-causal)"), std::string::npos) << r.output;
  std::vector<json> rows;
  for (const auto& info : attn::variants())
    for (bool causal : {false, true}) {
      json x = row(info.name, 0.1, kSteady);
      x["causal"] = causal;
      x["key"] = info.name + (causal ? "|causal=1" : "|causal=0");
      rows.push_back(x);
    }
  r = compare(run(200, rows), run(200, rows), "--require-every-variant");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("0 uncovered variants"), std::string::npos) << r.output;
}

TEST(Compare, SignificantSlowdownFails) {
  json now = baseline();
  now["rows"][0]["time_ms_reps"] = scaled(kSteady, 2.0);
  CliResult r = compare(baseline(), now);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("SLOWER"), std::string::npos) << r.output;
  EXPECT_EQ(compare(baseline(), now, "--no-time").code, 0);
  EXPECT_EQ(compare(baseline(), now, "--time-tolerance 1.5").code, 0);
}

TEST(Compare, TimeIsComparedInSgemmCeilingUnits) {
  // A machine twice as fast: half the milliseconds, twice the ceiling → no change.
  json now = baseline();
  now["context"]["sgemm_ceiling_gflops"] = 400;
  for (auto& r : now["rows"]) r["time_ms_reps"] = scaled(r["time_ms_reps"], 0.5);
  EXPECT_EQ(compare(baseline(), now).code, 0);
  // Same milliseconds on that faster machine is a 2x slowdown relative to its ceiling.
  now = baseline();
  now["context"]["sgemm_ceiling_gflops"] = 400;
  CliResult r = compare(baseline(), now);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("SLOWER"), std::string::npos) << r.output;
}

TEST(Compare, NoisyOrSmallSlowdownsPass) {
  json base = run(200, {row("full", 1e-7, {1, 2, 3, 1.5, 2.5})});
  json now = run(200, {row("full", 1e-7, {1.2, 3.5, 4, 1.1, 3.8})});
  // Median ratio 1.75 > 1.5 but exact one-sided p = 0.21 (scipy): noise, not a regression.
  CliResult r = compare(base, now);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("1.750"), std::string::npos) << r.output;
  // A consistent 20% slowdown is significant (p < 0.001) but inside the tolerance.
  now = baseline();
  now["rows"][0]["time_ms_reps"] = scaled(kSteady, 1.2);
  EXPECT_EQ(compare(baseline(), now).code, 0);
  EXPECT_EQ(compare(baseline(), now, "--time-tolerance 0.1").code, 1);
}

TEST(Compare, TooFewRepetitionsAreReported) {
  json base = run(200, {row("full", 1e-7, {10, 10, 10})});
  json now = run(200, {row("full", 1e-7, {30, 30, 30})});
  CliResult r = compare(base, now);
  EXPECT_EQ(r.code, 0) << r.output;  // 3 vs 3: p >= 0.05 whatever happens
  EXPECT_NE(r.output.find("no slowdown can be significant"), std::string::npos) << r.output;
}

TEST(Compare, MissingRowsFailNewRowsDoNot) {
  json now = baseline();
  now["rows"].erase(1);
  CliResult r = compare(baseline(), now);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("MISSING"), std::string::npos) << r.output;

  now = baseline();
  now["rows"].push_back(row("sliding_window", 0.3, kSteady));
  r = compare(baseline(), now);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("new case"), std::string::npos) << r.output;
}

TEST(Compare, ACaseThatRanAndIsNowSkippedFails) {
  json now = baseline();
  now["rows"][1] = {{"key", now["rows"][1]["key"]}, {"status", "skipped: time budget"}};
  CliResult r = compare(baseline(), now);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("NOW SKIPPED"), std::string::npos) << r.output;
  // Skipped in the baseline and running now is reported, not a failure.
  EXPECT_EQ(compare(now, baseline()).code, 0);
  EXPECT_EQ(compare(now, now).code, 0);
}

TEST(Compare, MalformedFilesAndBadOptionsExit2) {
  const std::string good = save("good.json", baseline());
  const fs::path broken = scratch() / "broken.json";
  std::ofstream(broken) << "{\"rows\": [";
  CliResult r = run_cli("compare " + good + " " + broken.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("broken.json"), std::string::npos) << r.output;

  json no_ceiling = baseline();
  no_ceiling["context"].erase("sgemm_ceiling_gflops");
  json no_key = baseline();
  no_key["rows"][0].erase("key");
  json no_reps = baseline();
  no_reps["rows"][0]["time_ms_reps"] = json::array();
  json duplicate = baseline();
  duplicate["rows"].push_back(duplicate["rows"][0]);
  json not_object = json::array();
  for (const json& bad : {no_ceiling, no_key, no_reps, duplicate, not_object}) {
    r = compare(baseline(), bad);
    EXPECT_EQ(r.code, 2) << bad.dump() << "\n" << r.output;
    EXPECT_NE(r.output.find("not a valid attnbench results.json"), std::string::npos) << r.output;
  }
  EXPECT_EQ(run_cli("compare " + good + " " + (scratch() / "absent.json").string()).code, 2);
  EXPECT_EQ(run_cli("compare " + good).code, 2);
  EXPECT_EQ(run_cli("compare " + good + " " + good + " --alpha 2").code, 2);
  EXPECT_EQ(run_cli("compare " + good + " " + good + " --time-tolerance -1").code, 2);
}

}  // namespace
}  // namespace attnbench
