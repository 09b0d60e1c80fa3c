// Hostile input through the CLI and the parsers: every bad input must end in a one-line error
// with exit 2 (usage) or 1 (runtime), never a hang, a crash or a wrapped size (issue 18).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

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

// /dev/zero grew past 8 GB; a 105 MB file of variant lines reached 12 GB.
TEST(Hostile, ConfigSizeAndCaseCountAreBounded) {
  const CliResult zero = run_bounded("sweep /dev/zero --quiet --out /tmp/attn_hostile_zero", 10);
  EXPECT_EQ(zero.code, 2) << zero.output;
  EXPECT_NE(zero.output.find("larger than 1 MiB"), std::string::npos) << zero.output;
  const fs::path d = scratch("bounds");
  {
    std::ofstream f(d / "big.ini");
    f << "seq = 64\n";
    for (int i = 0; i < 80000; ++i) f << "variant = full\n";  // 1.2 MB
  }
  const CliResult big =
      run_bounded("sweep " + (d / "big.ini").string() + " --quiet --out " + (d / "o").string(), 10);
  EXPECT_EQ(big.code, 2) << big.output;
  EXPECT_NE(big.output.find("larger than 1 MiB"), std::string::npos) << big.output;
  const CliResult dir = run_bounded("sweep " + d.string() + " --quiet --out " + (d / "o").string());
  EXPECT_EQ(dir.code, 2) << dir.output;
  EXPECT_NE(dir.output.find("is a directory"), std::string::npos) << dir.output;
  // 20 x 100 x 100 = 200000 cases in a few hundred bytes.
  std::string many = "variant = full\nvariant = lsh\ndist = gaussian\ndist = local\nseq = ";
  for (int i = 1; i <= 100; ++i) many += std::to_string(16 * i) + ",";
  many.pop_back();
  many += "\n";
  for (int i = 0; i < 500; ++i) many += "seed = " + std::to_string(i) + "\n";
  std::istringstream in(many);
  try {
    attnbench::parse_sweep_config(in, "many.ini");
    FAIL() << "200000 cases accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("200000 cases"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("many.ini"), std::string::npos) << e.what();
  }
}

// validate_config allocated q, k, v of one head at the smallest n before any memory estimate:
// seq = 200000000 failed the whole sweep with "out of memory" instead of skipping the case.
TEST(Hostile, ValidatingAHugeSequenceAllocatesNothingBig) {
  std::istringstream in("variant = full\nseq = 200000000\ndim = 64\nheads = 1\n");
  const attnbench::SweepConfig c = attnbench::parse_sweep_config(in, "huge.ini");
  EXPECT_NO_THROW(attnbench::validate_config(c));
  const fs::path d = scratch("huge");
  write(d / "huge.ini", "variant = full\nseq = 200000000\ndim = 64\nheads = 1\nreps = 1\n");
  const CliResult r = run_bounded(
      "sweep " + (d / "huge.ini").string() + " --quiet --out " + (d / "out").string(), 60);
  EXPECT_EQ(r.code, 0) << r.output;
  std::ifstream f(d / "out" / "results.json");
  const std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(text.find("skipped: estimated memory"), std::string::npos) << text;
}

TEST(Hostile, DuplicateListEntriesAreRejected) {
  for (const char* cfg : {"variant = full\nvariant = full\nseq = 64\n",
                          "variant = full\nvariant =  full \nseq = 64\n",
                          "variant = full\nseq = 64\nseed = 3\nseed = 3\n",
                          "variant = full\nseq = 64\ndist = local\ndist = local\n"}) {
    std::istringstream in(cfg);
    try {
      attnbench::parse_sweep_config(in, "dup.ini");
      FAIL() << cfg;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("listed twice"), std::string::npos) << e.what();
    }
  }
  const CliResult r = run_bounded("run --variant full --variant full --seq 16");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("listed twice"), std::string::npos) << r.output;
}

