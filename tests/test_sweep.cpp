// Sweeps: config parsing (good and malformed), the result files' schema, the scaling fit and
// crossover on synthetic data, and resuming a sweep killed with SIGKILL.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "harness/scaling.h"
#include "harness/sweep.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;
using attnbench::SweepConfig;
using nlohmann::json;

SweepConfig parse(const std::string& text) {
  std::istringstream in(text);
  return attnbench::parse_sweep_config(in, "t.ini");
}

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("attn_sweep_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// The keys the parser accepts, from the list its unknown-key error gives.
std::vector<std::string> accepted_keys() {
  try {
    parse("variant = full\nseq = 64\nno_such_key = 1\n");
  } catch (const UsageError& e) {
    const std::string msg = e.what(), from = "valid keys: ";
    std::vector<std::string> keys;
    std::istringstream list(msg.substr(msg.find(from) + from.size()));
    for (std::string k; std::getline(list, k, ',');)
      keys.push_back(k.substr(k.find_first_not_of(' ')));
    return keys;
  }
  ADD_FAILURE() << "an unknown key was accepted";
  return {};
}

const std::string kEveryKey =
    "# comment header\n"
    "variant = full\nvariant = full_materialized\n"
    "seq = 512, 1024,2048\ndim = 32\nheads = 4\nbatch = 2\ncausal = true\n"
    "dist = gaussian\ndist = local\nseed = 0\nseed = 7\nthreads = 1\nreps = 3\n"
    "min_time = 0.02\nmax_seconds = 5\nmax_memory_gib = 1.5\nposenc = axial:shape=32x64\n"
    "ref_sample = 64\nref_all_rows_max = 1024\ncrossover_baseline = full_materialized\n";

TEST(SweepConfig, ParsesEveryKey) {
  const std::vector<std::string> keys = accepted_keys();
  ASSERT_GE(keys.size(), 16u) << "the error's key list did not parse";
  for (const std::string& k : keys)  // a key added to the parser must be added here too
    EXPECT_NE(kEveryKey.find("\n" + k + " = "), std::string::npos) << k << " not exercised";
  SweepConfig c = parse(kEveryKey);
  EXPECT_EQ(c.variants, (std::vector<std::string>{"full", "full_materialized"}));
  EXPECT_EQ(c.seqs, (std::vector<int64_t>{512, 1024, 2048}));
  EXPECT_EQ(c.dim, 32);
  EXPECT_EQ(c.heads, 4);
  EXPECT_EQ(c.batch, 2);
  EXPECT_EQ(c.causal, std::vector<bool>{true});
  EXPECT_EQ(c.dists, (std::vector<std::string>{"gaussian", "local"}));
  EXPECT_EQ(c.seeds, (std::vector<uint64_t>{0, 7}));
  EXPECT_EQ(c.threads, 1);
  EXPECT_EQ(c.reps, 3);
  EXPECT_DOUBLE_EQ(c.min_time, 0.02);
  EXPECT_DOUBLE_EQ(c.max_seconds, 5);
  EXPECT_DOUBLE_EQ(c.max_memory_gib, 1.5);
  EXPECT_EQ(c.posenc, "axial:shape=32x64");
  EXPECT_EQ(c.ref_sample, 64);
  EXPECT_EQ(c.ref_all_rows_max, 1024);
  EXPECT_EQ(c.crossover_baseline, "full_materialized");
  // 2 variants x 2 dists x 3 n x 2 seeds, distribution outermost and n ascending.
  auto cases = attnbench::expand_cases(c);
  ASSERT_EQ(cases.size(), 24u);
  EXPECT_EQ(cases[0].key(),
            "full|B=2|H=4|N=512|D=32|causal=1|dist=gaussian|seed=0|posenc=axial:shape=32x64");
  EXPECT_EQ(cases[1].seed, 7u);
  EXPECT_EQ(cases[2].shape.nq, 1024);
  EXPECT_EQ(cases[12].dist, "local");
}

// Every key but variant and seq is optional; the defaults are the documented ones (sweep.h).
TEST(SweepConfig, DefaultsForOptionalKeys) {
  SweepConfig c = parse("variant = full\nseq = 64\n");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.heads, 8);
  EXPECT_EQ(c.batch, 1);
  EXPECT_EQ(c.causal, std::vector<bool>{false});
  EXPECT_EQ(c.dists, (std::vector<std::string>{"gaussian"}));
  EXPECT_EQ(c.seeds, (std::vector<uint64_t>{0}));
  EXPECT_EQ(c.posenc, "");
  EXPECT_EQ(c.threads, 0);
  EXPECT_EQ(c.reps, 5);
  EXPECT_DOUBLE_EQ(c.min_time, 0.05);
  EXPECT_EQ(c.max_seconds, 0);
  EXPECT_EQ(c.max_memory_gib, 0);
  EXPECT_EQ(c.ref_sample, 256);
  EXPECT_EQ(c.ref_all_rows_max, 4096);
  EXPECT_EQ(c.crossover_baseline, "full");
}

