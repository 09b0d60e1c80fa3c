// Concurrent and repeated writers of one results directory (issue 18): one writer at a time,
// existing results never replaced without asking, temporaries of killed writers cleaned up.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "harness/outdir.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("attn_conc_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

size_t rows_in(const fs::path& json_path) {
  try {
    std::ifstream f(json_path);
    return nlohmann::json::parse(f)["rows"].size();
  } catch (...) {
    return 0;
  }
}

// A pid that certainly names no process: a child that has exited and been reaped.
pid_t dead_pid() {
  const pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, nullptr, 0);
  return p;
}

const char* kTiny =
    "variant = full\nseq = 32\nheads = 1\ndim = 16\nreps = 1\nmin_time = 0.001\n"
    "threads = 1\n";

std::string sweep(const fs::path& cfg, const fs::path& out, const std::string& flags = "") {
  return std::string(ATTNBENCH_EXE) + " sweep " + cfg.string() + " --out " + out.string() +
         " --quiet " + flags;
}

TEST(OutputDir, SecondLockOfTheSameDirectoryIsRefused) {
  const fs::path d = scratch("lock");
  {
    attnbench::OutputDirLock first(d.string());
    try {
      attnbench::OutputDirLock second(d.string());
      FAIL() << "a second writer got the lock";
    } catch (const RuntimeError& e) {
      EXPECT_NE(std::string(e.what()).find("in use by another attnbench process"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_NO_THROW(attnbench::OutputDirLock again(d.string()));  // released with the first
}

// Two sweeps into one directory used to both exit 0 while the directory kept only the last
// writer's rows. Now the second is refused while the first runs, and the first's rows stay.
TEST(OutputDir, ConcurrentSweepIntoTheSameDirectoryIsRefused) {
  const fs::path d = scratch("concurrent");
  const fs::path slow = d / "slow.ini", other = d / "other.ini", out = d / "out";
  std::ofstream(slow) << "variant = full\nvariant = full_materialized\nseq = 64,128,256,512\n"
                         "heads = 2\ndim = 32\nreps = 3\nmin_time = 0.05\nthreads = 1\n"
                         "seed = 0\nseed = 1\n";
  std::ofstream(other) << kTiny;
  ASSERT_EQ(run_shell(sweep(slow, out) + " >" + (d / "a.log").string() + " 2>&1 & echo $! > " +
                      (d / "pid").string())
                .code,
            0);
  pid_t pid = 0;
  for (int i = 0; i < 200 && !pid; ++i) {
    std::ifstream(d / "pid") >> pid;
    if (!pid) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(pid, 0);
  for (int i = 0; i < 3000 && rows_in(out / "results.json") == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GT(rows_in(out / "results.json"), 0u);
  const CliResult second = run_shell(sweep(other, out, "--overwrite"));
  EXPECT_EQ(second.code, 1) << second.output;
  EXPECT_NE(second.output.find("in use by another attnbench process"), std::string::npos)
      << second.output;
  const CliResult resumed = run_shell(sweep(slow, out, "--resume"));
  EXPECT_EQ(resumed.code, 1) << resumed.output;
  // Wait for the first writer; it finishes with all of its 16 rows.
  for (int i = 0; i < 12000 && kill(pid, 0) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_NE(kill(pid, 0), 0) << "the first sweep did not finish";
  EXPECT_EQ(rows_in(out / "results.json"), 16u) << slurp(d / "a.log");
  EXPECT_NE(slurp(d / "a.log").find("16 rows"), std::string::npos) << slurp(d / "a.log");
}

TEST(OutputDir, ExistingResultsAreNotReplacedWithoutAsking) {
  const fs::path d = scratch("existing");
  std::ofstream(d / "a.ini") << kTiny;
  std::ofstream(d / "b.ini") << kTiny << "variant = sliding_window\n";
  const fs::path out = d / "out";
  ASSERT_EQ(run_shell(sweep(d / "a.ini", out)).code, 0);
  const std::string before = slurp(out / "results.json");
  const CliResult r = run_shell(sweep(d / "b.ini", out));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("already holds results"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--overwrite"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_EQ(slurp(out / "results.json"), before);
  // `run --out` is refused the same way.
  const CliResult run = run_shell(std::string(ATTNBENCH_EXE) +
                                  " run --variant full --seq 32 --heads 1 --dim 16 --reps 1 "
                                  "--min-time 0.001 --out " +
                                  out.string());
  EXPECT_EQ(run.code, 2) << run.output;
  EXPECT_EQ(slurp(out / "results.json"), before);
  // Asked explicitly: --resume adds the new case, --overwrite replaces everything.
  ASSERT_EQ(run_shell(sweep(d / "b.ini", out, "--resume")).code, 0);
  EXPECT_EQ(rows_in(out / "results.json"), 2u);
  ASSERT_EQ(run_shell(sweep(d / "a.ini", out, "--overwrite")).code, 0);
  EXPECT_EQ(rows_in(out / "results.json"), 1u);
}

// kill -9 between writing a temporary and renaming it leaves results.json.tmp.<pid>; the next
// writer of the directory removes those of dead processes and keeps those of live ones.
TEST(OutputDir, TemporariesOfDeadWritersAreRemoved) {
  const fs::path d = scratch("tmp");
  std::ofstream(d / "a.ini") << kTiny;
  const fs::path out = d / "out";
  fs::create_directories(out);
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(getpid());
  for (const std::string& f : std::vector<std::string>{
           "results.json.tmp." + dead, "results.csv.tmp." + dead, "results.json.tmp." + live,
           "results.json.tmp.notapid", "unrelated.tmp." + dead})
    std::ofstream(out / f) << "{";
  ASSERT_EQ(run_shell(sweep(d / "a.ini", out, "--resume")).code, 0);
  EXPECT_FALSE(fs::exists(out / ("results.json.tmp." + dead)));
  EXPECT_FALSE(fs::exists(out / ("results.csv.tmp." + dead)));
  EXPECT_TRUE(fs::exists(out / ("results.json.tmp." + live)));  // its writer is alive
  EXPECT_TRUE(fs::exists(out / "results.json.tmp.notapid"));
  EXPECT_TRUE(fs::exists(out / ("unrelated.tmp." + dead)));
  EXPECT_EQ(rows_in(out / "results.json"), 1u);
  // Only tmp files of the writer's own naming are counted.
  std::ofstream(out / ("results.csv.tmp." + dead)) << "x";
  EXPECT_EQ(attnbench::remove_stale_temporaries(out.string()), 1);
}

// An unwritable --out used to fail only after the first case had been measured.
TEST(OutputDir, UnwritableOutFailsBeforeMeasuring) {
  const fs::path d = scratch("ro");
  std::ofstream(d / "a.ini") << "variant = full\nseq = 2048\nheads = 8\nreps = 20\n";
  std::ofstream(d / "file") << "x";
  for (const fs::path& out : {fs::path("/proc/attnbench_readonly"), d / "file" / "sub"}) {
    const auto t0 = std::chrono::steady_clock::now();
    const CliResult r = run_shell(std::string(ATTNBENCH_EXE) + " sweep " + (d / "a.ini").string() +
                                  " --out " + out.string());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find(out.string()), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("median_ms"), std::string::npos) << "measured first: " << r.output;
    EXPECT_LT(s, 10.0);
  }
}

}  // namespace
}  // namespace attn::test