// check_value accepted a denormal that std::stod then refused with the bare message "stod".
TEST(Hostile, EveryAcceptedNumberIsReadBack) {
  for (const char* spec : {"performer:eps=1e-320", "performer:eps=4.9e-324"}) {
    auto a = make_attention(spec);
    EXPECT_EQ(a->params().at("eps"), spec + std::string(spec).find('=') + 1);
  }
  for (const auto& v : variants())
    for (const auto& p : v.params) {
      if (p.kind != ParamSpec::Kind::Float && p.kind != ParamSpec::Kind::Int) continue;
      for (const char* value : {"1e-320", "1e400", "0x10", "nan", "-0", "9999999999999999999999"}) {
        try {
          make_attention(v.name + ":" + p.key + "=" + value);
        } catch (const UsageError&) {
        }  // anything else (std::invalid_argument, std::out_of_range) fails the test
      }
    }
}

namespace resume {

const char* kCfg =
    "variant = full\nseq = 32\nheads = 1\ndim = 16\nreps = 1\nmin_time = 0.001\n"
    "threads = 1\n";

std::string good_row() {
  return R"({"key": "full|B=1|H=1|N=32|D=16|causal=0|dist=gaussian|seed=0|posenc=",
    "variant": "full", "spec": "full", "batch": 1, "heads": 1, "n": 32, "dim": 16,
    "causal": false, "dist": "gaussian", "seed": 0, "posenc": "", "threads": 1, "reps": 1,
    "status": "skipped: test"})";
}

CliResult resume_with(const fs::path& d, const std::string& results_json) {
  fs::create_directories(d / "out");
  write(d / "c.ini", kCfg);
  write(d / "out" / "results.json", results_json);
  return run_bounded("sweep " + (d / "c.ini").string() + " --quiet --resume --out " +
                     (d / "out").string());
}

}  // namespace resume

// Resumed results: a directory, a wrong JSON type, negative seeds or absurd thread counts
// were raw library messages (or accepted); now each names the file and the row, exit 2.
TEST(Hostile, MalformedResumedResultsNameFileAndRow) {
  const fs::path d = scratch("resume");
  fs::create_directories(d / "asdir" / "out" / "results.json");
  write(d / "asdir" / "c.ini", resume::kCfg);
  const CliResult dir = run_bounded("sweep " + (d / "asdir" / "c.ini").string() +
                                    " --quiet --resume --out " + (d / "asdir" / "out").string());
  EXPECT_EQ(dir.code, 2) << dir.output;
  EXPECT_NE(dir.output.find("is a directory"), std::string::npos) << dir.output;

  std::string row = resume::good_row();
  const auto with = [&](const std::string& from, const std::string& to) {
    std::string r = row;
    r.replace(r.find(from), from.size(), to);
    return "{\"rows\": [" + row + ", " + r + "]}";
  };
  struct Bad {
    std::string json, expect;
  };
  const std::vector<Bad> bad = {
      {"[1, 2]", "no \"rows\" array"},
      {"{\"rows\": 3}", "no \"rows\" array"},
      {"{\"rows\": [" + row + ", 7]}", "row 1"},
      {with("\"n\": 32", "\"n\": \"32\""), "row 1"},
      {with("\"seed\": 0", "\"seed\": -1"), "seed must be a non-negative integer"},
      {with("\"threads\": 1", "\"threads\": 99999999999"), "threads must be an integer"},
      {with("\"reps\": 1", "\"reps\": 1.5"), "reps must be an integer"},
      {with("\"dim\": 16", "\"dim\": 0"), "dim must be an integer"},
      {"{\"rows\": [" + row + ", " + row + "]}", "repeats the key"},
      {"{\"rows\": [", "not valid JSON"},
  };
  for (const Bad& b : bad) {
    const CliResult r = resume::resume_with(d / "case", b.json);
    EXPECT_EQ(r.code, 2) << b.json << "\n" << r.output;
    EXPECT_NE(r.output.find(b.expect), std::string::npos) << b.json << "\n" << r.output;
    EXPECT_NE(r.output.find("results.json"), std::string::npos) << r.output;
    EXPECT_EQ(lines(r.output), 1) << r.output;
  }
  EXPECT_EQ(resume::resume_with(d / "ok", "{\"rows\": [" + row + "]}").code, 0);
}

}  // namespace
}  // namespace attn::test