TEST(SweepConfig, EveryMalformedConfigIsAOneLineUsageError) {
  const std::string ok = "variant = full\nseq = 64,128\n";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {ok + "colour = blue\n", "unknown key 'colour'"},
      {ok + "dim = abc\n", "dim"},
      {ok + "dim = 0\n", "dim"},
      {ok + "heads = 1.5\n", "heads"},
      {ok + "reps = 0\n", "reps"},
      {ok + "reps = many\n", "reps"},
      {ok + "min_time = 0\n", "min_time"},
      {ok + "min_time = x\n", "min_time"},
      {ok + "max_seconds = -1\n", "max_seconds"},
      {ok + "max_memory_gib = lots\n", "max_memory_gib"},
      {ok + "threads = -2\n", "threads"},
      {ok + "causal = maybe\n", "causal"},
      {ok + "seed = -1\n", "seed"},
      {ok + "seed = x\n", "seed"},
      {ok + "dim = 64\ndim = 32\n", "dim"},
      {ok + "dist =\n", "dist"},
      {"seq = 64\n", "variant"},
      {"variant =\nseq = 64\n", "variant"},
      {"variant = full\n", "seq"},
      {"variant = full\nseq =\n", "seq"},
      {"variant = full\nseq = 64,abc\n", "seq"},
      {"variant = full\nseq = 64,-128\n", "seq"},
      {"variant = full\nseq = 0\n", "seq"},
  };
  for (const auto& [text, what] : bad) {
    try {
      parse(text);
      ADD_FAILURE() << "accepted:\n" << text;
    } catch (const UsageError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("config t.ini: ", 0), 0u) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << "'" << what << "' not in: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST(SweepConfig, UnknownVariantsAndBadSpecsAreRejectedUpFront) {
  for (const std::string v : {"nope", "full:radius=3", "full_materialized:x=1"}) {
    SweepConfig c = parse("variant = full\nvariant = " + v + "\nseq = 64\n");
    EXPECT_THROW(attnbench::validate_config(c), UsageError) << v;
  }
  EXPECT_THROW(attnbench::validate_config(parse("variant = full\nseq = 64\ndist = nope\n")),
               UsageError);
  EXPECT_NO_THROW(attnbench::validate_config(parse("variant = full\nseq = 64\n")));
}

