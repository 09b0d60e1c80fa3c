// `attnbench compare BASELINE.json NEW.json`: the regression gate. Accuracy is deterministic
// given the seeds (bit-identical across thread counts and, with the same build, across CPUs),
// so it is compared relative to each case's own error. Time is compared as each repetition's
// process CPU time divided by the sgemm control measured right after it — "how many GFLOP of
// sgemm would that CPU time have bought" — which machine load hardly moves (docs/DESIGN.md,
// "The regression gate"), and only counts when the slowdown is both large and significant over
// the repetitions (one-sided Mann-Whitney U).
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "attention/registry.h"
#include "attention/tensor.h"
#include "harness/cli.h"
#include "harness/stats.h"

namespace attnbench {
namespace {

using nlohmann::json;

struct Row {
  std::string key, status, variant;
  bool causal = false;
  double rel_err = NAN;
  // Per repetition, GFLOP of sgemm the forward's cost would have bought:
  std::vector<double> cpu_equiv;   // CPU ms ÷ the neighbouring control's CPU ms per GFLOP
  std::vector<double> wall_equiv;  // wall ms × the run's one sgemm ceiling (older files)
  bool ok() const { return status == "ok"; }
};

struct Run {
  std::string path, cpu, wait_policy;
  double ceiling = 0;
  int threads = 0;
  std::vector<Row> rows;
  std::map<std::string, size_t> index;  // key → rows position
};

[[noreturn]] void malformed(const std::string& path, const std::string& why) {
  throw attn::UsageError(path + ": not a valid attnbench results.json (" + why + ")");
}

double number_or_nan(const json& v) {
  return v.is_number() ? v.get<double>() : NAN;
}

Row parse_row(const std::string& path, const json& j, double ceiling, size_t i) {
  const std::string where = "row " + std::to_string(i);
  if (!j.is_object()) malformed(path, where + " is not an object");
  Row r;
  if (!j.contains("key") || !j["key"].is_string()) malformed(path, where + " has no string key");
  r.key = j["key"].get<std::string>();
  if (!j.contains("status") || !j["status"].is_string())
    malformed(path, where + " (" + r.key + ") has no string status");
  r.status = j["status"].get<std::string>();
  if (j.contains("variant") && j["variant"].is_string())
    r.variant = j["variant"].get<std::string>();
  if (j.contains("causal") && j["causal"].is_boolean()) r.causal = j["causal"].get<bool>();
  if (!r.ok()) return r;
  // rel_err may be null (JSON's spelling of NaN) but must be present.
  if (!j.contains("rel_err") || !(j["rel_err"].is_number() || j["rel_err"].is_null()))
    malformed(path, r.key + ": rel_err missing or not a number");
  r.rel_err = number_or_nan(j["rel_err"]);
  if (!j.contains("time_ms_reps") || !j["time_ms_reps"].is_array() || j["time_ms_reps"].empty())
    malformed(path, r.key + ": time_ms_reps missing or empty");
  const auto numbers = [&](const char* field) {
    std::vector<double> out;
    if (!j.contains(field)) return out;
    if (!j[field].is_array()) malformed(path, r.key + ": " + field + " is not an array");
    for (const auto& t : j[field]) {
      if (!t.is_number() || !(t.get<double>() >= 0))
        malformed(path, r.key + ": " + field + " holds a non-number or negative value");
      out.push_back(t.get<double>());
    }
    return out;
  };
  for (double t : numbers("time_ms_reps")) r.wall_equiv.push_back(t * ceiling / 1e3);
  const std::vector<double> cpu = numbers("cpu_ms_reps"), control = numbers("control_ms_reps");
  if (!cpu.empty() && cpu.size() == control.size())
    for (size_t k = 0; k < cpu.size(); ++k)
      if (control[k] > 0) r.cpu_equiv.push_back(cpu[k] / control[k]);
  return r;
}

// `path` is a results.json or a sweep directory holding one.
Run load_run(std::string path) {
  if (std::filesystem::is_directory(path)) path += "/results.json";
  std::ifstream f(path);
  if (!f) throw attn::UsageError(path + ": cannot open (no such file or not readable)");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    malformed(path, std::string("JSON syntax: ") + e.what());
  }
  if (!j.is_object() || !j.contains("context") || !j["context"].is_object())
    malformed(path, "no \"context\" object");
  if (!j.contains("rows") || !j["rows"].is_array()) malformed(path, "no \"rows\" array");
  const json& ctx = j["context"];
  Run run;
  run.path = path;
  if (!ctx.contains("sgemm_ceiling_gflops") || !ctx["sgemm_ceiling_gflops"].is_number() ||
      !(ctx["sgemm_ceiling_gflops"].get<double>() > 0))
    malformed(path, "context.sgemm_ceiling_gflops missing or not positive");
  run.ceiling = ctx["sgemm_ceiling_gflops"].get<double>();
  run.cpu = ctx.value("cpu_model", std::string("unknown CPU"));
  if (ctx.contains("omp_wait_policy") && ctx["omp_wait_policy"].is_string())
    run.wait_policy = ctx["omp_wait_policy"].get<std::string>();
  if (ctx.contains("threads") && ctx["threads"].is_number_integer())
    run.threads = ctx["threads"].get<int>();
  for (size_t i = 0; i < j["rows"].size(); ++i) {
    Row r = parse_row(path, j["rows"][i], run.ceiling, i);
    if (!run.index.emplace(r.key, run.rows.size()).second)
      malformed(path, "duplicate key " + r.key);
    run.rows.push_back(std::move(r));
  }
  return run;
}

struct Options {
  double err_tol = 0.05, err_eps = 0, time_tol = 0.3, other_cpu_time_tol = 1.0, alpha = 0.01;
  double global_time_tol = 0.5;
  bool check_time = true, every_variant = false, drift_correction = true;
};

// The per-repetition cost both runs can be compared on: the load-robust CPU/control measure
// when both rows have it, else wall time in units of each run's sgemm ceiling.
std::pair<const std::vector<double>*, const std::vector<double>*> comparable_costs(const Row& b,
                                                                                   const Row& n) {
  if (!b.cpu_equiv.empty() && !n.cpu_equiv.empty()) return {&b.cpu_equiv, &n.cpu_equiv};
  return {&b.wall_equiv, &n.wall_equiv};
}

struct Verdict {
  std::string text = "ok";
  bool regression = false;
  void add(const std::string& what, bool is_regression) {
    text = (text == "ok" ? "" : text + "+") + what;
    regression = regression || is_regression;
  }
};

bool accuracy_regressed(double base, double now, const Options& o) {
  if (std::isnan(now)) return !std::isnan(base);
  return now > base * (1 + o.err_tol) + o.err_eps;
}

std::string fmt(const char* format, double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

struct Line {
  std::string key, err_base, err_new, err_change, raw_ratio, time_ratio, p, verdict;
};

// What load did to the whole run. Load inflates every case, memory-heavy ones more than the
// compute-bound sgemm control can tell; the run itself measures it: for a variant, the median
// time ratio (new/base) of the OTHER variants' cases. Dividing it out leaves what changed in
// that variant alone. A regression shared by most cases is caught by the global check instead.
constexpr size_t kMinDriftCases = 4;

struct Drift {
  std::map<std::string, double> per_variant;  // median ratio of the other variants' cases
  double all = 1;                             // median ratio of every case
  size_t cases = 0;
  double of(const std::string& variant) const {
    auto it = per_variant.find(variant);
    return it == per_variant.end() ? 1.0 : it->second;
  }
};

Drift measure_drift(const Run& base, const Run& now) {
  std::vector<std::pair<std::string, double>> ratios;
  for (const Row& b : base.rows) {
    auto it = now.index.find(b.key);
    if (!b.ok() || it == now.index.end() || !now.rows[it->second].ok()) continue;
    const auto [base_cost, new_cost] = comparable_costs(b, now.rows[it->second]);
    ratios.emplace_back(b.variant, median(*new_cost) / median(*base_cost));
  }
  Drift d;
  d.cases = ratios.size();
  std::vector<double> all;
  for (const auto& r : ratios) all.push_back(r.second);
  if (!all.empty()) d.all = median(all);
  for (const auto& [variant, unused] : ratios) {
    std::vector<double> others;
    for (const auto& r : ratios)
      if (r.first != variant) others.push_back(r.second);
    // Too few other cases to estimate the load from: no correction.
    d.per_variant[variant] = others.size() >= kMinDriftCases ? median(others) : 1.0;
  }
  return d;
}

// Compares one case present in both runs.
Line compare_case(const Row& b, const Row& n, const Options& o, double time_tol, double drift,
                  Verdict& v) {
  Line l{b.key};
  if (!b.ok() || !n.ok()) {
    if (b.ok())
      v.add("NOW SKIPPED (" + n.status + ")", true);
    else if (n.ok())
      v.add("now runs (baseline " + b.status + ")", false);
    else
      v.add("skipped in both", false);
    l.verdict = v.text;
    return l;
  }
  l.err_base = fmt("%.3e", b.rel_err), l.err_new = fmt("%.3e", n.rel_err);
  if (b.rel_err > 0) l.err_change = fmt("%+.1f%%", 100 * (n.rel_err / b.rel_err - 1));
  if (accuracy_regressed(b.rel_err, n.rel_err, o)) v.add("ACCURACY", true);
  const auto [base_cost, raw_new_cost] = comparable_costs(b, n);
  std::vector<double> new_cost;
  for (double c : *raw_new_cost) new_cost.push_back(c / drift);
  const double ratio = median(new_cost) / median(*base_cost);
  l.raw_ratio = fmt("%.3f", ratio * drift);
  l.time_ratio = fmt("%.3f", ratio);
  if (o.check_time) {
    const double p_slower = mann_whitney_greater(new_cost, *base_cost).p;
    const double p_faster = mann_whitney_greater(*base_cost, new_cost).p;
    if (ratio > 1 + time_tol && p_slower < o.alpha) v.add("SLOWER", true);
    if (ratio < 1 / (1 + time_tol) && p_faster < o.alpha) v.add("faster", false);
    l.p = fmt("%.3g", ratio >= 1 ? p_slower : p_faster);
  }
  l.verdict = v.text;
  return l;
}

void print_table(const std::vector<Line>& lines) {
  size_t w = 3;
  for (const auto& l : lines) w = std::max(w, l.key.size());
  std::printf("%-*s  %12s  %11s  %8s  %7s  %8s  %7s  %s\n", int(w), "key", "rel_err base",
              "rel_err new", "err chg", "raw x", "time x", "p", "verdict");
  for (const auto& l : lines)
    std::printf("%-*s  %12s  %11s  %8s  %7s  %8s  %7s  %s\n", int(w), l.key.c_str(),
                l.err_base.c_str(), l.err_new.c_str(), l.err_change.c_str(), l.raw_ratio.c_str(),
                l.time_ratio.c_str(), l.p.c_str(), l.verdict.c_str());
}

void describe_runs(const Run& base, const Run& now, const Options& o, double time_tol) {
  for (const Run* r : {&base, &now})
    std::printf("%s %s: %s, %d threads, sgemm ceiling %.1f GFLOP/s, OMP_WAIT_POLICY=%s\n",
                r == &base ? "baseline" : "new     ", r->path.c_str(), r->cpu.c_str(), r->threads,
                r->ceiling, r->wait_policy.empty() ? "(unset)" : r->wait_policy.c_str());
  std::printf(
      "raw x = median(new) / median(baseline) of per-repetition process CPU time ÷ the sgemm "
      "control measured after that repetition (wall time × sgemm ceiling for rows without "
      "it); time x = raw x ÷ the median raw x of the other variants' cases (the run's load); "
      "slower counts when time x > %.2f and one-sided Mann-Whitney p < %g; every case slower "
      "counts when the median raw x of all cases > %.2f\n",
      1 + time_tol, o.alpha, 1 + o.global_time_tol);
  if (base.cpu != now.cpu && o.check_time)
    std::printf(
        "warning: different CPUs (%s vs %s): a kernel's cost relative to sgemm differs between "
        "microarchitectures, so time counts only beyond %.2fx (--other-cpu-time-tolerance)\n",
        base.cpu.c_str(), now.cpu.c_str(), 1 + time_tol);
  if (base.wait_policy != now.wait_policy && o.check_time)
    std::printf(
        "warning: OMP_WAIT_POLICY differs: spinning threads add CPU time, so the CPU-time "
        "comparison is biased\n");
  std::printf("accuracy regresses when rel_err new > base × %.3f + %g\n\n", 1 + o.err_tol,
              o.err_eps);
  if (base.threads && now.threads && base.threads != now.threads)
    std::printf("warning: the runs used different thread counts (%d vs %d)\n\n", base.threads,
                now.threads);
}

// Warns when the repetition counts make a significant slowdown impossible.
void warn_if_too_few_reps(const Run& base, const Run& now, const Options& o) {
  for (const Row& b : base.rows) {
    auto it = now.index.find(b.key);
    if (!b.ok() || it == now.index.end() || !now.rows[it->second].ok()) continue;
    const Row& n = now.rows[it->second];
    const auto [base_cost, new_cost] = comparable_costs(b, n);
    const double min_p = mann_whitney_min_p(int(new_cost->size()), int(base_cost->size()));
    if (min_p >= o.alpha) {
      std::printf(
          "warning: %zu vs %zu repetitions (e.g. %s): the smallest possible p is %.3g >= alpha "
          "%g, so no slowdown can be significant; use more repetitions\n\n",
          base_cost->size(), new_cost->size(), b.key.c_str(), min_p, o.alpha);
      return;
    }
  }
}

// Every registered variant must have baseline cases, non-causal and (where it accepts causal
// attention) causal, so that a variant registered later cannot slip past the gate unmeasured.
std::vector<std::string> uncovered_variants(const Run& base) {
  std::vector<std::string> missing;
  for (const attn::VariantInfo& info : attn::variants()) {
    bool plain = false, causal = false;
    for (const Row& r : base.rows)
      if (r.variant == info.name && r.ok()) (r.causal ? causal : plain) = true;
    bool accepts_causal = true;  // a variant its defaults cannot build: ask for both kinds
    try {
      attn::make_attention(info.name)->validate(attn::Shape{1, 1, 256, 256, 64, true});
    } catch (const attn::UsageError& e) {
      accepts_causal = std::string(e.what()).find("causal") == std::string::npos;
    }
    if (!plain) missing.push_back(info.name + " (non-causal)");
    if (accepts_causal && !causal) missing.push_back(info.name + " (causal)");
  }
  return missing;
}

}  // namespace

int cmd_compare(const Args& args) {
  namespace po = boost::program_options;
  std::string base_path, new_path;
  Options o;
  bool no_time = false, no_drift = false;
  po::options_description opts(
      "attnbench compare BASELINE.json NEW.json  (a sweep directory stands for its "
      "results.json; exit 0: no regression, 1: regression, 2: usage error or malformed file)");
  opts.add_options()("help,h", "this help")(
      "error-tolerance", po::value(&o.err_tol)->default_value(0.05, "0.05"),
      "relative rel_err increase allowed (new > base·(1+R) + epsilon is a regression)")(
      "error-epsilon", po::value(&o.err_eps)->default_value(0, "0"),
      "absolute rel_err slack on top of the relative tolerance")(
      "time-tolerance", po::value(&o.time_tol)->default_value(0.3, "0.3"),
      "relative slowdown allowed (CPU time per control) before a significant one fails")(
      "other-cpu-time-tolerance", po::value(&o.other_cpu_time_tol)->default_value(1.0, "1.0"),
      "the same when the two runs come from different CPU models (never below "
      "--time-tolerance)")("alpha", po::value(&o.alpha)->default_value(0.01, "0.01"),
                           "significance level of the one-sided Mann-Whitney U test over "
                           "repetitions")("no-time", po::bool_switch(&no_time),
                                          "skip the time check (accuracy, missing and skipped "
                                          "cases only)")(
      "global-time-tolerance", po::value(&o.global_time_tol)->default_value(0.5, "0.5"),
      "median slowdown of all cases allowed (a regression every variant shares)")(
      "no-drift-correction", po::bool_switch(&no_drift),
      "compare each case's time as measured, without dividing out the other variants' "
      "median")("require-every-variant", po::bool_switch(&o.every_variant),
                "fail unless the baseline has cases of every registered variant, causal and not");
  po::options_description hidden;
  hidden.add_options()("baseline", po::value(&base_path), "")("new", po::value(&new_path), "");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("baseline", 1).add("new", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  if (base_path.empty() || new_path.empty())
    throw attn::UsageError("needs two files: attnbench compare BASELINE.json NEW.json");
  if (!(o.err_tol >= 0) || !(o.err_eps >= 0) || !(o.time_tol >= 0) || !(o.other_cpu_time_tol >= 0))
    throw attn::UsageError(
        "--error-tolerance, --error-epsilon and the time tolerances must be >= 0");
  if (!(o.alpha > 0 && o.alpha < 1)) throw attn::UsageError("--alpha must be in (0, 1)");
  o.check_time = !no_time;
  o.drift_correction = !no_drift;
  if (!(o.global_time_tol >= 0)) throw attn::UsageError("--global-time-tolerance must be >= 0");

  const Run base = load_run(base_path), now = load_run(new_path);
  const double time_tol =
      base.cpu == now.cpu ? o.time_tol : std::max(o.time_tol, o.other_cpu_time_tol);
  describe_runs(base, now, o, time_tol);
  if (o.check_time) warn_if_too_few_reps(base, now, o);

  const Drift drift = measure_drift(base, now);
  std::vector<Line> lines;
  int regressions = 0, missing = 0, added = 0;
  for (const Row& b : base.rows) {
    Verdict v;
    auto it = now.index.find(b.key);
    if (it == now.index.end()) {
      v.add("MISSING in new", true);
      lines.push_back({b.key, fmt("%.3e", b.rel_err), "", "", "", "", "", v.text});
      ++missing, ++regressions;
      continue;
    }
    lines.push_back(compare_case(b, now.rows[it->second], o, time_tol,
                                 o.drift_correction ? drift.of(b.variant) : 1.0, v));
    regressions += v.regression;
  }
  for (const Row& n : now.rows)
    if (!base.index.count(n.key)) {
      lines.push_back(
          {n.key, "", fmt("%.3e", n.rel_err), "", "", "", "", "new case (not compared)"});
      ++added;
    }
  print_table(lines);
  std::printf("\nload drift: median raw time x of all %zu cases %.3f\n", drift.cases, drift.all);
  // With so few cases the per-case check is the whole story (and no drift is divided out).
  if (o.check_time && drift.cases >= kMinDriftCases && drift.all > 1 + o.global_time_tol) {
    std::printf("EVERY CASE SLOWER: median raw time x %.3f > %.2f\n", drift.all,
                1 + o.global_time_tol);
    ++regressions;
  }
  const std::vector<std::string> uncovered =
      o.every_variant ? uncovered_variants(base) : std::vector<std::string>{};
  for (const auto& u : uncovered)
    std::printf(
        "UNCOVERED: registered variant %s has no case in the baseline; add it to the "
        "gate's config and re-record the baseline\n",
        u.c_str());
  std::printf(
      "\n%zu baseline cases, %d regressions (%d missing in new), %d new cases, %zu uncovered "
      "variants: %s\n",
      base.rows.size(), regressions, missing, added, uncovered.size(),
      regressions || !uncovered.empty() ? "REGRESSION" : "no regression");
  return regressions || !uncovered.empty() ? 1 : 0;
}

}  // namespace attnbench
