#include "harness/sweep.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "attention/kernels/gemm.h"
#include "attention/registry.h"
#include "harness/accuracy.h"
#include "harness/bench.h"
#include "harness/cli.h"
#include "harness/inputs.h"
#include "harness/outdir.h"
#include "harness/posenc_hook.h"
#include "harness/scaling.h"
#include "harness/shard.h"

namespace attnbench {

namespace po = boost::program_options;

// ---------------------------------------------------------------------------------------------
// Config parsing

namespace {

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

// "512, 1024 2048" → {512, 1024, 2048}: commas and/or spaces separate items.
std::vector<int64_t> int_list(const std::string& text, const std::string& what) {
  std::string t = text;
  std::replace(t.begin(), t.end(), ',', ' ');
  std::istringstream in(t);
  std::vector<int64_t> out;
  for (std::string item; in >> item;) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || v <= 0 || errno == ERANGE)
      throw attn::UsageError(what + ": '" + item + "' is not a positive integer");
    out.push_back(v);
  }
  if (out.empty()) throw attn::UsageError(what + ": empty list");
  return out;
}

void require(bool ok, const std::string& msg) {
  if (!ok) throw attn::UsageError(msg);
}

// A config is a few lines of key = value; anything bigger is not one (/dev/zero used to grow
// past 8 GB, a 105 MB file of variant lines to 12 GB).
constexpr size_t kMaxConfigBytes = size_t(1) << 20;
constexpr int64_t kMaxCases = 100000;

std::string read_bounded(std::istream& in) {
  std::string text;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, size_t(in.gcount()));
    require(text.size() <= kMaxConfigBytes,
            "larger than 1 MiB; a sweep config is a few lines of key = value");
  }
  require(text.find('\0') == std::string::npos, "holds NUL bytes; not a text config");
  return text;
}

template <class T>
void require_unique(const std::vector<T>& items, const std::string& key) {
  std::set<T> seen;
  for (const T& v : items) {
    std::ostringstream s;
    s << v;
    require(seen.insert(v).second, "'" + key + " = " + s.str() +
                                       "' is listed twice (each would give rows with the same "
                                       "key); list it once");
  }
}

}  // namespace

int64_t case_count(const SweepConfig& cfg) {
  std::set<int64_t> ns(cfg.seqs.begin(), cfg.seqs.end());
  const int64_t n = attn::checked_product(
      {int64_t(cfg.dists.size()), int64_t(cfg.causal.size()), int64_t(cfg.variants.size()),
       int64_t(ns.size()), int64_t(cfg.seeds.size())},
      "number of cases");
  require(n <= kMaxCases, "the sweep expands to " + std::to_string(n) +
                              " cases (dist x causal x variant x seq x seed); at most " +
                              std::to_string(kMaxCases) + " are allowed, split it up");
  return n;
}

void check_cases(const SweepConfig& cfg) {
  require_unique(cfg.variants, "variant");
  require_unique(cfg.dists, "dist");
  require_unique(cfg.seeds, "seed");
  case_count(cfg);
}