// Every shipped config (configs/*.ini) parses, names only registered variants and passes the
// checks a sweep makes before it starts; the main ones cover what their headers promise.
TEST(SweepConfig, ShippedConfigsParse) {
  const std::string dir = std::string(ATTN_SOURCE_DIR) + "/configs/";
  auto pow2 = [](int64_t lo, int64_t hi) {
    std::vector<int64_t> v;
    for (int64_t n = lo; n <= hi; n *= 2) v.push_back(n);
    return v;
  };
  std::vector<std::string> shipped;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".ini") shipped.push_back(e.path().stem().string());
  ASSERT_FALSE(shipped.empty()) << "no .ini in " << dir;
  for (const std::string& name : shipped) {
    SweepConfig c = attnbench::load_sweep_config(dir + name + ".ini");
    EXPECT_FALSE(c.variants.empty()) << name;
    for (const auto& spec : c.variants) {
      const std::string v = spec.substr(0, spec.find(':'));
      EXPECT_TRUE(std::any_of(variants().begin(), variants().end(),
                              [&](const VariantInfo& i) { return i.name == v; }))
          << name << ".ini names unregistered variant " << v;
    }
    EXPECT_NO_THROW(attnbench::validate_config(c)) << name;
  }
  SweepConfig d = attnbench::load_sweep_config(dir + "default.ini");
  EXPECT_EQ(d.seqs, pow2(512, 16384));
  for (const VariantInfo& v : variants()) {
    if (v.name == "reference") continue;
    EXPECT_TRUE(
        std::any_of(d.variants.begin(), d.variants.end(),
                    [&](const std::string& s) { return s.substr(0, s.find(':')) == v.name; }))
        << "default.ini misses registered variant " << v.name;
  }
  EXPECT_EQ(attnbench::load_sweep_config(dir + "scaling.ini").seqs, pow2(512, 65536));
  EXPECT_EQ(attnbench::load_sweep_config(dir + "accuracy.ini").dists.size(), 4u);
  EXPECT_THROW(attnbench::load_sweep_config(dir + "no_such.ini"), UsageError);
}

// t = c·n^2 with 5% multiplicative noise: alpha close to 2 and its 95% CI covering 2.
TEST(Scaling, RecoversQuadraticExponentWithCi) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(0.0, 0.05);
  std::vector<double> n, t;
  for (double x = 512; x <= 65536; x *= 2)
    for (int rep = 0; rep < 2; ++rep)
      n.push_back(x), t.push_back(3e-7 * x * x * std::exp(noise(rng)));
  attnbench::PowerFit f = attnbench::fit_power_law(n, t);
  ASSERT_TRUE(f.valid);
  EXPECT_NEAR(f.alpha, 2.0, 0.05);
  EXPECT_LT(f.ci_lo, 2.0);
  EXPECT_GT(f.ci_hi, 2.0);
  EXPECT_LT(f.ci_hi - f.ci_lo, 0.2);
  EXPECT_NEAR(std::exp(f.intercept), 3e-7, 1e-7);
  // Exact linear data: alpha 1, a degenerate interval.
  std::vector<double> tl;
  for (double x : n) tl.push_back(2e-3 * x);
  attnbench::PowerFit g = attnbench::fit_power_law(n, tl);
  EXPECT_NEAR(g.alpha, 1.0, 1e-12);
  EXPECT_NEAR(g.ci_hi - g.ci_lo, 0.0, 1e-9);
  // The t quantile that makes it a 95% interval (tables: 12.706 for 1 dof, 2.228 for 10).
  EXPECT_NEAR(attnbench::student_t_975(1), 12.706, 1e-3);
  EXPECT_NEAR(attnbench::student_t_975(10), 2.228, 1e-3);
  EXPECT_FALSE(attnbench::fit_power_law({512, 512}, {1, 2}).valid);
}

TEST(Scaling, CrossoverOfSyntheticLines) {
  std::vector<double> n = {256, 512, 1024, 2048, 4096};
  std::vector<double> dense, linear, slow;
  for (double x : n)
    dense.push_back(1e-6 * x * x), linear.push_back(1e-3 * x), slow.push_back(1e-5 * x * x);
  const auto fd = attnbench::fit_power_law(n, dense);
  // 1e-3·n = 1e-6·n^2 at n = 1000.
  auto c = attnbench::find_crossover(attnbench::fit_power_law(n, linear), fd);
  ASSERT_TRUE(c.n.has_value());
  EXPECT_NEAR(*c.n, 1000.0, 1e-6);
  EXPECT_EQ(c.note, "faster than full from n≈1000");
  // Ten times slower than dense everywhere: never faster.
  c = attnbench::find_crossover(attnbench::fit_power_law(n, slow), fd);
  EXPECT_FALSE(c.n.has_value());
  EXPECT_EQ(c.note, "none in range");
  // The crossover point lies beyond the measured range: none in range either.
  std::vector<double> late;
  for (double x : n) late.push_back(1e-2 * x);  // equal to dense at n = 10000
  c = attnbench::find_crossover(attnbench::fit_power_law(n, late), fd);
  EXPECT_FALSE(c.n.has_value());
  EXPECT_EQ(c.note, "none in range");
  // Faster at every measured n: n* is the smallest measured n.
  std::vector<double> fast;
  for (double x : n) fast.push_back(1e-5 * x);
  c = attnbench::find_crossover(attnbench::fit_power_law(n, fast), fd);
  ASSERT_TRUE(c.n.has_value());
  EXPECT_NEAR(*c.n, 256.0, 1e-6);
}

