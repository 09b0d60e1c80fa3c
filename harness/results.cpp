#include "harness/results.h"

#include <unistd.h>

#include <boost/version.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <thread>

#include "attention/npy.h"
#include "attention/tensor.h"
#include "harness/cli.h"
#include "oneapi/dnnl/dnnl.h"

namespace attnbench {

using nlohmann::json;

std::string case_key(const std::string& spec, int64_t batch, int64_t heads, int64_t n, int64_t dim,
                     bool causal, const std::string& dist, uint64_t seed,
                     const std::string& posenc) {
  std::ostringstream k;
  k << spec << "|B=" << batch << "|H=" << heads << "|N=" << n << "|D=" << dim
    << "|causal=" << (causal ? 1 : 0) << "|dist=" << dist << "|seed=" << seed
    << "|posenc=" << posenc;
  return k.str();
}

namespace {

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      return colon == std::string::npos ? line
                                        : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

std::string git_commit() {
#ifdef ATTN_SOURCE_DIR
  std::string cmd = "git -C '" ATTN_SOURCE_DIR "' rev-parse HEAD 2>/dev/null";
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[64] = {};
    const bool got = std::fgets(buf, sizeof buf, p) != nullptr;
    pclose(p);
    std::string s = got ? buf : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    if (!s.empty()) return s;
  }
#endif
  return "unknown";
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

json number_or_null(bool ok, double v) {
  return ok ? json(v) : json(nullptr);
}

json optional_number(bool ok, const std::optional<double>& v) {
  return ok && v ? json(*v) : json(nullptr);
}

std::optional<double> read_optional(const json& j, const char* key) {
  if (j.contains(key) && j[key].is_number()) return j[key].get<double>();
  return std::nullopt;
}

std::vector<std::array<double, 4>> read_bins(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_array()) return {};
  return j[key].get<std::vector<std::array<double, 4>>>();
}

// JSON has no NaN: nlohmann writes it as null, so a null metric of an ok row reads back as NaN
// (a resumed sweep must not turn a NaN error into 0).
double get_number(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>()
                                               : std::numeric_limits<double>::quiet_NaN();
}

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// RFC 4180 quoting for fields that could hold commas or quotes (specs, statuses).
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

RunContext current_context(int threads) {
  RunContext c;
  c.cpu_model = cpu_model();
  c.cores = int(std::thread::hardware_concurrency());
  c.threads = threads;
  c.compiler = "GCC " __VERSION__;
  const dnnl_version_t* v = dnnl_version();
  c.onednn_version =
      std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  c.boost_version = std::to_string(BOOST_VERSION / 100000) + "." +
                    std::to_string(BOOST_VERSION / 100 % 1000) + "." +
                    std::to_string(BOOST_VERSION % 100);
  // Google Benchmark 1.7.1 headers carry no version macro; the build requires Debian's
  // libbenchmark-dev 1.7.1 (find_package(benchmark) in CMakeLists.txt).
  c.benchmark_version = "1.7.1";
  c.git_commit = git_commit();
  c.date_utc = now_utc();
  if (const char* p = std::getenv("OMP_WAIT_POLICY")) c.omp_wait_policy = p;
  return c;
}

json to_json(const Row& r) {
  const bool ok = r.ok();
  json j = {{"key", r.key},     {"variant", r.variant}, {"spec", r.spec},
            {"batch", r.batch}, {"heads", r.heads},     {"n", r.n},
            {"dim", r.dim},     {"causal", r.causal},   {"dist", r.dist},
            {"seed", r.seed},   {"posenc", r.posenc},   {"threads", r.threads},
            {"reps", r.reps},   {"status", r.status}};
  j["time_ms_median"] = number_or_null(ok, r.time_ms_median);
  j["time_ms_min"] = number_or_null(ok, r.time_ms_min);
  j["time_ms_max"] = number_or_null(ok, r.time_ms_max);
  j["time_cv"] = number_or_null(ok, r.time_cv);
  j["time_ms_reps"] = ok ? json(r.time_ms_reps) : json::array();
  j["cpu_ms_reps"] = ok ? json(r.cpu_ms_reps) : json::array();
  j["control_ms_reps"] = ok ? json(r.control_ms_reps) : json::array();
  j["gflops"] = number_or_null(ok, r.gflops);
  j["pct_ceiling"] = number_or_null(ok, r.pct_ceiling);
  j["mem_peak_bytes"] = number_or_null(ok, r.mem_peak_bytes);
  j["mem_allocs"] = ok ? json(r.mem_allocs) : json(nullptr);
  j["extra_bytes"] = number_or_null(ok, r.extra_bytes);
  j["rss_peak_bytes"] = number_or_null(ok, r.rss_peak_bytes);
  j["rel_err"] = number_or_null(ok, r.rel_err);
  j["max_abs_err"] = number_or_null(ok, r.max_abs_err);
  j["cosine"] = number_or_null(ok, r.cosine);
  j["coverage"] = ok && r.coverage ? json(*r.coverage) : json(nullptr);
  j["ref_rows"] = ok ? json(r.ref_rows) : json(nullptr);
  j["reference"] = ok ? json(r.reference) : json(nullptr);
  j["err_vs_mean"] = optional_number(ok, r.err_vs_mean);
  j["recall"] = optional_number(ok, r.recall);
  j["recall_cosine"] = optional_number(ok, r.recall_cosine);
  j["planted_mass"] = optional_number(ok, r.planted_mass);
  j["planted_mass_variant"] = optional_number(ok, r.planted_mass_variant);
  j["recall_by_gap"] = ok ? json(r.recall_by_gap) : json::array();
  j["recall_by_depth"] = ok ? json(r.recall_by_depth) : json::array();
  return j;
}

namespace {

// nlohmann converts silently between number kinds (-1 to 2^64-1 as a seed, 1e11 threads
// truncated to an int): counts are read only when they are integers in range.
int64_t get_count(const json& j, const char* key, int64_t lo, int64_t hi) {
  const json& v = j.at(key);
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(hi)) ||
      v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    throw attn::RuntimeError(std::string(key) + " must be an integer in [" + std::to_string(lo) +
                             ", " + std::to_string(hi) + "], got " + v.dump().substr(0, 40));
  return v.get<int64_t>();
}

std::string get_text(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_string())
    throw attn::RuntimeError(std::string(key) + " must be a string, got " + v.dump().substr(0, 40));
  return v.get<std::string>();
}

}  // namespace