SweepConfig parse_sweep_config(std::istream& in, const std::string& name) {
  SweepConfig c;
  std::vector<std::string> dists, seeds, causal;
  std::string seq;
  po::options_description keys("sweep config keys");
  keys.add_options()("variant", po::value(&c.variants), "variant spec (repeatable)")(
      "seq", po::value(&seq), "sequence lengths: 512,1024,...")("dim", po::value(&c.dim), "D")(
      "heads", po::value(&c.heads), "H")("batch", po::value(&c.batch), "B")(
      "causal", po::value(&causal), "causal mask: true|false (repeatable)")(
      "dist", po::value(&dists), "input distribution (repeatable)")("seed", po::value(&seeds),
                                                                    "input seed (repeatable)")(
      "posenc", po::value(&c.posenc), "positional encoding spec")("threads", po::value(&c.threads),
                                                                  "OpenMP threads")(
      "reps", po::value(&c.reps), "repetitions")("min_time", po::value(&c.min_time),
                                                 "seconds per repetition")(
      "max_seconds", po::value(&c.max_seconds), "per-case time budget")(
      "max_memory_gib", po::value(&c.max_memory_gib), "per-case memory budget")(
      "ref_sample", po::value(&c.ref_sample), "sampled reference rows")(
      "ref_all_rows_max", po::value(&c.ref_all_rows_max), "all reference rows up to this Nq")(
      "crossover_baseline", po::value(&c.crossover_baseline),
      "spec the crossovers are measured against (default full)");
  const std::string where = "config " + name + ": ";
  po::variables_map vm;
  try {
    std::istringstream text(read_bounded(in));
    po::store(po::parse_config_file(text, keys, false), vm);
    po::notify(vm);
  } catch (const po::unknown_option& e) {
    std::string valid;
    for (const auto& o : keys.options()) valid += (valid.empty() ? "" : ", ") + o->long_name();
    throw attn::UsageError(where + "unknown key '" + e.get_option_name() +
                           "'; valid keys: " + valid);
  } catch (const po::error& e) {
    throw attn::UsageError(where + describe_option_error(e));
  } catch (const attn::UsageError& e) {
    throw attn::UsageError(where + e.what());
  }
  try {
    require(!c.variants.empty(), "no 'variant' key (at least one spec is needed)");
    for (auto& v : c.variants) {
      v = trim(v);
      require(!v.empty(), "'variant' has an empty value");
    }
    require(vm.count("seq") > 0, "no 'seq' key (e.g. seq = 512,1024,2048)");
    c.seqs = int_list(seq, "seq");
    if (!dists.empty()) c.dists.clear();
    for (auto& d : dists) {
      d = trim(d);
      require(!d.empty(), "'dist' has an empty value");
      c.dists.push_back(d);
    }
    if (!causal.empty()) c.causal.clear();
    for (const auto& v : causal) {
      const std::string t = trim(v);
      require(t == "true" || t == "false" || t == "1" || t == "0",
              "causal: '" + v + "' is not true or false");
      const bool value = t == "true" || t == "1";
      require(std::find(c.causal.begin(), c.causal.end(), value) == c.causal.end(),
              "causal: '" + t + "' is listed twice");
      c.causal.push_back(value);
    }
    if (!seeds.empty()) c.seeds.clear();
    for (const auto& s : seeds) {
      char* end = nullptr;
      const std::string t = trim(s);
      const unsigned long long v = std::strtoull(t.c_str(), &end, 10);
      require(!t.empty() && t[0] != '-' && *end == '\0',
              "seed: '" + s + "' is not a non-negative integer");
      c.seeds.push_back(v);
    }
    c.posenc = trim(c.posenc);
    c.crossover_baseline = trim(c.crossover_baseline);
    require(!vm.count("crossover_baseline") || std::find(c.variants.begin(), c.variants.end(),
                                                         c.crossover_baseline) != c.variants.end(),
            "crossover_baseline '" + c.crossover_baseline +
                "' is not one of the sweep's variant specs (write it exactly as a 'variant' line)");
    require(c.dim > 0 && c.heads > 0 && c.batch > 0, "dim, heads and batch must be >= 1");
    check_threads(c.threads, "threads");
    require(c.reps >= 1, "reps must be >= 1");
    require(c.min_time > 0 && std::isfinite(c.min_time), "min_time must be > 0 seconds");
    require(c.max_seconds >= 0 && std::isfinite(c.max_seconds),
            "max_seconds must be >= 0 (0 = no limit)");
    require(c.max_memory_gib >= 0 && std::isfinite(c.max_memory_gib),
            "max_memory_gib must be >= 0 (0 = available memory)");
    require(c.ref_sample >= 1 && c.ref_all_rows_max >= 0,
            "ref_sample must be >= 1 and ref_all_rows_max >= 0");
    check_cases(c);
  } catch (const attn::UsageError& e) {
    throw attn::UsageError(where + e.what());
  }
  return c;
}