// Crossovers are against the configured baseline spec: a variant crosses it where the two
// fits meet, and one slower than the baseline everywhere never does.
TEST(Scaling, CrossoverBaselineIsConfigurable) {
  auto row = [](const std::string& spec, double n, double ms) {
    attnbench::Row r;
    r.spec = spec;
    r.variant = spec;
    r.n = int64_t(n), r.dim = 64, r.time_ms_median = ms;
    return r;
  };
  std::vector<attnbench::Row> rows;
  for (double n : {256.0, 512.0, 1024.0, 2048.0}) {
    rows.push_back(row("window", n, 1e-5 * n * n));  // the baseline
    rows.push_back(row("cheap", n, 1e-2 * n));       // = the baseline at n = 1000, then faster
    rows.push_back(row("full", n, 1e-4 * n * n));    // slower than the baseline everywhere
  }
  const auto scaling = attnbench::compute_scaling(rows, {}, "window");
  ASSERT_EQ(scaling.size(), 3u);
  for (const auto& s : scaling) {
    EXPECT_EQ(s.crossover_baseline, "window");
    if (s.spec == "window") {
      EXPECT_EQ(s.crossover_note, "is the crossover baseline");
    } else if (s.spec == "full") {
      EXPECT_EQ(s.crossover_note, "none in range");
    } else {
      ASSERT_TRUE(s.crossover_n.has_value());
      EXPECT_NEAR(*s.crossover_n, 1000.0, 1e-6);
      EXPECT_EQ(s.crossover_note, "faster than window from n≈1000");
    }
  }
  EXPECT_EQ(attnbench::compute_scaling(rows, {}, "absent")[0].crossover_note, "no absent in sweep");
  // The config key must name one of the sweep's specs.
  EXPECT_EQ(parse("variant = full\nvariant = lsh\nseq = 64\ncrossover_baseline = lsh\n")
                .crossover_baseline,
            "lsh");
  EXPECT_THROW(parse("variant = full\nseq = 64\ncrossover_baseline = lsh\n"), UsageError);
}

const char* kRowNumbers[] = {"time_ms_median", "time_ms_min", "time_ms_max",    "time_cv",
                             "gflops",         "pct_ceiling", "mem_peak_bytes", "extra_bytes",
                             "rss_peak_bytes", "rel_err",     "max_abs_err",    "cosine"};