Row row_from_json(const json& j) {
  try {
    Row r;
    r.key = get_text(j, "key");
    r.variant = get_text(j, "variant");
    r.spec = get_text(j, "spec");
    const int64_t big = std::numeric_limits<int64_t>::max();
    r.batch = get_count(j, "batch", 1, big);
    r.heads = get_count(j, "heads", 1, big);
    r.n = get_count(j, "n", 1, big);
    r.dim = get_count(j, "dim", 1, big);
    if (!j.at("causal").is_boolean())
      throw attn::RuntimeError("causal must be true or false, got " +
                               j["causal"].dump().substr(0, 40));
    r.causal = j["causal"].get<bool>();
    r.dist = get_text(j, "dist");
    if (!j.at("seed").is_number_unsigned())
      throw attn::RuntimeError("seed must be a non-negative integer, got " +
                               j["seed"].dump().substr(0, 40));
    r.seed = j["seed"].get<uint64_t>();
    r.posenc = get_text(j, "posenc");
    r.threads = int(get_count(j, "threads", 0, kMaxThreads));
    r.reps = int(get_count(j, "reps", 1, std::numeric_limits<int>::max()));
    r.status = get_text(j, "status");
    if (!r.ok()) return r;
    r.time_ms_median = get_number(j, "time_ms_median");
    r.time_ms_min = get_number(j, "time_ms_min");
    r.time_ms_max = get_number(j, "time_ms_max");
    r.time_cv = get_number(j, "time_cv");
    r.time_ms_reps = j.at("time_ms_reps").get<std::vector<double>>();
    if (j.contains("cpu_ms_reps")) r.cpu_ms_reps = j["cpu_ms_reps"].get<std::vector<double>>();
    if (j.contains("control_ms_reps"))
      r.control_ms_reps = j["control_ms_reps"].get<std::vector<double>>();
    r.gflops = get_number(j, "gflops");
    r.pct_ceiling = get_number(j, "pct_ceiling");
    r.mem_peak_bytes = get_number(j, "mem_peak_bytes");
    r.mem_allocs = j.contains("mem_allocs") && j["mem_allocs"].is_number_integer()
                       ? j["mem_allocs"].get<int64_t>()
                       : 0;
    r.extra_bytes = get_number(j, "extra_bytes");
    r.rss_peak_bytes = get_number(j, "rss_peak_bytes");
    r.rel_err = get_number(j, "rel_err");
    r.max_abs_err = get_number(j, "max_abs_err");
    r.cosine = get_number(j, "cosine");
    if (j.contains("coverage") && j["coverage"].is_number())
      r.coverage = j["coverage"].get<double>();
    r.ref_rows = j.value("ref_rows", "");
    if (j.contains("reference") && j["reference"].is_string())
      r.reference = j["reference"].get<std::string>();
    r.err_vs_mean = read_optional(j, "err_vs_mean");
    r.recall = read_optional(j, "recall");
    r.recall_cosine = read_optional(j, "recall_cosine");
    r.planted_mass = read_optional(j, "planted_mass");
    r.planted_mass_variant = read_optional(j, "planted_mass_variant");
    r.recall_by_gap = read_bins(j, "recall_by_gap");
    r.recall_by_depth = read_bins(j, "recall_by_depth");
    return r;
  } catch (const json::exception& e) {
    throw attn::RuntimeError(std::string("malformed result row: ") + e.what());
  }
}