SweepConfig load_sweep_config(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw attn::UsageError("config '" + path + "' is a directory, not an INI file");
  std::ifstream f(path);
  if (!f) throw attn::UsageError("cannot read config '" + path + "'");
  return parse_sweep_config(f, path);
}

namespace {

// The UsageError message of a causal case that the variant refuses while it accepts the same
// shape non-causal (Linformer and Nyström have no causal form); "" for any other case.
std::string causal_refusal(const attn::Attention& a, const attn::Shape& s) {
  if (!s.causal) return "";
  std::string why;
  try {
    a.validate(s);
    return "";
  } catch (const attn::UsageError& e) {
    why = e.what();
  }
  attn::Shape plain = s;
  plain.causal = false;
  try {
    a.validate(plain);
    return why;
  } catch (const attn::UsageError&) {
    return "";
  }
}

}  // namespace

void validate_config(const SweepConfig& cfg) {
  for (const Case& c : expand_cases(cfg)) {
    if (c.dist != cfg.dists.front() || c.seed != cfg.seeds.front()) continue;
    auto a = attn::make_attention(c.spec);
    // A config that lists both causal values runs each variant where it is defined; the
    // sweep records the refused causal cases as skipped rows with the variant's reason.
    if (cfg.causal.size() > 1 && !causal_refusal(*a, c.shape).empty()) continue;
    a->validate(c.shape);
  }
  const bool causal = cfg.causal.front();
  // Unknown distributions and encodings are rejected now, on inputs of one head (cheap).
  // npy:DIR inputs have the files' own shape, so only their presence is checked here.
  attn::Shape s{1, 1, 0, 0, cfg.dim, causal};
  s.nq = s.nk = *std::min_element(cfg.seqs.begin(), cfg.seqs.end());
  // Memory first: when even these inputs would not fit, every case is skipped by the sweep's
  // own estimate, and the names are checked on a shape that fits (seq = 200000000 used to
  // fail the whole sweep here with "out of memory").
  if (3.0 * double(s.nq) * double(s.dim) * sizeof(float) > 0.25 * attn::available_memory_bytes())
    s.nq = s.nk = std::min<int64_t>(s.nq, 64), s.dim = std::min<int64_t>(s.dim, 64);
  for (const auto& d : cfg.dists) {
    if (d.rfind("npy:", 0) == 0) {
      for (const char* f : {"/q.npy", "/k.npy", "/v.npy"})
        if (!std::ifstream(d.substr(4) + f))
          throw attn::UsageError("dist " + d + ": cannot read " + d.substr(4) + f);
      continue;
    }
    make_inputs(s, d, cfg.seeds.front());
  }
  Inputs in = make_inputs(s, "gaussian", cfg.seeds.front());
  apply_posenc(cfg.posenc, in);
}

// ---------------------------------------------------------------------------------------------
// Cases

std::string Case::key() const {
  return case_key(spec, shape.batch, shape.heads, shape.nq, shape.dim, shape.causal, dist, seed,
                  posenc);
}

std::string Case::input_key() const {
  return case_key("", shape.batch, shape.heads, shape.nq, shape.dim, shape.causal, dist, seed,
                  posenc);
}

namespace {

std::string group_key_of(const std::string& spec, int64_t b, int64_t h, int64_t d, bool causal,
                         const std::string& dist, const std::string& posenc) {
  return case_key(spec, b, h, 0, d, causal, dist, 0, posenc);
}

}  // namespace

std::string Case::group_key() const {
  return group_key_of(spec, shape.batch, shape.heads, shape.dim, shape.causal, dist, posenc);
}

std::string scaling_group_key(const Row& r) {
  return group_key_of(r.spec, r.batch, r.heads, r.dim, r.causal, r.dist, r.posenc);
}

