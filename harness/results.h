// One row per measured case, the run context, and the result files (results/README.md).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace attnbench {

struct Row {
  std::string key, variant, spec;
  int64_t batch = 1, heads = 1, n = 0, dim = 0;
  bool causal = false;
  std::string dist = "gaussian";
  uint64_t seed = 0;
  std::string posenc;
  int threads = 0, reps = 0;
  std::string status = "ok";  // or "skipped: <reason>"; skipped rows carry no metrics
  double time_ms_median = 0, time_ms_min = 0, time_ms_max = 0, time_cv = 0;
  std::vector<double> time_ms_reps;
  // What the regression gate compares: process CPU ms per forward and the sgemm control's CPU
  // ms per GFLOP measured right after each repetition (empty in files written before them).
  std::vector<double> cpu_ms_reps, control_ms_reps;
  double gflops = 0, pct_ceiling = 0;
  double mem_peak_bytes = 0;
  int64_t mem_allocs = 0;
  double extra_bytes = 0, rss_peak_bytes = 0;
  double rel_err = 0, max_abs_err = 0, cosine = 0;
  std::optional<double> coverage;
  std::string ref_rows;   // "all" or "<k> sampled"
  std::string reference;  // "dense", or the variant's dense counterpart it is scored against
  std::optional<double> err_vs_mean;  // ‖O − R‖ / ‖R − mean of visible V‖ (older files: none)
  // Recall inputs only (harness/accuracy.h RecallScore): recall@1, cosine to the planted
  // value, planted-key mass (exact softmax; the variant's renormalized over its visited keys),
  // and recall per gap / depth bin as [lo, hi, rows, recall].
  std::optional<double> recall, recall_cosine, planted_mass, planted_mass_variant;
  std::vector<std::array<double, 4>> recall_by_gap, recall_by_depth;

  bool ok() const { return status == "ok"; }
};

// "<spec>|B=1|H=8|N=4096|D=64|causal=0|dist=gaussian|seed=0|posenc=" (the results_schema key).
std::string case_key(const std::string& spec, int64_t batch, int64_t heads, int64_t n, int64_t dim,
                     bool causal, const std::string& dist, uint64_t seed,
                     const std::string& posenc);

struct Scaling {
  std::string spec, variant;
  int64_t batch = 1, heads = 1, dim = 0;
  bool causal = false;
  std::string dist, posenc;
  double alpha = 0, alpha_ci_lo = 0, alpha_ci_hi = 0;
  std::string gb_big_o;
  double gb_rms = 0;
  std::optional<double> crossover_n;
  std::string crossover_note;
  std::string crossover_baseline = "full";  // the spec crossover_n is measured against
};

// Where and with what a run was made.
struct RunContext {
  std::string cpu_model, compiler, onednn_version, boost_version, benchmark_version, git_commit,
      date_utc, config, command;
  std::string omp_wait_policy;  // OMP_WAIT_POLICY as the run saw it ("" = unset: GOMP spins)
  int cores = 0, threads = 0;
  double sgemm_ceiling_gflops = 0;
};
// Fills everything but the ceiling, config and command from this machine and build.
RunContext current_context(int threads);

nlohmann::json to_json(const Row& r);
Row row_from_json(const nlohmann::json& j);  // RuntimeError on a malformed row
nlohmann::json to_json(const Scaling& s);
nlohmann::json to_json(const RunContext& c);
RunContext context_from_json(const nlohmann::json& j);  // RuntimeError on a malformed context

std::string csv_header();
std::string csv_line(const Row& r);

// DIR/results.csv and DIR/results.json, each written atomically (temporary file + rename);
// creates DIR.
void write_results(const std::string& dir, const RunContext& ctx, const std::vector<Row>& rows,
                   const std::vector<Scaling>& scaling);
// Rows of an existing DIR/results.json (empty when there is none) for --resume: UsageError
// naming the file (and the row) when it is a directory, not JSON, or a row is malformed or
// repeats a key; RuntimeError if it cannot be read.
std::vector<Row> load_rows(const std::string& dir);
// The same on the text of a results.json named `path` in messages.
std::vector<Row> parse_rows(const std::string& text, const std::string& path);

// The console table of `attnbench run` and `attnbench sweep` (stdout).
void print_row_header();
void print_row(const Row& r);
void print_scaling(const std::vector<Scaling>& scaling);

}  // namespace attnbench