json to_json(const Scaling& s) {
  return {{"spec", s.spec},
          {"variant", s.variant},
          {"batch", s.batch},
          {"heads", s.heads},
          {"dim", s.dim},
          {"causal", s.causal},
          {"dist", s.dist},
          {"posenc", s.posenc},
          {"alpha", s.alpha},
          {"alpha_ci_lo", s.alpha_ci_lo},
          {"alpha_ci_hi", s.alpha_ci_hi},
          {"gb_big_o", s.gb_big_o},
          {"gb_rms", s.gb_rms},
          {"crossover_n", s.crossover_n ? json(*s.crossover_n) : json(nullptr)},
          {"crossover_note", s.crossover_note},
          {"crossover_baseline", s.crossover_baseline}};
}

json to_json(const RunContext& c) {
  return {{"cpu_model", c.cpu_model},
          {"cores", c.cores},
          {"threads", c.threads},
          {"compiler", c.compiler},
          {"onednn_version", c.onednn_version},
          {"boost_version", c.boost_version},
          {"benchmark_version", c.benchmark_version},
          {"git_commit", c.git_commit},
          {"date_utc", c.date_utc},
          {"omp_wait_policy", c.omp_wait_policy},
          {"sgemm_ceiling_gflops", c.sgemm_ceiling_gflops},
          {"config", c.config},
          {"command", c.command}};
}

RunContext context_from_json(const json& j) {
  try {
    RunContext c;
    c.cpu_model = get_text(j, "cpu_model");
    c.cores = int(get_count(j, "cores", 0, std::numeric_limits<int>::max()));
    c.threads = int(get_count(j, "threads", 0, kMaxThreads));
    c.compiler = get_text(j, "compiler");
    c.onednn_version = get_text(j, "onednn_version");
    c.boost_version = get_text(j, "boost_version");
    c.benchmark_version = get_text(j, "benchmark_version");
    c.git_commit = get_text(j, "git_commit");
    c.date_utc = get_text(j, "date_utc");
    c.omp_wait_policy = j.value("omp_wait_policy", "");
    c.sgemm_ceiling_gflops = get_number(j, "sgemm_ceiling_gflops");
    c.config = get_text(j, "config");
    c.command = get_text(j, "command");
    return c;
  } catch (const json::exception& e) {
    throw attn::RuntimeError(std::string("malformed run context: ") + e.what());
  }
}

std::string csv_header() {
  return "key,variant,spec,batch,heads,n,dim,causal,dist,seed,posenc,threads,reps,status,"
         "time_ms_median,time_ms_min,time_ms_max,time_cv,time_ms_reps,gflops,pct_ceiling,"
         "mem_peak_bytes,mem_allocs,extra_bytes,rss_peak_bytes,rel_err,max_abs_err,cosine,"
         "coverage,ref_rows,reference,err_vs_mean,recall,recall_cosine,planted_mass,"
         "planted_mass_variant";
}

std::string csv_line(const Row& r) {
  std::ostringstream s;
  s << csv_field(r.key) << ',' << r.variant << ',' << csv_field(r.spec) << ',' << r.batch << ','
    << r.heads << ',' << r.n << ',' << r.dim << ',' << (r.causal ? 1 : 0) << ','
    << csv_field(r.dist) << ',' << r.seed << ',' << csv_field(r.posenc) << ',' << r.threads << ','
    << r.reps << ',' << csv_field(r.status);
  if (!r.ok()) {
    s << std::string(22, ',');  // no metrics
    return s.str();
  }
  std::string reps;
  for (size_t i = 0; i < r.time_ms_reps.size(); ++i) {
    if (i) reps += ';';
    reps += num(r.time_ms_reps[i]);
  }
  s << ',' << num(r.time_ms_median) << ',' << num(r.time_ms_min) << ',' << num(r.time_ms_max) << ','
    << num(r.time_cv) << ',' << reps << ',' << num(r.gflops) << ',' << num(r.pct_ceiling) << ','
    << num(r.mem_peak_bytes) << ',' << r.mem_allocs << ',' << num(r.extra_bytes) << ','
    << num(r.rss_peak_bytes) << ',' << num(r.rel_err) << ',' << num(r.max_abs_err) << ','
    << num(r.cosine) << ',' << (r.coverage ? num(*r.coverage) : "") << ',' << r.ref_rows << ','
    << csv_field(r.reference);
  for (const auto* v :
       {&r.err_vs_mean, &r.recall, &r.recall_cosine, &r.planted_mass, &r.planted_mass_variant})
    s << ',' << (*v ? num(**v) : "");
  return s.str();
}