std::vector<Case> expand_cases(const SweepConfig& cfg) {
  std::vector<int64_t> ns = cfg.seqs;
  std::sort(ns.begin(), ns.end());
  ns.erase(std::unique(ns.begin(), ns.end()), ns.end());
  check_cases(cfg);
  std::vector<Case> out;
  for (const auto& dist : cfg.dists)
    for (bool causal : cfg.causal)
      for (const auto& spec : cfg.variants)
        for (int64_t n : ns)
          for (uint64_t seed : cfg.seeds) {
            Case c;
            c.spec = spec;
            c.variant = spec.substr(0, spec.find(':'));
            c.shape = attn::Shape{cfg.batch, cfg.heads, n, n, cfg.dim, causal};
            c.dist = dist, c.seed = seed, c.posenc = cfg.posenc;
            out.push_back(c);
          }
  return out;
}

int64_t reference_rows(const SweepConfig& cfg, int64_t nq) {
  return nq <= cfg.ref_all_rows_max ? nq : std::min(cfg.ref_sample, nq);
}

double estimated_bytes(const Case& c, const attn::Attention& a, int64_t ref_rows) {
  const attn::Shape& s = c.shape;
  const double io = 4.0 * s.heads_total() * s.nq * s.dim * sizeof(float);
  return io + a.extra_bytes(s) + 8.0 * s.heads_total() * ref_rows * s.dim;
}

// ---------------------------------------------------------------------------------------------
// Scaling