void check_row_schema(const json& r) {
  for (const char* k : {"key", "variant", "spec", "dist", "posenc", "status"})
    EXPECT_TRUE(r.at(k).is_string()) << k;
  for (const char* k : {"batch", "heads", "n", "dim", "seed", "threads", "reps"})
    EXPECT_TRUE(r.at(k).is_number_integer()) << k;
  EXPECT_TRUE(r.at("causal").is_boolean());
  EXPECT_TRUE(r.at("time_ms_reps").is_array());
  const bool ok = r["status"] == "ok";
  if (!ok) {
    EXPECT_EQ(r["status"].get<std::string>().rfind("skipped: ", 0), 0u);
    for (const char* k : kRowNumbers) EXPECT_TRUE(r.at(k).is_null()) << k;
    EXPECT_TRUE(r.at("mem_allocs").is_null());
    EXPECT_TRUE(r.at("coverage").is_null());
    EXPECT_TRUE(r.at("ref_rows").is_null());
    EXPECT_TRUE(r.at("reference").is_null());
    return;
  }
  for (const char* k : kRowNumbers) EXPECT_TRUE(r.at(k).is_number()) << k;
  EXPECT_TRUE(r.at("mem_allocs").is_number_integer());
  EXPECT_TRUE(r.at("coverage").is_null() || r.at("coverage").is_number());
  EXPECT_TRUE(r.at("ref_rows").is_string());
  EXPECT_TRUE(r.at("reference").is_string());
  EXPECT_TRUE(r.at("err_vs_mean").is_number());
  for (const char* k : {"recall", "recall_cosine", "planted_mass", "planted_mass_variant"})
    EXPECT_TRUE(r.at(k).is_null()) << k << " on a non-recall input";
  EXPECT_TRUE(r.at("recall_by_gap").is_array() && r.at("recall_by_depth").is_array());
  EXPECT_EQ(r["time_ms_reps"].size(), r["reps"].get<size_t>());
  for (const auto& t : r["time_ms_reps"]) {
    EXPECT_GE(t.get<double>(), r["time_ms_min"].get<double>());
    EXPECT_LE(t.get<double>(), r["time_ms_max"].get<double>());
  }
  EXPECT_GT(r["time_ms_median"].get<double>(), 0);
  EXPECT_LT(r["rel_err"].get<double>(), 1e-5);
  EXPECT_GT(r["cosine"].get<double>(), 0.99999);
}

// A small sweep in-process: every field of results.json has its schema type, the CSV has one
// line per row with the documented columns, and the memory budget skips with a note.
TEST(SweepResults, JsonAndCsvFollowTheSchema) {
  fs::path d = scratch("schema");
  SweepConfig c = parse(
      "variant = full\nvariant = full_materialized\nseq = 32,64,128\ndim = 16\nheads = 1\n"
      "reps = 2\nmin_time = 0.001\nthreads = 1\nref_all_rows_max = 64\nref_sample = 16\n"
      "max_memory_gib = 0.0000745\n");
  attnbench::SweepOptions opt;
  opt.out_dir = d.string();
  opt.config_path = "t.ini";
  attnbench::SweepResult res = attnbench::run_sweep(c, opt);
  ASSERT_EQ(res.rows.size(), 6u);
  // One fp64 reference per input (n = 32, 64, 128), shared by both variants.
  EXPECT_EQ(res.references_computed, 3u);

  std::ifstream jf(d / "results.json");
  json j = json::parse(jf);
  for (const char* k : {"cpu_model", "compiler", "onednn_version", "boost_version",
                        "benchmark_version", "git_commit", "date_utc", "config", "command"})
    EXPECT_TRUE(j["context"].at(k).is_string()) << k;
  EXPECT_TRUE(j["context"].at("cores").is_number_integer());
  EXPECT_EQ(j["context"].at("threads"), 1);
  EXPECT_GT(j["context"].at("sgemm_ceiling_gflops").get<double>(), 0);
  ASSERT_EQ(j["rows"].size(), 6u);
  std::set<std::string> keys;
  for (const auto& r : j["rows"]) check_row_schema(r), keys.insert(r["key"]);
  EXPECT_EQ(keys.size(), 6u);
  // full_materialized at n=128 needs ~112 KiB > the 78 KiB budget; n = 32, 64 fit.
  const json& fm64 = j["rows"][4];
  const json& fm128 = j["rows"][5];
  EXPECT_EQ(fm64["spec"], "full_materialized");
  EXPECT_EQ(fm64["status"], "ok");
  EXPECT_EQ(fm128["n"], 128);
  EXPECT_NE(fm128["status"].get<std::string>().find("max_memory_gib"), std::string::npos);
  // Its n x n buffer goes through alloc_floats, so the hook sees exactly 4·n² bytes.
  EXPECT_EQ(fm64["mem_peak_bytes"].get<double>(), 4.0 * 64 * 64);
  EXPECT_EQ(fm64["extra_bytes"].get<double>(), 4.0 * 64 * 64);
  EXPECT_EQ(j["rows"][0]["ref_rows"], "all");
  EXPECT_EQ(j["rows"][2]["ref_rows"], "16 sampled");
  // full has 3 n: one scaling entry with Google Benchmark's fit; full_materialized only 2.
  ASSERT_EQ(j["scaling"].size(), 1u);
  const json& s = j["scaling"][0];
  EXPECT_EQ(s["spec"], "full");
  for (const char* k : {"alpha", "alpha_ci_lo", "alpha_ci_hi", "gb_rms"})
    EXPECT_TRUE(s.at(k).is_number()) << k;
  EXPECT_TRUE(s.at("gb_big_o").is_string());
  EXPECT_FALSE(s["gb_big_o"].get<std::string>().empty());
  EXPECT_TRUE(s.at("crossover_n").is_null());
  EXPECT_TRUE(s.at("crossover_note").is_string());

  std::ifstream cf(d / "results.csv");
  std::string header, line;
  std::getline(cf, header);
  EXPECT_EQ(header, attnbench::csv_header());
  const size_t columns = std::count(header.begin(), header.end(), ',') + 1;
  EXPECT_EQ(columns, 36u);
  int lines = 0;
  while (std::getline(cf, line)) {
    ++lines;
    EXPECT_EQ(size_t(std::count(line.begin(), line.end(), ',')) + 1, columns) << line;
  }
  EXPECT_EQ(lines, 6);
}