void write_results(const std::string& dir, const RunContext& ctx, const std::vector<Row>& rows,
                   const std::vector<Scaling>& scaling) {
  std::filesystem::create_directories(dir);
  json j = {{"context", to_json(ctx)}, {"rows", json::array()}, {"scaling", json::array()}};
  std::string csv = csv_header() + "\n";
  for (const Row& r : rows) j["rows"].push_back(to_json(r)), csv += csv_line(r) + "\n";
  for (const Scaling& s : scaling) j["scaling"].push_back(to_json(s));
  // CSV first: results.json is what --resume trusts, so it is never ahead of the CSV.
  attn::write_file_atomic(dir + "/results.csv", csv);
  attn::write_file_atomic(dir + "/results.json", j.dump(1) + "\n");
}

std::vector<Row> parse_rows(const std::string& text, const std::string& path) {
  const std::string fix = "; move it away, or run with --overwrite to replace it";
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw attn::UsageError(path + " is not valid JSON (" + e.what() + ")" + fix);
  }
  if (!j.is_object() || !j.contains("rows") || !j["rows"].is_array())
    throw attn::UsageError(path + " has no \"rows\" array" + fix);
  std::vector<Row> rows;
  std::set<std::string> keys;
  const json& all = j["rows"];
  for (size_t i = 0; i < all.size(); ++i) {
    try {
      rows.push_back(row_from_json(all[i]));
    } catch (const std::exception& e) {
      throw attn::UsageError(path + ": row " + std::to_string(i) + ": " + e.what() + fix);
    }
    if (!keys.insert(rows.back().key).second)
      throw attn::UsageError(path + ": row " + std::to_string(i) + " repeats the key " +
                             rows.back().key + fix);
  }
  return rows;
}

std::vector<Row> load_rows(const std::string& dir) {
  const std::string path = dir + "/results.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  if (std::filesystem::is_directory(path, ec))
    throw attn::UsageError(path + " is a directory, not a results file; move it away");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw attn::RuntimeError(path + ": cannot read");
  std::ostringstream text;
  text << f.rdbuf();
  if (!f && !f.eof()) throw attn::RuntimeError(path + ": read failed");
  return parse_rows(text.str(), path);
}

void print_row_header() {
  std::printf("%-34s %6s %10s %6s %8s %7s %10s %10s %7s %9s %9s %8s %8s  %s\n", "variant", "n",
              "median_ms", "cv%", "GFLOP/s", "%sgemm", "peak_MiB", "extra_MiB", "allocs", "rel_err",
              "max_abs", "cosine", "coverage", "ref rows");
  std::fflush(stdout);
}

void print_row(const Row& r) {
  if (!r.ok()) {
    std::printf("%-34s %6lld  %s\n", r.spec.c_str(), (long long)r.n, r.status.c_str());
  } else {
    const std::string cov = r.coverage ? num(*r.coverage).substr(0, 6) : "-";
    std::printf(
        "%-34s %6lld %10.3f %6.1f %8.1f %6.1f%% %10.3f %10.3f %7lld %9.2e %9.2e %8.5f %8s  %s\n",
        r.spec.c_str(), (long long)r.n, r.time_ms_median, 100 * r.time_cv, r.gflops, r.pct_ceiling,
        r.mem_peak_bytes / (1 << 20), r.extra_bytes / (1 << 20), (long long)r.mem_allocs, r.rel_err,
        r.max_abs_err, r.cosine, cov.c_str(), r.ref_rows.c_str());
    if (r.recall)
      std::printf("%-34s        recall@1 %.3f, cosine to planted value %.3f\n", "", *r.recall,
                  r.recall_cosine.value_or(0));
  }
  std::fflush(stdout);
}

void print_scaling(const std::vector<Scaling>& scaling) {
  if (scaling.empty()) return;
  std::printf("\n%-34s %-10s %22s %8s %7s  %s\n", "scaling (median time vs n)", "dist",
              "alpha [95% CI]", "GB O()", "GB rms", "crossover");
  for (const Scaling& s : scaling) {
    char ci[48];
    std::snprintf(ci, sizeof ci, "%.2f [%.2f, %.2f]", s.alpha, s.alpha_ci_lo, s.alpha_ci_hi);
    std::printf("%-34s %-10s %22s %8s %6.0f%%  %s\n", s.spec.c_str(), s.dist.c_str(), ci,
                s.gb_big_o.empty() ? "-" : s.gb_big_o.c_str(), 100 * s.gb_rms,
                s.crossover_note.c_str());
  }
  std::fflush(stdout);
}

}  // namespace attnbench