std::vector<Scaling> compute_scaling(const std::vector<Row>& rows,
                                     const std::vector<std::pair<std::string, GbFit>>& gb,
                                     const std::string& baseline) {
  struct Points {
    const Row* first = nullptr;
    std::vector<double> n, t;
  };
  std::vector<std::string> order;
  std::map<std::string, Points> groups;
  for (const Row& r : rows) {
    if (!r.ok() || !(r.time_ms_median > 0)) continue;
    const std::string k = scaling_group_key(r);
    Points& p = groups[k];
    if (!p.first) p.first = &r, order.push_back(k);
    p.n.push_back(double(r.n)), p.t.push_back(r.time_ms_median);
  }
  std::vector<Scaling> out;
  for (const auto& k : order) {
    const Points& p = groups[k];
    if (std::set<double>(p.n.begin(), p.n.end()).size() < 3) continue;
    const Row& r = *p.first;
    const PowerFit fit = fit_power_law(p.n, p.t);
    Scaling s;
    s.spec = r.spec, s.variant = r.variant, s.batch = r.batch, s.heads = r.heads, s.dim = r.dim;
    s.causal = r.causal, s.dist = r.dist, s.posenc = r.posenc;
    s.alpha = fit.alpha, s.alpha_ci_lo = fit.ci_lo, s.alpha_ci_hi = fit.ci_hi;
    for (const auto& [key, g] : gb)
      if (key == k) s.gb_big_o = g.big_o, s.gb_rms = g.rms;
    s.crossover_baseline = baseline;
    const auto base =
        groups.find(group_key_of(baseline, r.batch, r.heads, r.dim, r.causal, r.dist, r.posenc));
    const PowerFit dense =
        base == groups.end() ? PowerFit{} : fit_power_law(base->second.n, base->second.t);
    if (r.spec == baseline) {
      s.crossover_note = "is the crossover baseline";
    } else if (!dense.valid) {
      s.crossover_note = "no " + baseline + " in sweep";
    } else {
      Crossover c = find_crossover(fit, dense, baseline);
      s.crossover_n = c.n, s.crossover_note = c.note;
    }
    out.push_back(s);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Running a sweep

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string duration(double s) {
  if (s < 60) return fmt("%.0fs", s);
  return std::to_string(int(s) / 60) + "m" + fmt("%02.0fs", std::fmod(s, 60.0));
}

// Test-only: ATTNBENCH_TEST_SLOWDOWN=VARIANT=FACTOR makes every timed forward() of that
// variant do FACTOR times the work on average (whole extra forward() calls, carried over
// between calls), so the regression gate's power to catch a real slowdown can be measured
// (results/BENCHMARKS.md). Unset in every normal run.
struct InjectedSlowdown {
  std::string variant;
  double factor = 1, debt = 0;

  static InjectedSlowdown from_env() {
    InjectedSlowdown s;
    const char* env = std::getenv("ATTNBENCH_TEST_SLOWDOWN");
    if (!env || !*env) return s;
    const std::string text = env;
    const auto eq = text.find('=');
    char* end = nullptr;
    const double f = eq == std::string::npos ? 0 : std::strtod(text.c_str() + eq + 1, &end);
    if (eq == std::string::npos || *end != '\0' || !(f >= 1 && f <= 100))
      throw attn::UsageError("ATTNBENCH_TEST_SLOWDOWN='" + text +
                             "' must read VARIANT=FACTOR with FACTOR in [1, 100]");
    s.variant = text.substr(0, eq), s.factor = f;
    return s;
  }
  // Extra forward() calls owed after one call of `variant`.
  int extra_calls(const std::string& variant) {
    if (variant != this->variant) return 0;
    debt += factor - 1;
    const int calls = int(debt);
    debt -= calls;
    return calls;
  }
};

class Sweep {
 public:
  Sweep(const SweepConfig& cfg, const SweepOptions& opt) : cfg_(cfg), opt_(opt) {}

  SweepResult run() {
    set_threads(opt_.threads >= 0 ? opt_.threads : cfg_.threads);
    try {
      validate_config(cfg_);
    } catch (const attn::UsageError& e) {
      if (opt_.config_path.empty()) throw;
      throw attn::UsageError("config " + opt_.config_path + ": " + e.what());
    }
    const Shard shard{opt_.shard_index, opt_.shard_count};
    cases_ = cases_of_shard(cfg_, shard);
    // Taken before anything is measured: a second writer or an unwritable --out fails now.
    std::unique_ptr<OutputDirLock> lock;
    if (!opt_.out_dir.empty()) {
      lock = std::make_unique<OutputDirLock>(opt_.out_dir);
      check_may_write_results(opt_.out_dir, opt_.resume, opt_.overwrite);
      if (opt_.resume) check_same_shard(shard);
    }
    if (opt_.resume && !opt_.out_dir.empty())
      for (Row& r : load_rows(opt_.out_dir)) done_.emplace(r.key, std::move(r));
    ctx_ = current_context(omp_get_max_threads());
    ctx_.config = opt_.config_path, ctx_.command = opt_.command;
    if (!opt_.out_dir.empty()) write_shard_manifest(shard);
    ctx_.sgemm_ceiling_gflops = attn::kernels::measure_sgemm_gflops();
    if (opt_.on_start) opt_.on_start(ctx_);
    for (const Case& c : cases_) todo_ += done_.count(c.key()) ? 0 : 1;
    start_ = Clock::now();
    for (size_t i = 0; i < cases_.size();) {
      size_t j = i;
      while (j < cases_.size() && cases_[j].group_key() == cases_[i].group_key()) ++j;
      // References are reused by every variant of a distribution, then dropped.
      if (i > 0 && cases_[i].dist != cases_[i - 1].dist) refs_.clear();
      run_group(i, j);
      i = j;
    }
    if (opt_.progress) std::fprintf(stderr, "\r\033[K");  // the table stays, the progress goes
    write();
    return {ctx_, ordered_rows(), compute_scaling(ordered_rows(), gb_, cfg_.crossover_baseline),
            references_computed_};
  }

 private:
  // A resumed directory must hold the same shard of the same config (or be unsharded as well):
  // else its rows would be mixed with another partition's.
  void check_same_shard(const Shard& shard) const {
    const ShardManifest m = read_manifest(opt_.out_dir);
    const std::string fp = config_fingerprint(cfg_);
    if (m.shard == shard && (!shard.active() || m.fingerprint == fp)) return;
    // A fresh directory: the first run of a Slurm task already passes --resume.
    if (!m.shard.active() && !std::filesystem::exists(opt_.out_dir + "/results.json")) return;
    const std::string was = m.shard.active() ? "shard " + m.shard.text() + " of " + m.config_path +
                                                   " (config " + m.fingerprint + ")"
                                             : "an unsharded sweep";
    const std::string now = shard.active() ? "shard " + shard.text() : "unsharded";
    throw attn::UsageError("--resume: " + opt_.out_dir + " holds " + was + ", this run is " + now +
                           " of config " + fp + "; resume with the same config and --shard");
  }

  // Sharded runs write DIR/shard.json before measuring; unsharded runs remove a stale one.
  void write_shard_manifest(const Shard& shard) const {
    if (shard.active())
      write_manifest(opt_.out_dir,
                     make_manifest(cfg_, shard, cases_, opt_.config_path, ctx_.git_commit));
    else
      std::filesystem::remove(opt_.out_dir + "/shard.json");
  }

  // Cases [first, last) share everything but n and seed: one Google Benchmark family.
  void run_group(size_t first, size_t last) {
    std::vector<size_t> pending;
    for (size_t i = first; i < last; ++i)
      if (!done_.count(cases_[i].key())) pending.push_back(i);
    // Causal cases of a variant without a causal form (let through by validate_config) are
    // rows with its reason, never benchmarks: Google Benchmark 1.7.1 crashes on a family
    // whose every run is skipped.
    std::erase_if(pending, [&](size_t i) {
      Timing refused;
      refused.error = causal_refusal(*attn::make_attention(cases_[i].spec), cases_[i].shape);
      if (refused.error.empty()) return false;
      finish(cases_[i], refused);
      return true;
    });
    if (pending.empty()) return;
    slowest_in_group_ = slowest_loaded(first, last);
    BenchFamily f;
    f.name = cases_[first].group_key();
    for (size_t i : pending) f.ns.push_back(cases_[i].shape.nq);
    f.prepare = [&](size_t k) { return prepare(cases_[pending[k]]); };
    f.skip_reason = [&](size_t) { return skip_; };
    f.body = [&] {
      attn_->forward(cur_->shape, in_->q, in_->k, in_->v, *out_);
      for (int i = slowdown_.extra_calls(cur_->variant); i > 0; --i)
        attn_->forward(cur_->shape, in_->q, in_->k, in_->v, *out_);
    };
    f.done = [&](size_t k, const Timing& t) { finish(cases_[pending[k]], t); };
    BenchSettings settings{cfg_.reps, cfg_.min_time};
    const GbComplexity gb = run_family(f, settings);
    if (gb.valid) gb_.push_back({f.name, GbFit{gb.big_o, gb.rms}});
    release_case();
  }

  // Wall seconds of the slowest case of this group already in the results (resume).
  double slowest_loaded(size_t first, size_t last) const {
    double worst = 0;
    for (size_t i = first; i < last; ++i) {
      auto it = done_.find(cases_[i].key());
      if (it != done_.end() && it->second.ok())
        worst = std::max(worst, it->second.time_ms_median * (it->second.reps + 2) / 1e3);
    }
    return worst;
  }

  bool prepare(const Case& c) {
    release_case();
    cur_ = &c;
    case_start_ = Clock::now();
    show_progress(c);
    attn_ = attn::make_attention(c.spec);
    const int64_t ref_rows = reference_rows(cfg_, c.shape.nq);
    const double need = estimated_bytes(c, *attn_, ref_rows);
    const double gib = double(1ull << 30);
    if (cfg_.max_seconds > 0 && slowest_in_group_ > cfg_.max_seconds) {
      skip_ = "an earlier case of this variant took " + fmt("%.1f", slowest_in_group_) +
              " s > max_seconds=" + fmt("%g", cfg_.max_seconds);
      return false;
    }
    if (cfg_.max_memory_gib > 0 && need > cfg_.max_memory_gib * gib) {
      skip_ = "estimated memory " + fmt("%.2f", need / gib) +
              " GiB > max_memory_gib=" + fmt("%g", cfg_.max_memory_gib);
      return false;
    }
    if (need > 0.9 * attn::available_memory_bytes()) {
      skip_ = "estimated memory " + fmt("%.2f", need / gib) + " GiB > 90% of available " +
              fmt("%.2f", attn::available_memory_bytes() / gib) + " GiB";
      return false;
    }
    in_ = std::make_unique<Inputs>(make_inputs(c.shape, c.dist, c.seed));
    apply_posenc(c.posenc, *in_);
    out_ = std::make_unique<attn::Tensor>(c.shape.batch, c.shape.heads, c.shape.nq, c.shape.dim);
    skip_.clear();
    return true;
  }

  void release_case() { attn_.reset(), in_.reset(), out_.reset(); }

  // The dense problem the current variant is scored against: plain dense attention on the
  // inputs unless the variant approximates another one (shared-QK LSH).
  struct Counterpart {
    std::string name = "dense";
    attn::Tensor keys;
    attn::ElementMask mask;
    bool own = false;
  };

  Counterpart counterpart(const Case& c) const {
    Counterpart cp;
    cp.own = attn_->counterpart_problem(c.shape, in_->q, in_->k, cp.keys, cp.mask);
    if (cp.own) cp.name = attn_->dense_counterpart();
    return cp;
  }

  // Computed once per (input, counterpart) and reused by every variant that shares them.
  const ReferenceSample& reference(const Case& c, const Counterpart& cp) {
    const std::string key = c.input_key() + "|" + cp.name;
    auto it = refs_.find(key);
    if (it != refs_.end()) return it->second;
    ++references_computed_;
    return refs_
        .emplace(key, compute_reference(c.shape, in_->q, cp.own ? cp.keys : in_->k, in_->v,
                                        cfg_.ref_all_rows_max, cfg_.ref_sample, c.seed,
                                        cp.own ? &cp.mask : nullptr))
        .first->second;
  }

  void finish(const Case& c, const Timing& t) {
    const double case_seconds = seconds_since(case_start_);
    Row r;
    r.key = c.key(), r.variant = c.variant, r.spec = c.spec;
    r.batch = c.shape.batch, r.heads = c.shape.heads, r.n = c.shape.nq, r.dim = c.shape.dim;
    r.causal = c.shape.causal, r.dist = c.dist, r.seed = c.seed, r.posenc = c.posenc;
    r.threads = omp_get_max_threads(), r.reps = cfg_.reps;
    if (!t.ok) {
      r.status = "skipped: " + t.error;
    } else {
      slowest_in_group_ = std::max(slowest_in_group_, case_seconds);
      r.time_ms_median = t.median_ms, r.time_ms_min = t.min_ms, r.time_ms_max = t.max_ms;
      r.time_cv = t.cv, r.time_ms_reps = t.reps_ms;
      r.cpu_ms_reps = t.cpu_ms_reps, r.control_ms_reps = t.control_ms_reps;
      r.gflops = attn_->flops(c.shape) / (t.median_ms * 1e-3) / 1e9;
      r.pct_ceiling = 100.0 * r.gflops / ctx_.sgemm_ceiling_gflops;
      r.mem_peak_bytes = double(t.mem_peak_bytes), r.mem_allocs = t.mem_allocs;
      r.extra_bytes = attn_->extra_bytes(c.shape);
      r.rss_peak_bytes = peak_rss_bytes();
      const Counterpart cp = counterpart(c);
      const ReferenceSample& ref = reference(c, cp);
      const Accuracy acc = measure_accuracy(c.shape, ref, *out_);
      r.rel_err = acc.rel_fro, r.max_abs_err = acc.max_abs, r.cosine = acc.mean_cosine;
      r.coverage = attention_coverage(*attn_, c.shape, in_->q, cp.own ? cp.keys : in_->k, ref.rows,
                                      cp.own ? &cp.mask : nullptr);
      r.reference = cp.name;
      r.ref_rows = ref.all_rows ? "all" : std::to_string(ref.rows.size()) + " sampled";
      r.err_vs_mean = acc.err_vs_mean;
      if (const auto probe = recall_probe(c.shape, c.dist, c.seed)) score_recall(c, cp, *probe, r);
    }
    done_[r.key] = r;
    ++finished_;
    if (opt_.on_row) opt_.on_row(r);
    write();
  }

  // Recall figures of the current case on a `recall` input (docs/ALGORITHMS.md §Recall metrics).
  void score_recall(const Case& c, const Counterpart& cp, const RecallProbe& probe, Row& r) const {
    const RecallScore rs = measure_recall(*attn_, c.shape, in_->q, cp.own ? cp.keys : in_->k, *out_,
                                          probe, cp.own ? &cp.mask : nullptr);
    r.recall = rs.recall, r.recall_cosine = rs.cosine, r.planted_mass = rs.mass_exact;
    r.planted_mass_variant = rs.mass_variant;
    for (const RecallBin& b : rs.by_gap)
      r.recall_by_gap.push_back({b.lo, b.hi, double(b.rows), b.recall});
    for (const RecallBin& b : rs.by_depth)
      r.recall_by_depth.push_back({b.lo, b.hi, double(b.rows), b.recall});
  }

  void show_progress(const Case& c) {
    if (!opt_.progress) return;
    const double el = seconds_since(start_);
    const std::string eta =
        finished_ ? duration(el / finished_ * double(todo_ - finished_)) : std::string("?");
    std::fprintf(stderr, "\r\033[K[%zu/%zu] %s n=%lld %s seed=%llu | elapsed %s, ETA %s",
                 finished_ + 1, todo_, c.spec.c_str(), (long long)c.shape.nq, c.dist.c_str(),
                 (unsigned long long)c.seed, duration(el).c_str(), eta.c_str());
    std::fflush(stderr);
  }

  std::vector<Row> ordered_rows() const {
    std::vector<Row> rows;
    std::set<std::string> listed;
    for (const Case& c : cases_) {
      auto it = done_.find(c.key());
      if (it != done_.end()) rows.push_back(it->second), listed.insert(c.key());
    }
    // Rows of an earlier run that this config no longer lists are kept, never dropped.
    for (const auto& [k, r] : done_)
      if (!listed.count(k)) rows.push_back(r);
    return rows;
  }

  void write() {
    if (opt_.out_dir.empty()) return;
    const std::vector<Row> rows = ordered_rows();
    write_results(opt_.out_dir, ctx_, rows, compute_scaling(rows, gb_, cfg_.crossover_baseline));
  }

  const SweepConfig& cfg_;
  const SweepOptions& opt_;
  std::vector<Case> cases_;
  std::map<std::string, Row> done_;
  std::vector<std::pair<std::string, GbFit>> gb_;
  std::map<std::string, ReferenceSample> refs_;
  RunContext ctx_;
  Clock::time_point start_, case_start_;
  size_t todo_ = 0, finished_ = 0, references_computed_ = 0;
  double slowest_in_group_ = 0;
  const Case* cur_ = nullptr;
  std::unique_ptr<attn::Attention> attn_;
  std::unique_ptr<Inputs> in_;
  std::unique_ptr<attn::Tensor> out_;
  std::string skip_;
  InjectedSlowdown slowdown_ = InjectedSlowdown::from_env();
};

}  // namespace

SweepResult run_sweep(const SweepConfig& cfg, const SweepOptions& opt) {
  return Sweep(cfg, opt).run();
}

}  // namespace attnbench