// What --resume reads back is what was written, including a NaN error (JSON null).
TEST(SweepResults, RowsRoundTripThroughJson) {
  attnbench::Row r;
  r.key = "k", r.variant = "full", r.spec = "full", r.n = 64, r.dim = 16, r.seed = 3;
  r.threads = 2, r.reps = 2, r.time_ms_reps = {1.5, 2.5}, r.time_ms_median = 2;
  r.time_ms_min = 1.5, r.time_ms_max = 2.5, r.time_cv = 0.35, r.mem_peak_bytes = 4096;
  r.mem_allocs = 7, r.extra_bytes = 4000, r.rel_err = std::nan(""), r.coverage = 0.25;
  r.ref_rows = "all";
  attnbench::Row back = attnbench::row_from_json(json::parse(attnbench::to_json(r).dump()));
  EXPECT_TRUE(std::isnan(back.rel_err));
  EXPECT_EQ(back.time_ms_reps, r.time_ms_reps);
  EXPECT_EQ(back.mem_allocs, 7);
  EXPECT_EQ(back.coverage, 0.25);
  EXPECT_EQ(back.seed, 3u);
  EXPECT_EQ(attnbench::csv_line(back), attnbench::csv_line(r));
  r.status = "skipped: estimated memory 2 GiB > max_memory_gib=1";
  back = attnbench::row_from_json(json::parse(attnbench::to_json(r).dump()));
  EXPECT_EQ(back.status, r.status);
  EXPECT_TRUE(back.time_ms_reps.empty());
  EXPECT_THROW(attnbench::row_from_json(json::parse(R"({"key": "k"})")), RuntimeError);
}

int run_shell(const std::string& cmd) {
  return std::system(cmd.c_str());
}

size_t row_count(const fs::path& json_path) {
  std::ifstream f(json_path);
  if (!f) return 0;
  try {
    return json::parse(f)["rows"].size();
  } catch (...) {
    return 0;  // never expected: the file is replaced atomically
  }
}

