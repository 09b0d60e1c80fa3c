// `attnbench plot DIR`: the expected PNG/SVG files from a fixture results.json, the default
// and chosen n of the speed-vs-error view, and clear failures (exit 1).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace attnbench {
namespace {

using attn::test::CliResult;
using attn::test::run_shell;

namespace fs = std::filesystem;
using nlohmann::json;

CliResult plot(const std::string& args, const std::string& env = "") {
  return run_shell(env + " " + ATTNBENCH_EXE + " plot " + args);
}

bool have_matplotlib() {
  return run_shell("/usr/bin/python3 -c 'import matplotlib'").code == 0;
}

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("attn_plot_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Four variants over n = 256 … 2048, two distributions, both masks; at 2048 every variant but
// `full` is skipped (so only 1 of 4 has rows there).
json fixture() {
  json rows = json::array();
  const std::vector<std::pair<std::string, double>> specs = {{"full", 2.0},
                                                             {"full_materialized", 2.0},
                                                             {"reference", 2.0},
                                                             {"performer:features=64", 1.0}};
  for (const auto& [spec, alpha] : specs)
    for (const std::string dist : {"gaussian", "local"})
      for (bool causal : {false, true})
        for (int n : {256, 512, 1024, 2048}) {
          json r = {{"key", spec + "|n=" + std::to_string(n) + dist + (causal ? "c" : "")},
                    {"spec", spec},
                    {"variant", spec.substr(0, spec.find(':'))},
                    {"batch", 1},
                    {"heads", 2},
                    {"n", n},
                    {"dim", 64},
                    {"causal", causal},
                    {"dist", dist},
                    {"seed", 0},
                    {"posenc", ""}};
          if (n == 2048 && spec != "full") {
            r["status"] = "skipped: time budget";
          } else {
            const double t = 1e-6 * std::pow(n, alpha) * (causal ? 0.5 : 1.0);
            r.update({{"status", "ok"},
                      {"time_ms_median", t},
                      {"time_ms_min", 0.95 * t},
                      {"time_ms_max", 1.1 * t},
                      {"time_ms_reps", {0.95 * t, t, 1.1 * t}},
                      {"mem_peak_bytes", spec == "full_materialized" ? 8.0 * n * n : 512.0 * n},
                      {"extra_bytes", spec == "full_materialized" ? 8.0 * n * n : 512.0 * n},
                      {"rel_err", spec == "reference" ? 0.0
                                  : spec == "full"    ? 1e-7
                                                      : 0.1},
                      {"coverage", nullptr}});
          }
          rows.push_back(r);
        }
  return {
      {"context", {{"cpu_model", "fixture CPU"}, {"threads", 2}, {"sgemm_ceiling_gflops", 200}}},
      {"rows", rows},
      {"scaling", json::array()}};
}

json posenc_fixture() {
  json rows = json::array();
  for (int n : {1024, 4096, 16384}) {
    rows.push_back({{"kind", "learned"}, {"n", n}, {"dim", 64}, {"param_bytes", 256.0 * n}});
    rows.push_back(
        {{"kind", "axial"}, {"n", n}, {"dim", 64}, {"param_bytes", 256.0 * std::sqrt(n)}});
    rows.push_back({{"kind", "sinusoidal"}, {"n", n}, {"dim", 64}, {"param_bytes", 0}});
  }
  return {{"rows", rows}};
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

bool starts_with_file(const fs::path& p, const std::string& magic) {
  std::ifstream f(p, std::ios::binary);
  std::string head(magic.size(), '\0');
  f.read(head.data(), head.size());
  return head == magic;
}

const std::vector<std::string> kPlots = {"time_vs_n", "memory_vs_n", "error_vs_n",
                                         "speed_vs_error"};

TEST(Plot, WritesEveryPlotAsPngAndSvg) {
  if (!have_matplotlib()) GTEST_SKIP() << "/usr/bin/python3 has no matplotlib";
  fs::path d = scratch("all");
  write(d / "results.json", fixture().dump());
  write(d / "posenc.json", posenc_fixture().dump());
  CliResult r = plot(d.string());
  ASSERT_EQ(r.code, 0) << r.output;
  std::vector<std::string> names = kPlots;
  names.push_back("posenc_memory");
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    const fs::path png = d / (name + ".png"), svg = d / (name + ".svg");
    ASSERT_TRUE(fs::exists(png) && fs::exists(svg));
    EXPECT_GT(fs::file_size(png), 20000u);  // a real figure, not an empty canvas
    EXPECT_TRUE(starts_with_file(png, "\x89PNG"));
    EXPECT_TRUE(starts_with_file(svg, "<?xml"));
  }
  // Only full reaches 2048: the default n is the largest where most variants have rows.
  EXPECT_NE(r.output.find("speed_vs_error at n = 1024"), std::string::npos) << r.output;
  for (const auto& e : fs::directory_iterator(d))
    EXPECT_EQ(e.path().extension().string().find("tmp"), std::string::npos) << e.path();
}

// Rows of the recall distribution add recall_vs_gap and recall_heatmap; other sweeps do not.
TEST(Plot, RecallRowsAddTheRecallPlots) {
  if (!have_matplotlib()) GTEST_SKIP() << "/usr/bin/python3 has no matplotlib";
  fs::path d = scratch("recall");
  json data = fixture();
  for (const std::string spec : {"full", "sliding_window:radius=64"})
    for (const std::string dist : {"recall", "recall:gap=depth"})
      for (int n : {1024, 4096}) {
        const bool window = spec != "full";
        json gaps = json::array(), depths = json::array();
        for (double lo = 1; lo < n; lo *= 2)
          gaps.push_back({lo, 2 * lo, 8, window && lo > 64 ? 0.03 : 1.0});
        for (int k = 0; k < 10; ++k)
          depths.push_back({k / 10.0, (k + 1) / 10.0, 6, window && k < 9 ? 0.0 : 1.0});
        data["rows"].push_back({{"key", spec + dist + std::to_string(n)},
                                {"spec", spec},
                                {"variant", spec.substr(0, spec.find(':'))},
                                {"batch", 1},
                                {"heads", 2},
                                {"n", n},
                                {"dim", 64},
                                {"causal", true},
                                {"dist", dist},
                                {"seed", 0},
                                {"posenc", ""},
                                {"status", "ok"},
                                {"time_ms_median", 1.0},
                                {"time_ms_min", 1.0},
                                {"time_ms_max", 1.0},
                                {"rel_err", 0.5},
                                {"recall", window ? 0.4 : 1.0},
                                {"recall_by_gap", gaps},
                                {"recall_by_depth", depths}});
      }
  write(d / "results.json", data.dump());
  CliResult r = plot(d.string());
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* name : {"recall_vs_gap", "recall_heatmap"}) {
    EXPECT_TRUE(fs::exists(d / (std::string(name) + ".png"))) << name << "\n" << r.output;
    EXPECT_GT(fs::file_size(d / (std::string(name) + ".png")), 20000u) << name;
  }
  fs::path plain = scratch("no_recall");
  write(plain / "results.json", fixture().dump());
  ASSERT_EQ(plot(plain.string()).code, 0);
  EXPECT_FALSE(fs::exists(plain / "recall_vs_gap.png"));
}

TEST(Plot, ChosenNAndNoPosencFile) {
  if (!have_matplotlib()) GTEST_SKIP() << "/usr/bin/python3 has no matplotlib";
  fs::path d = scratch("chosen");
  write(d / "results.json", fixture().dump());
  CliResult r = plot(d.string() + " --n 512");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("speed_vs_error at n = 512"), std::string::npos) << r.output;
  for (const auto& name : kPlots) EXPECT_TRUE(fs::exists(d / (name + ".png"))) << name;
  EXPECT_FALSE(fs::exists(d / "posenc_memory.png"));
  r = plot(d.string() + " --n 777");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("no ok rows at that n"), std::string::npos) << r.output;
}

