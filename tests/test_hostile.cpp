// Hostile input through the CLI and the parsers: every bad input must end in a one-line error
// with exit 2 (usage) or 1 (runtime), never a hang, a crash or a wrapped size (issue 18).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "attention/registry.h"
#include "harness/cli.h"
#include "harness/sweep.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("attn_hostile_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

// The CLI under `timeout`: a hang shows up as exit code 124 instead of a stuck test.
CliResult run_bounded(const std::string& args, int seconds = 20) {
  return run_shell("timeout -k 5 " + std::to_string(seconds) + " " + ATTNBENCH_EXE + " " + args);
}

int lines(const std::string& s) {
  return int(std::count(s.begin(), s.end(), '\n'));
}

// Boost 1.74's what() loops forever substituting a placeholder that the user's value repeats.
TEST(Hostile, PlaceholderInConfigValueIsAnErrorNotAHang) {
  const fs::path d = scratch("placeholder");
  for (const char* line : {"reps = %value%", "%invalid_line%", "reps = %prefix%",
                           "causal = %value%", "%canonical_option% = 1", "seq = %value%%value%"}) {
    write(d / "h.ini", std::string("variant = full\nseq = 64\n") + line + "\n");
    const CliResult r = run_bounded("sweep " + (d / "h.ini").string() + " --out " +
                                    (d / "out").string() + " --quiet");
    EXPECT_EQ(r.code, 2) << line << ": " << r.output;
    EXPECT_EQ(lines(r.output), 1) << r.output;
    EXPECT_NE(r.output.find("h.ini"), std::string::npos) << r.output;
  }
}

TEST(Hostile, PlaceholderInCommandLineValueIsAnErrorNotAHang) {
  for (const char* args :
       {"run --variant full --seq 64 --reps %value%", "run --variant full --seq 64 --reps %prefix%",
        "run --variant full --seq 64 --dim %canonical_option%",
        "run --variant full --seq 64 "
        "--causal=%value%",
        "apply --variant full --q a --k b --v c --out d --threads %value%",
        "sweep --quiet --out %value% --bogus=%value%", "compare --bogus %value%",
        "posenc --bogus %value%", "plot --bogus=%value%"}) {
    const CliResult r = run_bounded(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.output;
    EXPECT_EQ(lines(r.output), 1) << r.output;
  }
}

TEST(Hostile, OptionErrorMessagesNameTheOption) {
  const CliResult r = run_bounded("run --variant full --seq 64 --reps %value%");
  EXPECT_NE(r.output.find("'--reps'"), std::string::npos) << r.output;
  const CliResult u = run_bounded("run --variant full --seq 64 --nope");
  EXPECT_NE(u.output.find("unknown option '--nope'"), std::string::npos) << u.output;
  const CliResult m = run_bounded("run --seq 64");
  EXPECT_NE(m.output.find("'--variant' is required"), std::string::npos) << m.output;
}

// batch*heads used to wrap to 0: the memory estimate said 0 bytes and the reference read past
// a 64-byte buffer (SIGSEGV).
TEST(Hostile, OverflowingShapesAreUsageErrors) {
  for (const char* args :
       {"run --variant full --seq 16 --heads 4294967296 --batch 4294967296",
        "run --variant full --seq 16 --heads 4611686018427387904 --batch 4",
        "run --variant lsh --seq 9223372036854775807 --heads 1",
        "run --variant performer --seq 9223372036854775807 --heads 1 --dim 1",
        "run --variant full --seq 16 --dim 9223372036854775807",
        "run --variant sliding_window --seq 4611686018427387904 --heads 1 --dim 1"}) {
    const CliResult r = run_bounded(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.output;
    EXPECT_NE(r.output.find("overflow"), std::string::npos) << r.output;
    EXPECT_EQ(lines(r.output), 1) << r.output;
  }
  const fs::path d = scratch("overflow");
  write(d / "o.ini", "variant = full\nseq = 16\nheads = 4294967296\nbatch = 4294967296\n");
  const CliResult r =
      run_bounded("sweep " + (d / "o.ini").string() + " --quiet --out " + (d / "out").string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("overflow"), std::string::npos) << r.output;
}

TEST(Hostile, CheckedSizeArithmetic) {
  EXPECT_EQ(checked_mul(int64_t(1) << 31, int64_t(1) << 31, "x"), int64_t(1) << 62);
  EXPECT_THROW(checked_mul(int64_t(1) << 32, int64_t(1) << 31, "x"), UsageError);
  EXPECT_THROW(checked_add(INT64_MAX, 1, "x"), UsageError);
  EXPECT_EQ(checked_add(INT64_MAX - 1, 1, "x"), INT64_MAX);
  EXPECT_THROW(checked_product({1 << 20, 1 << 20, 1 << 20, 1 << 4}, "x"), UsageError);
  Shape s{int64_t(1) << 32, int64_t(1) << 32, 16, 16, 64};
  EXPECT_THROW(s.heads_total(), UsageError);
  EXPECT_THROW(s.check(), UsageError);
  Shape ok{4, 8, 1 << 20, 1 << 20, 64};
  EXPECT_NO_THROW(ok.check());
  // Every variant's validate rejects the wrapped shape before any estimate is made from it.
  for (const auto& v : variants()) {
    auto a = make_attention(v.name);
    Shape big{4, int64_t(1) << 62, 16, 16, 16};
    EXPECT_THROW(a->validate(big), UsageError) << v.name;
  }
  EXPECT_THROW(Tensor(int64_t(1) << 40, int64_t(1) << 40, 1, 1), UsageError);
}

// A team of 100000 OpenMP threads overflowed libgomp's stack (rc 139).
TEST(Hostile, AbsurdThreadCountsAreUsageErrors) {
  for (const char* args :
       {"run --variant full --seq 16 --threads 100000",
        "run --variant full --seq 16 --threads 1025", "run --variant full --seq 16 --threads -1",
        "apply --variant full --q a --k b --v c --out d --threads 100000",
        "posenc --kind sinusoidal --seq 64 --dim 64 --threads 100000"}) {
    const CliResult r = run_bounded(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.output;
    EXPECT_NE(r.output.find("[0, 1024]"), std::string::npos) << args << ": " << r.output;
  }
  std::istringstream cfg("variant = full\nseq = 16\nthreads = 100000\n");
  EXPECT_THROW(attnbench::parse_sweep_config(cfg, "t.ini"), UsageError);
  EXPECT_THROW(attnbench::check_threads(1025, "threads"), UsageError);
  EXPECT_NO_THROW(attnbench::check_threads(1024, "threads"));
}

}  // namespace
}  // namespace attn::test