// The binary is killed with SIGKILL after some cases are written; --resume finishes the sweep
// with exactly one row per case and leaves the rows that were already there untouched.
TEST(SweepResume, KilledWithSigkillThenResumedHasOneRowPerCase) {
  fs::path d = scratch("resume");
  const fs::path cfg = d / "kill.ini", out = d / "out";
  std::ofstream(cfg) << "variant = full\nvariant = full_materialized\nseq = 128,256,512,1024\n"
                        "heads = 2\ndim = 32\nreps = 3\nmin_time = 0.05\nthreads = 1\n"
                        "dist = gaussian\nseed = 0\nseed = 1\n";
  const size_t cases = 16;
  const std::string exe = ATTNBENCH_EXE;
  ASSERT_EQ(run_shell(exe + " sweep " + cfg.string() + " --out " + out.string() +
                      " --quiet >/dev/null 2>&1 & echo $! > " + (d / "pid").string()),
            0);
  pid_t pid = 0;
  for (int i = 0; i < 100 && !pid; ++i) {
    std::ifstream(d / "pid") >> pid;
    if (!pid) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(pid, 0);
  size_t before = 0;
  for (int i = 0; i < 3000 && before < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    before = row_count(out / "results.json");
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  before = row_count(out / "results.json");
  ASSERT_GE(before, 3u);
  ASSERT_LT(before, cases) << "the sweep finished before it could be killed";
  std::ifstream f0(out / "results.json");
  const json first = json::parse(f0);

  ASSERT_EQ(run_shell(exe + " sweep " + cfg.string() + " --out " + out.string() +
                      " --resume --quiet >/dev/null 2>&1"),
            0);
  std::ifstream f1(out / "results.json");
  const json done = json::parse(f1);
  ASSERT_EQ(done["rows"].size(), cases);
  std::set<std::string> keys;
  for (const auto& r : done["rows"]) {
    keys.insert(r["key"]);
    EXPECT_EQ(r["status"], "ok") << r["key"];
  }
  EXPECT_EQ(keys.size(), cases);
  // Rows written before the kill were kept as they were, not measured again.
  for (const auto& r0 : first["rows"]) {
    bool found = false;
    for (const auto& r1 : done["rows"])
      if (r1["key"] == r0["key"]) {
        found = true;
        EXPECT_EQ(r1["time_ms_reps"], r0["time_ms_reps"]);
      }
    EXPECT_TRUE(found) << r0["key"];
  }
  std::ifstream cf(out / "results.csv");
  size_t lines = 0;
  for (std::string l; std::getline(cf, l);) ++lines;
  EXPECT_EQ(lines, cases + 1);
}

TEST(SweepCli, MalformedConfigExitsTwoWithOneLine) {
  fs::path d = scratch("cli");
  std::ofstream(d / "bad.ini") << "variant = full\nvariant = no_such_variant\nseq = 64\n";
  const std::string cmd = std::string(ATTNBENCH_EXE) + " sweep " + (d / "bad.ini").string() +
                          " --out " + (d / "o").string() + " > " + (d / "log").string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream log(d / "log");
  std::string all((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(all.find("no_such_variant"), std::string::npos) << all;
  EXPECT_NE(all.find("bad.ini"), std::string::npos) << all;
  EXPECT_EQ(std::count(all.begin(), all.end(), '\n'), 1) << all;
  EXPECT_FALSE(fs::exists(d / "o" / "results.json"));
}

// Shared-QK LSH is scored against its own dense counterpart (keys q/‖q‖, self-mask): with one
// chunk covering the sequence it computes exactly that, so its error must be at fp32 level,
// while plain dense attention on the same inputs is a different problem (error far above).
TEST(SweepResults, SharedQkLshIsScoredAgainstItsDenseCounterpart) {
  SweepConfig c = parse(
      "variant = lsh:buckets=2,rounds=1,chunk=128\nvariant = full\nseq = 128\ndim = 16\n"
      "heads = 2\nreps = 1\nmin_time = 0.001\nthreads = 1\n");
  attnbench::SweepOptions opt;
  attnbench::SweepResult res = attnbench::run_sweep(c, opt);
  ASSERT_EQ(res.rows.size(), 2u);
  const auto& lsh = res.rows[0];
  const auto& full = res.rows[1];
  ASSERT_EQ(lsh.variant, "lsh");
  EXPECT_NE(lsh.reference.find("q/‖q‖"), std::string::npos) << lsh.reference;
  EXPECT_LT(lsh.rel_err, 1e-5);
  ASSERT_TRUE(lsh.coverage.has_value());
  EXPECT_NEAR(*lsh.coverage, 1.0, 1e-9);  // every key but itself, and itself carries no mass
  EXPECT_EQ(full.reference, "dense");
  EXPECT_LT(full.rel_err, 1e-5);
  EXPECT_EQ(res.references_computed, 2u);  // one per counterpart of the one input
}

}  // namespace
}  // namespace attn::test