TEST(Plot, MissingOrMalformedResultsAreClearErrors) {
  if (!have_matplotlib()) GTEST_SKIP() << "/usr/bin/python3 has no matplotlib";
  fs::path d = scratch("bad");
  CliResult r = plot(d.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("results.json not found"), std::string::npos) << r.output;
  write(d / "results.json", "{\"rows\": [");
  r = plot(d.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("not valid JSON"), std::string::npos) << r.output;
  write(d / "results.json", R"({"rows": [{"status": "ok", "spec": "full"}]})");
  r = plot(d.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("malformed"), std::string::npos) << r.output;
  write(d / "results.json", R"({"rows": [{"status": "skipped: memory"}]})");
  r = plot(d.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("no rows with status"), std::string::npos) << r.output;
  EXPECT_EQ(plot("").code, 2);  // no DIR: usage error
}

TEST(Plot, MissingPythonOrMatplotlibSaysToRunSetup) {
  if (!have_matplotlib()) GTEST_SKIP() << "/usr/bin/python3 has no matplotlib";
  fs::path d = scratch("nopython");
  write(d / "results.json", fixture().dump());
  CliResult r = plot(d.string(), "ATTNBENCH_PYTHON=/nonexistent/python3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("harness/setup.sh"), std::string::npos) << r.output;
  // An interpreter whose `import matplotlib` fails.
  fs::create_directories(d / "shadow" / "matplotlib");
  write(d / "shadow" / "matplotlib" / "__init__.py", "raise ImportError('hidden by the test')\n");
  write(d / "python",
        "#!/bin/sh\nPYTHONPATH=" + (d / "shadow").string() + " exec /usr/bin/python3 \"$@\"\n");
  fs::permissions(d / "python", fs::perms::owner_all);
  r = plot(d.string(), "ATTNBENCH_PYTHON=" + (d / "python").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("matplotlib is not available"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("harness/setup.sh"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace attnbench
